/**
 * Rank 0's side of the command loop: runs commands that every data rank takes part in, one at a
 * time, in a single order (the SPMD rule: all members enter the same collectives in the same
 * order). A command is announced point-to-point, then the collective it names runs over the
 * command communicator: the world at first, then — after a rank dies or joins — a communicator
 * over rank 0 and the live data ranks, named by an epoch (ULFM's shrink, done by agreement from
 * the root rather than by a vote, since rank 0 alone decides who is alive).
 */
import type { Communicator } from '../comm/communicator.js';
import { TAG_COMMAND, type Command, type InventoryReport, type RankReport } from './messages.js';

export class CommandRunner {
  private tail: Promise<unknown> = Promise.resolve();
  private comm: Communicator;
  private epoch = 0;

  constructor(
    private readonly world: Communicator,
    private readonly timeoutMs = 30_000,
  ) {
    this.comm = world;
  }

  /** World ranks the commands currently run over. */
  members(): readonly number[] {
    return this.comm.group;
  }

  /** Every data rank's inventory (chunk list, usage, capacity). */
  inventory(): Promise<InventoryReport[]> {
    return this.run({ op: 'inventory' }, async (comm) =>
      dataRanksOnly(
        await comm.gather<InventoryReport | null>(null, 0, { timeoutMs: this.timeoutMs }),
      ),
    );
  }

  report(): Promise<RankReport[]> {
    return this.run({ op: 'report' }, async (comm) =>
      dataRanksOnly(await comm.gather<RankReport | null>(null, 0, { timeoutMs: this.timeoutMs })),
    );
  }

  /** Deletes the listed chunk ids on each rank (index = world rank); resolves with the total deleted. */
  collectGarbage(idsByRank: string[][]): Promise<number> {
    return this.run({ op: 'collect-garbage' }, async (comm) => {
      const lists = comm.group.map((w) => idsByRank[w] ?? []);
      await comm.scatter(lists, 0, { timeoutMs: this.timeoutMs });
      const counts = (await comm.gather(0, 0, { timeoutMs: this.timeoutMs })) ?? [];
      return counts.reduce((a, b) => a + b, 0);
    });
  }

  /**
   * From now on, commands run over rank 0 and `dataRanks` (world ranks). Also the way to resync
   * after a collective failed half-way: the new context starts fresh on every member.
   */
  reconfigure(dataRanks: readonly number[]): Promise<void> {
    const group = [0, ...[...dataRanks].filter((r) => r !== 0).sort((a, b) => a - b)];
    const epoch = ++this.epoch;
    const command: Command = { op: 'reconfigure', epoch, group };
    const next = this.tail.then(async () => {
      await Promise.allSettled(
        group.slice(1).map((w) => this.world.send(this.world.localOf(w), TAG_COMMAND, command)),
      );
      if (this.comm !== this.world) this.comm.close();
      this.comm = this.world.sub(group, { name: `cmd${epoch}` });
    });
    this.tail = next.catch(() => undefined);
    return next;
  }

  shutdown(): Promise<void> {
    return this.run({ op: 'shutdown' }, async () => {});
  }

  private run<T>(command: Command, collective: (comm: Communicator) => Promise<T>): Promise<T> {
    const next = this.tail.then(async () => {
      const comm = this.comm;
      await Promise.all(
        comm.group
          .filter((w) => w !== 0)
          .map((w) => this.world.send(this.world.localOf(w), TAG_COMMAND, command)),
      );
      return collective(comm);
    });
    this.tail = next.catch(() => undefined);
    return next;
  }
}

function dataRanksOnly<T>(values: Array<T | null> | undefined): T[] {
  return (values ?? []).filter((v): v is T => v !== null);
}
