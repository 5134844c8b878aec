package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Gathers and scatters: embedding lookup and its backward, {@code indexSelect}, {@code gather}, {@code scatterAdd}
 * (PyTorch semantics), {@code topk} and {@code cumsum}. Index arrays may be any integer dtype (I32, I64, U8);
 * negative indices are errors, not Python-style wrap-arounds, because in a model they are always bugs.
 *
 * <p>Scatters run on one thread in index order, so accumulation into a row hit by several indices happens in a
 * fixed order and results are deterministic.
 */
public final class Indexing {
  private Indexing() {}

  /** The {@code k} top values along a dim and their indices (I64), in sorted order. */
  public record TopK(NdArray values, NdArray indices) {}

  // ---------------------------------------------------------------- embedding

  /**
   * Row lookup: {@code out[..., :] = table[ids[...], :]} with {@code table} of shape {@code [V, D]} and {@code ids} of
   * any shape; the result has shape {@code ids.shape + [D]} and the table's dtype.
   */
  public static NdArray embedding(NdArray table, NdArray ids) {
    if (table.rank() != 2) {
      throw new IllegalArgumentException(
          "embedding table must have shape [V, D], got " + Arrays.toString(table.shape()));
    }
    requireIntegral("embedding ids", ids);
    long v = table.shape(0);
    long dModel = table.shape(1);
    long[] outShape = Arrays.copyOf(ids.shape(), ids.rank() + 1);
    outShape[ids.rank()] = dModel;
    NdArray out = NdArray.empty(table.dtype(), outShape);
    long n = ids.numel();
    long[] idv = flatIds(ids);
    for (long p = 0; p < n; p++) {
      long id = idv[(int) p];
      if (id < 0 || id >= v) {
        throw new IndexOutOfBoundsException(
            "embedding: id " + id + " at flat position " + p + " of ids " + Arrays.toString(ids.shape())
                + " is out of range for a table of V=" + v + " rows (valid ids are 0.." + (v - 1) + ")");
      }
    }
    int es = table.dtype().byteSize();
    MemorySegment ts = table.segment();
    MemorySegment os = out.segment();
    long ts0 = table.stride(0);
    long ts1 = table.stride(1);
    long rowBytes = dModel * es;
    Parallel.forChunks(
        n,
        Math.max(1, (1 << 15) / Math.max(1, dModel)),
        n * dModel,
        (c, start, end) -> {
          for (long p = start; p < end; p++) {
            long src = table.offset() + idv[(int) p] * ts0;
            if (ts1 == 1 || dModel == 1) {
              MemorySegment.copy(ts, src * es, os, p * rowBytes, rowBytes);
            } else {
              for (long j = 0; j < dModel; j++) {
                MemorySegment.copy(ts, (src + j * ts1) * es, os, p * rowBytes + j * es, es);
              }
            }
          }
        });
    return out;
  }

  /**
   * The gradient of {@link #embedding} with respect to the table: a {@code [V, D]} array in dOut's dtype where row
   * {@code v} is the sum of the rows of {@code dOut} whose id is {@code v} (a scatter-add of rows), summed in
   * position order.
   */
  public static NdArray embeddingBackward(NdArray dOut, NdArray ids, long vocab) {
    requireIntegral("embeddingBackward ids", ids);
    long[] ds = dOut.shape();
    if (ds.length != ids.rank() + 1 || !Arrays.equals(Arrays.copyOf(ds, ds.length - 1), ids.shape())) {
      throw new IllegalArgumentException(
          "embeddingBackward: dOut has shape " + Arrays.toString(ds) + " but ids have shape "
              + Arrays.toString(ids.shape()) + "; dOut must be ids.shape + [D]");
    }
    long dModel = ds[ds.length - 1];
    NdArray grad = NdArray.zeros(dOut.dtype(), vocab, dModel);
    NdArray rows = dOut.reshape(-1, dModel);
    long[] idv = flatIds(ids);
    for (int p = 0; p < idv.length; p++) {
      long id = idv[p];
      if (id < 0 || id >= vocab) {
        throw new IndexOutOfBoundsException(
            "embeddingBackward: id " + id + " at flat position " + p + " is out of range for V=" + vocab);
      }
      Elementwise.addInto(grad.select(0, id), rows.select(0, p));
    }
    return grad;
  }

