package dev.kiln.runtime.tokenizer;

/**
 * Rank lookup for merges: the pair (left id, right id), packed in one long, maps to the merge's rank (its line in
 * {@code merges.txt}). Open addressing with linear probing over primitive arrays, because this lookup runs once per
 * adjacent pair per merge step of every uncached pre-token.
 */
final class MergeTable {
  static final int NONE = Integer.MAX_VALUE;

  private final long[] keys;
  private final int[] ranks;
  private final int mask;

  MergeTable(int[] left, int[] right) {
    int cap = Integer.highestOneBit(Math.max(16, left.length * 3)) << 1;
    keys = new long[cap];
    ranks = new int[cap];
    mask = cap - 1;
    java.util.Arrays.fill(keys, -1L);
    for (int r = 0; r < left.length; r++) {
      long k = key(left[r], right[r]);
      int i = slot(k);
      while (keys[i] != -1L && keys[i] != k) {
        i = (i + 1) & mask;
      }
      if (keys[i] == -1L) {
        keys[i] = k;
        ranks[i] = r;
      }
      // A repeated merge keeps its first (lowest) rank; the loader reports duplicates before we get here.
    }
  }

  static long key(int left, int right) {
    return ((long) left << 32) | (right & 0xFFFFFFFFL);
  }

  private int slot(long k) {
    long h = k * 0x9E3779B97F4A7C15L;
    return (int) (h >>> 40) & mask;
  }

  /** The rank of merging {@code left} then {@code right}, or {@link #NONE}. */
  int rank(int left, int right) {
    long k = key(left, right);
    int i = slot(k);
    while (true) {
      long kk = keys[i];
      if (kk == k) {
        return ranks[i];
      }
      if (kk == -1L) {
        return NONE;
      }
      i = (i + 1) & mask;
    }
  }
}
