/**
 * The rendezvous port the launcher picks for rank 0. Goal: a port that no other process can be
 * handed by the kernel between the launcher's check and rank 0's bind. Method: real binds on
 * 127.0.0.1; the kernel's ephemeral range read as the code reads it.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  findFreePort,
  randomPort,
  RANDOM_PORT_MAX,
  RANDOM_PORT_MIN,
} from '../../launcher/free-port.js';

function ephemeralFrom(): number {
  try {
    return Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
  } catch {
    return RANDOM_PORT_MAX + 1;
  }
}

function listen(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(server));
  });
}

describe('findFreePort', () => {
  it('picks ports below the kernel ephemeral range that can be bound at once (20 picks)', async () => {
    const max = Math.min(RANDOM_PORT_MAX, ephemeralFrom() - 1);
    for (let i = 0; i < 20; i++) {
      const port = await findFreePort('127.0.0.1');
      expect(port).toBeGreaterThanOrEqual(RANDOM_PORT_MIN);
      expect(port).toBeLessThanOrEqual(max);
      const server = await listen(port);
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('rejects with the bind error for an address that is not this machine', async () => {
    // 192.0.2.0/24 is TEST-NET-1: never assigned to a host.
    await expect(findFreePort('192.0.2.1')).rejects.toMatchObject({ code: 'EADDRNOTAVAIL' });
  });

  it('guesses ports for a remote rank 0 in the same range', () => {
    for (let i = 0; i < 1000; i++) {
      const port = randomPort();
      expect(port).toBeGreaterThanOrEqual(RANDOM_PORT_MIN);
      expect(port).toBeLessThanOrEqual(RANDOM_PORT_MAX);
    }
  });
});
