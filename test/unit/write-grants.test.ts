/**
 * A data rank's grants for direct writes (src/rank/write-grants.ts). Goal: a client can store a
 * copy on a data rank only where rank 0 placed it, and rank 0 hears the truth about every
 * placement: its accept resolves exactly when the client's copy is durable, and fails when no
 * copy comes (ttl), when rank 0 takes it back (revoke) or when the copy cannot be stored; a write
 * that arrives before its grant waits for it, one with no grant at all is refused. Method: the
 * grants on a manual clock over a fake put the test completes or fails by hand.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/runtime/clock.js';
import { WriteGrants } from '../../src/rank/write-grants.js';
import { StoreError } from '../../src/store/errors.js';

interface Put {
  chunkId: string;
  bytes: Uint8Array;
  checksum: string;
  finish: (err?: Error) => void;
}

function grants(): { clock: ManualClock; g: WriteGrants; puts: Put[] } {
  const clock = new ManualClock();
  const puts: Put[] = [];
  const g = new WriteGrants({
    clock,
    grantWaitMs: 5_000,
    maxWaiting: 2,
    put: (chunkId, bytes, checksum) =>
      new Promise<void>((resolve, reject) =>
        puts.push({
          chunkId,
          bytes,
          checksum,
          finish: (err) => (err ? reject(err) : resolve()),
        }),
      ),
  });
  return { clock, g, puts };
}

/** Lets promise callbacks run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** How a promise has settled so far: 'pending', 'ok' or the error's code. */
function track(promise: Promise<unknown>): { state: string; message?: string } {
  const seen: { state: string; message?: string } = { state: 'pending' };
  promise.then(
    () => (seen.state = 'ok'),
    (err: unknown) => {
      seen.state = err instanceof StoreError ? err.code : String(err);
      seen.message = err instanceof Error ? err.message : String(err);
    },
  );
  return seen;
}

const bytes = (n: number): Uint8Array => new Uint8Array(n).fill(7);

