package dev.kiln.runtime.cuda;

import java.util.Arrays;

/**
 * How a row-major {@code C[b] = A[b] @ B[b]} maps onto column-major cuBLAS without moving data.
 *
 * <p>A row-major matrix is the column-major view of its transpose, so {@code C = A B} is computed as
 * {@code C^T = B^T A^T}: cuBLAS's first operand is B, its second is A, with {@code m = N, n = M}. An operand whose
 * columns are contiguous (a transposed view) becomes a {@code CUBLAS_OP_T} operand instead of a copy.
 *
 * @param opFirst cuBLAS op of its first operand (our B): 0 = N, 1 = T
 * @param opSecond cuBLAS op of its second operand (our A)
 * @param m cuBLAS m = N (columns of C)
 * @param n cuBLAS n = M (rows of C)
 * @param k the reduced dim K
 * @param ldFirst leading dimension of B as cuBLAS sees it
 * @param ldSecond leading dimension of A
 * @param ldc leading dimension of C (its row stride)
 * @param strideFirst elements between batches of B (0 broadcasts)
 * @param strideSecond elements between batches of A
 * @param strideC elements between batches of C
 * @param batch number of products
 */
public record GemmPlan(
    int opFirst,
    int opSecond,
    int m,
    int n,
    int k,
    long ldFirst,
    long ldSecond,
    long ldc,
    long strideFirst,
    long strideSecond,
    long strideC,
    int batch) {

  /** Plans {@code C = A @ B} for arrays of rank 2 or 3 given by shape and strides (in elements). */
  public static GemmPlan of(long[] aShape, long[] aStrides, long[] bShape, long[] bStrides, long[] cShape,
      long[] cStrides) {
    int ra = aShape.length, rb = bShape.length, rc = cShape.length;
    if (ra < 2 || ra > 3 || rb < 2 || rb > 3 || rc < 2 || rc > 3) {
      throw new IllegalArgumentException("matmul takes rank-2 or rank-3 arrays, got A" + Arrays.toString(aShape)
          + " B" + Arrays.toString(bShape) + " C" + Arrays.toString(cShape));
    }
    long mm = aShape[ra - 2], kk = aShape[ra - 1], nn = bShape[rb - 1];
    if (bShape[rb - 2] != kk || cShape[rc - 2] != mm || cShape[rc - 1] != nn) {
      throw new IllegalArgumentException("matmul shapes do not agree: A" + Arrays.toString(aShape) + " @ B"
          + Arrays.toString(bShape) + " -> C" + Arrays.toString(cShape) + " (need A[..., M, K], B[..., K, N], C[..., M, N])");
    }
    long batch = rc == 3 ? cShape[0] : 1;
    long strideA = batchStride(aShape, aStrides, batch, "A");
    long strideB = batchStride(bShape, bStrides, batch, "B");
    if (rc == 2 && (ra == 3 && aShape[0] != 1 || rb == 3 && bShape[0] != 1)) {
      throw new IllegalArgumentException("batched inputs A" + Arrays.toString(aShape) + ", B"
          + Arrays.toString(bShape) + " need a rank-3 C, got C" + Arrays.toString(cShape));
    }
    for (long v : new long[] {mm, nn, kk, batch}) {
      if (v > Integer.MAX_VALUE) {
        throw new IllegalArgumentException("matmul dim " + v + " exceeds cuBLAS's 32-bit sizes");
      }
    }
    long[] bOp = operand(kk, nn, bStrides[rb - 2], bStrides[rb - 1], "B");
    long[] aOp = operand(mm, kk, aStrides[ra - 2], aStrides[ra - 1], "A");
    long rsC = cStrides[rc - 2], csC = cStrides[rc - 1];
    if (!(nn == 1 || csC == 1) || !(mm == 1 || rsC >= nn)) {
      throw new IllegalArgumentException("matmul output C" + Arrays.toString(cShape) + " with strides "
          + Arrays.toString(cStrides) + " needs contiguous rows");
    }
    long ldc = mm == 1 ? Math.max(1, nn) : rsC;
    long strideC = rc == 3 ? cStrides[0] : 0;
    return new GemmPlan((int) bOp[0], (int) aOp[0], (int) nn, (int) mm, (int) kk, bOp[1], aOp[1], ldc, strideB,
        strideA, strideC, (int) batch);
  }

  private static long batchStride(long[] shape, long[] strides, long batch, String name) {
    if (shape.length == 2) {
      return 0;
    }
    if (shape[0] == batch) {
      return batch == 1 ? 0 : strides[0];
    }
    if (shape[0] == 1) {
      return 0;
    }
    throw new IllegalArgumentException(
        "matmul batch of " + name + Arrays.toString(shape) + " is neither 1 nor the output's " + batch);
  }

  /**
   * {op, ld} for a row-major operand of {@code rows x cols} with strides {@code rs, cs}, as the transpose cuBLAS
   * needs it: contiguous rows are that transpose already (op N); contiguous columns need op T.
   */
  private static long[] operand(long rows, long cols, long rs, long cs, String name) {
    if ((cols == 1 || cs == 1) && (rows == 1 || rs >= cols)) {
      return new long[] {0, rows == 1 ? Math.max(1, cols) : rs};
    }
    if ((rows == 1 || rs == 1) && (cols == 1 || cs >= rows)) {
      return new long[] {1, cols == 1 ? Math.max(1, rows) : cs};
    }
    throw new IllegalArgumentException("matmul operand " + name + " (" + rows + " x " + cols + ", strides " + rs
        + ", " + cs + ") has neither contiguous rows nor contiguous columns; make it contiguous first");
  }
}
