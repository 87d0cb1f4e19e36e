/**
 * Rank 0's side of the command loop: runs commands that every data rank takes part in, one at a
 * time, in a single order (the SPMD rule: all members enter the same collectives in the same
 * order). A command is announced point-to-point, then the collective it names runs over the
 * communicator of rank 0 and the data ranks.
 */
import type { Communicator } from '../comm/communicator.js';
import { TAG_COMMAND, type Command, type InventoryReport, type RankReport } from './messages.js';

export class CommandRunner {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly comm: Communicator) {}

  /** Every data rank's inventory (chunk list, usage, capacity). */
  inventory(): Promise<InventoryReport[]> {
    return this.run({ op: 'inventory' }, async () =>
      this.dataRanksOnly(await this.comm.gather<InventoryReport | null>(null, 0)),
    );
  }

  report(): Promise<RankReport[]> {
    return this.run({ op: 'report' }, async () =>
      this.dataRanksOnly(await this.comm.gather<RankReport | null>(null, 0)),
    );
  }

  /** Deletes the listed chunk ids on each rank (index = rank); resolves with the total deleted. */
  collectGarbage(idsByRank: string[][]): Promise<number> {
    return this.run({ op: 'collect-garbage' }, async () => {
      const lists = [...Array(this.comm.size).keys()].map(
        (r) => idsByRank[this.comm.worldRankOf(r)] ?? [],
      );
      await this.comm.scatter(lists, 0);
      const counts = (await this.comm.gather(0, 0)) ?? [];
      return counts.reduce((a, b) => a + b, 0);
    });
  }

  shutdown(): Promise<void> {
    return this.run({ op: 'shutdown' }, async () => {});
  }

  private dataRanksOnly<T>(values: Array<T | null> | undefined): T[] {
    return (values ?? []).filter((v): v is T => v !== null);
  }

  private run<T>(command: Command, collective: () => Promise<T>): Promise<T> {
    const next = this.tail.then(async () => {
      await Promise.all(
        [...Array(this.comm.size).keys()]
          .filter((r) => r !== this.comm.rank)
          .map((r) => this.comm.send(r, TAG_COMMAND, command)),
      );
      return collective();
    });
    this.tail = next.catch(() => undefined);
    return next;
  }
}
