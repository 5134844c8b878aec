package dev.kiln.runtime.tokenizer;

import java.util.Arrays;

/**
 * Counts of unique pre-tokens (byte strings), the only thing BPE training keeps of its corpus: memory grows with the
 * number of distinct pre-tokens, not with the text. Open addressing over flat arrays, keys in one byte arena.
 */
final class PreTokenCounts {
  private int mask;
  private int[] keyOff;
  private int[] keyLen;
  private int[] hashes;
  private long[] counts;
  private byte[] arena = new byte[1 << 16];
  private int arenaUsed;
  private int size;

  PreTokenCounts() {
    alloc(1 << 12);
  }

  private void alloc(int cap) {
    mask = cap - 1;
    keyOff = new int[cap];
    keyLen = new int[cap];
    hashes = new int[cap];
    counts = new long[cap];
    Arrays.fill(keyOff, -1);
  }

  int size() {
    return size;
  }

  void add(byte[] b, int s, int e, long count) {
    int len = e - s;
    int h = PieceCache.hash(b, s, e);
    int i = h & mask;
    while (true) {
      int off = keyOff[i];
      if (off < 0) {
        break;
      }
      if (hashes[i] == h && keyLen[i] == len && Arrays.equals(arena, off, off + len, b, s, e)) {
        counts[i] += count;
        return;
      }
      i = (i + 1) & mask;
    }
    if (arenaUsed + len > arena.length) {
      arena = Arrays.copyOf(arena, Math.max(arena.length * 2, arenaUsed + len));
    }
    System.arraycopy(b, s, arena, arenaUsed, len);
    keyOff[i] = arenaUsed;
    keyLen[i] = len;
    hashes[i] = h;
    counts[i] = count;
    arenaUsed += len;
    size++;
    if (size * 2 > mask) {
      rehash();
    }
  }

  private void rehash() {
    int[] oOff = keyOff;
    int[] oLen = keyLen;
    int[] oHash = hashes;
    long[] oCount = counts;
    alloc((mask + 1) * 2);
    for (int j = 0; j < oOff.length; j++) {
      if (oOff[j] >= 0) {
        int i = oHash[j] & mask;
        while (keyOff[i] >= 0) {
          i = (i + 1) & mask;
        }
        keyOff[i] = oOff[j];
        keyLen[i] = oLen[j];
        hashes[i] = oHash[j];
        counts[i] = oCount[j];
      }
    }
  }

  /** Adds every count of {@code other} to this one. */
  void addAll(PreTokenCounts other) {
    for (int j = 0; j < other.keyOff.length; j++) {
      int off = other.keyOff[j];
      if (off >= 0) {
        add(other.arena, off, off + other.keyLen[j], other.counts[j]);
      }
    }
  }

  /** Pre-tokenizes text {@code b[from, to)} (no special tokens inside) and counts its pre-tokens. */
  void countText(byte[] b, int from, int to) {
    int i = from;
    while (i < to) {
      int e = PreTokenizer.next(b, i, to);
      add(b, i, e, 1);
      i = e;
    }
  }

  /** Splits {@code b[from, to)} on special tokens (which are not counted) and counts the text between them. */
  void countChunk(byte[] b, int from, int to, SpecialTokens specials) {
    int i = from;
    while (i < to) {
      long hit = specials.find(b, i, to);
      if (hit < 0) {
        countText(b, i, to);
        return;
      }
      int at = (int) hit;
      countText(b, i, at);
      i = at + specials.bytes((int) (hit >>> 32)).length;
    }
  }

  /** Visits every (pre-token bytes, count); the byte array is the arena, valid for the given range. */
  interface Visitor {
    void visit(byte[] arena, int off, int len, long count);
  }

  void forEach(Visitor v) {
    for (int j = 0; j < keyOff.length; j++) {
      if (keyOff[j] >= 0) {
        v.visit(arena, keyOff[j], keyLen[j], counts[j]);
      }
    }
  }
}
