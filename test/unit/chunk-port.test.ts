/**
 * A data rank's chunk port (src/rank/chunk-port.ts) on its own. Goal: what keeps a data rank
 * safe from the clients that read from it: a client's reads count until their replies have gone
 * out (a client that asks and never takes its replies is stopped at 32), the bytes waiting to go
 * out are capped for all clients together (however many connections they open), and a corrupt
 * copy is reported to rank 0 once, an unknown id never, and reads never take all the rank's
 * request slots from rank 0; a write of a placed copy is answered once stored and counts against
 * the same per-client bound. Method: the port over a fake channel whose sends of chunk bytes stay
 * pending until the test lets them go, and a fake store.
 */
import { pack, unpack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { DIRECT_READS_PER_CLIENT } from '../../src/protocol/client-protocol.js';
import type { ClientChannel } from '../../src/rank/client-channel.js';
import { ChunkPort } from '../../src/rank/chunk-port.js';
import { Semaphore } from '../../src/runtime/semaphore.js';
import { StoreError } from '../../src/store/errors.js';

const MiB = 1024 * 1024;

interface Sent {
  client: string;
  reply: { id: number; ok: boolean; error?: { code: string; message: string } };
  bytes: number;
}

/** A channel that records replies; a reply with bytes "goes out" only when the test releases it. */
class FakeChannel implements ClientChannel {
  readonly sent: Sent[] = [];
  private handler: ((client: Buffer, frames: Buffer[]) => void) | undefined;
  private readonly held: Array<() => void> = [];

  onMessage(handler: (client: Buffer, frames: Buffer[]) => void): void {
    this.handler = handler;
  }

  send(client: Buffer, frames: readonly Uint8Array[]): Promise<void> {
    const reply = unpack(frames[0]!) as Sent['reply'];
    this.sent.push({ client: client.toString('hex'), reply, bytes: frames[1]?.length ?? 0 });
    if (frames[1] === undefined) return Promise.resolve();
    return new Promise((resolve) => this.held.push(resolve));
  }

  /** Lets every reply waiting to go out go. */
  release(): void {
    for (const go of this.held.splice(0)) go();
  }

  request(client: number, id: number, chunkId: string): void {
    this.handler?.(Buffer.from([client]), [pack({ op: 'chunk-read', id, chunkId })]);
  }

  write(client: number, id: number, chunkId: string, bytes?: Buffer): void {
    const head = pack({ op: 'chunk-write', id, chunkId, checksum: 'sum' });
    this.handler?.(Buffer.from([client]), bytes ? [head, bytes] : [head]);
  }

  busy(): Sent[] {
    return this.sent.filter((s) => s.reply.error?.code === 'STORE_BUSY');
  }
}

function port(
  chunkBytes: number,
  get?: (id: string) => Promise<Uint8Array>,
  write?: (chunkId: string, checksum: string, bytes: Uint8Array) => Promise<void>,
): { channel: FakeChannel; reported: string[]; slots: Semaphore } {
  const channel = new FakeChannel();
  const reported: string[] = [];
  const slots = new Semaphore(16);
  new ChunkPort(channel, {
    get: get ?? (() => Promise.resolve(new Uint8Array(chunkBytes))),
    slots,
    readSlots: 12,
    onBadCopy: (id) => reported.push(id),
    ...(write && { write }),
  });
  return { channel, reported, slots };
}

/** Lets the port's reads and replies run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('a chunk port', () => {
  it(`counts a client's reads until their replies have gone out: one that never takes them gets STORE_BUSY past ${DIRECT_READS_PER_CLIENT}, and is served again once they go`, async () => {
    const { channel } = port(1024);
    for (let id = 1; id <= DIRECT_READS_PER_CLIENT + 1; id++) channel.request(1, id, `c${id}`);
    await settle();
    // Every read was done; all but the last wait to go out, and the last was refused.
    expect(channel.sent.filter((s) => s.reply.ok)).toHaveLength(DIRECT_READS_PER_CLIENT);
    expect(channel.busy().map((s) => s.reply.id)).toEqual([DIRECT_READS_PER_CLIENT + 1]);
    // Another client is not held up by this one.
    channel.request(2, 1, 'other');
    await settle();
    expect(channel.sent.at(-1)).toMatchObject({ client: '02', reply: { id: 1, ok: true } });

    channel.release();
    await settle();
    channel.request(1, 100, 'again');
    await settle();
    expect(channel.sent.at(-1)).toMatchObject({ client: '01', reply: { id: 100, ok: true } });
  });

  it('caps the bytes waiting to go out for all clients together at 64 MiB: one client per connection cannot get past it', async () => {
    const { channel } = port(4 * MiB);
    // 16 clients, one 4 MiB read each: 64 MiB waiting to go out.
    for (let client = 1; client <= 16; client++) channel.request(client, 1, `c${client}`);
    await settle();
    expect(channel.sent.filter((s) => s.reply.ok)).toHaveLength(16);
    channel.request(17, 1, 'one more');
    await settle();
    expect(channel.busy().map((s) => s.client)).toEqual(['11']);
    expect(channel.busy()[0]!.reply.error!.message).toMatch(/waiting to go out/);

    channel.release();
    await settle();
    channel.request(17, 2, 'one more');
    await settle();
    expect(channel.sent.at(-1)).toMatchObject({ client: '11', reply: { id: 2, ok: true } });
  });

  it('reports a corrupt copy to rank 0 once however often it is read, and an unknown id never', async () => {
    const { channel, reported } = port(0, (id) =>
      Promise.reject(
        id === 'bad'
          ? new StoreError('STORE_CORRUPT', `${id} fails its checksum`)
          : new StoreError('STORE_NOT_FOUND', `no copy of ${id} here`),
      ),
    );
    for (let id = 1; id <= 3; id++) channel.request(1, id, 'bad');
    for (let id = 4; id <= 6; id++) channel.request(1, id, `made-up-${id}`);
    await settle();
    expect(channel.sent.map((s) => s.reply.error?.code)).toEqual([
      ...Array<string>(3).fill('STORE_CORRUPT'),
      ...Array<string>(3).fill('STORE_NOT_FOUND'),
    ]);
    expect(reported).toEqual(['bad']);
  });

  it("keeps some of the rank's request slots for rank 0 however many reads wait, and serves every read in turn", async () => {
    // Reads that stay on the disk until the test lets them finish.
    const reading: Array<() => void> = [];
    const { channel, slots } = port(1024, () => {
      return new Promise((resolve) => reading.push(() => resolve(new Uint8Array(1024))));
    });
    for (let client = 1; client <= 4; client++)
      for (let id = 1; id <= 5; id++) channel.request(client, id, `c${client}.${id}`);
    await settle();
    expect(reading).toHaveLength(12);

    // Rank 0's next request (an upload's copy) gets a slot now, not after 20 reads.
    let rank0Served = false;
    void slots.acquire().then(() => (rank0Served = true));
    await settle();
    expect(rank0Served).toBe(true);
    slots.release();

    for (let round = 0; round < 3 && reading.length > 0; round++) {
      for (const finish of reading.splice(0)) finish();
      await settle();
      channel.release();
      await settle();
    }
    expect(channel.sent.filter((s) => s.reply.ok)).toHaveLength(20);
  });

  it("takes a client's write of a placed copy and answers once it is stored; refuses one without bytes, and writes count against the same per-client bound as reads", async () => {
    const stored: string[] = [];
    const finishing: Array<() => void> = [];
    const { channel } = port(1024, undefined, (chunkId, checksum, bytes) => {
      stored.push(`${chunkId} ${checksum} ${bytes.length}`);
      return new Promise((resolve) => finishing.push(resolve));
    });
    channel.write(1, 1, 'u1.0', Buffer.alloc(100));
    channel.write(1, 2, 'u1.1');
    await settle();
    expect(stored).toEqual(['u1.0 sum 100']);
    expect(channel.sent.map((s) => [s.reply.id, s.reply.error?.code])).toEqual([
      [2, 'STORE_BAD_REQUEST'],
    ]);
    finishing.shift()!();
    await settle();
    expect(channel.sent.at(-1)!.reply).toMatchObject({ id: 1, ok: true });

    // 32 reads waiting to go out, then a write: refused, as a 33rd read would be.
    for (let id = 10; id < 10 + DIRECT_READS_PER_CLIENT; id++) channel.request(1, id, `c${id}`);
    channel.write(1, 99, 'u1.2', Buffer.alloc(100));
    await settle();
    expect(channel.busy().map((s) => s.reply.id)).toEqual([99]);
    expect(stored).toHaveLength(1);
  });

  it('refuses writes when the rank takes none', async () => {
    const { channel } = port(1024);
    channel.write(1, 1, 'u1.0', Buffer.alloc(100));
    await settle();
    expect(channel.sent[0]!.reply).toMatchObject({
      id: 1,
      ok: false,
      error: { code: 'STORE_BAD_REQUEST' },
    });
  });
});
