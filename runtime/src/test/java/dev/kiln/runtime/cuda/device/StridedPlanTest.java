package dev.kiln.runtime.cuda.device;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The host half of the CUDA device's strided kernels (no GPU needed): the merged walk visits exactly the operand
 * offsets of the original shape and strides, in row-major order, for random layouts; and the 32-bit choice is safe.
 */
class StridedPlanTest {
  /** Offsets of each operand in row-major order over {@code shape}, the way the kernels compute them. */
  private static long[][] walk(long[] shape, long[][] strides) {
    int n = (int) NdArray.numel(shape);
    long[][] out = new long[strides.length][n];
    for (int i = 0; i < n; i++) {
      long rest = i;
      for (int d = shape.length - 1; d >= 0; d--) {
        long c = rest % shape[d];
        rest /= shape[d];
        for (int o = 0; o < strides.length; o++) {
          out[o][i] += c * strides[o][d];
        }
      }
    }
    return out;
  }

  @Test
  void mergedWalksVisitTheSameOffsets() {
    Random rnd = new Random(1);
    for (int trial = 0; trial < 500; trial++) {
      int rank = 1 + rnd.nextInt(5);
      long[] shape = new long[rank];
      for (int d = 0; d < rank; d++) {
        shape[d] = 1 + rnd.nextInt(4);
      }
      long[][] strides = new long[2][];
      strides[0] = NdArray.contiguousStrides(shape);
      // A permuted or broadcast layout for the second operand.
      long[] base = NdArray.contiguousStrides(shape);
      long[] st = new long[rank];
      for (int d = 0; d < rank; d++) {
        st[d] = rnd.nextInt(4) == 0 ? 0 : base[rank - 1 - d % rank] * (1 + rnd.nextInt(2));
      }
      strides[1] = st;
      StridedPlan p = StridedPlan.of(shape, strides);
      long[] merged = Arrays.copyOf(p.shapeWords(), p.rank());
      long[][] mergedStrides = {Arrays.copyOf(p.strideWords(0), p.rank()), Arrays.copyOf(p.strideWords(1), p.rank())};
      String what = Arrays.toString(shape) + " " + Arrays.deepToString(strides);
      assertEquals(NdArray.numel(shape), p.numel(), what);
      assertArrayEquals(walk(shape, strides)[0], walk(merged, mergedStrides)[0], what);
      assertArrayEquals(walk(shape, strides)[1], walk(merged, mergedStrides)[1], what);
    }
  }

  @Test
  void contiguousOperandsMergeToOneDimAndScalarsWalkAsOne() {
    long[] shape = {4, 5, 6};
    StridedPlan p = StridedPlan.of(shape, NdArray.contiguousStrides(shape), NdArray.contiguousStrides(shape));
    assertEquals(1, p.rank());
    assertEquals(120, p.shapeWords()[0]);
    StridedPlan scalar = StridedPlan.of(new long[0], new long[0]);
    assertEquals(1, scalar.rank());
    assertEquals(1, scalar.numel());
  }

  @Test
  void thirtyTwoBitKernelsOnlyWhereEveryOffsetFits() {
    assertTrue(StridedPlan.of(new long[] {1 << 20}, new long[] {1}).fits32());
    assertFalse(StridedPlan.of(new long[] {1L << 31}, new long[] {1}).fits32(), "index beyond 2^31");
    assertFalse(StridedPlan.of(new long[] {4, 1 << 20}, new long[] {1L << 30, 1}).fits32(), "offset beyond 2^31");
    assertEquals("k_32", StridedPlan.of(new long[] {8}, new long[] {1}).kernel("k"));
  }

  @Test
  void broadcastStridesFollowNumpyAndNameTheMismatch() {
    assertArrayEquals(new long[] {0, 0, 1}, StridedPlan.broadcastStrides(new long[] {1, 5}, new long[] {5, 1},
        new long[] {3, 4, 5}, "b"));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> StridedPlan.broadcastStrides(new long[] {3}, new long[] {1}, new long[] {4}, "operand b"));
    assertTrue(e.getMessage().contains("operand b [3] does not broadcast to [4]"), e.getMessage());
  }
}
