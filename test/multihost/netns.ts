/**
 * Test hosts made of Linux network namespaces, for the multi-host tier (docs/TESTING.md).
 *
 * One run builds, for a prefix `mf<pid>`:
 *
 *   mf<pid>-br   a namespace holding only a bridge `br0` and one veth end per host (`v1`..`vN`)
 *   mf<pid>-hI   host I: `lo` and `eth0` (the other end of `vI`) with address 10.231.<net>.I/24
 *
 * Every link is created inside these namespaces (`ip -n NS link add ... peer ... netns NS`), so
 * nothing is ever added to the machine's own network namespace, and the /24 exists only behind
 * the bridge: test traffic cannot reach any other machine. Interface names are per namespace, so
 * concurrent runs (different pids) never collide even though they use the same short names.
 *
 * Everything here is synchronous with a timeout on every command: setup and teardown take a few
 * milliseconds per command, and the teardown must also work from a process 'exit' handler.
 */
import { execFileSync } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';

/** Deadline of one `ip` command; they normally take a few milliseconds. */
const COMMAND_TIMEOUT_MS = 10_000;

export interface NetnsHost {
  /** The namespace name, also the host name in the hostfile (`{host}` of the exec template). */
  name: string;
  /** The host's only non-loopback address. */
  addr: string;
}

export interface TestNetwork {
  /** `mf<pid>`: every namespace of this network starts with it. */
  prefix: string;
  /** The namespace holding the bridge. */
  bridge: string;
  hosts: NetnsHost[];
}

