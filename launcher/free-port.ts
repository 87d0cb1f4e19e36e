/**
 * The port of rank 0's rendezvous (MEMFLOW_ROOT). On this machine the launcher can ask the kernel
 * for a free one; for a remote rank 0 it can only guess.
 */
import { randomInt } from 'node:crypto';
import net from 'node:net';

/** The range of ports guessed for a remote rank 0: above the well-known and registered crowd, below the usual ephemeral range. */
export const RANDOM_PORT_MIN = 20000;
export const RANDOM_PORT_MAX = 59999;

/**
 * Binds port 0 on `host`, reads the port the kernel chose and closes the socket. The port is free
 * at that moment; rank 0 binds it a fraction of a second later, and a rare collision shows up as
 * rank 0's bind error rather than a hang. Rejects with the bind error (e.g. EADDRNOTAVAIL when
 * `host` is not an address of this machine).
 */
export function findFreePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port was assigned'))));
    });
  });
}

/** A random port in RANDOM_PORT_MIN..RANDOM_PORT_MAX. */
export function randomPort(): number {
  return randomInt(RANDOM_PORT_MIN, RANDOM_PORT_MAX + 1);
}
