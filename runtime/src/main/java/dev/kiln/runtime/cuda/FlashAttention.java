package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import java.util.Arrays;

/**
 * Fused scaled-dot-product attention on the GPU ({@code flash_attention.cu}): {@code softmax(q k^T * scale) v}
 * without materialising the score matrix, and its backward pass.
 *
 * <p>Inputs are contiguous {@code [..., n, d]} arrays (usually {@code [batch, heads, n, d]}), all of one shape and
 * dtype. bf16 with head dim 64 or 128 runs on tensor cores; fp32, and bf16 with any other head dim up to 256, runs
 * on a one-warp-per-row fp32 kernel that is exact but slow. The forward pass returns the per-row log-sum-exp
 * (natural log, fp32, {@code [..., n]}) that the backward pass needs.
 */
public final class FlashAttention {
  private static final int SIMT_MAX_HEAD_DIM = 256;

  /** The output and the saved log-sum-exp of each query row. */
  public record Forward(CudaArray out, CudaArray lse) implements AutoCloseable {
    @Override
    public void close() {
      out.close();
      lse.close();
    }
  }

  /** Gradients with respect to q, k and v. */
  public record Gradients(CudaArray dq, CudaArray dk, CudaArray dv) implements AutoCloseable {
    @Override
    public void close() {
      dq.close();
      dk.close();
      dv.close();
    }
  }

  /**
   * Which compiled variant of each tensor-core kernel to launch, per head dim: {@code w<warps>[mb<blocks>]} names
   * the warps per block and the register cap (see the end of flash_attention.cu). {@link #DEFAULT} is what measured
   * fastest on an H200; {@code CudaBenchmark} times the others so the choice can be re-made on other GPUs.
   */
  public record Tuning(String forward64, String forward128, String backward64, String backward128) {
    /**
     * Fastest of the compiled variants on an H200 (CudaBenchmark's BENCHVAR lines, docs/cuda.md): 4-warp blocks
     * throughout, with register caps that let 4 (forward d64), 2 (forward d128) and 3 (backward d64) blocks share a
     * multiprocessor; backward d128 needs 252 registers and runs uncapped.
     */
    public static final Tuning DEFAULT = new Tuning("w4mb4", "w4mb2", "w4mb3", "w4");

    public Tuning {
      for (String v : new String[] {forward64, forward128, backward64, backward128}) {
        if (v == null || !v.matches("w[48](mb[1-4])?")) {
          throw new IllegalArgumentException("attention kernel variant must look like w4, w8 or w4mb3, got " + v);
        }
      }
    }

    String forward(long d) {
      return d == 64 ? forward64 : forward128;
    }

    String backward(long d) {
      return d == 64 ? backward64 : backward128;
    }

    static int warps(String variant) {
      return variant.charAt(1) - '0';
    }
  }

  private final CudaDevice device;
  private final CudaStream stream;
  private final Tuning tuning;

  public FlashAttention(CudaDevice device) {
    this(device.defaultStream());
  }

  public FlashAttention(CudaStream stream) {
    this(stream, Tuning.DEFAULT);
  }

  public FlashAttention(CudaStream stream, Tuning tuning) {
    this.device = stream.device();
    this.stream = stream;
    this.tuning = tuning;
  }

  /** True when {@code dtype} and head dim {@code d} take the tensor-core kernels. */
  public static boolean usesTensorCores(DType dtype, long d) {
    return dtype == DType.BF16 && (d == 64 || d == 128);
  }

  /** Forward pass with the usual scale {@code 1 / sqrt(d)}. */
  public Forward forward(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask) {
    return forward(q, k, v, mask, (float) (1.0 / Math.sqrt(q.shape(-1))));
  }

  public Forward forward(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale) {
    Geometry g = check(q, k, v);
    CudaArray out = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray lse = CudaArray.empty(device, stream, DType.F32, Arrays.copyOf(q.shape(), q.rank() - 1));
    forwardInto(q, k, v, mask, scale, out, lse, g);
    return new Forward(out, lse);
  }

  /** Forward pass into existing {@code out} (like q) and {@code lse} ({@code [..., n]} fp32) arrays. */
  public void forwardInto(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale, CudaArray out,
      CudaArray lse) {
    forwardInto(q, k, v, mask, scale, out, lse, check(q, k, v));
  }

