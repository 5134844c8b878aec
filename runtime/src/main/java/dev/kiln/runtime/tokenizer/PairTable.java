package dev.kiln.runtime.tokenizer;

import java.util.Arrays;

/**
 * Training's pair statistics: for each adjacent pair of token ids (packed in a long), its count weighted by word
 * frequency, and the words it occurs in (an index that may hold stale entries; callers re-check). Also tracks which
 * pairs a merge step touched and their count before the step, so only changed pairs go back into the heap.
 */
final class PairTable {
  private static final long EMPTY = -1L;
  private int mask;
  private long[] keys;
  private long[] counts;
  private int[][] words;
  private int[] wordCount;
  private int[] stamp;
  private long[] before;
  private int size;

  PairTable() {
    alloc(1 << 12);
  }

  private void alloc(int cap) {
    mask = cap - 1;
    keys = new long[cap];
    counts = new long[cap];
    words = new int[cap][];
    wordCount = new int[cap];
    stamp = new int[cap];
    before = new long[cap];
    Arrays.fill(keys, EMPTY);
  }

  private int find(long k) {
    int i = (int) ((k * 0x9E3779B97F4A7C15L) >>> 40) & mask;
    while (keys[i] != EMPTY && keys[i] != k) {
      i = (i + 1) & mask;
    }
    return i;
  }

  private int slot(long k) {
    int i = find(k);
    if (keys[i] == EMPTY) {
      if ((size + 1) * 2 > mask) {
        rehash();
        i = find(k);
      }
      keys[i] = k;
      size++;
    }
    return i;
  }

  private void rehash() {
    long[] oKeys = keys;
    long[] oCounts = counts;
    int[][] oWords = words;
    int[] oWordCount = wordCount;
    int[] oStamp = stamp;
    long[] oBefore = before;
    alloc((mask + 1) * 2);
    for (int j = 0; j < oKeys.length; j++) {
      if (oKeys[j] != EMPTY) {
        int i = find(oKeys[j]);
        keys[i] = oKeys[j];
        counts[i] = oCounts[j];
        words[i] = oWords[j];
        wordCount[i] = oWordCount[j];
        stamp[i] = oStamp[j];
        before[i] = oBefore[j];
      }
    }
  }

  long count(long k) {
    int i = find(k);
    return keys[i] == EMPTY ? 0 : counts[i];
  }

  /**
   * Adds {@code delta} to a pair's count; records the count before the first change in step {@code step} and
   * appends the key to {@code touched} then.
   */
  void add(long k, long delta, int step, LongList touched) {
    int i = slot(k);
    if (stamp[i] != step) {
      stamp[i] = step;
      before[i] = counts[i];
      touched.add(k);
    }
    counts[i] += delta;
  }

  /** The count a touched pair had before step's changes. */
  long countBefore(long k) {
    return before[find(k)];
  }

  /** Notes that word {@code w} contains pair {@code k}; consecutive repeats of the same word are dropped. */
  void index(long k, int w) {
    int i = slot(k);
    int[] l = words[i];
    int n = wordCount[i];
    if (l == null) {
      l = words[i] = new int[4];
    } else if (n > 0 && l[n - 1] == w) {
      return;
    } else if (n == l.length) {
      l = words[i] = Arrays.copyOf(l, n * 2);
    }
    l[n] = w;
    wordCount[i] = n + 1;
  }

  /** Removes and returns the word index of a pair (its entries may be stale or repeated). */
  int[] takeWords(long k) {
    int i = find(k);
    if (keys[i] == EMPTY || words[i] == null) {
      return new int[0];
    }
    int[] l = Arrays.copyOf(words[i], wordCount[i]);
    words[i] = null;
    wordCount[i] = 0;
    return l;
  }

  /** Visits every pair with a positive count. */
  void forEachPositive(java.util.function.LongConsumer pairKey) {
    for (int j = 0; j < keys.length; j++) {
      if (keys[j] != EMPTY && counts[j] > 0) {
        pairKey.accept(keys[j]);
      }
    }
  }

  /** A growable list of longs. */
  static final class LongList {
    long[] a = new long[64];
    int n;

    void add(long v) {
      if (n == a.length) {
        a = Arrays.copyOf(a, n * 2);
      }
      a[n++] = v;
    }
  }
}
