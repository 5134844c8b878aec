package dev.kiln.runtime.cuda.device;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The host's reordering of RoPE's leading dims (no GPU needed): the reordered walk visits the same (x, out, position)
 * offset triples as the logical one, only in another order, and the head-split view of a projection is walked in
 * memory order.
 */
class RopeWalkOrderTest {
  @Test
  void headSplitViewIsWalkedInMemoryOrder() {
    // [b=4, h=16, s=256] rows of a [b, s, (h d=32)] projection: strides s*h*d, d, h*d. Positions broadcast over b, h.
    long[] n = {4, 16, 256};
    long[] xs = {256 * 512, 32, 512};
    long[] os = xs.clone();
    long[] ps = {0, 0, 1};
    CudaModelDevice.walkInMemoryOrder(n, xs, os, ps);
    assertArrayEquals(new long[] {4, 256, 16}, n);
    assertArrayEquals(new long[] {256 * 512, 512, 32}, xs);
    assertArrayEquals(new long[] {0, 1, 0}, ps);
  }

  @Test
  void reorderedWalkVisitsTheSameRows() {
    Random random = new Random(7);
    for (int trial = 0; trial < 200; trial++) {
      long[] n = new long[3];
      long[] xs = new long[3];
      long[] os = new long[3];
      long[] ps = new long[3];
      for (int d = 0; d < 3; d++) {
        n[d] = 1 + random.nextInt(4);
        xs[d] = random.nextInt(50);
        os[d] = random.nextInt(50);
        ps[d] = random.nextInt(3);
      }
      List<String> before = rows(n, xs, os, ps);
      long[] n2 = n.clone();
      long[] xs2 = xs.clone();
      long[] os2 = os.clone();
      long[] ps2 = ps.clone();
      CudaModelDevice.walkInMemoryOrder(n2, xs2, os2, ps2);
      List<String> after = rows(n2, xs2, os2, ps2);
      assertEquals(sorted(before), sorted(after), "trial " + trial + ": " + Arrays.toString(n) + " " + Arrays.toString(xs));
      for (int d = 1; d < 3; d++) {
        if (n2[d - 1] > 1 && n2[d] > 1) {
          assertEquals(true, xs2[d - 1] >= xs2[d], "x's strides must not grow inwards: " + Arrays.toString(xs2));
        }
      }
    }
  }

  /** The (x, out, position) offsets of each row, as the kernel computes them from its row index. */
  private static List<String> rows(long[] n, long[] xs, long[] os, long[] ps) {
    List<String> out = new ArrayList<>();
    for (long r = 0; r < n[0] * n[1] * n[2]; r++) {
      long i2 = r % n[2];
      long i1 = (r / n[2]) % n[1];
      long i0 = r / (n[1] * n[2]);
      out.add((i0 * xs[0] + i1 * xs[1] + i2 * xs[2]) + "," + (i0 * os[0] + i1 * os[1] + i2 * os[2]) + ","
          + (i0 * ps[0] + i1 * ps[1] + i2 * ps[2]));
    }
    return out;
  }

  private static List<String> sorted(List<String> l) {
    List<String> s = new ArrayList<>(l);
    s.sort(null);
    return s;
  }
}