  private void forwardInto(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale, CudaArray out,
      CudaArray lse, Geometry g) {
    checkLike(out, q, "out");
    checkRows(lse, g, "lse");
    int causal = mask == AttentionMask.CAUSAL ? 1 : 0;
    KernelLoader.Module m = device.kernels().module("flash_attention");
    if (usesTensorCores(q.dtype(), g.d)) {
      int d = (int) g.d;
      String variant = tuning.forward(d);
      int warps = Tuning.warps(variant);
      int bm = warps * 16;
      int bn = 64;
      int smem = (bm + 4 * bn) * (d + 8) * 2;
      m.kernel("kiln_attn_fwd_bf16_d" + d + "_" + variant).launch(stream, ceilDiv(g.n, bm), g.bh, warps * 32, smem,
          new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(out).ptr(lse).i32((int) g.n).f32(scale).i32(causal));
    } else {
      m.kernel("kiln_attn_fwd_simt_" + suffix(q.dtype())).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
          new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(out).ptr(lse).i32((int) g.n).i32((int) g.d).f32(scale)
              .i32(causal));
    }
  }

  /** Backward pass with the usual scale. */
  public Gradients backward(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask) {
    return backward(q, k, v, out, lse, dOut, mask, (float) (1.0 / Math.sqrt(q.shape(-1))));
  }

  /**
   * Gradients of {@code sum(out * dOut)}. Three kernels: {@code dot = rowsum(dOut * out)}, then dK/dV (one block
   * per key tile, walking query tiles) and dQ (one block per query tile, walking key tiles) — each output written by
   * exactly one block, so no atomics and deterministic results.
   */
  public Gradients backward(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask, float scale) {
    Geometry g = check(q, k, v);
    CudaArray dq = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray dk = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray dv = CudaArray.empty(device, stream, q.dtype(), q.shape());
    backwardInto(q, k, v, out, lse, dOut, mask, scale, dq, dk, dv);
    return new Gradients(dq, dk, dv);
  }

  public void backwardInto(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask, float scale, CudaArray dq, CudaArray dk, CudaArray dv) {
    Geometry g = check(q, k, v);
    checkLike(out, q, "out");
    checkLike(dOut, q, "dOut");
    checkLike(dq, q, "dq");
    checkLike(dk, q, "dk");
    checkLike(dv, q, "dv");
    checkRows(lse, g, "lse");
    int causal = mask == AttentionMask.CAUSAL ? 1 : 0;
    KernelLoader.Module m = device.kernels().module("flash_attention");
    long rows = g.bh * g.n;
    try (CudaArray dot = CudaArray.empty(device, stream, DType.F32, rows)) {
      m.kernel("kiln_attn_bwd_dot_" + suffix(q.dtype())).launch(stream, ceilDiv(rows, 8), 1, 256, 0,
          new KernelArgs().ptr(out).ptr(dOut).ptr(dot).i64(rows).i32((int) g.d));
      if (usesTensorCores(q.dtype(), g.d)) {
        int d = (int) g.d;
        String variant = "_" + tuning.backward(d);
        int warps = Tuning.warps(tuning.backward(d));
        int tile = d == 64 ? 64 : 32; // query tile of dK/dV, key tile of dQ (see flash_attention.cu)
        int block = warps * 16;
        int smemDkdv = (2 * block + 4 * tile) * (d + 8) * 2 + 4 * tile * 4;
        m.kernel("kiln_attn_bwd_dkdv_bf16_d" + d + variant).launch(stream, ceilDiv(g.n, block), g.bh, warps * 32, smemDkdv,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dk).ptr(dv).i32((int) g.n)
                .f32(scale).i32(causal));
        int smemDq = (2 * block + 4 * tile) * (d + 8) * 2;
        m.kernel("kiln_attn_bwd_dq_bf16_d" + d + variant).launch(stream, ceilDiv(g.n, block), g.bh, warps * 32, smemDq,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dq).i32((int) g.n).f32(scale)
                .i32(causal));
      } else {
        String sfx = suffix(q.dtype());
        m.kernel("kiln_attn_bwd_dkdv_simt_" + sfx).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dk).ptr(dv).i32((int) g.n)
                .i32((int) g.d).f32(scale).i32(causal));
        m.kernel("kiln_attn_bwd_dq_simt_" + sfx).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dq).i32((int) g.n)
                .i32((int) g.d).f32(scale).i32(causal));
      }
    }
  }

  private record Geometry(long bh, long n, long d) {}

  private static Geometry check(CudaArray q, CudaArray k, CudaArray v) {
    if (q.rank() < 2) {
      throw new IllegalArgumentException("attention q must be [..., n, d], got " + q);
    }
    checkLike(k, q, "k");
    checkLike(v, q, "v");
    if (q.dtype() != DType.BF16 && q.dtype() != DType.F32) {
      throw new IllegalArgumentException("attention supports BF16 and F32, got " + q.dtype());
    }
    q.requireContiguous("attention q");
    long n = q.shape(-2);
    long d = q.shape(-1);
    if (d < 1 || d > SIMT_MAX_HEAD_DIM) {
      throw new IllegalArgumentException("attention head dim " + d + " is not supported (at most "
          + SIMT_MAX_HEAD_DIM + ")");
    }
    if (n > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("attention sequence length " + n + " exceeds 2^31 - 1");
    }
    long bh = n == 0 ? 0 : q.numel() / (n * d);
    if (bh > 65535) {
      throw new IllegalArgumentException("attention batch*heads " + bh + " exceeds the grid's 65535");
    }
    return new Geometry(bh, n, d);
  }

  private static void checkLike(CudaArray a, CudaArray q, String name) {
    if (!Arrays.equals(a.shape(), q.shape()) || a.dtype() != q.dtype()) {
      throw new IllegalArgumentException("attention " + name + " must match q " + q.dtype()
          + Arrays.toString(q.shape()) + ", got " + a.dtype() + Arrays.toString(a.shape()));
    }
    a.requireContiguous("attention " + name);
  }

  private static void checkRows(CudaArray lse, Geometry g, String name) {
    if (lse.dtype() != DType.F32 || lse.numel() != g.bh * g.n) {
      throw new IllegalArgumentException("attention " + name + " must be F32 with " + g.bh * g.n + " elements (one per"
          + " query row), got " + lse);
    }
    lse.requireContiguous("attention " + name);
  }

  private static String suffix(DType t) {
    return t == DType.BF16 ? "bf16" : "f32";
  }

  private static long ceilDiv(long a, long b) {
    return (a + b - 1) / b;
  }
}
