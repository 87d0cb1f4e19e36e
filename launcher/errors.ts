/**
 * Errors of the launcher. Each is an operating or usage error the user can fix, so the CLI prints
 * its message as one line (no stack) and exits with the status of its code, from one table.
 */
export type LaunchErrorCode =
  | 'LAUNCH_USAGE' // a bad command line: unknown option, bad -n, conflicting options
  | 'LAUNCH_HOSTFILE' // the hostfile (or --host) is missing or malformed; the message names file:line
  | 'LAUNCH_NOT_BUILT'; // store mode without dist/src/cli/memflow-rank.js

export class LaunchError extends Error {
  override readonly name = 'LaunchError';

  constructor(
    readonly code: LaunchErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Exit status of each error code; every usage or configuration error exits 2, like mpiexec. */
export const EXIT_STATUS: Readonly<Record<LaunchErrorCode, number>> = {
  LAUNCH_USAGE: 2,
  LAUNCH_HOSTFILE: 2,
  LAUNCH_NOT_BUILT: 2,
};
