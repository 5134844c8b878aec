package dev.kiln.runtime.cuda.device;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

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

  /**
   * The token kernel's plan, on layouts as the device makes them (x a permuted dense array, the result laid out alike,
   * positions broadcast over some dims): where it applies, its walk visits exactly the (x, out, position, pair)
   * elements of the row walk, its 16-byte accesses are aligned, and the head-split layout of the models takes it.
   */
  @Test
  void tokenPlanVisitsTheRowWalksElementsAligned() {
    Random random = new Random(11);
    int planned = 0;
    for (int trial = 0; trial < 400; trial++) {
      long width = new long[] {4, 6, 8, 32, 64, 80, 128, 160}[random.nextInt(8)];
      long[] n = {1 + random.nextInt(3), 1 + random.nextInt(4), 1 + random.nextInt(5)};
      // A dense x whose leading dims lie in a random order in memory, row last.
      int[] order = shuffled(random);
      long[] xs = new long[3];
      long stride = width;
      for (int k = 2; k >= 0; k--) {
        xs[order[k]] = stride;
        stride *= n[order[k]];
      }
      long[] os = xs.clone();
      long[] ps = new long[3];
      for (int d = 0; d < 3; d++) {
        ps[d] = random.nextBoolean() ? 0 : 1 + random.nextInt(3);
      }
      long xOffset = new long[] {0, 2, 4, 8}[random.nextInt(4)];
      long outOffset = new long[] {0, 4}[random.nextInt(2)];
      CudaModelDevice.walkInMemoryOrder(n, xs, os, ps);
      CudaModelDevice.RopeTokens t = CudaModelDevice.RopeTokens.plan(n, xs, os, ps, width, xOffset, outOffset,
          outOffset);
      if (t == null) {
        continue;
      }
      planned++;
      String what = "trial " + trial + ": n " + Arrays.toString(n) + " xs " + Arrays.toString(xs) + " ps "
          + Arrays.toString(ps) + " width " + width;
      List<String> rowWalk = new ArrayList<>();
      for (long r = 0; r < n[0] * n[1] * n[2]; r++) {
        long i2 = r % n[2];
        long i1 = (r / n[2]) % n[1];
        long i0 = r / (n[1] * n[2]);
        for (long c = 0; c < width; c++) {
          rowWalk.add((xOffset + i0 * xs[0] + i1 * xs[1] + i2 * xs[2] + c) + ","
              + (outOffset + i0 * os[0] + i1 * os[1] + i2 * os[2] + c) + "," + (i0 * ps[0] + i1 * ps[1] + i2 * ps[2])
              + "," + c / 2);
        }
      }
      // As kiln_rope_tokens walks: a warp per token, float4s at e = 4 * lane + 128 * step.
      List<String> tokenWalk = new ArrayList<>();
      for (long token = 0; token < t.n()[0] * t.n()[1]; token++) {
        long t1 = token % t.n()[1];
        long t0 = token / t.n()[1];
        long xb = xOffset + t0 * t.xs()[0] + t1 * t.xs()[1];
        long ob = outOffset + t0 * t.os()[0] + t1 * t.os()[1];
        long pos = t0 * t.ps()[0] + t1 * t.ps()[1];
        for (long e = 0; e < t.span(); e += 4) {
          assertEquals(0, (xb + e) % 4, what + ": x float4 at " + (xb + e));
          assertEquals(0, (ob + e) % 4, what + ": out float4 at " + (ob + e));
          long pair = (e % width) / 2;
          assertEquals(0, pair % 2, what + ": (cos, sin) float4 of pair " + pair);
          for (int j = 0; j < 4; j++) {
            tokenWalk.add((xb + e + j) + "," + (ob + e + j) + "," + pos + "," + (pair + j / 2));
          }
        }
      }
      assertTrue(sorted(rowWalk).equals(sorted(tokenWalk)), what + ": the token walk visits other (x, out, position,"
          + " pair) elements than the row walk (" + tokenWalk.size() + " against " + rowWalk.size() + ")");
    }
    assertTrue(planned > 50, "only " + planned + " layouts took the token plan");
    // The models' layout: [b, h, s] heads of a [b, s, (h d)] projection, positions over s.
    long[] n = {4, 16, 256};
    long[] xs = {256 * 512, 32, 512};
    long[] ps = {0, 0, 1};
    CudaModelDevice.walkInMemoryOrder(n, xs, xs.clone(), ps);
    CudaModelDevice.RopeTokens t = CudaModelDevice.RopeTokens.plan(n, xs, xs.clone(), ps, 32, 0, 0, 0);
    assertArrayEquals(new long[] {4, 256}, t.n());
    assertEquals(512, t.span());
    // Per-row positions over narrow single rows go to the general kernel, which packs them into warps.
    assertEquals(null, CudaModelDevice.RopeTokens.plan(new long[] {1, 5, 7}, new long[] {0, 224, 32},
        new long[] {0, 224, 32}, new long[] {0, 7, 1}, 32, 0, 0, 0));
  }

  private static int[] shuffled(Random random) {
    int[] o = {0, 1, 2};
    for (int i = 2; i > 0; i--) {
      int j = random.nextInt(i + 1);
      int x = o[i];
      o[i] = o[j];
      o[j] = x;
    }
    return o;
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