describe('write grants', () => {
  it("a placed copy: the client's write is stored, and rank 0's accept resolves only once it is durable", async () => {
    const { g, puts } = grants();
    const accept = track(g.accept('u1.0', 8, 'sum', 20_000));
    const write = track(g.write('u1.0', 'sum', bytes(8)));
    await flush();
    expect(puts.map((p) => [p.chunkId, p.bytes.length, p.checksum])).toEqual([['u1.0', 8, 'sum']]);
    expect([accept.state, write.state]).toEqual(['pending', 'pending']);
    puts[0]!.finish();
    await flush();
    expect([accept.state, write.state]).toEqual(['ok', 'ok']);
    expect(g.writesServed).toEqual({ count: 1, bytes: 8 });
    // The grant is used up: the same chunk again waits for a grant that never comes.
    const again = track(g.write('u1.0', 'sum', bytes(8)));
    await flush();
    expect(again.state).toBe('pending');
  });

  it('a write that comes before its grant waits for it; with no grant within 5 s it is refused and nothing is stored', async () => {
    const { clock, g, puts } = grants();
    const early = track(g.write('u1.0', 'sum', bytes(8)));
    clock.advance(4_000);
    await flush();
    const accept = track(g.accept('u1.0', 8, 'sum', 20_000));
    await flush();
    expect(puts).toHaveLength(1);
    puts[0]!.finish();
    await flush();
    expect([early.state, accept.state]).toEqual(['ok', 'ok']);

    const stray = track(g.write('u9.9', 'sum', bytes(8)));
    clock.advance(4_999);
    await flush();
    expect(stray.state).toBe('pending');
    clock.advance(1);
    await flush();
    expect(stray.state).toBe('STORE_CONFLICT');
    expect(stray.message).toMatch(/not placed here/);
    expect(puts).toHaveLength(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('writes of one chunk that wait at different times each leave once: a later one still gets the grant, and the bound counts only those waiting', async () => {
    const { clock, g, puts } = grants();
    const first = track(g.write('x', 'sum', bytes(8)));
    clock.advance(1_000);
    const second = track(g.write('x', 'sum', bytes(8)));
    clock.advance(4_000); // the first's 5 s are up
    await flush();
    const third = track(g.write('x', 'sum', bytes(8)));
    clock.advance(1_000); // the second's
    await flush();
    expect([first.state, second.state, third.state]).toEqual([
      'STORE_CONFLICT',
      'STORE_CONFLICT',
      'pending',
    ]);
    const accept = track(g.accept('x', 8, 'sum', 20_000));
    await flush();
    expect(puts).toHaveLength(1);
    puts[0]!.finish();
    await flush();
    expect([third.state, accept.state]).toEqual(['ok', 'ok']);
    // Nothing waits now: the bound of 2 admits two more.
    const more = [track(g.write('a', 's', bytes(1))), track(g.write('b', 's', bytes(1)))];
    await flush();
    expect(more.map((w) => w.state)).toEqual(['pending', 'pending']);
  });

  it('writes waiting for grants are bounded: past the bound they are refused at once (STORE_BUSY)', async () => {
    const { g } = grants();
    const waiting = [track(g.write('a', 's', bytes(1))), track(g.write('b', 's', bytes(1)))];
    const third = track(g.write('c', 's', bytes(1)));
    await flush();
    expect(waiting.map((w) => w.state)).toEqual(['pending', 'pending']);
    expect(third.state).toBe('STORE_BUSY');
  });

  it('a grant no client fulfils ends after its ttl: the accept fails and a later write is refused', async () => {
    const { clock, g, puts } = grants();
    const accept = track(g.accept('u1.0', 8, 'sum', 20_000));
    clock.advance(19_999);
    await flush();
    expect(accept.state).toBe('pending');
    clock.advance(1);
    await flush();
    expect(accept.state).toBe('STORE_CONFLICT');
    expect(accept.message).toMatch(/no client wrote it/);
    const late = track(g.write('u1.0', 'sum', bytes(8)));
    clock.advance(5_000);
    await flush();
    expect(late.state).toBe('STORE_CONFLICT');
    expect(puts).toHaveLength(0);
  });

  it('revoke before the write: the accept fails at once; revoke during the write: the write decides', async () => {
    const { g, puts } = grants();
    const before = track(g.accept('a', 8, 'sum', 20_000));
    g.revoke('a');
    await flush();
    expect(before.state).toBe('STORE_CONFLICT');

    const during = track(g.accept('b', 8, 'sum', 20_000));
    const write = track(g.write('b', 'sum', bytes(8)));
    await flush();
    g.revoke('b');
    await flush();
    expect(during.state).toBe('pending');
    puts[0]!.finish();
    await flush();
    expect([during.state, write.state]).toEqual(['ok', 'ok']);

    // Revoked while a write runs that then fails: the accept fails with the write's error.
    const failing = track(g.accept('c', 8, 'sum', 20_000));
    const bad = track(g.write('c', 'sum', bytes(8)));
    await flush();
    g.revoke('c');
    puts[1]!.finish(new StoreError('STORE_NO_SPACE', 'disk full'));
    await flush();
    expect([failing.state, bad.state]).toEqual(['STORE_NO_SPACE', 'STORE_NO_SPACE']);
  });

  it('refuses a write of another size or checksum than placed, and a second write while one runs; the grant stays for the right one', async () => {
    const { g, puts } = grants();
    const accept = track(g.accept('u1.0', 8, 'sum', 20_000));
    const wrongSize = track(g.write('u1.0', 'sum', bytes(9)));
    const wrongSum = track(g.write('u1.0', 'other', bytes(8)));
    await flush();
    expect([wrongSize.state, wrongSum.state]).toEqual(['STORE_BAD_REQUEST', 'STORE_BAD_REQUEST']);
    const first = track(g.write('u1.0', 'sum', bytes(8)));
    const second = track(g.write('u1.0', 'sum', bytes(8)));
    await flush();
    expect(second.state).toBe('STORE_CONFLICT');
    expect(puts).toHaveLength(1);
    puts[0]!.finish();
    await flush();
    expect([first.state, accept.state]).toEqual(['ok', 'ok']);
  });

  it('a failed write leaves the grant for another try, and a chunk granted twice is refused', async () => {
    const { g, puts } = grants();
    const accept = track(g.accept('u1.0', 8, 'sum', 20_000));
    const twice = track(g.accept('u1.0', 8, 'sum', 20_000));
    await flush();
    expect(twice.state).toBe('STORE_CONFLICT');
    const failed = track(g.write('u1.0', 'sum', bytes(8)));
    await flush();
    puts[0]!.finish(new StoreError('STORE_CORRUPT', 'bytes do not match'));
    await flush();
    expect([failed.state, accept.state]).toEqual(['STORE_CORRUPT', 'pending']);
    const retry = track(g.write('u1.0', 'sum', bytes(8)));
    await flush();
    puts[1]!.finish();
    await flush();
    expect([retry.state, accept.state]).toEqual(['ok', 'ok']);
  });
});
