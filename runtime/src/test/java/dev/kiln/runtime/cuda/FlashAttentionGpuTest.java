package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Fused attention, forward and backward, against the textbook formulas in float64 over the same (dtype-rounded)
 * inputs. Sequence lengths are deliberately not multiples of the tile sizes, so partial tiles are exercised.
 */
class FlashAttentionGpuTest {
  /** float64 attention: out, lse, and the gradients dq, dk, dv of sum(out * dOut). */
  static final class Reference {
    final double[] out;
    final double[] lse;
    final double[] dq;
    final double[] dk;
    final double[] dv;

    Reference(double[] q, double[] k, double[] v, double[] g, int bh, int n, int d, boolean causal, double scale) {
      out = new double[bh * n * d];
      lse = new double[bh * n];
      dq = new double[bh * n * d];
      dk = new double[bh * n * d];
      dv = new double[bh * n * d];
      double[] s = new double[n];
      double[] dp = new double[n];
      for (int b = 0; b < bh; b++) {
        int o = b * n * d;
        for (int i = 0; i < n; i++) {
          int kend = causal ? i + 1 : n;
          double m = Double.NEGATIVE_INFINITY;
          for (int j = 0; j < kend; j++) {
            double x = 0;
            for (int c = 0; c < d; c++) {
              x += q[o + i * d + c] * k[o + j * d + c];
            }
            s[j] = x * scale;
            m = Math.max(m, s[j]);
          }
          double l = 0;
          for (int j = 0; j < kend; j++) {
            s[j] = Math.exp(s[j] - m);
            l += s[j];
          }
          lse[b * n + i] = m + Math.log(l);
          for (int j = 0; j < kend; j++) {
            s[j] /= l; // P
          }
          for (int c = 0; c < d; c++) {
            double acc = 0;
            for (int j = 0; j < kend; j++) {
              acc += s[j] * v[o + j * d + c];
            }
            out[o + i * d + c] = acc;
          }
          // dP = dO v^T ; D = sum_j P dP ; dS = P (dP - D)
          double dsum = 0;
          for (int j = 0; j < kend; j++) {
            double x = 0;
            for (int c = 0; c < d; c++) {
              x += g[o + i * d + c] * v[o + j * d + c];
            }
            dp[j] = x;
            dsum += s[j] * x;
          }
          for (int j = 0; j < kend; j++) {
            double ds = s[j] * (dp[j] - dsum);
            for (int c = 0; c < d; c++) {
              dq[o + i * d + c] += scale * ds * k[o + j * d + c];
              dk[o + j * d + c] += scale * ds * q[o + i * d + c];
              dv[o + j * d + c] += s[j] * g[o + i * d + c];
            }
          }
        }
      }
    }
  }

  private static void run(DType dtype, int batch, int heads, int n, int d, AttentionMask mask) {
    run(dtype, batch, heads, n, d, mask, FlashAttention.Tuning.DEFAULT);
  }

