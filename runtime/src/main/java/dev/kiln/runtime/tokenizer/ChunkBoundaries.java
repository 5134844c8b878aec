package dev.kiln.runtime.tokenizer;

/**
 * Chooses where a long text may be cut so that encoding (or counting pre-tokens of) the pieces separately gives
 * exactly what the whole text gives. A cut at byte {@code p} is safe when no special-token occurrence covers both
 * {@code p - 1} and {@code p}, and one of these holds:
 *
 * <ol>
 *   <li>a special token starts at {@code p} (the text before it ends a segment anyway);
 *   <li>{@code p} follows a newline that sits between two non-whitespace characters: that newline is a pre-token of
 *       its own both inside the whole text ({@code \s+} before a non-space) and at the end of the left piece
 *       ({@code \s+(?!\S)} at the end of input);
 *   <li>fallback for text without newlines: the characters on both sides are non-whitespace of different classes
 *       (letter / number / other) and the left one is not an apostrophe (which could start a contraction), so a
 *       pre-token ends at {@code p} and the regex's look-ahead never reaches past it.
 * </ol>
 *
 * Rules 1 and 2 are preferred; rule 3 is used only when neither occurs within the search window. A cut inside a
 * whitespace run is never safe ({@code \s+(?!\S)} looks at what follows the run), so a text that is one enormous
 * whitespace run cannot be cut; it is then handled as one piece.
 */
final class ChunkBoundaries {
  private ChunkBoundaries() {}

  /**
   * Returns the first safe cut in {@code [target, end)}, or -1 when there is none that can be proved safe from the
   * bytes available. Only bytes in {@code [begin, end)} are looked at; {@code end} is where the available data stops
   * (not necessarily the end of the text), so cuts whose safety depends on later bytes are not returned.
   *
   * @param preferredWindow how far past {@code target} to look for a rule-1 or rule-2 cut before accepting rule 3
   */
  static int findCut(byte[] b, int begin, int end, int target, SpecialTokens specials, int preferredWindow) {
    int margin = Math.max(4, specials.maxLength());
    int limit = end - margin;
    target = Math.max(target, begin + 1);
    if (target >= limit) {
      return -1;
    }
    // Sync to a code-point boundary: any byte that is not a continuation byte starts a code point in every
    // decoding of the text, valid or not (see PreTokenizer.classAndLength).
    int s = Math.max(begin, target - 8);
    while (s < limit && (b[s] & 0xC0) == 0x80) {
      s++;
    }
    int prevPrevClass = -1;
    int prevClass = -1;
    int prevByte = -1;
    int fallback = -1;
    int windowEnd = target + (preferredWindow <= 0 ? Integer.MAX_VALUE - target : preferredWindow);
    int p = s;
    while (p < limit) {
      int cl = PreTokenizer.classAndLength(b, p, end);
      int cls = cl >>> 8;
      if (p >= target && prevClass >= 0) {
        boolean special = specials.matchAt(b, p, end) >= 0;
        boolean newline =
            prevByte == '\n' && prevPrevClass >= 0 && prevPrevClass != PreTokenizer.SPACE && cls != PreTokenizer.SPACE;
        if ((special || newline) && !specials.crosses(b, p, begin, end)) {
          return p;
        }
        if (fallback < 0
            && cls != PreTokenizer.SPACE
            && prevClass != PreTokenizer.SPACE
            && cls != prevClass
            && prevByte != '\''
            && !specials.crosses(b, p, begin, end)) {
          fallback = p;
        }
        if (fallback >= 0 && p >= windowEnd) {
          return fallback;
        }
      }
      prevPrevClass = prevClass;
      prevClass = cls;
      prevByte = (cl & 0xFF) == 1 ? b[p] : -1;
      p += cl & 0xFF;
    }
    return fallback;
  }
}
