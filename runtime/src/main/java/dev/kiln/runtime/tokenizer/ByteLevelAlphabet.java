package dev.kiln.runtime.tokenizer;

import java.nio.charset.StandardCharsets;

/**
 * GPT-2's reversible map from the 256 byte values to 256 printable Unicode characters, the alphabet in which
 * {@code vocab.json} and {@code merges.txt} spell tokens. Printable Latin-1 bytes ({@code !..~}, {@code ¡..¬},
 * {@code ®..ÿ}) stand for themselves; the other 68 bytes (controls, space, NBSP, soft hyphen) are shifted to
 * U+0100 and up in byte order, so the space byte is {@code Ġ} (U+0120) and newline is {@code Ċ} (U+010A).
 */
public final class ByteLevelAlphabet {
  private static final char[] BYTE_TO_CHAR = new char[256];
  private static final short[] CHAR_TO_BYTE = new short[0x200];

  static {
    java.util.Arrays.fill(CHAR_TO_BYTE, (short) -1);
    int shifted = 0;
    for (int b = 0; b < 256; b++) {
      boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char c = printable ? (char) b : (char) (256 + shifted++);
      BYTE_TO_CHAR[b] = c;
      CHAR_TO_BYTE[c] = (short) b;
    }
  }

  private ByteLevelAlphabet() {}

  /** The character that spells byte {@code b} (0..255). */
  public static char charOf(int b) {
    return BYTE_TO_CHAR[b & 0xFF];
  }

  /** The byte a character spells, or -1 when the character is outside the alphabet. */
  public static int byteOf(char c) {
    return c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
  }

  /** Spells a byte string in the alphabet ({@code " the"} becomes {@code "Ġthe"}). */
  public static String encode(byte[] bytes) {
    char[] out = new char[bytes.length];
    for (int i = 0; i < bytes.length; i++) {
      out[i] = BYTE_TO_CHAR[bytes[i] & 0xFF];
    }
    return new String(out);
  }

  /** Reads a token spelled in the alphabet back to bytes, or returns null if a character is outside it. */
  public static byte[] decodeOrNull(String token) {
    byte[] out = new byte[token.length()];
    for (int i = 0; i < out.length; i++) {
      int b = byteOf(token.charAt(i));
      if (b < 0) {
        return null;
      }
      out[i] = (byte) b;
    }
    return out;
  }

  /** Human-readable form of a token for messages: its UTF-8 text when valid, else the alphabet spelling. */
  static String display(byte[] bytes) {
    java.nio.charset.CharsetDecoder d = StandardCharsets.UTF_8.newDecoder();
    try {
      return d.decode(java.nio.ByteBuffer.wrap(bytes)).toString();
    } catch (java.nio.charset.CharacterCodingException e) {
      return encode(bytes);
    }
  }
}