/** Runs `ip ARGS` and returns its stdout; throws with ip's stderr in the message. */
function ip(args: readonly string[]): string {
  try {
    return execFileSync('ip', args, {
      encoding: 'utf8',
      timeout: COMMAND_TIMEOUT_MS,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    const err = error as NodeJS.ErrnoException & { stderr?: string };
    const why = err.code === 'ENOENT' ? 'ip not found' : (err.stderr ?? '').trim() || err.message;
    throw new Error(`ip ${args.join(' ')}: ${why}`, { cause: error });
  }
}

/** The prefix of this process's namespaces. */
export function networkPrefix(): string {
  return `mf${process.pid}`;
}

/**
 * Why namespaces cannot be built here, or undefined when they can. Checks the platform, root, the
 * `ip` command, and really creates a throw-away namespace with a bridge and a veth pair (which
 * needs CAP_SYS_ADMIN, CAP_NET_ADMIN and the bridge and veth drivers), then deletes it.
 */
export function netnsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (${process.platform})`;
  const uid = process.getuid?.();
  if (uid !== 0) return `not root (uid ${uid}): ip netns needs CAP_SYS_ADMIN`;
  try {
    ip(['-V']);
  } catch {
    return 'iproute2 is not installed (no ip command)';
  }
  const probe = `${networkPrefix()}-probe`;
  try {
    ip(['netns', 'add', probe]);
  } catch (error) {
    return `cannot create a network namespace: ${(error as Error).message}`;
  }
  try {
    ip(['-n', probe, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', probe, 'link', 'add', 'v1', 'type', 'veth', 'peer', 'name', 'p1']);
    return undefined;
  } catch (error) {
    return `cannot create a bridge and a veth pair: ${(error as Error).message}`;
  } finally {
    deleteNamespace(probe);
  }
}

/**
 * Builds `hostCount` hosts on one bridge and waits (bounded) until every link is up and every
 * bridge port forwards. On any failure it deletes what it built and rethrows. The namespaces are
 * also deleted when the process exits without calling destroyTestNetwork.
 */
export async function createTestNetwork(hostCount: number): Promise<TestNetwork> {
  const prefix = networkPrefix();
  // 10.231.<net>.0/24 exists only inside these namespaces; <net> varies by pid only to make the
  // addresses of two concurrent runs easy to tell apart in a transcript.
  const net = (process.pid % 250) + 1;
  const network: TestNetwork = {
    prefix,
    bridge: `${prefix}-br`,
    hosts: Array.from({ length: hostCount }, (_, i) => ({
      name: `${prefix}-h${i + 1}`,
      addr: `10.231.${net}.${i + 1}`,
    })),
  };
  if (exitNetworks.size === 0) process.on('exit', exitCleanup);
  exitNetworks.add(network);
  try {
    const br = network.bridge;
    ip(['netns', 'add', br]);
    ip(['-n', br, 'link', 'set', 'lo', 'up']);
    ip(['-n', br, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', br, 'link', 'set', 'br0', 'up']);
    network.hosts.forEach((host, i) => {
      const port = `v${i + 1}`;
      ip(['netns', 'add', host.name]);
      ip(['-n', host.name, 'link', 'set', 'lo', 'up']);
      ip([
        '-n',
        br,
        'link',
        'add',
        port,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        host.name,
      ]);
      ip(['-n', br, 'link', 'set', port, 'master', 'br0']);
      ip(['-n', br, 'link', 'set', port, 'up']);
      ip(['-n', host.name, 'addr', 'add', `${host.addr}/24`, 'dev', 'eth0']);
      ip(['-n', host.name, 'link', 'set', 'eth0', 'up']);
    });
    await waitForLinks(network, 10_000);
    return network;
  } catch (error) {
    destroyTestNetwork(network);
    throw error;
  }
}

/** Polls (no event exists for it) until every host's eth0 is up and every bridge port forwards. */
async function waitForLinks(network: TestNetwork, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = network.hosts.flatMap((host, i) => {
      const [eth0] = JSON.parse(ip(['-j', '-n', host.name, 'link', 'show', 'dev', 'eth0'])) as [
        { operstate?: string },
      ];
      const [port] = JSON.parse(
        ip(['-j', '-d', '-n', network.bridge, 'link', 'show', 'dev', `v${i + 1}`]),
      ) as [{ operstate?: string; linkinfo?: { info_slave_data?: { state?: string } } }];
      const problems: string[] = [];
      if (eth0?.operstate !== 'UP') problems.push(`${host.name} eth0 is ${eth0?.operstate}`);
      const state = port?.linkinfo?.info_slave_data?.state;
      if (state !== 'forwarding') problems.push(`bridge port v${i + 1} is ${state}`);
      return problems;
    });
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`test network not ready after ${timeoutMs} ms: ${pending.join('; ')}`);
    }
    await delay(50);
  }
}

/** The pids of the processes running in namespace `name` (none if it does not exist). */
export function namespacePids(name: string): number[] {
  try {
    return ip(['netns', 'pids', name])
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The inode of namespace `name`, as a process inside it sees its own /proc/self/ns/net (the
 * number `stat -L` and Node's fs.statSync report for that link).
 */
export function namespaceInode(name: string): number {
  const out = execFileSync(
    'ip',
    ['netns', 'exec', name, 'stat', '-L', '-c', '%i', '/proc/self/ns/net'],
    {
      encoding: 'utf8',
      timeout: COMMAND_TIMEOUT_MS,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return Number(out.trim());
}

/**
 * Kills (SIGKILL) every process still running in the network's namespaces and deletes the
 * namespaces, hosts first. Never throws: it is the teardown of last resort. Returns what it had to
 * kill, `namespace: pids`, so a caller can report leaked processes.
 */
export function destroyTestNetwork(network: TestNetwork): string[] {
  if (exitNetworks.delete(network) && exitNetworks.size === 0) process.off('exit', exitCleanup);
  const killed: string[] = [];
  for (const name of [...network.hosts.map((host) => host.name), network.bridge]) {
    const pids = namespacePids(name);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    if (pids.length > 0) killed.push(`${name}: ${pids.join(' ')}`);
    deleteNamespace(name);
  }
  return killed;
}

/** Deletes namespace `name` if it exists; never throws. */
function deleteNamespace(name: string): void {
  try {
    ip(['netns', 'del', name]);
  } catch {
    // It did not exist (a failed setup), or is already gone.
  }
}

/** Networks not yet destroyed, deleted by the 'exit' handler should the test process end early. */
const exitNetworks = new Set<TestNetwork>();

function exitCleanup(): void {
  for (const network of [...exitNetworks]) destroyTestNetwork(network);
}

/** Hostfile text for the network: `NAME slots=S addr=ADDR` per host, `addr` overridable. */
export function hostfileFor(
  network: TestNetwork,
  slots: number,
  addrOf: (host: NetnsHost, index: number) => string = (host) => host.addr,
): string {
  return network.hosts
    .map((host, i) => `${host.name} slots=${slots} addr=${addrOf(host, i)}\n`)
    .join('');
}
