/**
 * Retrying ZeroMQ calls that a signal interrupted.
 *
 * libzmq's connect, socket monitors and some getsockopt calls process the socket's pending
 * commands first, and fail with EINTR when a signal with a handler lands meanwhile. zeromq.js
 * retries EINTR for send, receive and bind, but not for these, so a signal at the wrong moment
 * (a profiler's SIGPROF every millisecond, SIGUSR1 for the inspector, SIGTERM for a graceful stop)
 * surfaced as "Interrupted system call" and ended the rank during wire-up. The call has no effect
 * when it fails that way, so calling it again is safe.
 */

/** Attempts before an EINTR is given up on; each failed attempt means a signal arrived. */
export const INTERRUPT_RETRIES = 100;

export function retryOnInterrupt<T>(call: () => T): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return call();
    } catch (err) {
      if (attempt >= INTERRUPT_RETRIES || !isInterrupted(err)) throw err;
    }
  }
}

export function isInterrupted(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'EINTR';
}
