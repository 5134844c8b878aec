package dev.kiln.runtime.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;

/**
 * Finds special tokens in UTF-8 text, leftmost first and, among those starting at the same byte, longest first (so
 * {@code <|endoftext|><|endoftext|>}, when it is a special token itself, wins over two {@code <|endoftext|>}). Text
 * between special tokens is pre-tokenized on its own, so no pre-token and no merge crosses a special token.
 */
public final class SpecialTokens {
  private final List<String> tokens;
  /** Candidates per first byte, longest first; null where no special token starts with that byte. */
  private final int[][] byFirstByte = new int[256][];
  private final byte[][] bytes;
  private final int maxLength;

  /** An immutable set of special tokens; duplicates are dropped, the empty string is rejected. */
  public SpecialTokens(List<String> specials) {
    LinkedHashSet<String> unique = new LinkedHashSet<>();
    for (String s : specials) {
      if (s == null || s.isEmpty()) {
        throw new IllegalArgumentException("a special token cannot be empty");
      }
      unique.add(s);
    }
    tokens = List.copyOf(unique);
    bytes = new byte[tokens.size()][];
    int max = 0;
    List<List<Integer>> lists = new ArrayList<>();
    for (int k = 0; k < 256; k++) {
      lists.add(new ArrayList<>());
    }
    for (int t = 0; t < tokens.size(); t++) {
      bytes[t] = tokens.get(t).getBytes(StandardCharsets.UTF_8);
      max = Math.max(max, bytes[t].length);
      lists.get(bytes[t][0] & 0xFF).add(t);
    }
    maxLength = max;
    for (int k = 0; k < 256; k++) {
      List<Integer> l = lists.get(k);
      if (!l.isEmpty()) {
        l.sort(Comparator.comparingInt((Integer t) -> -bytes[t].length));
        byFirstByte[k] = l.stream().mapToInt(Integer::intValue).toArray();
      }
    }
  }

  public static SpecialTokens none() {
    return new SpecialTokens(List.of());
  }

  /** The special tokens in the order given (duplicates removed). */
  public List<String> tokens() {
    return tokens;
  }

  public int size() {
    return tokens.size();
  }

  public boolean isEmpty() {
    return tokens.isEmpty();
  }

  /** UTF-8 bytes of special token {@code index}. */
  byte[] bytes(int index) {
    return bytes[index];
  }

  /** Length in bytes of the longest special token (0 when there are none). */
  int maxLength() {
    return maxLength;
  }

  /**
   * Finds the first special token occurrence in {@code b[from, end)}. Returns {@code (index << 32) | position}, or -1
   * when there is none.
   */
  long find(byte[] b, int from, int end) {
    if (tokens.isEmpty()) {
      return -1;
    }
    for (int i = from; i < end; i++) {
      int[] cands = byFirstByte[b[i] & 0xFF];
      if (cands != null) {
        int t = matchAt(cands, b, i, end);
        if (t >= 0) {
          return ((long) t << 32) | i;
        }
      }
    }
    return -1;
  }

  /** The longest special token that starts exactly at {@code i}, or -1. */
  int matchAt(byte[] b, int i, int end) {
    int[] cands = byFirstByte[b[i] & 0xFF];
    return cands == null ? -1 : matchAt(cands, b, i, end);
  }

  private int matchAt(int[] cands, byte[] b, int i, int end) {
    for (int t : cands) {
      byte[] s = bytes[t];
      if (i + s.length <= end && Arrays.equals(b, i, i + s.length, s, 0, s.length)) {
        return t;
      }
    }
    return -1;
  }

  /**
   * True when some occurrence of a special token, as the left-to-right longest-first scan would find it, may cover
   * both byte {@code p - 1} and byte {@code p}; cutting the text at {@code p} is then unsafe. Checks every occurrence
   * that starts before {@code p} and ends after it, which is a superset of the scan's matches.
   */
  boolean crosses(byte[] b, int p, int begin, int end) {
    for (int i = Math.max(begin, p - maxLength + 1); i < p; i++) {
      int[] cands = byFirstByte[b[i] & 0xFF];
      if (cands != null) {
        for (int t : cands) {
          byte[] s = bytes[t];
          if (i + s.length > p && i + s.length <= end && Arrays.equals(b, i, i + s.length, s, 0, s.length)) {
            return true;
          }
        }
      }
    }
    return false;
  }
}
