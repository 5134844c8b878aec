package dev.kiln.runtime.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import org.junit.jupiter.api.Test;

class PhiloxTest {
  /**
   * Known-answer vectors for philox4x32 with 10 rounds, from Random123's {@code tests/kat_vectors}
   * (github.com/DEShawResearch/random123): columns are counter[4], key[2] → output[4], all hex uint32.
   * <pre>
   * philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
   * philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
   * philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
   * </pre>
   */
  @Test
  void matchesRandom123KnownAnswers() {
    check(new int[] {0, 0, 0, 0}, new int[] {0, 0}, new int[] {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    check(new int[] {-1, -1, -1, -1}, new int[] {-1, -1}, new int[] {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    check(new int[] {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, new int[] {0xa4093822, 0x299f31d0},
        new int[] {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  }

  private static void check(int[] ctr, int[] key, int[] expected) {
    int[] out = new int[4];
    Philox.block(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out);
    assertArrayEquals(expected, out);
  }

  /** The 64-bit convenience form packs counter, stream and key low word first. */
  @Test
  void longFormPacksLowWordFirst() {
    int[] a = new int[4];
    int[] b = new int[4];
    Philox.block(0x85a308d3_243f6a88L, 0x03707344_13198a2eL, 0x299f31d0_a4093822L, a);
    Philox.block(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, b);
    assertArrayEquals(b, a);
    assertArrayEquals(new int[] {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}, a);
  }
}
