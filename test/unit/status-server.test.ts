/**
 * The status server (src/rank/status-page/server.ts) against a fake coordinator, on loopback.
 * Goal: the routes answer what they promise (page, JSON, SSE, metrics with the 0.0.4 content
 * type), HEAD has headers and no body, other methods get 405 with Allow, unknown paths 404; a
 * state change reaches an open event stream at once (not at the next periodic push); close()
 * ends open streams and frees the port; a port in use is one clear line. Method: a real
 * node:http server on 127.0.0.1 port 0, read with fetch(); no sleeping: each step awaits a
 * response or the next event.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ListEntry, StatusResult } from '../../src/protocol/client-protocol.js';
import { OpMetrics } from '../../src/rank/op-metrics.js';
import { RecentTransitions } from '../../src/rank/recent-transitions.js';
import type { StatusSnapshot, StatusSource } from '../../src/rank/status-page/snapshot.js';
import { MAX_EVENT_STREAMS, StatusServer } from '../../src/rank/status-page/server.js';
import { parseExposition, sampleOf } from '../helpers/prometheus-text.js';

class FakeSource implements StatusSource {
  readonly metrics = new OpMetrics();
  readonly transitions = new RecentTransitions();
  state: StatusResult['ranks'][number]['state'] = 'alive';
  fileList: ListEntry[] = [
    {
      name: 'a.bin',
      sizeBytes: 10,
      modified: '2024-01-01T00:00:00.000Z',
      chunks: 1,
      health: 'healthy',
    },
    {
      name: '</script><b>x',
      sizeBytes: 5,
      modified: '2024-01-01T00:00:00.000Z',
      chunks: 1,
      health: 'healthy',
    },
    {
      name: 'c.bin',
      sizeBytes: 0,
      modified: '2024-01-01T00:00:00.000Z',
      chunks: 0,
      health: 'healthy',
    },
  ];
  status(): StatusResult {
    return {
      ranks: [
        {
          rank: 1,
          host: '127.0.0.1',
          state: this.state,
          heartbeatAgeMs: 10,
          usedBytes: 15,
          capacityBytes: 1000,
          chunkCopies: 2,
          primaryCopies: 1,
          replicaCopies: 1,
        },
      ],
      replicas: 2,
      chunkSizeBytes: 1024,
      files: this.fileList.length,
      chunks: 2,
      underReplicatedChunks: 0,
      uptimeMs: 1000,
    };
  }
  files(): ListEntry[] {
    return this.fileList;
  }
}

const servers: StatusServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function serve(source = new FakeSource(), pushIntervalMs = 60_000) {
  const server = await StatusServer.listen(source, {
    host: '127.0.0.1',
    port: 0,
    maxFiles: 2,
    pushIntervalMs,
    wallClockMs: () => Date.parse('2024-05-06T07:08:09.010Z'),
  });
  servers.push(server);
  return { server, source, base: `http://127.0.0.1:${server.port}` };
}

/** Reads server-sent events from a fetch() body, one at a time. */
function eventReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  return {
    /** The next event's {event, data}; undefined when the stream ended. */
    async next(): Promise<{ event: string; data: string } | undefined> {
      for (;;) {
        const end = buffered.indexOf('\n\n');
        if (end >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const fields = new Map<string, string>();
          for (const line of block.split('\n')) {
            const colon = line.indexOf(':');
            if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
          }
          if (!fields.has('data')) continue; // the retry: preamble
          return { event: fields.get('event') ?? 'message', data: fields.get('data')! };
        }
        const { done, value } = await reader.read();
        if (done) return undefined;
        buffered += decoder.decode(value, { stream: true });
      }
    },
    cancel: () => reader.cancel(),
  };
}