  // ---------------------------------------------------------------- indexSelect, gather, scatterAdd

  /** The slices {@code x.select(dim, idx[k])} stacked along {@code dim}; {@code idx} is 1-d. */
  public static NdArray indexSelect(NdArray x, int dim, NdArray idx) {
    requireIntegral("indexSelect index", idx);
    if (idx.rank() != 1) {
      throw new IllegalArgumentException("indexSelect index must be 1-d, got shape " + Arrays.toString(idx.shape()));
    }
    int d = normDim(x, dim, "indexSelect");
    long[] shape = x.shape();
    long n = shape[d];
    long[] iv = flatIds(idx);
    shape[d] = iv.length;
    NdArray out = NdArray.empty(x.dtype(), shape);
    for (int k = 0; k < iv.length; k++) {
      long i = iv[k];
      if (i < 0 || i >= n) {
        throw new IndexOutOfBoundsException(
            "indexSelect: index " + i + " at position " + k + " out of range for dim " + d + " of size " + n
                + " (shape " + Arrays.toString(x.shape()) + ")");
      }
      out.select(d, k).copyFrom(x.select(d, i));
    }
    return out;
  }

  /**
   * PyTorch's gather: {@code out[i][j][k] = x[i][idx[i][j][k]][k]} for {@code dim = 1}. {@code out} has idx's shape
   * and x's dtype; idx must have x's rank and no dim larger than x's, except along {@code dim}.
   */
  public static NdArray gather(NdArray x, int dim, NdArray idx) {
    requireIntegral("gather index", idx);
    int d = normDim(x, dim, "gather");
    checkIndexShape("gather", x, idx, d);
    NdArray out = NdArray.empty(x.dtype(), idx.shape());
    long[] ishape = idx.shape();
    long[] xst = x.strides();
    long n = idx.numel();
    long size = x.shape(d);
    int es = x.dtype().byteSize();
    MemorySegment xs = x.segment();
    MemorySegment os = out.segment();
    MemorySegment is = idx.segment();
    DType it = idx.dtype();
    long[] ist = idx.strides();
    Parallel.forChunks(
        n,
        1 << 15,
        n,
        (c, start, end) -> {
          long[] pos = new long[ishape.length];
          for (long p = start; p < end; p++) {
            unravel(p, ishape, pos);
            long io = idx.offset();
            long xo = x.offset();
            for (int k = 0; k < pos.length; k++) {
              io += pos[k] * ist[k];
              if (k != d) {
                xo += pos[k] * xst[k];
              }
            }
            long i = Layouts.getLong(is, it, io * it.byteSize());
            if (i < 0 || i >= size) {
              throw new IndexOutOfBoundsException(
                  "gather: index " + i + " at " + Arrays.toString(pos) + " out of range for dim " + d + " of size "
                      + size + " (x shape " + Arrays.toString(x.shape()) + ")");
            }
            MemorySegment.copy(xs, (xo + i * xst[d]) * es, os, p * es, es);
          }
        });
    return out;
  }

