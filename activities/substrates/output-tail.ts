// What an exec keeps of a stream its caller already reads live: the last bytes
// only. A hook that prints 50 MB streams every line to the log, while the
// controller holds at most `limit` bytes of it per stream.

/** Bytes of each stream an exec keeps when its caller streams it (onStdout / onStderr). */
export const KEPT_OUTPUT_BYTES = 64 * 1024;

export class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;
  /** Bytes dropped from the front to stay within the limit. */
  dropped = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size <= this.limit) return;
    // Keep the last `limit` bytes: drop whole chunks, then trim the first one left.
    let excess = this.size - this.limit;
    while (excess > 0 && this.chunks[0]!.length <= excess) {
      const first = this.chunks.shift()!;
      excess -= first.length;
      this.size -= first.length;
      this.dropped += first.length;
    }
    if (excess > 0) {
      this.chunks[0] = this.chunks[0]!.subarray(excess);
      this.size -= excess;
      this.dropped += excess;
    }
    // subarray keeps the whole chunk alive: copy once the list is long or the head was cut
    if (this.chunks.length > 64 || excess > 0) this.chunks = [Buffer.concat(this.chunks, this.size)];
  }

  /** The kept bytes as text, led by a note of what was dropped. */
  text(): string {
    const kept = Buffer.concat(this.chunks, this.size).toString('utf8');
    return this.dropped > 0 ? `[charmflow: ${this.dropped} earlier bytes dropped]\n${kept}` : kept;
  }
}

/** A stream's collector: everything when nobody reads it live, else a bounded tail. */
export function outputCollector(streamed: boolean): OutputTail {
  return new OutputTail(streamed ? KEPT_OUTPUT_BYTES : Number.POSITIVE_INFINITY);
}
