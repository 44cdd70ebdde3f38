/**
 * Group commit. Work submitted while a commit is in flight waits for the next one, and that one carries all of it:
 * one transaction, one lock, one WAL flush for many callers. A lone caller pays nothing extra: with nothing in flight
 * its work is committed at once. Each caller's promise settles after the commit that carried its work, so nobody is
 * answered before what they asked for is durable.
 *
 * A batch that fails is committed again one item at a time, so a bad item fails alone and the others still land.
 */
export class GroupCommit<T, R> {
  private readonly queue: Array<{ item: T; resolve: (r: R) => void; reject: (err: unknown) => void }> = [];
  private committing = false;

  /** `commit` writes the items in one transaction and answers each one's result, in order */
  constructor(
    private readonly commit: (items: T[]) => Promise<R[]>,
    private readonly maxBatch = 500,
  ) {}

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.committing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.committing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const results = await this.commit(batch.map((b) => b.item));
          batch.forEach((b, i) => b.resolve(results[i] as R));
        } catch (err) {
          if (batch.length === 1) batch[0]!.reject(err);
          else for (const b of batch) await this.commit([b.item]).then(([r]) => b.resolve(r as R), b.reject);
        }
      }
    } finally {
      this.committing = false;
    }
  }
}
