package dev.kiln.runtime.tokenizer;

import java.util.Random;

/**
 * Random text that stresses a GPT-2 tokenizer: mixed scripts, emoji (ZWJ sequences, flags, skin tones), combining
 * marks, every kind of Unicode whitespace in runs, digits, punctuation and contractions in both cases.
 */
final class RandomText {
  private static final String[] PIECES = {
    "the", "The", " of", "and", "tokenizer", "Zürich", "naïve", "façade", "ß", "İstanbul",
    "中文", "日本語のテキスト", "한국어", "漢字かなカナ", "ＡＢＣ１２３",
    "مرحبا", "العربية", "हिन्दी", "नमस्ते", "Привет", "мир", "Ελληνικά", "עברית", "ไทย",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "🤖",
    "e\u0301", "a\u0308\u0323", "\u0301", "\u200d", "\ufe0f",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000", " \u00a0", "\u2003", "\u2028", "\u0085",
    "0", "42", "3.14", "1,000", "٣", "१२", "Ⅻ", "½", "²",
    ".", ",", "!", "?", "...", "--", "(", ")", "\"", "«", "»", "#", "@", "$", "€", "%", "&&", "<|", "|>", "\\", "/",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'LL", "'", "''", "'x", "it's", "we'll", "I'M",
    "don't", "you'RE",
  };

  private RandomText() {}

  /** A string of {@code parts} random pieces, separated sometimes by spaces. */
  static String mixed(Random rnd, int parts) {
    StringBuilder b = new StringBuilder();
    for (int k = 0; k < parts; k++) {
      int r = rnd.nextInt(10);
      if (r < 7) {
        b.append(PIECES[rnd.nextInt(PIECES.length)]);
      } else if (r < 9) {
        b.append(' ').append(PIECES[rnd.nextInt(PIECES.length)]);
      } else {
        b.appendCodePoint(randomCodePoint(rnd));
      }
    }
    return b.toString();
  }

  /** A random assigned code point from any plane, never a surrogate. */
  static int randomCodePoint(Random rnd) {
    while (true) {
      int cp =
          switch (rnd.nextInt(4)) {
            case 0 -> rnd.nextInt(0x80);
            case 1 -> rnd.nextInt(0x800);
            case 2 -> rnd.nextInt(0x10000);
            default -> 0x10000 + rnd.nextInt(0x100000);
          };
      if (Character.getType(cp) != Character.SURROGATE && Character.isDefined(cp)) {
        return cp;
      }
    }
  }

  /** Random code points only (any plane, no surrogates). */
  static String codePoints(Random rnd, int n) {
    StringBuilder b = new StringBuilder();
    for (int k = 0; k < n; k++) {
      b.appendCodePoint(randomCodePoint(rnd));
    }
    return b.toString();
  }
}