describe('status server', () => {
  it('serves the page: self-contained HTML with a strict CSP and the data embedded safely', async () => {
    const { server, base } = await serve();
    expect(server.url).toBe(`${base}/`);
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await res.text();
    // No external asset: no src= or href= but the empty data: icon.
    expect(html).not.toMatch(/\s(src|href)="(?!data:)/i);
    expect(html).not.toMatch(/https?:\/\//);
    const embedded = /<script id="initial-data" type="application\/json">(.*?)<\/script>/s.exec(
      html,
    );
    expect(embedded).not.toBeNull();
    // The file named "</script>..." cannot end the element: its "<" is escaped.
    const snapshot = JSON.parse(embedded![1]!) as StatusSnapshot;
    expect(snapshot.files.shown.map((f) => f.name)).toEqual(['a.bin', '</script><b>x']);
    expect(snapshot.status.ranks[0]!.rank).toBe(1);
  });

  it('serves /status.json with the status, the first maxFiles files with the total, and transitions newest first', async () => {
    const { base, source } = await serve();
    source.transitions.add(
      { rank: 1, from: 'alive', to: 'suspect', reason: 'its connection dropped' },
      Date.parse('2024-05-06T07:08:00.000Z'),
    );
    source.transitions.add(
      { rank: 1, from: 'suspect', to: 'alive', reason: 'heard from again' },
      Date.parse('2024-05-06T07:08:01.000Z'),
    );
    const res = await fetch(`${base}/status.json`);
    expect(res.headers.get('content-type')).toBe('application/json');
    const snap = (await res.json()) as StatusSnapshot;
    expect(snap.generatedAt).toBe('2024-05-06T07:08:09.010Z');
    expect(snap.status).toEqual(source.status());
    expect(snap.files.total).toBe(3);
    expect(snap.files.shown).toHaveLength(2);
    expect(snap.transitions).toEqual([
      {
        at: '2024-05-06T07:08:01.000Z',
        rank: 1,
        from: 'suspect',
        to: 'alive',
        reason: 'heard from again',
      },
      {
        at: '2024-05-06T07:08:00.000Z',
        rank: 1,
        from: 'alive',
        to: 'suspect',
        reason: 'its connection dropped',
      },
    ]);
  });

  it('serves /metrics in the text format 0.0.4', async () => {
    const { base, source } = await serve();
    source.metrics.observe('stat', 'ok', 0.002);
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const parsed = parseExposition(await res.text());
    expect(sampleOf(parsed, 'memflow_rank_used_bytes', { rank: '1' })).toBe(15);
    expect(sampleOf(parsed, 'memflow_requests_total', { op: 'stat', outcome: 'ok' })).toBe(1);
  });

  it('answers HEAD with headers only, other methods with 405, unknown paths with 404', async () => {
    const { base } = await serve();
    for (const path of ['/', '/status.json', '/metrics', '/events']) {
      const head = await fetch(`${base}${path}`, { method: 'HEAD' });
      expect(head.status, path).toBe(200);
      expect(await head.text(), path).toBe('');
      const post = await fetch(`${base}${path}`, { method: 'POST', body: 'x' });
      expect(post.status, path).toBe(405);
      expect(post.headers.get('allow'), path).toBe('GET, HEAD');
      await post.text();
    }
    const head = await fetch(`${base}/metrics`, { method: 'HEAD' });
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(100);
    for (const [path, method] of [
      ['/nope', 'GET'],
      ['/metrics/x', 'GET'],
      ['/nope', 'DELETE'],
    ] as const) {
      const res = await fetch(`${base}${path}`, { method });
      expect(res.status, `${method} ${path}`).toBe(404);
      await res.text();
    }
    // A query string does not change the route.
    const withQuery = await fetch(`${base}/status.json?x=1`);
    expect(withQuery.status).toBe(200);
    await withQuery.text();
  });

  it('pushes a snapshot on connect and one right after each state change', async () => {
    const { base, source } = await serve(); // periodic pushes every 60 s: not reached here
    const res = await fetch(`${base}/events`);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const events = eventReader(res.body!);
    const first = await events.next();
    expect(first?.event).toBe('status');
    expect((JSON.parse(first!.data) as StatusSnapshot).status.ranks[0]!.state).toBe('alive');

    source.state = 'suspect';
    source.transitions.add({ rank: 1, from: 'alive', to: 'suspect', reason: 'why' }, 0);
    const second = JSON.parse((await events.next())!.data) as StatusSnapshot;
    expect(second.status.ranks[0]!.state).toBe('suspect');
    expect(second.transitions[0]).toMatchObject({ rank: 1, to: 'suspect', reason: 'why' });
    await events.cancel();
  });

  it('pushes periodically while a stream is open', async () => {
    const { base, source } = await serve(undefined, 50);
    const events = eventReader((await fetch(`${base}/events`)).body!);
    await events.next();
    source.state = 'dead'; // no transition: only the periodic push can tell
    const next = JSON.parse((await events.next())!.data) as StatusSnapshot;
    expect(next.status.ranks[0]!.state).toBe('dead');
    await events.cancel();
  });

  it(`refuses a stream beyond ${MAX_EVENT_STREAMS} open ones with 503 and Retry-After, and takes one again when a stream closes`, async () => {
    const { base } = await serve();
    const open = [];
    for (let i = 0; i < MAX_EVENT_STREAMS; i++) {
      const events = eventReader((await fetch(`${base}/events`)).body!);
      await events.next(); // the server holds it once the first snapshot came
      open.push(events);
    }
    const refused = await fetch(`${base}/events`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect(await refused.text()).toMatch(/too many live pages open/);
    expect((await fetch(`${base}/status.json`)).status).toBe(200);

    await open.pop()!.cancel();
    // The server learns of the closed stream when its socket closes: ask until it has.
    let status = 503;
    for (let attempt = 0; attempt < 200 && status === 503; attempt++) {
      const res = await fetch(`${base}/events`);
      status = res.status;
      if (status === 200) open.push(eventReader(res.body!));
      else await res.text();
      if (status === 503) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(status).toBe(200);
    for (const events of open) await events.cancel();
  });

  it('close() ends open streams and frees the port', async () => {
    const { server, base } = await serve();
    const events = eventReader((await fetch(`${base}/events`)).body!);
    await events.next();
    const port = server.port;
    await server.close();
    servers.length = 0;
    expect(await events.next()).toBeUndefined();
    const again = await StatusServer.listen(new FakeSource(), { host: '127.0.0.1', port });
    servers.push(again);
    expect(again.port).toBe(port);
  });

  it('says in one line that the port is in use', async () => {
    const { server } = await serve();
    const err = await StatusServer.listen(new FakeSource(), {
      host: '127.0.0.1',
      port: server.port,
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toBe(
      `cannot serve the status page on 127.0.0.1:${server.port} (--http-port): the port is already in use`,
    );
  });
});
