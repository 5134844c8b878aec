package dev.kiln.runtime.cpu.device;

import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Ops;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.eager.Eager;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import org.junit.jupiter.api.Test;

/**
 * {@link Device#rope} three ways against the eager interpreter's {@code Ops.rope} (the reference): the CPU device's
 * one-pass loop, and the interface's default composed of other primitives (what the CUDA device runs), driven here
 * over the CPU device's primitives; plus the inverse rotation undoing the forward one.
 */
class RopeTest {
  private final CpuDevice cpu = new CpuDevice();

  /** The CPU device's primitives with {@code rope} left to the interface's default. */
  private final Device composed = ComposedDefaults.over(cpu, "rope");

  private static double maxDiff(Tensor a, Tensor b) {
    double[] x = ((NdArray) a).to(DType.F64).toDoubleArray();
    double[] y = ((NdArray) b).to(DType.F64).toDoubleArray();
    double m = 0;
    for (int i = 0; i < x.length; i++) {
      m = Math.max(m, Math.abs(x[i] - y[i]));
    }
    return m;
  }

  private static void within(String what, Tensor ref, Tensor got, double tol) {
    double d = maxDiff(ref, got);
    if (!(d <= tol)) {
      throw new AssertionError(what + ": max |diff| " + d + " > " + tol);
    }
  }

  @Test
  void cpuLoopAndComposedDefaultMatchTheEagerReference() {
    Rng rng = new Rng(4);
    NdArray x = rng.normal(NdArray.empty(DType.F64, 2, 3, 7, 16), 0, 1);
    NdArray positions = NdArray.fromLongs(new long[] {0, 5, 2, 9, 100, 3, 1}, 7);
    NdArray ref;
    try (var scope = Eager.precision(DType.F64)) {
      ref = (NdArray) Ops.rope(x, positions, 10_000.0);
    }
    // float64 throughout; the composed path computes theta^(-2i/d) as exp(-2i ln(theta)/d): 1e-12 absolute.
    within("cpu loop", ref, cpu.rope(x, positions, 10_000.0, false), 1e-12);
    within("composed default", ref, composed.rope(x, positions, 10_000.0, false), 1e-12);
    within("inverse undoes forward", x, cpu.rope(cpu.rope(x, positions, 500.0, false), positions, 500.0, true), 1e-12);
    within("composed inverse", x,
        composed.rope(composed.rope(x, positions, 500.0, false), positions, 500.0, true), 1e-12);
    // float32: the rotation in float, angles in double (the loop) or float (composed): 1e-5 of values near 1.
    NdArray x32 = x.to(DType.F32);
    within("cpu loop f32", ref, cpu.rope(x32, positions, 10_000.0, false), 1e-5);
    within("composed f32", ref, composed.rope(x32, positions, 10_000.0, false), 1e-4);
  }

  @Test
  void anOddWidthIsRefused() {
    assertThrows(IllegalArgumentException.class,
        () -> cpu.rope(NdArray.zeros(DType.F32, 3, 5), NdArray.arange(DType.I64, 3), 10_000.0, false));
  }
}
