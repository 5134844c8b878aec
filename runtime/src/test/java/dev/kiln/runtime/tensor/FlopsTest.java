package dev.kiln.runtime.tensor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** Every expected value is worked out by hand in the comment next to it. */
class FlopsTest {
  @Test
  void gemm() {
    assertEquals(48, Flops.gemm(2, 3, 4)); // 2·2·3·4
    assertEquals(240, Flops.gemm(5, 2, 3, 4)); // 5 · 48
    assertEquals(2L * 2048 * 2048 * 2048, Flops.gemm(2048, 2048, 2048));
    assertThrows(IllegalArgumentException.class, () -> Flops.gemm(-1, 2, 3));
    assertThrows(ArithmeticException.class, () -> Flops.gemm(1L << 40, 1L << 40, 1));
  }

  @Test
  void twoOperandContractionsAreTwiceTheProductOfAllDims() {
    // b=2 s=5 d=8 e=6: 2·2·5·8·6
    assertEquals(960, Flops.einsum("b s d, d e -> b s e", new long[] {2, 5, 8}, new long[] {8, 6}));
    // b=2 h=3 i=5 d=4 j=7: 2·2·3·5·4·7
    assertEquals(1680, Flops.einsum("b h i d, b h j d -> b h i j", new long[] {2, 3, 5, 4}, new long[] {2, 3, 7, 4}));
    // ... = 4·10, d_in=16, d_out=32: 2·4·10·16·32
    assertEquals(
        40960, Flops.einsum("... d_in, d_out d_in -> ... d_out", new long[] {4, 10, 16}, new long[] {32, 16}));
    // outer product i=3 j=4: 2·3·4
    assertEquals(24, Flops.einsum("i, j -> i j", new long[] {3}, new long[] {4}));
  }

  @Test
  void reductionsAndMoreOperands() {
    assertEquals(9, Flops.einsum("i j -> i", new long[] {3, 4})); // 12 elements summed into 3: 9 additions
    assertEquals(0, Flops.einsum("i j -> j i", new long[] {3, 4})); // a permutation
    assertEquals(0, Flops.einsum("i i -> i", new long[] {3, 3})); // a diagonal
    assertEquals(2, Flops.einsum("i i ->", new long[] {3, 3})); // trace: 3 diagonal elements, 2 additions
    // a=2 b=3 c=4 d=5, left to right: (a b, b c -> a c) 2·2·3·4 = 48, then (a c, c d -> a d) 2·2·4·5 = 80.
    assertEquals(
        128, Flops.einsum("a b, b c, c d -> a d", new long[] {2, 3}, new long[] {3, 4}, new long[] {4, 5}));
    // b is summed alone first (6 elements into 2: 4 additions), then the outer product a=2 c=4: 2·2·4 = 16.
    assertEquals(20, Flops.einsum("a b, c -> a c", new long[] {2, 3}, new long[] {4}));
  }

  @Test
  void shapesAreChecked() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> Flops.einsum("i j, j k -> i k", new long[] {2, 3}, new long[] {4, 5}));
    assertEquals("einsum \"i j, j k -> i k\": operand 1 dim j has size 4 but an earlier operand says 3", e.getMessage());
  }
}
