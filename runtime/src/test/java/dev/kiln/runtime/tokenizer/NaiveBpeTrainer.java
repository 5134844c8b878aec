package dev.kiln.runtime.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The test oracle for {@link BpeTrainer}: CS336's training algorithm written the slow, obvious way. Special tokens
 * are split off with a regex alternation (longest first), pre-tokens come from java.util.regex running GPT-2's
 * pattern, every pair is recounted from scratch at each step, and the tie-break is a plain max over (count, left,
 * right). Tokens are Latin-1 strings, one char per byte, so String.compareTo is unsigned byte order.
 */
final class NaiveBpeTrainer {
  private NaiveBpeTrainer() {}

  /** Merges learned on {@code text}, as pairs of Latin-1 strings (one char per byte). */
  static List<String[]> merges(String text, int vocabSize, List<String> specials) {
    return merges(text, vocabSize, specials, false);
  }

  /** With {@code spelled}, ties compare the GPT-2 alphabet spellings of the tokens instead of their bytes. */
  static List<String[]> merges(String text, int vocabSize, List<String> specials, boolean spelled) {
    List<String> segments = new ArrayList<>();
    if (specials.isEmpty()) {
      segments.add(text);
    } else {
      List<String> sorted = new ArrayList<>(specials);
      sorted.sort(Comparator.comparingInt(String::length).reversed());
      Pattern split = Pattern.compile(String.join("|", sorted.stream().map(Pattern::quote).toList()));
      for (String s : split.split(text, -1)) {
        segments.add(s);
      }
    }
    Map<List<String>, Long> words = new HashMap<>();
    for (String seg : segments) {
      Matcher m = PreTokenizer.GPT2_REGEX.matcher(seg);
      while (m.find()) {
        String latin1 = new String(m.group().getBytes(StandardCharsets.UTF_8), StandardCharsets.ISO_8859_1);
        List<String> w = new ArrayList<>();
        for (char c : latin1.toCharArray()) {
          w.add(String.valueOf(c));
        }
        words.merge(w, 1L, Long::sum);
      }
    }
    List<String[]> merges = new ArrayList<>();
    int target = vocabSize - 256 - specials.size();
    while (merges.size() < target) {
      Map<List<String>, Long> pairs = new LinkedHashMap<>();
      for (Map.Entry<List<String>, Long> e : words.entrySet()) {
        List<String> w = e.getKey();
        for (int k = 0; k + 1 < w.size(); k++) {
          pairs.merge(List.of(w.get(k), w.get(k + 1)), e.getValue(), Long::sum);
        }
      }
      List<String> best = null;
      long bestCount = 0;
      for (Map.Entry<List<String>, Long> e : pairs.entrySet()) {
        List<String> p = e.getKey();
        long c = e.getValue();
        boolean better =
            best == null
                || c > bestCount
                || (c == bestCount
                    && (key(p.get(0), spelled).compareTo(key(best.get(0), spelled)) > 0
                        || (p.get(0).equals(best.get(0))
                            && key(p.get(1), spelled).compareTo(key(best.get(1), spelled)) > 0)));
        if (better) {
          best = p;
          bestCount = c;
        }
      }
      if (best == null) {
        break;
      }
      merges.add(new String[] {best.get(0), best.get(1)});
      Map<List<String>, Long> next = new HashMap<>();
      for (Map.Entry<List<String>, Long> e : words.entrySet()) {
        List<String> w = e.getKey();
        List<String> out = new ArrayList<>();
        for (int k = 0; k < w.size(); k++) {
          if (k + 1 < w.size() && w.get(k).equals(best.get(0)) && w.get(k + 1).equals(best.get(1))) {
            out.add(best.get(0) + best.get(1));
            k++;
          } else {
            out.add(w.get(k));
          }
        }
        next.merge(out, e.getValue(), Long::sum);
      }
      words = next;
    }
    return merges;
  }

  /** The merges of a trained tokenizer in the same Latin-1 form. */
  static List<String[]> mergesOf(BpeTokenizer tok) {
    List<String[]> out = new ArrayList<>();
    for (int r = 0; r < tok.mergeCount(); r++) {
      out.add(new String[] {latin1(tok.tokenBytes(tok.mergeLeft(r))), latin1(tok.tokenBytes(tok.mergeRight(r)))});
    }
    return out;
  }

  private static String key(String latin1, boolean spelled) {
    return spelled ? ByteLevelAlphabet.encode(latin1.getBytes(StandardCharsets.ISO_8859_1)) : latin1;
  }

  static String latin1(byte[] b) {
    return new String(b, StandardCharsets.ISO_8859_1);
  }
}