  /**
   * PyTorch's scatter_add_, in place: {@code dst[i][idx[i][j][k]][k] += src[i][j][k]} for {@code dim = 1}, over every
   * position of idx (src must be at least as large as idx in every dim). Returns dst.
   */
  public static NdArray scatterAdd(NdArray dst, int dim, NdArray idx, NdArray src) {
    requireIntegral("scatterAdd index", idx);
    int d = normDim(dst, dim, "scatterAdd");
    checkIndexShape("scatterAdd", dst, idx, d);
    if (src.rank() != idx.rank()) {
      throw new IllegalArgumentException("scatterAdd: src of shape " + Arrays.toString(src.shape())
          + " must have the index's rank " + idx.rank());
    }
    for (int k = 0; k < idx.rank(); k++) {
      if (src.shape(k) < idx.shape(k)) {
        throw new IllegalArgumentException("scatterAdd: src of shape " + Arrays.toString(src.shape())
            + " is smaller than the index " + Arrays.toString(idx.shape()) + " in dim " + k);
      }
    }
    long[] ishape = idx.shape();
    long size = dst.shape(d);
    boolean integral = !dst.dtype().isFloating();
    NdArray s = src.sharesStorageWith(dst) ? src.copy() : src;
    IndexWalk.forEachIndex(ishape, pos -> {
      long i = idx.getLong(pos);
      if (i < 0 || i >= size) {
        throw new IndexOutOfBoundsException(
            "scatterAdd: index " + i + " at " + Arrays.toString(pos) + " out of range for dim " + d + " of size "
                + size + " (dst shape " + Arrays.toString(dst.shape()) + ")");
      }
      long[] at = pos.clone();
      at[d] = i;
      if (integral) {
        dst.setLong(dst.getLong(at) + s.getLong(pos), at);
      } else {
        dst.setDouble(dst.getDouble(at) + s.getDouble(pos), at);
      }
    });
    return dst;
  }

  // ---------------------------------------------------------------- topk, cumsum

  /**
   * The {@code k} largest ({@code largest}) or smallest elements along {@code dim}, sorted (largest first, or
   * smallest first), ties broken by lower index; NaN counts as larger than every number, as in PyTorch.
   */
  public static TopK topk(NdArray x, int k, int dim, boolean largest) {
    int d = normDim(x, dim, "topk");
    long n = x.shape(d);
    if (k < 0 || k > n) {
      throw new IllegalArgumentException(
          "topk: k=" + k + " out of range for dim " + d + " of size " + n + " (shape " + Arrays.toString(x.shape())
              + ")");
    }
    long[] os = x.shape();
    os[d] = k;
    NdArray values = NdArray.empty(x.dtype(), os);
    NdArray indices = NdArray.empty(DType.I64, os);
    long[] outer = x.shape();
    outer[d] = 1;
    int len = (int) n;
    IndexWalk.forEachIndex(outer, pos -> {
      double[] v = new double[len];
      long[] lv = new long[len];
      long[] j = pos.clone();
      boolean integral = !x.dtype().isFloating();
      for (int i = 0; i < len; i++) {
        j[d] = i;
        if (integral) {
          lv[i] = x.getLong(j);
        } else {
          v[i] = x.getDouble(j);
        }
      }
      Integer[] order = new Integer[len];
      for (int i = 0; i < len; i++) {
        order[i] = i;
      }
      // A stable sort keeps equal values in index order.
      Arrays.sort(order, (a, b) -> {
        int c = integral ? Long.compare(lv[a], lv[b]) : Double.compare(canon(v[a]), canon(v[b]));
        return largest ? -c : c;
      });
      for (int i = 0; i < k; i++) {
        j[d] = i;
        int src = order[i];
        if (integral) {
          values.setLong(lv[src], j);
        } else {
          values.setDouble(v[src], j);
        }
        indices.setLong(src, j);
      }
    });
    return new TopK(values, indices);
  }

  /** -0.0 and 0.0 compare equal (Double.compare would split them); NaN stays above everything. */
  private static double canon(double v) {
    return v == 0 ? 0.0 : v;
  }