  private static void run(DType dtype, int batch, int heads, int n, int d, AttentionMask mask,
      FlashAttention.Tuning tuning) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(31L * n + d + (mask == AttentionMask.CAUSAL ? 7 : 0) + dtype.ordinal());
    NdArray q = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray k = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray v = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray g = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    double scale = 1.0 / Math.sqrt(d);
    Reference ref = new Reference(GpuTesting.doubles(q), GpuTesting.doubles(k), GpuTesting.doubles(v),
        GpuTesting.doubles(g), batch * heads, n, d, mask == AttentionMask.CAUSAL, scale);
    String name = String.format("%s d%d n%d %s %s%s", dtype, d, n, mask,
        FlashAttention.usesTensorCores(dtype, d) ? "tensor-core" : "simt",
        tuning.equals(FlashAttention.Tuning.DEFAULT) ? "" : " " + tuning);
    // Tolerances. fp32 (SIMT kernel, fp32 math): 2e-5 of the largest reference magnitude, 1e-5 relative.
    // bf16: inputs are exact, but P and dS are rounded to bf16 before the second GEMM of each pair and outputs are
    // stored as bf16 (8 significant bits): 2e-2 of the largest magnitude plus 2e-2 relative.
    boolean bf16 = dtype == DType.BF16;
    double rtol = bf16 ? 2e-2 : 1e-5;
    double atolRel = bf16 ? 2e-2 : 2e-5;
    FlashAttention fa = new FlashAttention(dev.defaultStream(), tuning);
    try (CudaArray dq = CudaArray.fromHost(dev, q);
        CudaArray dk = CudaArray.fromHost(dev, k);
        CudaArray dv = CudaArray.fromHost(dev, v);
        CudaArray dg = CudaArray.fromHost(dev, g);
        CudaArray out = CudaArray.empty(dev, dtype, batch, heads, n, d).poison();
        CudaArray lse = CudaArray.empty(dev, DType.F32, batch, heads, n).poison();
        CudaArray gq = CudaArray.empty(dev, dtype, batch, heads, n, d).poison();
        CudaArray gk = CudaArray.empty(dev, dtype, batch, heads, n, d).poison();
        CudaArray gv = CudaArray.empty(dev, dtype, batch, heads, n, d).poison()) {
      fa.forwardInto(dq, dk, dv, mask, (float) scale, out, lse);
      GpuTesting.assertClose(name + " out", ref.out, GpuTesting.doubles(out.toHost()), rtol,
          atolRel * GpuTesting.maxAbs(ref.out));
      // lse is fp32 in both paths; bf16 scores come from fp32 tensor-core sums of exact products.
      GpuTesting.assertClose(name + " lse", ref.lse, GpuTesting.doubles(lse.toHost()), bf16 ? 1e-4 : 1e-5,
          bf16 ? 1e-3 : 1e-5);
      fa.backwardInto(dq, dk, dv, out, lse, dg, mask, (float) scale, gq, gk, gv);
      GpuTesting.assertClose(name + " dq", ref.dq, GpuTesting.doubles(gq.toHost()), rtol,
          atolRel * GpuTesting.maxAbs(ref.dq));
      GpuTesting.assertClose(name + " dk", ref.dk, GpuTesting.doubles(gk.toHost()), rtol,
          atolRel * GpuTesting.maxAbs(ref.dk));
      GpuTesting.assertClose(name + " dv", ref.dv, GpuTesting.doubles(gv.toHost()), rtol,
          atolRel * GpuTesting.maxAbs(ref.dv));
    }
  }

  @Test
  void bf16HeadDim64CausalAndNot() {
    run(DType.BF16, 2, 3, 200, 64, AttentionMask.CAUSAL);
    run(DType.BF16, 1, 2, 130, 64, AttentionMask.NONE);
    run(DType.BF16, 1, 1, 1, 64, AttentionMask.CAUSAL);
  }

  @Test
  void bf16HeadDim128CausalAndNot() {
    run(DType.BF16, 1, 2, 700, 128, AttentionMask.CAUSAL);
    run(DType.BF16, 2, 1, 77, 128, AttentionMask.NONE);
  }

  @Test
  void tuningVariantsGiveTheSameAnswers() {
    // Every compiled variant other than the defaults, so the benchmark's alternatives are known to be right.
    FlashAttention.Tuning a = new FlashAttention.Tuning("w8", "w8", "w4", "w8");
    FlashAttention.Tuning b = new FlashAttention.Tuning("w8mb2", "w4mb3", "w8", "w8");
    run(DType.BF16, 1, 2, 200, 64, AttentionMask.CAUSAL, a);
    run(DType.BF16, 1, 2, 333, 128, AttentionMask.CAUSAL, a);
    run(DType.BF16, 1, 2, 150, 64, AttentionMask.NONE, b);
    run(DType.BF16, 1, 2, 150, 128, AttentionMask.NONE, b);
  }

  @Test
  void fp32AndOtherHeadDimsTakeTheSimtPath() {
    run(DType.F32, 1, 2, 150, 64, AttentionMask.CAUSAL);
    run(DType.F32, 2, 1, 100, 32, AttentionMask.NONE);
    run(DType.F32, 1, 1, 65, 128, AttentionMask.NONE);
    run(DType.BF16, 1, 2, 120, 96, AttentionMask.CAUSAL);
  }

  @Test
  void backwardIsDeterministic() {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(9);
    NdArray q = GpuTesting.randn(rnd, DType.BF16, 1, 1, 4, 300, 128);
    FlashAttention fa = new FlashAttention(dev);
    try (CudaArray x = CudaArray.fromHost(dev, q);
        FlashAttention.Forward f = fa.forward(x, x, x, AttentionMask.CAUSAL);
        FlashAttention.Gradients g1 = fa.backward(x, x, x, f.out(), f.lse(), f.out(), AttentionMask.CAUSAL);
        FlashAttention.Gradients g2 = fa.backward(x, x, x, f.out(), f.lse(), f.out(), AttentionMask.CAUSAL)) {
      // No atomics: two runs give identical bits.
      assertEquals(java.util.Arrays.toString(g1.dq().toHost().to(DType.F32).toFloatArray()),
          java.util.Arrays.toString(g2.dq().toHost().to(DType.F32).toFloatArray()));
      assertEquals(java.util.Arrays.toString(g1.dk().toHost().to(DType.F32).toFloatArray()),
          java.util.Arrays.toString(g2.dk().toHost().to(DType.F32).toFloatArray()));
    }
  }
}
