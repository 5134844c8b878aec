package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Two-plane master weights ({@link MasterPlanes}): a split and a join give back every fp32 weight bit for bit, and
 * the upper plane is the weight rounded to bf16 as {@link Layouts#floatToBf16} rounds it (to nearest even) except on
 * exact ties, which go away from zero. Exact comparisons: the encoding is integer arithmetic on the bits.
 */
class MasterPlanesGpuTest {
  /** Every lower half under upper halves where carries, the sign, the largest finite values and NaNs meet. */
  private static final int[] UPPERS = {0x0000, 0x0001, 0x007f, 0x0080, 0x3f80, 0x3fff, 0x7f7f, 0x7f80, 0x7fc0,
      0x7fff, 0x8000, 0x8001, 0xbf80, 0xff7f, 0xff80, 0xffff};

  @Test
  void splitAndJoinRecoverEveryBitWithTheCopyRoundedToNearest() {
    int n = UPPERS.length * 65536 + (1 << 20);
    int[] bits = new int[n];
    int at = 0;
    for (int u : UPPERS) {
      for (int l = 0; l < 65536; l++) {
        bits[at++] = (u << 16) | l;
      }
    }
    Random rnd = new Random(5);
    while (at < n) {
      bits[at++] = rnd.nextInt();
    }
    // Four at a time (n a multiple of 4, aligned arrays) and one at a time (an odd length).
    check(bits, n);
    check(bits, n - 3);
  }

  private static void check(int[] bits, int n) {
    CudaDevice dev = GpuTesting.device();
    Storage s = Storage.allocate(4L * n);
    for (int i = 0; i < n; i++) {
      s.segment().setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i, bits[i]);
    }
    try (CudaArray master = CudaArray.fromHost(dev, NdArray.of(s, DType.F32, n));
        CudaArray upper = CudaArray.empty(dev, DType.BF16, n).poison();
        CudaArray lower = CudaArray.empty(dev, DType.BF16, n).poison();
        CudaArray joined = CudaArray.empty(dev, DType.F32, n).poison()) {
      MasterPlanes.split(dev.defaultStream(), master, upper, lower);
      MasterPlanes.join(dev.defaultStream(), upper, lower, joined);
      var up = upper.toHost().segment();
      var back = joined.toHost().segment();
      int ties = 0;
      for (int i = 0; i < n; i++) {
        int b = bits[i];
        float f = Float.intBitsToFloat(b);
        boolean nan = (b & 0x7fffffff) > 0x7f800000;
        int expectBack = nan ? 0x7fc00000 : b;
        int gotBack = back.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i);
        int gotUpper = up.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0xffff;
        int expectUpper;
        if (nan) {
          expectUpper = 0x7fc0;
        } else if ((b & 0xffff) == 0x8000) {
          expectUpper = (b >>> 16) + 1; // a tie: away from zero (the magnitude's upper half plus one)
          ties++;
        } else {
          expectUpper = Layouts.floatToBf16(f) & 0xffff;
        }
        if (gotBack != expectBack || gotUpper != expectUpper) {
          fail(String.format("weight bits %08x (n = %d): joined %08x, expected %08x; upper plane %04x, expected %04x",
              b, n, gotBack, expectBack, gotUpper, expectUpper));
        }
      }
      // Each listed upper half but the five NaN ones (0x7f80 with a lower half of 0x8000 is a NaN too) has one tie;
      // the random patterns add about 16.
      assertTrue(ties >= 11, "exact ties among the patterns: " + ties);
    }
  }
}
