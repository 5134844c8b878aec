package dev.kiln.runtime.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** The byte scanner must split exactly as GPT-2's regex (java.util.regex, Unicode character classes) does. */
class PreTokenizerTest {
  private static final Pattern LETTER = Pattern.compile("\\p{L}");
  private static final Pattern NUMBER = Pattern.compile("\\p{N}");
  private static final Pattern SPACE = Pattern.compile("\\s", Pattern.UNICODE_CHARACTER_CLASS);

  @Test
  void codePointClassesMatchTheRegexClassesOnEveryCodePoint() {
    for (int cp = 0; cp <= Character.MAX_CODE_POINT; cp++) {
      if (Character.getType(cp) == Character.SURROGATE) {
        continue;
      }
      String s = Character.toString(cp);
      byte expected =
          SPACE.matcher(s).matches()
              ? PreTokenizer.SPACE
              : LETTER.matcher(s).matches()
                  ? PreTokenizer.LETTER
                  : NUMBER.matcher(s).matches() ? PreTokenizer.NUMBER : PreTokenizer.OTHER;
      if (PreTokenizer.classOf(cp) != expected) {
        assertEquals(expected, PreTokenizer.classOf(cp), String.format("class of U+%04X", cp));
      }
    }
  }

  static List<String> regexSplit(String text) {
    List<String> out = new ArrayList<>();
    Matcher m = PreTokenizer.GPT2_REGEX.matcher(text);
    int at = 0;
    while (m.find()) {
      // The pattern matches every character, so matches are contiguous; a gap would be a bug in the oracle itself.
      assertEquals(at, m.start(), "regex left a gap");
      out.add(m.group());
      at = m.end();
    }
    assertEquals(text.length(), at);
    return out;
  }

  static List<String> scannerSplit(String text) {
    byte[] b = text.getBytes(StandardCharsets.UTF_8);
    List<String> out = new ArrayList<>();
    int i = 0;
    while (i < b.length) {
      int e = PreTokenizer.next(b, i, b.length);
      out.add(new String(b, i, e - i, StandardCharsets.UTF_8));
      i = e;
    }
    return out;
  }

  @Test
  void handPickedCases() {
    for (String s :
        List.of(
            "Hello world", "  leading", "trailing  ", "a  b", "a \n b", "x\n\ny", "tabs\t\tand", "it's I'M we'll",
            "'s's'", " 's", "''s", "??'s", "1,234.5 km²", "a\u00a0b", "a\u00a0\u00a0b", "\u3000全角", " ", "  ", "\n",
            "a ", "a  ", "e\u0301clair", "👨‍👩‍👧 family", "🇫🇷🇯🇵", "'", "' ", "'ll've", "x'LL", "end.\n")) {
      assertEquals(regexSplit(s), scannerSplit(s), "split of \"" + s + "\"");
    }
  }

  @Test
  void randomMixedTextSplitsLikeTheRegex() {
    Random rnd = new Random(1);
    for (int t = 0; t < 3000; t++) {
      String s = t % 3 == 0 ? RandomText.codePoints(rnd, 1 + rnd.nextInt(30)) : RandomText.mixed(rnd, 1 + rnd.nextInt(40));
      assertEquals(regexSplit(s), scannerSplit(s), "split of \"" + s + "\"");
    }
  }

  @Test
  void invalidUtf8BytesAreSingleOtherCharacters() {
    // 0xFF, a lone continuation byte, a truncated 3-byte lead, an encoded surrogate (ED A0 80), an overlong '/'.
    byte[] b = {'a', (byte) 0xFF, (byte) 0x80, 'b', ' ', (byte) 0xE2, (byte) 0x82, ' ', (byte) 0xED, (byte) 0xA0,
        (byte) 0x80, (byte) 0xC0, (byte) 0xAF, 'c'};
    List<Integer> ends = new ArrayList<>();
    int i = 0;
    while (i < b.length) {
      i = PreTokenizer.next(b, i, b.length);
      ends.add(i);
    }
    // "a" | FF 80 (one run of "other") | "b" | " " E2 82 (space + other run) | " " ED A0 80 C0 AF | "c"
    assertEquals(List.of(1, 3, 4, 7, 13, 14), ends);
  }
}
