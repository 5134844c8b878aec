package dev.kiln.runtime.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.PriorityQueue;

/**
 * Encodes text with one {@link BpeTokenizer}; holds the per-thread scratch space and pre-token cache, so it is not
 * thread-safe: use one encoder per thread ({@link BpeTokenizer#newEncoder()}). Within each pre-token the merges are
 * applied by rank: repeatedly the adjacent pair with the lowest rank is merged, the leftmost one when a rank occurs
 * twice, until no adjacent pair has a merge.
 */
public final class Encoder {
  /** Pre-tokens longer than this use the heap-based merge, which stays O(n log n) on huge whitespace runs. */
  static final int LONG_PIECE = 256;

  private final BpeTokenizer tok;
  private final MergeTable merges;
  private final int[] mergeResult;
  private final int[] byteToId;
  private final PieceCache cache;
  private int[] ids = new int[LONG_PIECE + 1];
  private int[] ranks = new int[LONG_PIECE + 1];

  Encoder(BpeTokenizer tok, int cacheSlots) {
    this.tok = tok;
    this.merges = tok.mergeTable();
    this.mergeResult = tok.mergeResults();
    this.byteToId = tok.byteToIdTable();
    this.cache = new PieceCache(cacheSlots);
  }

  /** Encodes a string, matching the tokenizer's special tokens. */
  public int[] encode(String text) {
    byte[] b = text.getBytes(StandardCharsets.UTF_8);
    IntList out = new IntList(b.length / 3 + 16);
    encode(b, 0, b.length, out);
    return out.toArray();
  }

  /** Encodes UTF-8 bytes {@code b[from, to)}, matching special tokens, appending ids to {@code out}. */
  public void encode(byte[] b, int from, int to, IntList out) {
    SpecialTokens sp = tok.specialTokens();
    int i = from;
    while (i < to) {
      long hit = sp.find(b, i, to);
      if (hit < 0) {
        encodeOrdinary(b, i, to, out);
        return;
      }
      int at = (int) hit;
      int which = (int) (hit >>> 32);
      encodeOrdinary(b, i, at, out);
      out.add(tok.specialId(which));
      i = at + sp.bytes(which).length;
    }
  }

  /** Encodes UTF-8 bytes as ordinary text: special-token strings in it are split like any other text. */
  public void encodeOrdinary(byte[] b, int from, int to, IntList out) {
    int i = from;
    while (i < to) {
      int e = PreTokenizer.next(b, i, to);
      encodePiece(b, i, e, out);
      i = e;
    }
  }

  private void encodePiece(byte[] b, int s, int e, IntList out) {
    int n = e - s;
    if (n == 1) {
      out.add(byteToId[b[s] & 0xFF]);
      return;
    }
    int h = 0;
    if (n <= PieceCache.MAX_KEY_BYTES) {
      h = PieceCache.hash(b, s, e);
      if (cache.get(b, s, e, h, out)) {
        return;
      }
    }
    int count = n > LONG_PIECE ? mergeLong(b, s, e) : mergeShort(b, s, e);
    out.addAll(ids, 0, count);
    if (n <= PieceCache.MAX_KEY_BYTES) {
      cache.put(b, s, e, h, ids, count);
    }
  }

  /** Merges a short pre-token in {@code ids}; returns the number of tokens. O(n²) with tiny constants. */
  int mergeShort(byte[] b, int s, int e) {
    int n = e - s;
    int[] ids = this.ids;
    int[] ranks = this.ranks;
    for (int k = 0; k < n; k++) {
      ids[k] = byteToId[b[s + k] & 0xFF];
    }
    for (int k = 0; k < n - 1; k++) {
      ranks[k] = merges.rank(ids[k], ids[k + 1]);
    }
    while (n > 1) {
      int best = MergeTable.NONE;
      int at = -1;
      for (int k = 0; k < n - 1; k++) {
        if (ranks[k] < best) {
          best = ranks[k];
          at = k;
        }
      }
      if (at < 0) {
        break;
      }
      ids[at] = mergeResult[best];
      System.arraycopy(ids, at + 2, ids, at + 1, n - at - 2);
      if (n - at - 3 > 0) {
        System.arraycopy(ranks, at + 2, ranks, at + 1, n - at - 3);
      }
      n--;
      if (at > 0) {
        ranks[at - 1] = merges.rank(ids[at - 1], ids[at]);
      }
      if (at < n - 1) {
        ranks[at] = merges.rank(ids[at], ids[at + 1]);
      }
    }
    return n;
  }

  /**
   * Same result as {@link #mergeShort} for long pre-tokens: a linked list of tokens and a min-heap of (rank,
   * position) with lazy invalidation. Positions are byte offsets, so ordering by them is ordering left to right.
   */
  int mergeLong(byte[] b, int s, int e) {
    int n = e - s;
    if (ids.length < n) {
      ids = new int[n];
      ranks = new int[n];
    }
    int[] tokenAt = new int[n];
    int[] next = new int[n];
    int[] prev = new int[n];
    int[] pairRank = new int[n];
    PriorityQueue<Long> heap = new PriorityQueue<>();
    for (int k = 0; k < n; k++) {
      tokenAt[k] = byteToId[b[s + k] & 0xFF];
      next[k] = k + 1 < n ? k + 1 : -1;
      prev[k] = k - 1;
    }
    for (int k = 0; k < n - 1; k++) {
      pairRank[k] = merges.rank(tokenAt[k], tokenAt[k + 1]);
      if (pairRank[k] != MergeTable.NONE) {
        heap.add(((long) pairRank[k] << 32) | k);
      }
    }
    pairRank[n - 1] = MergeTable.NONE;
    boolean[] dead = new boolean[n];
    while (!heap.isEmpty()) {
      long top = heap.poll();
      int k = (int) top;
      int r = (int) (top >>> 32);
      if (dead[k] || pairRank[k] != r) {
        continue;
      }
      int right = next[k];
      tokenAt[k] = mergeResult[r];
      dead[right] = true;
      next[k] = next[right];
      if (next[k] >= 0) {
        prev[next[k]] = k;
      }
      int p = prev[k];
      if (p >= 0) {
        pairRank[p] = merges.rank(tokenAt[p], tokenAt[k]);
        if (pairRank[p] != MergeTable.NONE) {
          heap.add(((long) pairRank[p] << 32) | p);
        }
      }
      pairRank[k] = next[k] >= 0 ? merges.rank(tokenAt[k], tokenAt[next[k]]) : MergeTable.NONE;
      if (pairRank[k] != MergeTable.NONE) {
        heap.add(((long) pairRank[k] << 32) | k);
      }
    }
    int count = 0;
    for (int k = 0; k >= 0; k = next[k]) {
      ids[count++] = tokenAt[k];
    }
    return count;
  }

  /** Test hook: the ids of the last merge, valid for {@code count} entries. */
  int[] scratch() {
    return Arrays.copyOf(ids, ids.length);
  }
}
