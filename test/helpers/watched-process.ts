/**
 * A child process the tests watch: its stdout and stderr split into lines as they arrive, its
 * exit, and waits for a condition on them that fail at a deadline (or when the process ends
 * first) with everything it printed. What the launcher tests and the store tests share.
 */
import type { ChildProcess } from 'node:child_process';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class WatchedProcess {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exit: Promise<Exit>;
  exited = false;
  exitInfo: Exit | undefined;
  private readonly listeners = new Set<() => void>();

  /** `name` says what the process is in failure messages ("the store", "launcher"). */
  constructor(
    readonly child: ChildProcess,
    private readonly name: string,
  ) {
    this.collect(child.stdout, this.stdout);
    this.collect(child.stderr, this.stderr);
    this.exit = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exited = true;
        this.exitInfo = { code, signal };
        this.notify();
        resolve({ code, signal });
      });
    });
  }

  /** Resolves once `predicate` holds; rejects at the deadline or if the process ends first. */
  waitFor(what: string, predicate: () => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (predicate()) {
          done();
          resolve();
        } else if (this.exited) {
          done();
          reject(new Error(`${this.name} ended before ${what}\n${this.transcript()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMs} ms\n${this.transcript()}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Everything the process printed so far, for failure messages. */
  transcript(): string {
    return `stdout:\n${this.stdout.join('\n')}\nstderr:\n${this.stderr.join('\n')}`;
  }

  private collect(stream: NodeJS.ReadableStream | null, lines: string[]): void {
    let partial = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      this.notify();
    });
    stream?.on('end', () => {
      if (partial !== '') lines.push(partial);
      this.notify();
    });
  }

  private notify(): void {
    [...this.listeners].forEach((listener) => listener());
  }
}
