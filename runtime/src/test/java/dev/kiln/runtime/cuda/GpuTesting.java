package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;

/** Shared pieces of the *GpuTest classes: the skip rule, random inputs, and tolerance checks that report. */
public final class GpuTesting {
  private GpuTesting() {}

  /** The first GPU, or a skipped test that prints why there is none (always the case in CI). */
  public static CudaDevice device() {
    CudaProbe.Report r = CudaProbe.probe();
    if (!r.available()) {
      System.out.println("[skip] no CUDA device: " + r.problem());
    }
    Assumptions.assumeTrue(r.available(), () -> "no CUDA device: " + r.problem());
    return CudaDevice.first();
  }

  /** Standard normal values (never all zeros), rounded to {@code dtype}, as a contiguous host array. */
  public static NdArray randn(Random rnd, DType dtype, double scale, long... shape) {
    int n = Math.toIntExact(NdArray.numel(shape));
    float[] v = new float[n];
    for (int i = 0; i < n; i++) {
      v[i] = (float) (rnd.nextGaussian() * scale);
    }
    NdArray f = NdArray.fromFloats(v, shape);
    return dtype == DType.F32 ? f : f.to(dtype);
  }

  /** Values as doubles, whatever the dtype. */
  public static double[] doubles(NdArray a) {
    return a.contiguous().to(DType.F64).toDoubleArray();
  }

  public static double maxAbs(double[] v) {
    double m = 0;
    for (double x : v) {
      m = Math.max(m, Math.abs(x));
    }
    return m;
  }

  /**
   * Fails unless every element satisfies {@code |got - ref| <= atol + rtol * |ref|}; NaN (an element the kernel never
   * wrote over the poison) always fails. Prints the worst error so logs show the margin.
   */
  public static void assertClose(String what, double[] ref, double[] got, double rtol, double atol) {
    if (ref.length != got.length) {
      fail(what + ": " + got.length + " elements, expected " + ref.length);
    }
    double worst = 0;
    int worstAt = -1;
    for (int i = 0; i < ref.length; i++) {
      double err = Math.abs(got[i] - ref[i]);
      if (Double.isNaN(got[i]) || Double.isNaN(err)) {
        fail(what + ": element " + i + " is NaN (never written?), expected " + ref[i]);
      }
      double allowed = atol + rtol * Math.abs(ref[i]);
      if (err > allowed) {
        fail(String.format("%s: element %d is %.8g, expected %.8g (|err| %.3g > allowed %.3g; rtol %.1g, atol %.3g)",
            what, i, got[i], ref[i], err, allowed, rtol, atol));
      }
      if (err > worst) {
        worst = err;
        worstAt = i;
      }
    }
    System.out.printf("  %-48s max |err| %.3g at %d (max |ref| %.3g, rtol %.1g, atol %.3g)%n", what, worst, worstAt,
        maxAbs(ref), rtol, atol);
  }
}
