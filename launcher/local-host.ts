/**
 * Which host names mean "this machine". A local host is started by fork instead of ssh, and its
 * ranks bind on 127.0.0.1 unless the hostfile gives addr=. The decision is a pure function of a
 * LocalIdentity, so tests can describe any machine; currentLocalIdentity() reads the real one.
 */
import os from 'node:os';

export interface LocalIdentity {
  /** os.hostname() of this machine. */
  hostname: string;
  /** Every address of every local interface (IPv4 and IPv6, without zone ids). */
  addresses: readonly string[];
}

const LOOPBACK_NAMES = new Set([
  'localhost',
  'localhost.localdomain',
  'ip6-localhost',
  'ip6-loopback',
]);

/**
 * True when `host` names this machine: a loopback name or address (localhost, 127.x.x.x, ::1),
 * the machine's host name (full or its first label), or an address of a local interface.
 * A `user@` prefix is ignored. Comparison is case-insensitive.
 */
export function isLocalHost(host: string, identity: LocalIdentity): boolean {
  const bare = stripAddress(host.slice(host.lastIndexOf('@') + 1)).toLowerCase();
  if (LOOPBACK_NAMES.has(bare) || bare === '::1' || /^127\.\d+\.\d+\.\d+$/.test(bare)) return true;
  const hostname = identity.hostname.toLowerCase();
  if (hostname !== '' && (bare === hostname || bare === hostname.split('.')[0])) return true;
  return identity.addresses.some((address) => stripAddress(address).toLowerCase() === bare);
}

/** The identity of the machine this process runs on. */
export function currentLocalIdentity(): LocalIdentity {
  const addresses = Object.values(os.networkInterfaces())
    .flatMap((list) => list ?? [])
    .map((info) => info.address);
  return { hostname: os.hostname(), addresses };
}

/** Removes IPv6 brackets and zone ids (`[fe80::1%eth0]` → `fe80::1`). */
function stripAddress(address: string): string {
  const unbracketed = /^\[(.*)\]$/.exec(address)?.[1] ?? address;
  const percent = unbracketed.indexOf('%');
  return percent === -1 ? unbracketed : unbracketed.slice(0, percent);
}
