package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Runs on every machine: checks the row-major to column-major mapping by executing the plan with a column-major
 * GEMM written the way the cuBLAS documentation defines it, on flat "device memory" arrays.
 */
class GemmPlanTest {
  /** cuBLAS semantics: C(m x n, col-major, ldc) = op(A)(m x k) * op(B)(k x n), batched by element strides. */
  private static void columnMajorGemm(GemmPlan p, double[] first, long firstOff, double[] second, long secondOff,
      double[] c, long cOff) {
    for (int b = 0; b < p.batch(); b++) {
      for (int i = 0; i < p.m(); i++) {
        for (int j = 0; j < p.n(); j++) {
          double s = 0;
          for (int q = 0; q < p.k(); q++) {
            long fa = firstOff + b * p.strideFirst()
                + (p.opFirst() == 0 ? i + q * p.ldFirst() : q + i * p.ldFirst());
            long sb = secondOff + b * p.strideSecond()
                + (p.opSecond() == 0 ? q + j * p.ldSecond() : j + q * p.ldSecond());
            s += first[(int) fa] * second[(int) sb];
          }
          c[(int) (cOff + b * p.strideC() + i + j * p.ldc())] = s;
        }
      }
    }
  }

  @Test
  void planReproducesRowMajorMatmulForEveryOperandLayout() {
    Random rnd = new Random(7);
    for (int trial = 0; trial < 200; trial++) {
      int batch = 1 + rnd.nextInt(3);
      int m = 1 + rnd.nextInt(6), k = 1 + rnd.nextInt(6), n = 1 + rnd.nextInt(6);
      boolean batched = rnd.nextBoolean();
      boolean ta = rnd.nextBoolean(), tb = rnd.nextBoolean();
      boolean broadcastB = batched && rnd.nextBoolean();
      int bBatch = broadcastB ? 1 : batch;
      if (!batched) {
        batch = 1;
        bBatch = 1;
      }
      double[] a = new double[batch * m * k];
      double[] b = new double[bBatch * k * n];
      for (int i = 0; i < a.length; i++) {
        a[i] = rnd.nextGaussian();
      }
      for (int i = 0; i < b.length; i++) {
        b[i] = rnd.nextGaussian();
      }
      // Memory layout: A stored row-major [batch, m, k] or, when ta, as [batch, k, m] (a transposed view).
      double[] aMem = new double[a.length];
      double[] bMem = new double[b.length];
      for (int q = 0; q < batch; q++) {
        for (int i = 0; i < m; i++) {
          for (int p = 0; p < k; p++) {
            aMem[q * m * k + (ta ? p * m + i : i * k + p)] = a[q * m * k + i * k + p];
          }
        }
      }
      for (int q = 0; q < bBatch; q++) {
        for (int p = 0; p < k; p++) {
          for (int j = 0; j < n; j++) {
            bMem[q * k * n + (tb ? j * k + p : p * n + j)] = b[q * k * n + p * n + j];
          }
        }
      }
      long[] aShape = batched ? new long[] {batch, m, k} : new long[] {m, k};
      long[] aStr = batched ? new long[] {(long) m * k, ta ? 1 : k, ta ? m : 1}
          : new long[] {ta ? 1 : k, ta ? m : 1};
      long[] bShape = batched ? new long[] {bBatch, k, n} : new long[] {k, n};
      long[] bStr = batched ? new long[] {(long) k * n, tb ? 1 : n, tb ? k : 1}
          : new long[] {tb ? 1 : n, tb ? k : 1};
      long[] cShape = batched ? new long[] {batch, m, n} : new long[] {m, n};
      long[] cStr = batched ? new long[] {(long) m * n, n, 1} : new long[] {n, 1};
      GemmPlan plan = GemmPlan.of(aShape, aStr, bShape, bStr, cShape, cStr);
      double[] c = new double[batch * m * n];
      columnMajorGemm(plan, bMem, 0, aMem, 0, c, 0);
      double[] ref = new double[batch * m * n];
      for (int q = 0; q < batch; q++) {
        int ob = (bBatch == 1 ? 0 : q) * k * n;
        for (int i = 0; i < m; i++) {
          for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
              s += a[q * m * k + i * k + p] * b[ob + p * n + j];
            }
            ref[q * m * n + i * n + j] = s;
          }
        }
      }
      // Same products summed in the same order: equal to rounding (1e-12 absolute on values of order 10).
      assertArrayEquals(ref, c, 1e-12, () -> "plan " + plan);
    }
  }

  @Test
  void rejectsOperandsWithoutAContiguousDim() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GemmPlan.of(
        new long[] {4, 6}, new long[] {12, 2}, new long[] {6, 3}, new long[] {3, 1}, new long[] {4, 3},
        new long[] {3, 1}));
    assertTrue(e.getMessage().contains("operand A"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> GemmPlan.of(new long[] {4, 6}, new long[] {6, 1},
        new long[] {5, 3}, new long[] {3, 1}, new long[] {4, 3}, new long[] {3, 1}));
    assertTrue(e.getMessage().contains("do not agree"), e.getMessage());
  }
}
