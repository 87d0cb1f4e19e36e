/**
 * Rank 0's HTTP status server (`--http-port`): the live status page, its data as JSON and as a
 * Server-Sent Events stream, and `/metrics` for Prometheus. Read-only by design: GET and HEAD
 * only (405 otherwise), 404 for any other path, no state kept per client beyond open streams.
 *
 * The event stream sends a snapshot on connect, one right after every rank state change (a
 * suspect state may last a fraction of a second and must still reach the page), and one every
 * `pushIntervalMs` for the rest (usage, heartbeat ages). Snapshots are built once per push for
 * all streams, and only while a stream is open.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EXPOSITION_CONTENT_TYPE, renderExposition } from './exposition.js';
import { PAGE_CSP, renderPage } from './page.js';
import {
  DEFAULT_MAX_FILES,
  snapshotJson,
  takeSnapshot,
  type StatusSnapshot,
  type StatusSource,
} from './snapshot.js';
import { storeMetricFamilies } from './store-metrics.js';

export interface StatusServerOptions {
  /** Address to bind (rank 0's --bind). */
  host: string;
  /** 0: a port the kernel picks. */
  port: number;
  /** Period of the event stream's regular snapshots. */
  pushIntervalMs?: number;
  /** Files listed on the page and in /status.json (the count covers all). */
  maxFiles?: number;
  /** Wall-clock time for the snapshots' stamps. */
  wallClockMs?: () => number;
}

const ROUTES = new Set(['/', '/status.json', '/events', '/metrics']);
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/**
 * Open /events streams at most: each costs rank 0 a write per push, and a page left open in a
 * hundred tabs (or a misbehaving script) must not tax the coordinator. More get 503 and retry.
 */
export const MAX_EVENT_STREAMS = 32;

/** "host:port" as it goes in a URL (an IPv6 address in brackets). */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export class StatusServer {
  private readonly streams = new Set<http.ServerResponse>();
  private readonly pushIntervalMs: number;
  private readonly maxFiles: number;
  private readonly wallClockMs: () => number;
  private pushTimer: NodeJS.Timeout | undefined;
  private pushSoon: NodeJS.Immediate | undefined;
  private readonly unsubscribe: () => void;
  private closed = false;

  private constructor(
    private readonly server: http.Server,
    private readonly source: StatusSource,
    private readonly host: string,
    options: StatusServerOptions,
  ) {
    this.pushIntervalMs = options.pushIntervalMs ?? 1000;
    this.maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
    this.wallClockMs = options.wallClockMs ?? (() => Date.now());
    this.unsubscribe = source.transitions.subscribe(() => this.schedulePush());
  }

  /**
   * Serves `source` on host:port. Rejects with a one-line reason when the address cannot be
   * bound (port in use, address not on this host, privileged port).
   */
  static async listen(source: StatusSource, options: StatusServerOptions): Promise<StatusServer> {
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why =
          err.code === 'EADDRINUSE'
            ? 'the port is already in use'
            : err.code === 'EADDRNOTAVAIL'
              ? 'the address is not one of this host'
              : err.code === 'EACCES'
                ? 'permission denied'
                : err.message;
        reject(
          new Error(
            `cannot serve the status page on ${hostPort(options.host, options.port)} (--http-port): ${why}`,
          ),
        );
      };
      server.once('error', onError);
      server.listen({ host: options.host, port: options.port, exclusive: true }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const status = new StatusServer(server, source, options.host, options);
    server.on('request', (req, res) => status.route(req, res));
    return status;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** The page's address, for the log. */
  get url(): string {
    return `http://${hostPort(this.host, this.port)}/`;
  }

  /** Ends every event stream and stops listening; resolves once the server is closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    clearInterval(this.pushTimer);
    if (this.pushSoon) clearImmediate(this.pushSoon);
    for (const res of this.streams) res.end();
    this.streams.clear();
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Idle keep-alive connections would hold close() open for seconds.
    this.server.closeAllConnections();
    await closing;
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = new URL(req.url ?? '/', 'http://status.invalid').pathname;
    if (!ROUTES.has(path))
      return this.send(req, res, 404, 'text/plain; charset=utf-8', 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return this.send(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    try {
      switch (path) {
        case '/': {
          res.setHeader('Content-Security-Policy', PAGE_CSP);
          return this.send(req, res, 200, 'text/html; charset=utf-8', renderPage(this.snapshot()));
        }
        case '/status.json':
          return this.send(req, res, 200, 'application/json', snapshotJson(this.snapshot()));
        case '/metrics': {
          const families = storeMetricFamilies(this.source.status(), this.source.metrics);
          return this.send(req, res, 200, EXPOSITION_CONTENT_TYPE, renderExposition(families));
        }
        case '/events':
          return this.openStream(req, res);
      }
    } catch (err) {
      // A bug in rendering must cost one response, not rank 0.
      this.send(req, res, 500, 'text/plain; charset=utf-8', `internal error: ${String(err)}\n`);
    }
  }

  private send(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    code: number,
    type: string,
    body: string,
  ): void {
    res.writeHead(code, {
      'Content-Type': type,
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private snapshot(): StatusSnapshot {
    return takeSnapshot(this.source, this.wallClockMs(), this.maxFiles);
  }

  private openStream(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.streams.size >= MAX_EVENT_STREAMS && req.method !== 'HEAD') {
      res.setHeader('Retry-After', '5');
      return this.send(
        req,
        res,
        503,
        'text/plain; charset=utf-8',
        `too many live pages open (${MAX_EVENT_STREAMS}); try again later\n`,
      );
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
    });
    if (req.method === 'HEAD' || this.closed) {
      res.end();
      return;
    }
    // The browser reconnects after a second when the stream breaks (rank 0 restarting).
    res.write(`retry: 1000\n\n`);
    res.write(this.event(this.snapshot()));
    this.streams.add(res);
    res.on('close', () => {
      this.streams.delete(res);
      if (this.streams.size === 0) {
        clearInterval(this.pushTimer);
        this.pushTimer = undefined;
      }
    });
    if (!this.pushTimer) {
      this.pushTimer = setInterval(() => this.push(), this.pushIntervalMs);
      this.pushTimer.unref();
    }
  }

  /** After a state change: soon (once the coordinator has finished handling it), and once per burst. */
  private schedulePush(): void {
    if (this.closed || this.streams.size === 0 || this.pushSoon) return;
    this.pushSoon = setImmediate(() => {
      this.pushSoon = undefined;
      this.push();
    });
  }

  private push(): void {
    if (this.streams.size === 0) return;
    let message: string;
    try {
      message = this.event(this.snapshot());
    } catch {
      return; // The next push tries again; the page shows it as stale meanwhile.
    }
    for (const res of this.streams) {
      // A reader that stopped reading must not make rank 0 buffer snapshots without end.
      if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
      else res.write(message);
    }
  }

  private event(snapshot: StatusSnapshot): string {
    // JSON has no raw newlines, so the whole snapshot is one data line.
    return `event: status\ndata: ${snapshotJson(snapshot)}\n\n`;
  }
}
