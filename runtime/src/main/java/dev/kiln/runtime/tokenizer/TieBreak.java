package dev.kiln.runtime.tokenizer;

import java.util.Arrays;

/**
 * How BPE training orders two pairs with the same count: the greater pair wins, comparing left tokens first, then
 * right tokens, lexicographically (a proper prefix is smaller).
 */
public enum TieBreak {
  /**
   * Compare tokens as byte strings, bytes unsigned. This is the rule the CS336 handout states (Python's {@code
   * max} over pairs of {@code bytes}) and Kiln's default.
   */
  BYTES {
    @Override
    int compare(byte[] x, byte[] y) {
      return Arrays.compareUnsigned(x, y);
    }
  },
  /**
   * Compare tokens as their GPT-2 {@code vocab.json} spellings ({@link ByteLevelAlphabet}), so e.g. every token
   * starting with a space ({@code Ġ}, U+0120) sorts after ASCII letters. The spring-2024 CS336 reference merges for
   * {@code corpus.en} follow this order (checked: all 243 merges agree; {@link #BYTES} departs from them at merge 92,
   * where {@code Ġc om} and {@code t h} tie).
   */
  GPT2_ALPHABET {
    @Override
    int compare(byte[] x, byte[] y) {
      int n = Math.min(x.length, y.length);
      for (int i = 0; i < n; i++) {
        if (x[i] != y[i]) {
          return Character.compare(ByteLevelAlphabet.charOf(x[i]), ByteLevelAlphabet.charOf(y[i]));
        }
      }
      return Integer.compare(x.length, y.length);
    }
  };

  /** Orders two tokens; positive when {@code x} is the greater (preferred) one. */
  abstract int compare(byte[] x, byte[] y);
}
