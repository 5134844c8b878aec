package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.StridedWalk;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Matrix products on the CPU through OpenBLAS ({@link Blas}), straight on the tensors' memory.
 *
 * <p><b>No copies for views.</b> A matrix operand whose strides are {@code (ld, 1)} is passed to BLAS as is, one
 * with strides {@code (1, ld)} — a transposed view — is passed with the BLAS transpose flag; in both cases the
 * leading dimension comes from the strides, so slices of bigger matrices pass too. An operand is copied only when
 * its last two strides fit neither form (both non-unit, negative, zero on a dim of size &gt; 1, or rows
 * overlapping), and {@link #operandCopies()} counts those copies. The output is written in place when its strides
 * fit either form (a transposed output is computed as {@code C^T = B^T A^T}).
 *
 * <p><b>Batches.</b> Leading dims are batch dims and broadcast as in numpy's {@code matmul}; a broadcast operand is
 * never materialised (its batch stride is 0). When every operand's batch dims collapse to one stride, the batch
 * may go to OpenBLAS's {@code cblas_?gemm_batch_strided} (present in the 0.3.31 we ship), which runs whole
 * matrices on separate threads; otherwise each matrix is one {@code cblas_?gemm} call that OpenBLAS parallelises
 * inside. {@link #BATCH_STRIDED_MIN_MNK} and {@link #BATCH_STRIDED_MAX_MNK} give the window where the batched call
 * is used, the measurements behind it and a crash it avoids.
 *
 * <p><b>Dtypes.</b> F32 and F64 go to {@code sgemm}/{@code dgemm}. BF16 and F16 operands are converted to F32,
 * multiplied with F32 accumulation and rounded back once at the end (round to nearest even) — the same numerics
 * as a GPU's bf16 GEMM with an F32 accumulator, at the price of two conversions on the CPU. OpenBLAS's own
 * {@code cblas_sbgemm} would avoid the input conversion for BF16, but its speed depends on AVX512-BF16, which
 * few CPUs here have; F32 is the dependable path.
 */
public final class Gemm {
  /** Whether a {@link #gemm} operand is used as given or transposed (its last two dims swapped). */
  public enum Transpose {
    NONE,
    TRANSPOSED
  }

  /**
   * Matrices with {@code m·n·k} at or below this go through OpenBLAS's small-matrix kernels inside
   * {@code gemm_batch_strided}, which in 0.3.31 {@code DYNAMIC_ARCH} builds (ours) jump through an unresolved
   * kernel table and crash the JVM (fixed upstream by OpenMathLib/OpenBLAS#5980, after 0.3.31). Such batches
   * are looped.
   */
  static final double BATCH_STRIDED_MIN_MNK = 100.0 * 100.0 * 100.0;

  /**
   * Above this {@code m·n·k}, a batch runs as a loop of multithreaded {@code gemm} calls even when
   * {@code gemm_batch_strided} could take it, because the batched call gives each matrix one thread and a batch of
   * a few big matrices would leave cores idle. Measured on 2 cores (Cooperlake, OpenBLAS 0.3.31, f32, best of 15):
   * 128³×64 loop 42 / batched 142 GFLOP/s; 160³×64 132 / 152; 256³×16 155 / 165; 512³×4 181 / 186. The batched call
   * is never slower and wins most where per-call threading overhead dominates.
   */
  static final double BATCH_STRIDED_MAX_MNK = 512.0 * 512.0 * 512.0;

  private static final AtomicLong OPERAND_COPIES = new AtomicLong();

  private Gemm() {}

  /**
   * Operands (and outputs) copied so far because their strides could not be passed to BLAS as they are. For tests
   * and profiling: a model whose hot GEMMs copy is laid out badly.
   */
  public static long operandCopies() {
    return OPERAND_COPIES.get();
  }

  /**
   * The matrix product of {@code a} and {@code b} with numpy/PyTorch {@code matmul} semantics: the last two dims
   * multiply ({@code [.., m, k] @ [.., k, n] -> [.., m, n]}), leading dims broadcast; a 1-d {@code a} is a row
   * vector and a 1-d {@code b} a column vector, whose unit dim is dropped from the result. Returns a new
   * contiguous array of the operands' dtype.
   */
  public static NdArray matmul(NdArray a, NdArray b) {
    DType dtype = checkDtypes("matmul", a, b, null);
    if (a.rank() == 0 || b.rank() == 0) {
      throw new IllegalArgumentException(
          "matmul needs operands of rank >= 1; got shapes " + Arrays.toString(a.shape()) + " and "
              + Arrays.toString(b.shape()));
    }
    NdArray a2 = a.rank() == 1 ? a.unsqueeze(0) : a;
    NdArray b2 = b.rank() == 1 ? b.unsqueeze(1) : b;
    long m = a2.shape(-2);
    long k = a2.shape(-1);
    long n = b2.shape(-1);
    if (b2.shape(-2) != k) {
      throw new IllegalArgumentException(
          "matmul: a has shape " + Arrays.toString(a.shape()) + " and b has shape " + Arrays.toString(b.shape())
              + "; a's last dim (" + k + ") must equal b's " + (b.rank() == 1 ? "only" : "second-to-last")
              + " dim (" + b2.shape(-2) + ")");
    }
    long[] batch = broadcastBatch("matmul", a2, b2);
    long[] outShape = Arrays.copyOf(batch, batch.length + 2);
    outShape[batch.length] = m;
    outShape[batch.length + 1] = n;
    DType compute = computeDtype(dtype);
    NdArray out = NdArray.empty(compute, outShape);
    if (compute != dtype) {
      a2 = a2.to(compute);
      b2 = b2.to(compute);
    }
    run(a2, b2, out, 1.0, 0.0);
    if (compute != dtype) {
      out = out.to(dtype);
    }
    if (a.rank() == 1) {
      out = out.squeeze(-2);
    }
    if (b.rank() == 1) {
      out = out.squeeze(-1);
    }
    return out;
  }

  /**
   * {@code c = alpha · op(a) @ op(b) + beta · c}, in place, where {@code op} swaps the last two dims when asked.
   * {@code a} and {@code b} may be batched and broadcast to {@code c}'s batch dims; {@code c} must have them
   * all. With {@code beta = 0}, {@code c}'s old values are ignored (even NaN), as in BLAS. This is the call for
   * gradient accumulation ({@code beta = 1}).
   */
  public static void gemm(
      Transpose transA, Transpose transB, double alpha, NdArray a, NdArray b, double beta, NdArray c) {
    DType dtype = checkDtypes("gemm", a, b, c);
    if (a.rank() < 2 || b.rank() < 2 || c.rank() < 2) {
      throw new IllegalArgumentException(
          "gemm needs operands of rank >= 2; got a " + Arrays.toString(a.shape()) + ", b "
              + Arrays.toString(b.shape()) + ", c " + Arrays.toString(c.shape()));
    }
    if (c.storage().isReadOnly()) {
      throw new IllegalArgumentException("gemm: c is read-only (a memory-mapped file?); write into a copy");
    }
    NdArray opA = transA == Transpose.TRANSPOSED ? a.transpose(-1, -2) : a;
    NdArray opB = transB == Transpose.TRANSPOSED ? b.transpose(-1, -2) : b;
    long m = opA.shape(-2);
    long k = opA.shape(-1);
    long n = opB.shape(-1);
    if (opB.shape(-2) != k || c.shape(-2) != m || c.shape(-1) != n) {
      throw new IllegalArgumentException(
          "gemm: op(a) is " + Arrays.toString(opA.shape()) + ", op(b) is " + Arrays.toString(opB.shape())
              + " and c is " + Arrays.toString(c.shape()) + "; need op(a) [.., m, k], op(b) [.., k, n], c [.., m, n]");
    }
    long[] batch = broadcastBatch("gemm", opA, opB);
    long[] cBatch = Arrays.copyOf(c.shape(), c.rank() - 2);
    long[] joint;
    try {
      joint = NdArray.broadcastShapes(batch, cBatch);
    } catch (IllegalArgumentException e) {
      joint = null;
    }
    if (joint == null || !Arrays.equals(joint, cBatch)) {
      throw new IllegalArgumentException(
          "gemm: the batch dims of op(a) and op(b) broadcast to " + Arrays.toString(batch)
              + ", which c's batch dims " + Arrays.toString(cBatch) + " must hold exactly");
    }
    for (int d = 0; d < cBatch.length; d++) {
      if (cBatch[d] > 1 && c.stride(d) == 0) {
        throw new IllegalArgumentException(
            "gemm: c is a broadcast view (dim " + d + " has stride 0), so batches would overwrite each other");
      }
    }
    DType compute = computeDtype(dtype);
    if (compute != dtype) {
      NdArray c32 = beta == 0 ? NdArray.empty(compute, c.shape()) : c.to(compute);
      run(opA.to(compute), opB.to(compute), c32, alpha, beta);
      c.copyFrom(c32);
      return;
    }
    run(opA, opB, c, alpha, beta);
  }

  // ---------------------------------------------------------------- the core

  /** How one 2-d matrix is handed to BLAS: a transpose flag and a leading dimension. */
  private record MatLayout(int trans, int ld) {}

  /**
   * The BLAS description of a {@code rows × cols} matrix with the given strides, or null when none exists. BLAS
   * wants {@code ld >= max(1, cols)} (row-major, no transpose) or {@code ld >= max(1, rows)} (transposed); a size-1
   * dim's stride is irrelevant.
   */
  private static MatLayout layoutOf(long rows, long cols, long sr, long sc) {
    if (sc == 1 || cols == 1) {
      long ld = rows == 1 ? Math.max(1, cols) : sr;
      if (ld >= Math.max(1, cols) && ld <= Integer.MAX_VALUE) {
        return new MatLayout(Blas.NO_TRANS, (int) ld);
      }
    }
    if (sr == 1 || rows == 1) {
      long ld = cols == 1 ? Math.max(1, rows) : sc;
      if (ld >= Math.max(1, rows) && ld <= Integer.MAX_VALUE) {
        return new MatLayout(Blas.TRANS, (int) ld);
      }
    }
    return null;
  }

  private static MatLayout layoutOf(NdArray x) {
    return layoutOf(x.shape(-2), x.shape(-1), x.stride(-2), x.stride(-1));
  }

  /**
   * {@code c = alpha·a@b + beta·c} for F32/F64 operands of one dtype; {@code c} has the full batch shape, {@code a}
   * and {@code b} broadcast to it.
   */
  private static void run(NdArray a, NdArray b, NdArray c, double alpha, double beta) {
    long m = c.shape(-2);
    long n = c.shape(-1);
    long k = a.shape(-1);
    checkInt("m", m);
    checkInt("n", n);
    checkInt("k", k);
    if (c.numel() == 0) {
      return;
    }
    MatLayout lc = layoutOf(c);
    if (lc == null) {
      OPERAND_COPIES.incrementAndGet();
      NdArray tmp = c.copy();
      run(a, b, tmp, alpha, beta);
      c.copyFrom(tmp);
      return;
    }
    if (lc.trans == Blas.TRANS) {
      // A column-major output: C^T = B^T A^T, written row-major into the same memory.
      run(b.transpose(-1, -2), a.transpose(-1, -2), c.transpose(-1, -2), alpha, beta);
      return;
    }
    if (k == 0) {
      scale(c, beta);
      return;
    }
    // BLAS must not read memory it writes: an operand in c's storage is copied (rare; conservative).
    MatLayout la = a.sharesStorageWith(c) ? null : layoutOf(a);
    if (la == null) {
      OPERAND_COPIES.incrementAndGet();
      a = a.copy();
      la = layoutOf(a);
    }
    MatLayout lb = b.sharesStorageWith(c) ? null : layoutOf(b);
    if (lb == null) {
      OPERAND_COPIES.incrementAndGet();
      b = b.copy();
      lb = layoutOf(b);
    }

    int batchRank = c.rank() - 2;
    long[] batch = Arrays.copyOf(c.shape(), batchRank);
    long[] sa = batchStrides(a, batchRank);
    long[] sb = batchStrides(b, batchRank);
    long[] sc = Arrays.copyOf(c.strides(), batchRank);
    long count = NdArray.numel(batch);
    boolean f32 = c.dtype() == DType.F32;
    int es = c.dtype().byteSize();
    MemorySegment segA = a.segment();
    MemorySegment segB = b.segment();
    MemorySegment segC = c.segment();

    long[] flat = collapse(batch, sa, sb, sc);
    double mnk = (double) m * n * k;
    if (flat != null
        && count > 1
        && count >= Blas.threads()
        && mnk > BATCH_STRIDED_MIN_MNK
        && mnk <= BATCH_STRIDED_MAX_MNK
        && fitsBatchStrided(flat, count)) {
      MemorySegment pa = segA.asSlice(a.offset() * es);
      MemorySegment pb = segB.asSlice(b.offset() * es);
      MemorySegment pc = segC.asSlice(c.offset() * es);
      if (f32) {
        Blas.sgemmBatchStrided(
            la.trans, lb.trans, (int) m, (int) n, (int) k, (float) alpha, pa, la.ld, (int) flat[0], pb, lb.ld,
            (int) flat[1], (float) beta, pc, lc.ld, (int) flat[2], (int) count);
      } else {
        Blas.dgemmBatchStrided(
            la.trans, lb.trans, (int) m, (int) n, (int) k, alpha, pa, la.ld, (int) flat[0], pb, lb.ld,
            (int) flat[1], beta, pc, lc.ld, (int) flat[2], (int) count);
      }
      return;
    }

    long[] idx = new long[batchRank];
    long offA = a.offset();
    long offB = b.offset();
    long offC = c.offset();
    for (long i = 0; i < count; i++) {
      MemorySegment pa = segA.asSlice(offA * es);
      MemorySegment pb = segB.asSlice(offB * es);
      MemorySegment pc = segC.asSlice(offC * es);
      if (f32) {
        Blas.sgemm(
            la.trans, lb.trans, (int) m, (int) n, (int) k, (float) alpha, pa, la.ld, pb, lb.ld, (float) beta, pc,
            lc.ld);
      } else {
        Blas.dgemm(la.trans, lb.trans, (int) m, (int) n, (int) k, alpha, pa, la.ld, pb, lb.ld, beta, pc, lc.ld);
      }
      for (int d = batchRank - 1; d >= 0; d--) {
        idx[d]++;
        offA += sa[d];
        offB += sb[d];
        offC += sc[d];
        if (idx[d] < batch[d]) {
          break;
        }
        offA -= sa[d] * batch[d];
        offB -= sb[d] * batch[d];
        offC -= sc[d] * batch[d];
        idx[d] = 0;
      }
    }
  }

  /** OpenBLAS forms {@code i * stride} in a 32-bit int, so the last matrix's offset must fit one. */
  private static boolean fitsBatchStrided(long[] flat, long count) {
    for (long stride : flat) {
      if ((count - 1) * stride > Integer.MAX_VALUE) {
        return false;
      }
    }
    return count <= Integer.MAX_VALUE;
  }

  /** {@code x}'s batch strides right-aligned to {@code batchRank} dims, 0 where it broadcasts. */
  private static long[] batchStrides(NdArray x, int batchRank) {
    long[] out = new long[batchRank];
    int own = x.rank() - 2;
    for (int d = 0; d < own; d++) {
      out[batchRank - own + d] = x.shape(d) == 1 ? 0 : x.stride(d);
    }
    return out;
  }

  /**
   * One stride per operand that walks the whole batch in order, or null when some operand's batch dims do not
   * collapse into one arithmetic progression (or a stride does not fit an int).
   */
  private static long[] collapse(long[] batch, long[] sa, long[] sb, long[] sc) {
    long[][] strides = {sa, sb, sc};
    long[] out = new long[3];
    for (int o = 0; o < 3; o++) {
      long stride = 0;
      long span = -1;
      for (int d = batch.length - 1; d >= 0; d--) {
        if (batch[d] == 1) {
          continue;
        }
        if (span < 0) {
          stride = strides[o][d];
          span = batch[d];
        } else if (strides[o][d] == stride * span) {
          span *= batch[d];
        } else {
          return null;
        }
      }
      if (stride < 0 || stride > Integer.MAX_VALUE) {
        return null;
      }
      out[o] = stride;
    }
    return out;
  }

  /** {@code c = beta·c}, the whole of GEMM when {@code k = 0}; {@code beta = 0} clears NaNs too, as BLAS does. */
  private static void scale(NdArray c, double beta) {
    if (beta == 0) {
      c.fill(0);
      return;
    }
    MemorySegment s = c.segment();
    DType t = c.dtype();
    int es = t.byteSize();
    StridedWalk.forEach(
        c.shape(), c.strides(), c.offset(), e -> Layouts.setDouble(s, t, e * es, beta * Layouts.getDouble(s, t, e * es)));
  }

  // ---------------------------------------------------------------- checks

  private static DType checkDtypes(String op, NdArray a, NdArray b, NdArray c) {
    DType t = a.dtype();
    if (!t.isFloating()) {
      throw new IllegalArgumentException(
          op + " supports F32, F64, BF16 and F16; a is " + t + " (convert with .to(DType.F32))");
    }
    if (b.dtype() != t || (c != null && c.dtype() != t)) {
      throw new IllegalArgumentException(
          op + ": operands must share one dtype; a is " + t + ", b is " + b.dtype()
              + (c == null ? "" : ", c is " + c.dtype()) + " (convert with .to(...))");
    }
    return t;
  }

  private static DType computeDtype(DType t) {
    return t == DType.F64 ? DType.F64 : DType.F32;
  }

  private static long[] broadcastBatch(String op, NdArray a, NdArray b) {
    long[] ba = Arrays.copyOf(a.shape(), a.rank() - 2);
    long[] bb = Arrays.copyOf(b.shape(), b.rank() - 2);
    try {
      return NdArray.broadcastShapes(ba, bb);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          op + ": batch dims " + Arrays.toString(ba) + " of a " + Arrays.toString(a.shape()) + " and "
              + Arrays.toString(bb) + " of b " + Arrays.toString(b.shape()) + " do not broadcast",
          e);
    }
  }

  private static void checkInt(String what, long v) {
    if (v > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(
          "gemm dimension " + what + " = " + v + " exceeds BLAS's 32-bit limit (" + Integer.MAX_VALUE + ")");
    }
  }
}
