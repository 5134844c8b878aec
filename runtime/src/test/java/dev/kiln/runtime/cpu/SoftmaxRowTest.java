package dev.kiln.runtime.cpu;

import static dev.kiln.runtime.cpu.TestArrays.assertClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The F32 softmax row kernels on long rows, in place, and the one-sided exp they use. */
class SoftmaxRowTest {
  private final boolean simdBefore = Simd.enabled();

  @AfterEach
  void restore() {
    Simd.setEnabled(simdBefore);
  }

  /** expNonPositive against Math.exp over [-110, 0], the subnormal range, the clamp edge and specials. */
  @Test
  void expNonPositiveWithinTwoUlpsIncludingSubnormalResults() {
    if (!Simd.available()) {
      throw new IllegalStateException("needs jdk.incubator.vector (surefire adds it)");
    }
    Random rnd = new Random(5);
    VectorSpecies<Float> s = FloatVector.SPECIES_PREFERRED;
    float[] x = new float[s.loopBound(20000)];
    for (int i = 0; i < x.length; i++) {
      // Half ordinary values, half the range whose results are subnormal or round to 0.
      x[i] = (float) (i % 2 == 0 ? -rnd.nextDouble() * 110 : -86 - rnd.nextDouble() * 20);
    }
    float[] specials = {0f, -0f, -1e-30f, -1e-7f, -0.34657f, -0.34658f, -1f, -87.33654f, -87.3366f, -88f, -100f,
        -103.2789f, -103.279f, -103.9f, -103.97f, -104f, -104.1f, -110f, -1e30f, Float.NEGATIVE_INFINITY, Float.NaN};
    System.arraycopy(specials, 0, x, 0, specials.length);
    float[] y = new float[x.length];
    for (int i = 0; i < x.length; i += s.length()) {
      VectorKernels.expNonPositive(FloatVector.fromArray(s, x, i)).intoArray(y, i);
    }
    for (int i = 0; i < x.length; i++) {
      float want = (float) Math.exp(x[i]);
      if (Float.isNaN(want)) {
        assertTrue(Float.isNaN(y[i]), "exp(" + x[i] + ") = " + y[i]);
      } else if (want < Float.MIN_NORMAL) {
        // Subnormal results: the scaling rounds once, like IEEE; 2 steps of the smallest subnormal allow for the
        // polynomial's error before that rounding.
        assertEquals(want, y[i], 2 * Float.MIN_VALUE, "exp(" + x[i] + ")");
      } else {
        // Same reduction and degree-7 polynomial as VectorKernels.exp: within 2 float ulps.
        assertEquals(want, y[i], 2 * Math.ulp(want), "exp(" + x[i] + ")");
      }
    }
  }

  /**
   * Rows long enough to span several 16-step float-lane blocks, with and without a masked tail, some entries
   * masked to -inf as attention does, against a float64 reference; both kernel paths.
   */
  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void longRowsMatchReference(boolean simd) {
    Simd.setEnabled(simd);
    Random rnd = new Random(11);
    int l = FloatVector.SPECIES_PREFERRED.length();
    int[] lengths = {1, l - 1, 16 * l, 16 * l + 1, 32 * l + 3, 1000 + rnd.nextInt(4000)};
    for (int n : lengths) {
      int rows = 3;
      float[] v = new float[rows * n];
      for (int i = 0; i < v.length; i++) {
        v[i] = rnd.nextInt(7) == 0 && i % n != 0 ? Float.NEGATIVE_INFINITY : (float) (rnd.nextGaussian() * 20);
      }
      NdArray x = NdArray.fromFloats(v, rows, n);
      for (boolean log : new boolean[] {false, true}) {
        float[] got = (log ? Softmax.logSoftmax(x, -1) : Softmax.softmax(x, -1)).toFloatArray();
        for (int r = 0; r < rows; r++) {
          double[] row = new double[n];
          for (int k = 0; k < n; k++) {
            row[k] = v[r * n + k];
          }
          double[] ref = ReduceSoftmaxTest.refSoftmaxRow(row, log);
          for (int k = 0; k < n; k++) {
            // Float exp (~2 ulp), float-lane partial sums of 16 steps flushed to double (~1e-7 relative over
            // thousands of terms), one rounding of the scale: 2e-6 relative. Absolute 1e-7 for tiny probabilities;
            // log-softmax is x - const with |x| up to ~100: absolute 2e-5. Masked entries must be exactly
            // 0 (softmax) or -inf (log-softmax).
            double want = ref[k];
            if (Double.isInfinite(want) || want == 0) {
              assertEquals(want, got[r * n + k], 0, "masked entry n=" + n + " row " + r + " col " + k);
            } else {
              assertClose(want, got[r * n + k], 2e-6, log ? 2e-5 : 1e-7,
                  (log ? "logSoftmax" : "softmax") + " n=" + n + " row " + r + " col " + k);
            }
          }
        }
      }
    }
  }

  /** softmaxInto with out = x (in place), on a row view that starts inside its storage, equals the copy result. */
  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void inPlaceOnAnOffsetViewMatchesOutOfPlace(boolean simd) {
    Simd.setEnabled(simd);
    Random rnd = new Random(17);
    int n = 777;
    float[] v = new float[5 * n];
    for (int i = 0; i < v.length; i++) {
      v[i] = (float) (rnd.nextGaussian() * 5);
    }
    for (boolean log : new boolean[] {false, true}) {
      NdArray whole = NdArray.fromFloats(v, 5, n);
      NdArray rows = whole.narrow(0, 2, 3); // storage offset 2n elements
      float[] want = (log ? Softmax.logSoftmax(rows, -1) : Softmax.softmax(rows, -1)).toFloatArray();
      Softmax.softmaxInto(rows, -1, log, rows);
      // Same kernel, same order of operations: bit-for-bit equal.
      assertArrayEquals(want, rows.toFloatArray());
      // Rows outside the view are untouched.
      float[] all = whole.toFloatArray();
      for (int i = 0; i < 2 * n; i++) {
        assertEquals(v[i], all[i], 0, "element " + i + " before the view was written");
      }
    }
  }

  /** A NaN anywhere in a long row, or an +inf, makes the whole row NaN (as in PyTorch); other rows are unaffected. */
  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void nanOrInfinityPoisonsOnlyItsRow(boolean simd) {
    Simd.setEnabled(simd);
    int n = 300;
    float[] v = new float[3 * n];
    for (int i = 0; i < v.length; i++) {
      v[i] = (i % 17) * 0.25f;
    }
    v[123] = Float.NaN;
    v[n + 250] = Float.POSITIVE_INFINITY;
    NdArray x = NdArray.fromFloats(v, 3, n);
    for (boolean log : new boolean[] {false, true}) {
      float[] y = (log ? Softmax.logSoftmax(x, -1) : Softmax.softmax(x, -1)).toFloatArray();
      for (int i = 0; i < 2 * n; i++) {
        assertTrue(Float.isNaN(y[i]), "row " + i / n + " col " + i % n + " should be NaN but is " + y[i]);
      }
      for (int i = 2 * n; i < 3 * n; i++) {
        assertTrue(Float.isFinite(y[i]), "row 2 col " + (i - 2 * n) + " should be finite but is " + y[i]);
      }
    }
  }
}
