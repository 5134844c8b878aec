package dev.kiln.runtime.tokenizer;

import java.util.regex.Pattern;

/**
 * GPT-2's pre-tokenizer, run directly over UTF-8 bytes. It splits text exactly as the regular expression
 * {@link #GPT2_PATTERN} (compiled with {@link Pattern#UNICODE_CHARACTER_CLASS}) does, but without building Strings or
 * running a regex engine: each pre-token is found by one forward scan over code-point classes. {@code
 * PreTokenizerTest} checks it against the regex on every code point and on random mixed-script text.
 *
 * <p>Bytes that are not valid UTF-8 are each one code point of class "other" (like punctuation), so any byte string
 * can be encoded and decoded back unchanged.
 */
public final class PreTokenizer {
  /** The GPT-2 pre-tokenization pattern (the same split as tiktoken's {@code r50k_base}). */
  public static final String GPT2_PATTERN =
      "'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

  /** {@link #GPT2_PATTERN} compiled so that {@code \s} means Unicode White_Space, as in Python and Rust. */
  public static final Pattern GPT2_REGEX = Pattern.compile(GPT2_PATTERN, Pattern.UNICODE_CHARACTER_CLASS);

  static final byte OTHER = 0;
  static final byte LETTER = 1;
  static final byte NUMBER = 2;
  static final byte SPACE = 3;

  private static final byte[] BMP_CLASS = new byte[0x10000];

  static {
    for (int cp = 0; cp < 0x10000; cp++) {
      BMP_CLASS[cp] = classify(cp);
    }
  }

  private PreTokenizer() {}

  /** The class the pattern sees: \p{L}, \p{N}, \s (Unicode White_Space) or anything else. */
  static byte classify(int cp) {
    if (isWhiteSpace(cp)) {
      return SPACE;
    }
    if (Character.isLetter(cp)) {
      return LETTER;
    }
    int t = Character.getType(cp);
    if (t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER || t == Character.OTHER_NUMBER) {
      return NUMBER;
    }
    return OTHER;
  }

  /** Unicode's White_Space property (stable since Unicode 6.3), which is what {@code \s} matches here. */
  static boolean isWhiteSpace(int cp) {
    return (cp >= 0x09 && cp <= 0x0D)
        || cp == 0x20
        || cp == 0x85
        || cp == 0xA0
        || cp == 0x1680
        || (cp >= 0x2000 && cp <= 0x200A)
        || cp == 0x2028
        || cp == 0x2029
        || cp == 0x202F
        || cp == 0x205F
        || cp == 0x3000;
  }

  static byte classOf(int cp) {
    return cp < 0x10000 ? BMP_CLASS[cp] : classify(cp);
  }

  /**
   * Decodes the code point at {@code i} and returns {@code (class << 8) | byteLength}. Malformed UTF-8 (overlong
   * forms, surrogates, truncated sequences, stray continuation bytes) is one byte of class OTHER.
   */
  static int classAndLength(byte[] b, int i, int end) {
    int b0 = b[i] & 0xFF;
    if (b0 < 0x80) {
      return (BMP_CLASS[b0] << 8) | 1;
    }
    if (b0 >= 0xC2 && b0 < 0xE0) {
      if (i + 1 < end && isCont(b[i + 1])) {
        int cp = ((b0 & 0x1F) << 6) | (b[i + 1] & 0x3F);
        return (BMP_CLASS[cp] << 8) | 2;
      }
    } else if (b0 >= 0xE0 && b0 < 0xF0) {
      if (i + 2 < end && isCont(b[i + 1]) && isCont(b[i + 2])) {
        int b1 = b[i + 1] & 0xFF;
        boolean ok = (b0 != 0xE0 || b1 >= 0xA0) && (b0 != 0xED || b1 < 0xA0);
        if (ok) {
          int cp = ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b[i + 2] & 0x3F);
          return (BMP_CLASS[cp] << 8) | 3;
        }
      }
    } else if (b0 >= 0xF0 && b0 < 0xF5) {
      if (i + 3 < end && isCont(b[i + 1]) && isCont(b[i + 2]) && isCont(b[i + 3])) {
        int b1 = b[i + 1] & 0xFF;
        boolean ok = (b0 != 0xF0 || b1 >= 0x90) && (b0 != 0xF4 || b1 < 0x90);
        if (ok) {
          int cp = ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b[i + 2] & 0x3F) << 6) | (b[i + 3] & 0x3F);
          return (classify(cp) << 8) | 4;
        }
      }
    }
    return (OTHER << 8) | 1;
  }

  private static boolean isCont(byte x) {
    return (x & 0xC0) == 0x80;
  }

  /**
   * Returns the end (exclusive) of the pre-token that starts at {@code i}; {@code i < end}. Mirrors the pattern's
   * alternatives in order: a contraction; an optional space and a run of letters, of digits, or of other
   * characters; a whitespace run that is not followed by a non-space (so the last space of a run before a word
   * joins that word); a single whitespace character.
   */
  public static int next(byte[] b, int i, int end) {
    int c0 = b[i];
    if (c0 == '\'' && i + 1 < end) {
      int c1 = b[i + 1];
      if (c1 == 's' || c1 == 'd' || c1 == 'm' || c1 == 't') {
        return i + 2;
      }
      if (i + 2 < end) {
        int c2 = b[i + 2];
        if ((c1 == 'l' && c2 == 'l') || (c1 == 'v' && c2 == 'e') || (c1 == 'r' && c2 == 'e')) {
          return i + 3;
        }
      }
    }
    int start = i;
    if (c0 == ' ' && i + 1 < end) {
      int cl = classAndLength(b, i + 1, end);
      int cls = cl >>> 8;
      if (cls != SPACE) {
        return run(b, i + 1 + (cl & 0xFF), end, cls);
      }
    }
    int cl = classAndLength(b, start, end);
    int cls = cl >>> 8;
    int j = start + (cl & 0xFF);
    if (cls != SPACE) {
      return run(b, j, end, cls);
    }
    int lastStart = start;
    while (j < end) {
      int c = classAndLength(b, j, end);
      if ((c >>> 8) != SPACE) {
        // \s+(?!\S) backs off one character so the last one can start the next pre-token; a single whitespace
        // character before a non-space is matched by the final \s+ alone.
        return lastStart > start ? lastStart : j;
      }
      lastStart = j;
      j += c & 0xFF;
    }
    return end;
  }

  private static int run(byte[] b, int j, int end, int cls) {
    while (j < end) {
      int b0 = b[j];
      if (b0 >= 0) {
        // ASCII fast path: most text is ASCII and this is the innermost loop of encoding.
        if (BMP_CLASS[b0] != cls) {
          return j;
        }
        j++;
      } else {
        int c = classAndLength(b, j, end);
        if ((c >>> 8) != cls) {
          return j;
        }
        j += c & 0xFF;
      }
    }
    return end;
  }
}
