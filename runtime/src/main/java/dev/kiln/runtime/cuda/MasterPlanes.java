package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;

/**
 * fp32 master weights stored as two 16-bit planes, whose upper plane is the weight's bf16 copy for GEMMs.
 *
 * <p>Why: in mixed precision AdamW writes each updated weight twice, in fp32 and as the bf16 copy the GEMMs read: 6
 * bytes a parameter. With two planes it writes 4 and no copy, 28 → 26 bytes of traffic a parameter a step (2 bytes
 * of 3.4 billion on the CS336 xl model), and the weight still holds all 32 bits.
 *
 * <p>The encoding ({@code adamw.cu}): for a weight's bits {@code b}, the upper plane is {@code (b + 0x8000) >> 16},
 * {@code b} rounded to bf16 to nearest with ties away from zero, and the lower plane {@code b & 0xFFFF}; {@code b ==
 * ((upper - (lower >= 0x8000)) << 16) | lower} recovers the weight bit for bit. The upper plane is the bf16 copy
 * {@code torch.autocast} would make (round to nearest even) except on exact ties, a lower half of 0x8000: about one
 * weight in 65,536, one bf16 step apart. No encoding of 32 bits can keep round-to-even's copy as well: under an even
 * upper half both neighbours half a step away round to it. A NaN is kept as the quiet NaN {@code 0x7FC00000}.
 *
 * <p>The lower plane is a {@link DType#BF16} array for its size only: its halves are raw bits, not values.
 */
public final class MasterPlanes {
  private static final int THREADS = 256;
  /** Grid-stride kernels: enough blocks to fill an H200 many times over, a bounded grid for any size. */
  private static final long MAX_BLOCKS = 8192;

  private MasterPlanes() {}

  /** Writes {@code master}'s (fp32) two planes into {@code upper} and {@code lower} (bf16-sized), in stream order. */
  public static void split(CudaStream stream, CudaArray master, CudaArray upper, CudaArray lower) {
    check(master, upper, lower);
    launch("kiln_planes_split", stream, master, new KernelArgs().ptr(master).ptr(upper).ptr(lower), upper, lower);
  }

  /** Writes the fp32 weights that {@code upper} and {@code lower} hold into {@code master}, in stream order. */
  public static void join(CudaStream stream, CudaArray upper, CudaArray lower, CudaArray master) {
    check(master, upper, lower);
    launch("kiln_planes_join", stream, master, new KernelArgs().ptr(upper).ptr(lower).ptr(master), upper, lower);
  }

  private static void launch(String kernel, CudaStream stream, CudaArray master, KernelArgs args, CudaArray upper,
      CudaArray lower) {
    long n = master.numel();
    if (n == 0) {
      return;
    }
    // Four weights a thread with 16- and 8-byte accesses where the arrays allow it.
    boolean vec = n % 4 == 0 && master.address() % 16 == 0 && upper.address() % 8 == 0 && lower.address() % 8 == 0;
    long units = vec ? n / 4 : n;
    long blocks = Math.min((units + THREADS - 1) / THREADS, MAX_BLOCKS);
    master.device().kernels().module("adamw").kernel(kernel).launch(stream, blocks, 1, THREADS, 0,
        args.i64(n).i32(vec ? 1 : 0));
  }

  private static void check(CudaArray master, CudaArray upper, CudaArray lower) {
    if (master.dtype() != DType.F32 || upper.dtype() != DType.BF16 || lower.dtype() != DType.BF16) {
      throw new IllegalArgumentException("master planes: an F32 master and two BF16-sized planes, got " + master.dtype()
          + ", " + upper.dtype() + ", " + lower.dtype());
    }
    if (upper.numel() != master.numel() || lower.numel() != master.numel()) {
      throw new IllegalArgumentException("master planes: a master of " + master.numel() + " weights with planes of "
          + upper.numel() + " and " + lower.numel());
    }
    master.requireContiguous("master planes");
    upper.requireContiguous("master planes");
    lower.requireContiguous("master planes");
  }
}
