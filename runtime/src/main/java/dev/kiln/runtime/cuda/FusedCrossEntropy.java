package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;

/**
 * Cross-entropy over a vocabulary in one kernel ({@code cross_entropy.cu}): per-row loss
 * {@code logsumexp(x) - x[target]} and, optionally, the gradient {@code gradScale * (softmax(x) - onehot(target))}
 * written in the logits' dtype. The row is read from device memory once when it fits in shared memory (fp32), else
 * twice. Rows whose target equals {@code ignoreIndex} get loss 0 and gradient 0.
 */
public final class FusedCrossEntropy {
  private static final int THREADS = 512;

  /** Per-row losses (fp32, {@code [rows]}) and the gradient (like logits) or null. */
  public record Result(CudaArray loss, CudaArray dLogits) implements AutoCloseable {
    @Override
    public void close() {
      loss.close();
      if (dLogits != null) {
        dLogits.close();
      }
    }
  }

  private final CudaDevice device;
  private final CudaStream stream;

  public FusedCrossEntropy(CudaDevice device) {
    this.device = device;
    this.stream = device.defaultStream();
  }

  /**
   * @param logits {@code [rows, vocab]}, F32 or BF16, rows contiguous
   * @param targets {@code [rows]} I32 class indices in {@code [0, vocab)} or {@code ignoreIndex}
   * @param gradScale multiplies the gradient, e.g. {@code 1 / (non-ignored rows)} for a mean loss
   * @param withGradient whether to compute {@code dLogits}
   */
  public Result apply(CudaArray logits, CudaArray targets, float gradScale, int ignoreIndex, boolean withGradient) {
    if (logits.rank() != 2 || (logits.dtype() != DType.F32 && logits.dtype() != DType.BF16)) {
      throw new IllegalArgumentException("cross-entropy logits must be [rows, vocab] F32 or BF16, got " + logits);
    }
    if (logits.stride(1) != 1) {
      throw new IllegalArgumentException("cross-entropy logits need contiguous rows, got " + logits);
    }
    long rows = logits.shape(0);
    long vocab = logits.shape(1);
    if (targets.dtype() != DType.I32 || targets.numel() != rows) {
      throw new IllegalArgumentException(
          "cross-entropy targets must be I32 with one entry per row (" + rows + "), got " + targets);
    }
    targets.requireContiguous("cross-entropy targets");
    if (vocab > Integer.MAX_VALUE || vocab == 0) {
      throw new IllegalArgumentException("cross-entropy vocabulary of " + vocab + " entries is out of range");
    }
    CudaArray loss = CudaArray.empty(device, stream, DType.F32, rows);
    CudaArray grad = withGradient ? CudaArray.empty(device, stream, logits.dtype(), rows, vocab) : null;
    long cacheBytes = 64L * 4 + vocab * 4;
    boolean cache = cacheBytes <= device.maxSharedMemoryPerBlock();
    int smem = (int) (cache ? cacheBytes : 64L * 4);
    // The gradient is written with the logits' row stride; a fresh gradient array is contiguous, so the logits must
    // be too for the two to share one stride.
    if (withGradient && logits.stride(0) != vocab) {
      throw new IllegalArgumentException("cross-entropy with gradient needs contiguous logits, got " + logits);
    }
    String sfx = logits.dtype() == DType.BF16 ? "bf16" : "f32";
    KernelArgs args = new KernelArgs().ptr(logits).ptr(targets).ptr(loss);
    if (grad == null) {
      args.nullPtr();
    } else {
      args.ptr(grad);
    }
    args.i32((int) vocab).i64(logits.stride(0)).f32(gradScale).i32(ignoreIndex).i32(cache ? 1 : 0);
    device.kernels().module("cross_entropy").kernel("kiln_cross_entropy_" + sfx)
        .launch(stream, rows, 1, THREADS, smem, args);
    return new Result(loss, grad);
  }
}
