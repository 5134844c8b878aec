package dev.kiln.runtime.cpu;

import static dev.kiln.runtime.cpu.TestArrays.assertClose;
import static dev.kiln.runtime.cpu.TestArrays.describe;
import static dev.kiln.runtime.cpu.TestArrays.forEachIndex;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Reduce.Op;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class ReduceSoftmaxTest {
  private final boolean simdBefore = Simd.enabled();

  @AfterEach
  void restore() {
    Simd.setEnabled(simdBefore);
  }

  /** Naive reference: for each output index tuple, fold every input tuple that maps to it, in double. */
  static double[] refReduce(NdArray x, Op op, boolean[] red) {
    long[] shape = x.shape();
    long[] outShape = shape.clone();
    for (int d = 0; d < shape.length; d++) {
      if (red[d]) {
        outShape[d] = 1;
      }
    }
    int n = (int) NdArray.numel(outShape);
    double[] acc = new double[n];
    long[] cnt = new long[n];
    Arrays.fill(acc, switch (op) {
      case SUM, MEAN -> 0;
      case PROD -> 1;
      case MAX -> Double.NEGATIVE_INFINITY;
      case MIN -> Double.POSITIVE_INFINITY;
    });
    long[] ostr = NdArray.contiguousStrides(outShape);
    forEachIndex(shape, idx -> {
      int o = 0;
      for (int d = 0; d < idx.length; d++) {
        o += (int) ((red[d] ? 0 : idx[d]) * ostr[d]);
      }
      double v = x.getDouble(idx);
      acc[o] = switch (op) {
        case SUM, MEAN -> acc[o] + v;
        case PROD -> acc[o] * v;
        case MAX -> Math.max(acc[o], v);
        case MIN -> Math.min(acc[o], v);
      };
      cnt[o]++;
    });
    if (op == Op.MEAN) {
      for (int i = 0; i < n; i++) {
        acc[i] /= cnt[i] == 0 ? 0 : cnt[i];
      }
    }
    return acc;
  }

  @Test
  void reduceMatchesReferenceOverRandomDimSets() {
    Random rnd = new Random(17);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16, DType.I32, DType.I64}) {
      for (int trial = 0; trial < 60; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 0, 4, true);
        NdArray x = TestArrays.random(rnd, t, shape, 1.0);
        int r = shape.length;
        boolean[] red = new boolean[r];
        List<Integer> dims = new ArrayList<>();
        for (int d = 0; d < r; d++) {
          if (rnd.nextBoolean()) {
            red[d] = true;
            dims.add(rnd.nextBoolean() ? d : d - r); // negative dims too
          }
        }
        if (dims.isEmpty()) {
          Arrays.fill(red, true); // empty dims array = all dims
        }
        int[] dimArr = dims.stream().mapToInt(Integer::intValue).toArray();
        for (Op op : Op.values()) {
          boolean keep = rnd.nextBoolean();
          long redCount = 1;
          for (int d = 0; d < r; d++) {
            redCount *= red[d] ? shape[d] : 1;
          }
          long outCount = x.numel() == 0 ? 0 : x.numel() / Math.max(redCount, 1);
          if (redCount == 0 && (op == Op.MAX || op == Op.MIN)) {
            boolean hasOutputs = true;
            for (int d = 0; d < r; d++) {
              hasOutputs &= red[d] || shape[d] != 0;
            }
            if (hasOutputs) {
              assertThrows(IllegalArgumentException.class, () -> Reduce.reduce(x, op, dimArr, keep));
              continue;
            }
          }
          NdArray y = Reduce.reduce(x, op, dimArr, keep);
          double[] ref = refReduce(x, op, red);
          double[] got = y.toDoubleArray();
          assertEquals(ref.length == 0 ? 0 : ref.length, got.length, op + " " + describe(x));
          long[] wantShape = keep ? shape.clone() : new long[0];
          if (keep) {
            for (int d = 0; d < r; d++) {
              wantShape[d] = red[d] ? 1 : shape[d];
            }
          } else {
            wantShape = java.util.stream.IntStream.range(0, r).filter(d -> !red[d]).mapToLong(d -> shape[d])
                .toArray();
          }
          assertArrayEquals(wantShape, y.shape(), op + " shape");
          DType wantType = switch (op) {
            case SUM, PROD -> t.isFloating() ? t : DType.I64;
            case MEAN -> t.isFloating() ? t : DType.F32;
            default -> t;
          };
          assertEquals(wantType, y.dtype());
          for (int i = 0; i < got.length; i++) {
            // Accumulated in double like the reference, so the only error is the final rounding into the
            // result type (plus summation order: ~1e-15 relative at these sizes). PROD of up to ~600 factors
            // in [-2,2] keeps well inside double range.
            double tol = TestArrays.rtol(wantType);
            assertClose(ref[i], got[i], tol, wantType == DType.BF16 ? 1e-2 : 1e-6 * (wantType == DType.F64 ? 1e-6 : 1),
                op + " dims " + Arrays.toString(dimArr) + " keep " + keep + " of " + describe(x) + " output " + i);
          }
          assertTrue(outCount >= 0);
        }
      }
    }
  }

  @Test
  void float32SumsAccumulateInDouble() {
    // 2^24 + 3 ones: a float32 running sum sticks at 16777216; double accumulation gives the exact count, which
    // float32 rounds to 16777220 (nearest representable).
    int n = (1 << 24) + 3;
    NdArray ones = NdArray.full(DType.F32, 1.0, n);
    assertEquals(16777220.0, Reduce.sum(ones).item(), 0.0);
    NdArray i = NdArray.fromLongs(new long[] {Long.MAX_VALUE - 5, 2, 3});
    assertEquals(Long.MAX_VALUE, Reduce.sum(i).toLongArray()[0], "int64 sums are exact");
  }

  @Test
  void argmaxArgminFirstOnTiesAndNaN() {
    Random rnd = new Random(23);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.I32, DType.I64}) {
      for (int trial = 0; trial < 30; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 1, 4, false);
        NdArray x = TestArrays.random(rnd, t, shape, 1);
        int dim = rnd.nextInt(shape.length) - (rnd.nextBoolean() ? shape.length : 0);
        int d = dim < 0 ? dim + shape.length : dim;
        for (boolean max : new boolean[] {true, false}) {
          boolean keep = rnd.nextBoolean();
          NdArray a = max ? Reduce.argmax(x, dim, keep) : Reduce.argmin(x, dim, keep);
          assertEquals(DType.I64, a.dtype());
          NdArray ak = keep ? a : a.unsqueeze(d);
          long[] os = x.shape();
          os[d] = 1;
          forEachIndex(os, idx -> {
            long best = 0;
            long[] j = idx.clone();
            double bv = x.getDouble(j);
            for (long k = 1; k < shape[d]; k++) {
              j[d] = k;
              double v = x.getDouble(j);
              if (max ? v > bv : v < bv) {
                bv = v;
                best = k;
              }
            }
            assertEquals(best, ak.getLong(idx), (max ? "argmax " : "argmin ") + describe(x));
          });
        }
      }
    }
    NdArray nan = NdArray.fromFloats(new float[] {1, Float.NaN, 5, Float.NaN});
    assertEquals(1, Reduce.argmax(nan, 0, false).getLong());
    assertEquals(1, Reduce.argmin(nan, 0, false).getLong());
  }

  static double[] refSoftmaxRow(double[] v, boolean log) {
    double m = Double.NEGATIVE_INFINITY;
    for (double x : v) {
      m = Math.max(m, x);
    }
    double s = 0;
    for (double x : v) {
      s += Math.exp(x - m);
    }
    double[] o = new double[v.length];
    for (int i = 0; i < v.length; i++) {
      o[i] = log ? v[i] - m - Math.log(s) : Math.exp(v[i] - m) / s;
    }
    return o;
  }

  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void softmaxMatchesReferenceAlongAnyDim(boolean simd) {
    Simd.setEnabled(simd);
    Random rnd = new Random(29);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16}) {
      for (int trial = 0; trial < 40; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 1, 4, true);
        if (trial % 5 == 0) {
          shape[shape.length - 1] = 37 + rnd.nextInt(60); // rows longer than a vector, with a masked tail
        }
        // Large scale: without the max shift exp would overflow float.
        NdArray x = TestArrays.random(rnd, t, shape, trial % 3 == 0 ? 60 : 3);
        int dim = rnd.nextInt(shape.length) - (rnd.nextBoolean() ? shape.length : 0);
        int d = dim < 0 ? dim + shape.length : dim;
        for (boolean log : new boolean[] {false, true}) {
          NdArray y = log ? Softmax.logSoftmax(x, dim) : Softmax.softmax(x, dim);
          assertEquals(t, y.dtype());
          long[] os = x.shape();
          os[d] = 1;
          forEachIndex(os, idx -> {
            double[] row = new double[(int) shape[d]];
            long[] j = idx.clone();
            for (int k = 0; k < row.length; k++) {
              j[d] = k;
              row[k] = x.getDouble(j);
            }
            double[] ref = refSoftmaxRow(row, log);
            for (int k = 0; k < row.length; k++) {
              j[d] = k;
              // Float rows: exp in float (~2 ulp) and a float-lane partial sum flushed to double every 16 steps;
              // 2e-6 relative plus 1e-7 absolute covers it. log-softmax values are x - const, so their absolute
              // error scales with |x| (up to 120): atol 2e-5.
              double rt = t == DType.F32 ? 2e-6 : TestArrays.rtol(t);
              double at = t == DType.BF16 ? 2e-2 : t == DType.F64 ? 1e-12 : log ? 2e-5 : 1e-7;
              assertClose(ref[k], y.getDouble(j), rt, at, (log ? "logSoftmax " : "softmax ") + "dim " + dim + " "
                  + describe(x) + " at " + Arrays.toString(j));
            }
          });
        }
      }
    }
  }

  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void softmaxOfFullyMaskedRowIsNaNAndOfLargeValuesIsFinite(boolean simd) {
    Simd.setEnabled(simd);
    NdArray x = NdArray.fromFloats(new float[] {Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 1000f, 1001f}, 2, 2);
    float[] y = Softmax.softmax(x, -1).toFloatArray();
    assertTrue(Float.isNaN(y[0]) && Float.isNaN(y[1]), Arrays.toString(y));
    // exp(1000) overflows float; shifted by the max it is e^-1 / (1 + e^-1).
    assertClose(Math.exp(-1) / (1 + Math.exp(-1)), y[2], 1e-6, 0, "softmax 1000");
  }
}
