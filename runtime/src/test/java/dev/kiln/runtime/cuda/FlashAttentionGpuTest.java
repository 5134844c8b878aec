package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.List;
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
    run(dtype, batch, heads, n, d, mask, tuning, false, dtype);
  }

  /**
   * One forward and backward against {@link Reference}. {@code headSplit}: every array (inputs and results) is the
   * {@code [batch, heads, n, d]} view of a {@code [batch, n, heads, d]} buffer, as a Transformer's head-split
   * projections are. {@code results}: the dtype of out, dq, dk, dv (F32 from bf16 inputs is mixed precision).
   */
  private static void run(DType dtype, int batch, int heads, int n, int d, AttentionMask mask,
      FlashAttention.Tuning tuning, boolean headSplit, DType results) {
    run(dtype, batch, heads, n, d, mask, tuning, headSplit, results, 1.0 / Math.sqrt(d));
  }

  private static void run(DType dtype, int batch, int heads, int n, int d, AttentionMask mask,
      FlashAttention.Tuning tuning, boolean headSplit, DType results, double scale) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(31L * n + d + (mask == AttentionMask.CAUSAL ? 7 : 0) + dtype.ordinal());
    NdArray q = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray k = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray v = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    NdArray g = GpuTesting.randn(rnd, dtype, 1, batch, heads, n, d);
    Reference ref = new Reference(GpuTesting.doubles(q), GpuTesting.doubles(k), GpuTesting.doubles(v),
        GpuTesting.doubles(g), batch * heads, n, d, mask == AttentionMask.CAUSAL, scale);
    String name = String.format("%s d%d n%d %s %s%s%s%s%s", dtype, d, n, mask,
        FlashAttention.usesTensorCores(dtype, d) ? "tensor-core" : "simt",
        tuning.equals(FlashAttention.Tuning.DEFAULT) ? "" : " " + tuning, headSplit ? " head-split" : "",
        results == dtype ? "" : " " + results + " results",
        scale == 1.0 / Math.sqrt(d) ? "" : " scale " + scale);
    // Tolerances. fp32 (SIMT kernel, fp32 math): 2e-5 of the largest reference magnitude, 1e-5 relative.
    // bf16: inputs are exact, but P and dS are rounded to bf16 before the second GEMM of each pair and outputs are
    // stored as bf16 (8 significant bits): 2e-2 of the largest magnitude plus 2e-2 relative.
    boolean bf16 = dtype == DType.BF16;
    double rtol = bf16 ? 2e-2 : 1e-5;
    double atolRel = bf16 ? 2e-2 : 2e-5;
    FlashAttention fa = new FlashAttention(dev.defaultStream(), tuning);
    // Head-split: buffers are [batch, n, heads, d]; the kernels see their [batch, heads, n, d] permutation.
    int[] split = {0, 2, 1, 3};
    long[] physical = headSplit ? new long[] {batch, n, heads, d} : new long[] {batch, heads, n, d};
    try (CudaArray bq = CudaArray.fromHost(dev, headSplit ? q.permute(split) : q);
        CudaArray bk = CudaArray.fromHost(dev, headSplit ? k.permute(split) : k);
        CudaArray bv = CudaArray.fromHost(dev, headSplit ? v.permute(split) : v);
        CudaArray bg = CudaArray.fromHost(dev, headSplit ? g.permute(split) : g);
        CudaArray bout = CudaArray.empty(dev, results, physical).poison();
        CudaArray lse = CudaArray.empty(dev, DType.F32, batch, heads, n).poison();
        CudaArray bgq = CudaArray.empty(dev, results, physical).poison();
        CudaArray bgk = CudaArray.empty(dev, results, physical).poison();
        CudaArray bgv = CudaArray.empty(dev, results, physical).poison()) {
      CudaArray dq = headSplit ? bq.permute(split) : bq;
      CudaArray dk = headSplit ? bk.permute(split) : bk;
      CudaArray dv = headSplit ? bv.permute(split) : bv;
      CudaArray dg = headSplit ? bg.permute(split) : bg;
      CudaArray out = headSplit ? bout.permute(split) : bout;
      CudaArray gq = headSplit ? bgq.permute(split) : bgq;
      CudaArray gk = headSplit ? bgk.permute(split) : bgk;
      CudaArray gv = headSplit ? bgv.permute(split) : bgv;
      fa.forwardInto(dq, dk, dv, mask, (float) scale, out, lse);
      GpuTesting.assertClose(name + " out", ref.out, GpuTesting.doubles(out.toHost()), rtol,
          atolRel * GpuTesting.maxAbs(ref.out));
      // lse is fp32 in both paths; bf16 scores come from fp32 tensor-core sums of exact products.
      GpuTesting.assertClose(name + " lse", ref.lse, GpuTesting.doubles(lse.toHost()), bf16 ? 1e-4 : 1e-5,
          bf16 ? 1e-3 : 1e-5);
      // With fp32 results the backward pass reads out as fp32 (its row dot then comes from fp32 values).
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
  void bf16HeadDims32And80RunOnTensorCores() {
    // TinyStories' and xl's head widths: the tensor-core kernels at the true width (80 has an odd number of
    // 16-wide k-steps, which takes the single-step path of the score GEMMs).
    run(DType.BF16, 2, 3, 200, 32, AttentionMask.CAUSAL);
    run(DType.BF16, 1, 2, 130, 32, AttentionMask.NONE);
    run(DType.BF16, 1, 2, 333, 80, AttentionMask.CAUSAL);
    run(DType.BF16, 2, 1, 77, 80, AttentionMask.NONE);
  }

  @Test
  void headSplitViewsAndFp32ResultsAreReadAndWrittenInPlace() {
    // The layout the CUDA device passes in mixed precision: bf16 head-split inputs, fp32 head-split results.
    FlashAttention.Tuning t = FlashAttention.Tuning.DEFAULT;
    for (int d : new int[] {32, 64, 80, 128}) {
      run(DType.BF16, 2, 3, 150, d, AttentionMask.CAUSAL, t, true, DType.F32);
    }
    run(DType.BF16, 1, 2, 100, 64, AttentionMask.NONE, t, false, DType.F32);
    run(DType.BF16, 2, 2, 90, 80, AttentionMask.NONE, t, true, DType.BF16);
    // fp32 (SIMT) from head-split views, and a head width the tensor cores lack.
    run(DType.F32, 2, 3, 70, 48, AttentionMask.CAUSAL, t, true, DType.F32);
    run(DType.BF16, 1, 2, 60, 96, AttentionMask.CAUSAL, t, true, DType.BF16);
  }

  @Test
  void layoutsTheKernelsCannotTakeAreRefusedWithTheFix() {
    CudaDevice dev = GpuTesting.device();
    FlashAttention fa = new FlashAttention(dev);
    try (CudaArray wide = CudaArray.empty(dev, DType.BF16, 1, 2, 64, 72);
        CudaArray q = CudaArray.empty(dev, DType.BF16, 1, 2, 64, 64);
        CudaArray t = CudaArray.empty(dev, DType.BF16, 1, 2, 64, 64)) {
      // Rows 4 elements (8 bytes) past a 16-byte boundary: the tensor-core kernels' 16-byte copies cannot read them.
      CudaArray shifted = wide.narrow(3, 4, 64);
      IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
          () -> fa.forward(shifted, q, q, AttentionMask.CAUSAL));
      org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("16 bytes"), e.getMessage());
      // A transposed last dim is not a row layout at all.
      IllegalArgumentException e2 = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
          () -> fa.forward(t.transpose(2, 3), q, q, AttentionMask.CAUSAL));
      org.junit.jupiter.api.Assertions.assertTrue(e2.getMessage().contains("contiguous last dim"), e2.getMessage());
    }
  }

  @Test
  void otherScalesAreHonoured() {
    // The wgmma and whole-head forwards take the maximum of the raw scores and apply the scale in the exponent,
    // which a positive scale allows; a zero or negative one runs on the portable kernels. Both must give the
    // reference's answer.
    FlashAttention.Tuning wholeHead = FlashAttention.Tuning.DEFAULT.withForward(32, "w8h256")
        .withBackward(32, "w8h256");
    for (double scale : new double[] {0.3, -0.3}) {
      run(DType.BF16, 1, 2, 133, 64, AttentionMask.CAUSAL, FlashAttention.Tuning.DEFAULT, false, DType.BF16, scale);
      run(DType.BF16, 1, 2, 133, 128, AttentionMask.NONE, FlashAttention.Tuning.DEFAULT, false, DType.BF16, scale);
      run(DType.BF16, 1, 2, 133, 32, AttentionMask.CAUSAL, wholeHead, false, DType.BF16, scale);
    }
  }

  @Test
  void tuningVariantsGiveTheSameAnswers() {
    // Every compiled variant other than the defaults, so the benchmark's alternatives are known to be right: odd
    // lengths leave partial tiles, and both masks run.
    FlashAttention.Tuning base = FlashAttention.Tuning.DEFAULT;
    for (int d : new int[] {32, 64, 80, 128}) {
      for (String variant : FlashAttention.Tuning.FORWARD_VARIANTS.get(d)) {
        if (!variant.equals(base.forward().get(d))) {
          FlashAttention.Tuning t = base.withForward(d, variant);
          run(DType.BF16, 1, 2, 333, d, AttentionMask.CAUSAL, t);
          run(DType.BF16, 1, 2, 150, d, AttentionMask.NONE, t);
        }
      }
      for (String variant : FlashAttention.Tuning.BACKWARD_VARIANTS.get(d)) {
        if (!variant.equals(base.backward().get(d))) {
          FlashAttention.Tuning t = base.withBackward(d, variant);
          run(DType.BF16, 1, 2, 333, d, AttentionMask.CAUSAL, t);
          run(DType.BF16, 1, 2, 150, d, AttentionMask.NONE, t);
        }
      }
    }
  }

  @Test
  void wholeHeadKernelsCoverShortSequencesAndLongerOnesFallBack() {
    // One block a (batch, head) slab of at most 256 rows: the full slab, a ragged one (rows past n zero-filled and
    // never stored), a single tile, both masks, head-split views and fp32 results as a Transformer trains with them.
    // Past 256 rows the same tuning must run BEYOND_WHOLE_HEAD's tiled kernels (n = 300) and still be right.
    // Every whole-head variant compiled at d32 (and a tiled backward), so a new one is covered as soon as it is listed.
    List<String> forwards = FlashAttention.Tuning.FORWARD_VARIANTS.get(32).stream()
        .filter(v -> FlashAttention.Tuning.wholeHeadRows(v) > 0).toList();
    List<String> backwards = new java.util.ArrayList<>(FlashAttention.Tuning.BACKWARD_VARIANTS.get(32).stream()
        .filter(v -> FlashAttention.Tuning.wholeHeadRows(v) > 0).toList());
    backwards.add("w4mb3");
    assertTrue(forwards.size() >= 2 && backwards.size() >= 2, forwards + " " + backwards);
    for (String fwd : forwards) {
      for (String bwd : backwards) {
        FlashAttention.Tuning t = FlashAttention.Tuning.DEFAULT.withForward(32, fwd).withBackward(32, bwd);
        run(DType.BF16, 2, 3, 256, 32, AttentionMask.CAUSAL, t);
        run(DType.BF16, 1, 2, 201, 32, AttentionMask.CAUSAL, t);
        run(DType.BF16, 1, 2, 9, 32, AttentionMask.NONE, t);
        run(DType.BF16, 2, 2, 256, 32, AttentionMask.CAUSAL, t, true, DType.F32);
        run(DType.BF16, 1, 2, 130, 32, AttentionMask.NONE, t, true, DType.BF16);
        run(DType.BF16, 1, 1, 300, 32, AttentionMask.CAUSAL, t);
      }
    }
  }

  @Test
  void wholeSlabForwardAtD80TakesQueryRowsFromGlobalMemory() {
    // w16h512kv: one block a (batch, head) slab of up to 512 rows with k and v in shared memory and each warp's query
    // rows read from global memory, as xl trains (heads of 80, context 512): the full slab, a ragged one, a single
    // tile, both masks, head-split views with fp32 and bf16 results; past 512 rows the tiled forward runs.
    runSlabShapes(FlashAttention.Tuning.DEFAULT.withForward(80, "w16h512kv"));
  }

  /** xl's slab at d80 and its edges: full, ragged and one-tile slabs, both masks, head-split views, 600 rows. */
  private void runSlabShapes(FlashAttention.Tuning t) {
    run(DType.BF16, 2, 2, 512, 80, AttentionMask.CAUSAL, t);
    run(DType.BF16, 1, 2, 491, 80, AttentionMask.CAUSAL, t);
    run(DType.BF16, 1, 1, 9, 80, AttentionMask.NONE, t);
    run(DType.BF16, 1, 3, 512, 80, AttentionMask.CAUSAL, t, true, DType.F32);
    run(DType.BF16, 1, 2, 300, 80, AttentionMask.NONE, t, true, DType.BF16);
    run(DType.BF16, 1, 1, 600, 80, AttentionMask.CAUSAL, t);
  }

  @Test
  void slabBackwardAtD80() {
    // w8h512s: dK/dV with q and dO of the slab resident and each warp's k and v from global memory, dQ with k and v
    // resident and each warp's q and dO from global memory, one block a slab, after the tiled path's row sums: the
    // shapes of the slab forward's test, with it and with the tiled forward.
    for (String fwd : List.of("w16h512kv", "w4r32")) {
      runSlabShapes(FlashAttention.Tuning.DEFAULT.withForward(80, fwd).withBackward(80, "w8h512s"));
    }
  }

  @Test
  void fp32AndOtherHeadDimsTakeTheSimtPath() {
    run(DType.F32, 1, 2, 150, 64, AttentionMask.CAUSAL);
    run(DType.F32, 2, 1, 100, 32, AttentionMask.NONE);
    run(DType.F32, 1, 1, 65, 128, AttentionMask.NONE);
    run(DType.BF16, 1, 2, 120, 96, AttentionMask.CAUSAL);
    // bf16 row sums of the backward at widths whose 16-byte pieces do not divide a warp (3 and 25 lanes a row; 80's
    // 10 and 96's 12 run above): kiln_attn_bwd_dot_vec's tree over a row's lanes.
    run(DType.BF16, 1, 2, 45, 24, AttentionMask.CAUSAL);
    run(DType.BF16, 1, 1, 37, 200, AttentionMask.NONE);
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