  /**
   * Running sum along {@code dim}. Floats accumulate in double and round each output to their dtype; integers and
   * BOOL give I64.
   */
  public static NdArray cumsum(NdArray x, int dim) {
    int d = normDim(x, dim, "cumsum");
    DType rt = x.dtype().isFloating() ? x.dtype() : DType.I64;
    NdArray out = NdArray.empty(rt, x.shape());
    if (out.numel() == 0) {
      return out;
    }
    NdArray xs = x.select(d, 0);
    NdArray oss = out.select(d, 0);
    RowIter rows = RowIter.of(xs.shape(), oss, xs);
    long n = x.shape(d);
    long sx = x.stride(d);
    long so = out.stride(d);
    boolean integral = rt == DType.I64;
    MemorySegment xseg = x.segment();
    MemorySegment oseg = out.segment();
    DType t = x.dtype();
    int es = t.byteSize();
    int oes = rt.byteSize();
    Parallel.forChunks(
        rows.numel(),
        Math.max(1, (1 << 15) / n),
        x.numel(),
        (c, start, end) ->
            rows.forRange(
                start,
                end,
                (cnt, off, st) -> {
                  for (long i = 0; i < cnt; i++) {
                    long xo = off[1] + i * st[1];
                    long oo = off[0] + i * st[0];
                    if (integral) {
                      long acc = 0;
                      for (long k = 0; k < n; k++) {
                        acc += Layouts.getLong(xseg, t, (xo + k * sx) * es);
                        oseg.set(Layouts.I64, (oo + k * so) * 8, acc);
                      }
                    } else {
                      double acc = 0;
                      for (long k = 0; k < n; k++) {
                        acc += Layouts.getDouble(xseg, t, (xo + k * sx) * es);
                        Layouts.setDouble(oseg, rt, (oo + k * so) * oes, acc);
                      }
                    }
                  }
                }));
    return out;
  }

  // ---------------------------------------------------------------- helpers

  private static void requireIntegral(String what, NdArray idx) {
    if (idx.dtype().isFloating() || idx.dtype() == DType.BOOL) {
      throw new IllegalArgumentException(what + " must have an integer dtype (I32, I64, U8), got " + idx.dtype());
    }
  }

  private static long[] flatIds(NdArray ids) {
    if (ids.numel() > Integer.MAX_VALUE - 16) {
      throw new IllegalArgumentException("more than 2^31 indices in one call: " + ids.numel());
    }
    return ids.toLongArray();
  }

  private static int normDim(NdArray x, int dim, String op) {
    int r = x.rank();
    int d = dim < 0 ? dim + r : dim;
    if (d < 0 || d >= r) {
      throw new IndexOutOfBoundsException(
          op + ": dim " + dim + " out of range for shape " + Arrays.toString(x.shape()));
    }
    return d;
  }

  private static void checkIndexShape(String op, NdArray x, NdArray idx, int d) {
    if (idx.rank() != x.rank()) {
      throw new IllegalArgumentException(op + ": index of shape " + Arrays.toString(idx.shape())
          + " must have the same rank as the array " + Arrays.toString(x.shape()));
    }
    for (int k = 0; k < x.rank(); k++) {
      if (k != d && idx.shape(k) > x.shape(k)) {
        throw new IllegalArgumentException(op + ": index of shape " + Arrays.toString(idx.shape())
            + " is larger than the array " + Arrays.toString(x.shape()) + " in dim " + k + " (only dim " + d
            + " may differ)");
      }
    }
  }

  private static void unravel(long flat, long[] shape, long[] out) {
    for (int k = shape.length - 1; k >= 0; k--) {
      out[k] = flat % shape[k];
      flat /= shape[k];
    }
  }

  /** Row-major walk over index tuples, for the serial element-at-a-time kernels here. */
  private static final class IndexWalk {
    interface Fn {
      void accept(long[] idx);
    }

    static void forEachIndex(long[] shape, Fn f) {
      long n = NdArray.numel(shape);
      long[] idx = new long[shape.length];
      for (long p = 0; p < n; p++) {
        unravel(p, shape, idx);
        f.accept(idx.clone());
      }
    }
  }
}
