package dev.kiln.runtime.optim;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;

/** Gradient clipping by the global L2 norm, as CS336 ({@code run_gradient_clipping}) and PyTorch's {@code clip_grad_norm_}. */
public final class GradClip {
  /** CS336's (and PyTorch's) guard against division by a zero norm. */
  public static final double EPS = 1e-6;

  private static final long GRAIN = 1 << 15;

  private GradClip() {}

  /**
   * The L2 norm over every element of every tensor. Squares are summed in float64, per fixed chunk and then in
   * chunk order, so the result is the same on any number of threads. NaN or Inf anywhere gives NaN or Inf.
   */
  public static double globalNorm(ParameterSet grads) {
    double total = 0;
    for (NdArray g : grads.asMap().values()) {
      long n = g.numel();
      double[] partial = new double[(int) Parallel.chunkCount(n, GRAIN)];
      MemorySegment s = g.segment();
      long o = g.offset();
      boolean f32 = g.dtype() == DType.F32;
      Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
        double acc = 0;
        for (long i = lo; i < hi; i++) {
          double x = f32 ? s.get(Layouts.F32, (o + i) * 4) : s.get(Layouts.F64, (o + i) * 8);
          acc += x * x;
        }
        partial[(int) c] = acc;
      });
      for (double p : partial) {
        total += p;
      }
    }
    return Math.sqrt(total);
  }

  /**
   * Scales every gradient by {@code maxNorm / (norm + 1e-6)} when the global norm exceeds {@code maxNorm}, in
   * place. Returns the norm before clipping. A non-finite norm leaves the gradients alone (the caller stops the run).
   */
  public static double clip(ParameterSet grads, double maxNorm) {
    if (!(maxNorm > 0)) {
      throw new IllegalArgumentException("max gradient norm must be > 0, got " + maxNorm);
    }
    double norm = globalNorm(grads);
    if (norm > maxNorm && !Double.isInfinite(norm)) {
      scale(grads, maxNorm / (norm + EPS));
    }
    return norm;
  }

  /** Multiplies every element by {@code factor} in place (float32 tensors by the factor rounded to float). */
  public static void scale(ParameterSet grads, double factor) {
    for (NdArray g : grads.asMap().values()) {
      long n = g.numel();
      MemorySegment s = g.segment();
      long o = g.offset();
      if (g.dtype() == DType.F32) {
        float f = (float) factor;
        Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
          for (long i = lo; i < hi; i++) {
            s.set(Layouts.F32, (o + i) * 4, s.get(Layouts.F32, (o + i) * 4) * f);
          }
        });
      } else {
        Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
          for (long i = lo; i < hi; i++) {
            s.set(Layouts.F64, (o + i) * 8, s.get(Layouts.F64, (o + i) * 8) * factor);
          }
        });
      }
    }
  }
}
