/**
 * The port of rank 0's rendezvous (MEMFLOW_ROOT). On this machine the launcher can check that a
 * port is free; for a remote rank 0 it can only guess.
 *
 * Either way the port comes from below the kernel's ephemeral range (ip_local_port_range,
 * 32768-60999 by default). A port the kernel handed out for a bind to port 0 is free only until
 * the kernel hands it out again, and it does so for the source port of every outgoing TCP
 * connection as well: between the launcher's check and rank 0's bind, another process's connect()
 * took the port once in CI (a test suite makes thousands of connections). Ports below the range
 * are only ever taken by an explicit bind.
 */
import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';

/** The range ports are chosen from: above the well-known and registered crowd. */
export const RANDOM_PORT_MIN = 20000;
/** Below the default ephemeral range (32768-60999 on Linux). */
export const RANDOM_PORT_MAX = 32767;
/** Ports tried on this machine before falling back to one the kernel assigns. */
const FREE_PORT_ATTEMPTS = 32;

/**
 * A port free on `host` now, from RANDOM_PORT_MIN up to below this machine's ephemeral range
 * (see the file comment); rank 0 binds it a fraction of a second later, and a rare collision
 * shows up as rank 0's bind error rather than a hang. Rejects with the bind error other than
 * EADDRINUSE (e.g. EADDRNOTAVAIL when `host` is not an address of this machine).
 */
export async function findFreePort(host: string): Promise<number> {
  const max = Math.min(RANDOM_PORT_MAX, (await ephemeralPortsFrom()) - 1);
  if (max > RANDOM_PORT_MIN) {
    for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS; attempt++) {
      const port = randomInt(RANDOM_PORT_MIN, max + 1);
      if (await bindable(host, port)) return port;
    }
  }
  // A crowded range, or an unusual ephemeral range: let the kernel choose.
  return listenAndClose(host, 0);
}

/** A random port in RANDOM_PORT_MIN..RANDOM_PORT_MAX, for a rank 0 on another machine. */
export function randomPort(): number {
  return randomInt(RANDOM_PORT_MIN, RANDOM_PORT_MAX + 1);
}

/** The first port of the kernel's ephemeral range (Linux); the default where it cannot be read. */
async function ephemeralPortsFrom(): Promise<number> {
  try {
    const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
    const first = Number(text.trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > 0 ? first : RANDOM_PORT_MAX + 1;
  } catch {
    return RANDOM_PORT_MAX + 1;
  }
}

/** Whether `port` can be bound on `host` now (false: EADDRINUSE; other errors reject). */
async function bindable(host: string, port: number): Promise<boolean> {
  try {
    await listenAndClose(host, port);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') return false;
    throw err;
  }
}

/** Listens on `host`:`port` (0: the kernel chooses), closes, and returns the port it had. */
function listenAndClose(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port, host, exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (bound > 0 ? resolve(bound) : reject(new Error('no port was assigned'))));
    });
  });
}
