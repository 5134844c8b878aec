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
 * {@link Device#crossEntropy} and {@link Device#crossEntropyBackward} two ways — the CPU device's one-pass loops, and
 * the interface's defaults composed of other primitives, driven over the CPU device's primitives — against the eager
 * interpreter's {@code Ops.crossEntropy} (the mean) and against central finite differences of that mean, all in
 * float64.
 */
class CrossEntropyDeviceTest {
  private final CpuDevice cpu = new CpuDevice();

  /** The CPU device's primitives with the cross-entropy pair left to the interface's defaults. */
  private final Device composed = ComposedDefaults.over(cpu, "crossEntropy");

  private static double[] d(Tensor t) {
    return ((NdArray) t).to(DType.F64).toDoubleArray();
  }

  private static void within(String what, double[] ref, double[] got, double tol) {
    for (int i = 0; i < ref.length; i++) {
      if (!(Math.abs(ref[i] - got[i]) <= tol)) {
        throw new AssertionError(what + ": element " + i + " is " + got[i] + ", expected " + ref[i] + " (tolerance "
            + tol + ")");
      }
    }
  }

  private static double mean(double[] x) {
    double s = 0;
    for (double v : x) {
      s += v;
    }
    return s / x.length;
  }

  private static double eagerMean(NdArray logits, NdArray targets) {
    try (var scope = Eager.precision(DType.F64)) {
      return ((NdArray) Ops.crossEntropy(logits, targets)).to(DType.F64).toDoubleArray()[0];
    }
  }

  @Test
  void lossesAndGradientsMatchTheEagerMeanAndFiniteDifferences() {
    Rng rng = new Rng(11);
    // Logits offset by 300 in one row: the log-sum-exp must shift by the row's max, not overflow.
    NdArray logits = rng.normal(NdArray.empty(DType.F64, 2, 3, 7), 0, 2);
    for (int j = 0; j < 7; j++) {
      logits.setDouble(logits.getDouble(1, 2, j) + 300, 1, 2, j);
    }
    NdArray targets = NdArray.fromLongs(new long[] {0, 6, 3, 2, 5, 1}, 2, 3);
    double ref = eagerMean(logits, targets);
    for (Device dev : new Device[] {cpu, composed}) {
      String who = dev == cpu ? "cpu loops" : "composed default";
      // float64 throughout, sums of seven exponentials: 1e-12.
      within(who + ", mean loss", new double[] {ref}, new double[] {mean(d(dev.crossEntropy(logits, targets)))},
          1e-12);
      // The gradient of the mean: dLoss = 1/6 everywhere, against central differences (step 1e-5, error ~1e-10).
      double[] grad = d(dev.crossEntropyBackward(logits, targets, dev.full(DType.F64, 1.0 / 6, 2, 3)));
      double[] x = d(logits);
      double h = 1e-5;
      for (int i = 0; i < x.length; i++) {
        NdArray up = NdArray.fromDoubles(x.clone(), 2, 3, 7);
        NdArray down = NdArray.fromDoubles(x.clone(), 2, 3, 7);
        long[] at = {i / 21, (i / 7) % 3, i % 7};
        up.setDouble(x[i] + h, at);
        down.setDouble(x[i] - h, at);
        double fd = (eagerMean(up, targets) - eagerMean(down, targets)) / (2 * h);
        within(who + ", gradient at " + i, new double[] {fd}, new double[] {grad[i]}, 1e-8);
      }
      // float32 logits: the same losses to float rounding of logits near 300 (ulp 3e-5): 1e-4.
      within(who + ", float32 mean", new double[] {ref},
          new double[] {mean(d(dev.crossEntropy(logits.to(DType.F32), targets)))}, 1e-4);
    }
  }

  @Test
  void aTargetOutsideTheVocabularyIsRefused() {
    NdArray logits = NdArray.zeros(DType.F32, 2, 4);
    NdArray targets = NdArray.fromLongs(new long[] {1, 4}, 2);
    assertThrows(IndexOutOfBoundsException.class, () -> cpu.crossEntropy(logits, targets));
    assertThrows(IndexOutOfBoundsException.class,
        () -> cpu.crossEntropyBackward(logits, targets, cpu.full(DType.F32, 1.0, 2)));
    assertThrows(IndexOutOfBoundsException.class, () -> composed.crossEntropy(logits, targets));
  }
}
