package dev.kiln.runtime.tokenizer;

import java.util.Arrays;

/**
 * A bounded cache from a pre-token's bytes to its token ids. Natural text repeats a small set of pre-tokens (" the",
 * ",", " and") so most lookups hit and skip the merge loop. Keys and values live in two flat arenas (no object per
 * entry); when the table is half full or an arena is full, everything is dropped at once, so memory stays fixed no
 * matter how much text goes through. Not thread-safe: one per {@link Encoder}.
 */
final class PieceCache {
  /** Longer pre-tokens are rare and cheap to skip; caching them would only churn the arenas. */
  static final int MAX_KEY_BYTES = 64;

  private final int mask;
  private final int[] keyOff;
  private final int[] hashes;
  private final short[] keyLen;
  private final int[] valOff;
  private final short[] valLen;
  private final byte[] keyArena;
  private final int[] valArena;
  private int keyUsed;
  private int valUsed;
  private int size;
  private final int maxSize;

  PieceCache(int slots) {
    int cap = Integer.highestOneBit(Math.max(64, slots - 1)) << 1;
    mask = cap - 1;
    keyOff = new int[cap];
    hashes = new int[cap];
    keyLen = new short[cap];
    valOff = new int[cap];
    valLen = new short[cap];
    maxSize = cap / 2;
    keyArena = new byte[maxSize * 12];
    valArena = new int[maxSize * 4];
    Arrays.fill(keyOff, -1);
  }

  static int hash(byte[] b, int s, int e) {
    int h = 0x811C9DC5;
    for (int i = s; i < e; i++) {
      h = (h ^ b[i]) * 0x01000193;
    }
    return h ^ (h >>> 15);
  }

  /**
   * Copies the cached ids of {@code b[s, e)} into {@code out} and returns true, or returns false on a miss.
   */
  boolean get(byte[] b, int s, int e, int h, IntList out) {
    int len = e - s;
    int i = h & mask;
    while (true) {
      int off = keyOff[i];
      if (off < 0) {
        return false;
      }
      if (hashes[i] == h && keyLen[i] == len && Arrays.equals(keyArena, off, off + len, b, s, e)) {
        out.addAll(valArena, valOff[i], valLen[i]);
        return true;
      }
      i = (i + 1) & mask;
    }
  }

  void put(byte[] b, int s, int e, int h, int[] ids, int count) {
    int len = e - s;
    if (len > MAX_KEY_BYTES) {
      return;
    }
    if (size >= maxSize || keyUsed + len > keyArena.length || valUsed + count > valArena.length) {
      clear();
    }
    int i = h & mask;
    while (keyOff[i] >= 0) {
      i = (i + 1) & mask;
    }
    System.arraycopy(b, s, keyArena, keyUsed, len);
    System.arraycopy(ids, 0, valArena, valUsed, count);
    keyOff[i] = keyUsed;
    hashes[i] = h;
    keyLen[i] = (short) len;
    valOff[i] = valUsed;
    valLen[i] = (short) count;
    keyUsed += len;
    valUsed += count;
    size++;
  }

  void clear() {
    Arrays.fill(keyOff, -1);
    keyUsed = 0;
    valUsed = 0;
    size = 0;
  }
}
