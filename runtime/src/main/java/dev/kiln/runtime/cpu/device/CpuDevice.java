package dev.kiln.runtime.cpu.device;

import com.google.auto.service.AutoService;
import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Kernel;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Indexing;
import dev.kiln.runtime.cpu.Reduce;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.ServiceLoader;

/**
 * The CPU {@link Device}: what generated {@code Compiled<Module>} code runs on when no GPU is asked for. Tensors are
 * {@link NdArray}s; GEMM is OpenBLAS through {@link Gemm#gemm} with transposes passed as flags; pointwise and
 * reduction primitives are the {@code dev.kiln.runtime.cpu} kernels; fused kernels are the generated Java methods
 * ({@link Kernel#cpu()}), called on the tensors' memory; attention is {@link CpuAttention} (no score matrix, saved
 * log-sum-exp).
 *
 * <p>Registered for {@link ServiceLoader} as a {@link Device} named {@code "cpu"}; {@link #find(String)} looks a
 * device up by name.
 */
@AutoService(Device.class)
public final class CpuDevice implements Device {

  /** Public for {@link ServiceLoader}; the device holds no state, so any instance is as good as another. */
  public CpuDevice() {}

  /** The device on the class path whose {@link Device#name()} is {@code name} (e.g. {@code "cpu"}). */
  public static Device find(String name) {
    StringBuilder names = new StringBuilder();
    for (Device d : ServiceLoader.load(Device.class, CpuDevice.class.getClassLoader())) {
      if (d.name().equals(name)) {
        return d;
      }
      names.append(names.isEmpty() ? "" : ", ").append(d.name());
    }
    throw new IllegalArgumentException(
        "no Kiln device named '" + name + "' on the class path (found: " + (names.isEmpty() ? "none" : names) + ")");
  }

  @Override
  public String name() {
    return "cpu";
  }

  // ================================================================ arguments

  private static NdArray nd(Tensor t, String op, String role) {
    if (t instanceof NdArray a) {
      return a;
    }
    throw new IllegalArgumentException(
        "cpu device, " + op + ": " + role + " is " + (t == null ? "null" : "a " + t.getClass().getName())
            + "; the CPU device computes on " + NdArray.class.getName() + "s it made");
  }

  private static NdArray floating(Tensor t, String op, String role) {
    NdArray a = nd(t, op, role);
    if (!a.dtype().isFloating()) {
      throw new IllegalArgumentException("cpu device, " + op + ": " + role + " must be a float tensor, got " + a.dtype());
    }
    return a;
  }

  private static void sameFloat(String op, NdArray... xs) {
    for (NdArray x : xs) {
      if (x.dtype() != xs[0].dtype()) {
        throw new IllegalArgumentException(
            "cpu device, " + op + ": operands must share one float dtype; got " + xs[0].dtype() + " and " + x.dtype());
      }
    }
  }

  private static void writable(String op, String role, NdArray x) {
    if (x.storage().isReadOnly()) {
      throw new IllegalArgumentException("cpu device, " + op + ": " + role + " is read-only (a mapped file?)");
    }
    long[] st = x.strides();
    long[] sh = x.shape();
    for (int i = 0; i < st.length; i++) {
      if (st[i] == 0 && sh[i] > 1) {
        throw new IllegalArgumentException(
            "cpu device, " + op + ": " + role + " is a broadcast view (dim " + i + " of " + Arrays.toString(sh)
                + " has stride 0); write into a real tensor");
      }
    }
  }

  private static void integral(NdArray ids, String op, String role) {
    if (ids.dtype().isFloating()) {
      throw new IllegalArgumentException("cpu device, " + op + ": " + role + " must be integers, got " + ids.dtype());
    }
  }

  // ================================================================ memory

  @Override
  public Tensor empty(DType dtype, long... shape) {
    return NdArray.empty(dtype, shape);
  }

  @Override
  public Tensor zeros(DType dtype, long... shape) {
    return NdArray.zeros(dtype, shape);
  }

  @Override
  public Tensor full(DType dtype, double value, long... shape) {
    return NdArray.full(dtype, value, shape);
  }

  @Override
  public Tensor upload(DType dtype, long[] shape, double[] values) {
    if (NdArray.numel(shape) != values.length) {
      throw new IllegalArgumentException(
          "cpu device, upload: shape " + Arrays.toString(shape) + " holds " + NdArray.numel(shape) + " elements but "
              + values.length + " values were given");
    }
    NdArray a = NdArray.fromDoubles(values).reshape(shape);
    return dtype == DType.F64 ? a : a.to(dtype);
  }

  @Override
  public double[] download(Tensor x) {
    return nd(x, "download", "x").toDoubleArray();
  }

  @Override
  public Tensor iota(DType dtype, long n) {
    return NdArray.arange(dtype, n);
  }

  @Override
  public void fill(Tensor out, double value) {
    NdArray o = nd(out, "fill", "out");
    writable("fill", "out", o);
    o.fill(value);
  }

  @Override
  public void fillTruncatedNormal(Tensor out, double std, double bound, long seed, long stream) {
    NdArray o = floating(out, "fillTruncatedNormal", "out");
    writable("fillTruncatedNormal", "out", o);
    if (!o.isContiguous()) {
      throw new IllegalArgumentException("cpu device, fillTruncatedNormal: out must be contiguous");
    }
    new Rng(seed).stream(stream).truncNormal(o, 0, std, -bound, bound);
  }

  @Override
  public void copy(Tensor src, Tensor dst) {
    NdArray s = nd(src, "copy", "src");
    NdArray d = nd(dst, "copy", "dst");
    writable("copy", "dst", d);
    long[] both;
    try {
      both = NdArray.broadcastShapes(s.shape(), d.shape());
    } catch (IllegalArgumentException e) {
      both = null;
    }
    if (both == null || !Arrays.equals(both, d.shape())) {
      throw new IllegalArgumentException(
          "cpu device, copy: src " + Arrays.toString(s.shape()) + " does not broadcast to dst "
              + Arrays.toString(d.shape()));
    }
    d.copyFrom(s);
  }

  @Override
  public Tensor cast(Tensor x, DType dtype) {
    return nd(x, "cast", "x").to(dtype);
  }

  // ================================================================ views

  @Override
  public Tensor reshape(Tensor x, long... shape) {
    return nd(x, "reshape", "x").reshape(shape);
  }

  @Override
  public Tensor permute(Tensor x, int... order) {
    return nd(x, "permute", "x").permute(order);
  }

  @Override
  public Tensor expand(Tensor x, long... shape) {
    return nd(x, "expand", "x").expand(shape);
  }

  @Override
  public Tensor contiguous(Tensor x) {
    return nd(x, "contiguous", "x").contiguous();
  }

  @Override
  public Tensor narrow(Tensor x, int dim, long start, long length) {
    return nd(x, "narrow", "x").narrow(dim, start, length);
  }

  // ================================================================ GEMM

  @Override
  public void gemm(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, double alpha, double beta) {
    NdArray x = floating(a, "gemm", "a");
    NdArray y = floating(b, "gemm", "b");
    NdArray z = floating(c, "gemm", "c");
    sameFloat("gemm", x, y, z);
    writable("gemm", "c", z);
    if (z.rank() < 2 || z.rank() > 3 || x.rank() < 2 || x.rank() > z.rank() || y.rank() < 2 || y.rank() > z.rank()) {
      throw new IllegalArgumentException(
          "cpu device, gemm: c must be [batch, m, n] or [m, n], and a and b rank 2 (shared) or c's rank; got a "
              + Arrays.toString(x.shape()) + ", b " + Arrays.toString(y.shape()) + ", c " + Arrays.toString(z.shape()));
    }
    long m = transA ? x.shape(-1) : x.shape(-2);
    long ka = transA ? x.shape(-2) : x.shape(-1);
    long kb = transB ? y.shape(-1) : y.shape(-2);
    long n = transB ? y.shape(-2) : y.shape(-1);
    boolean batchOk = (x.rank() == 2 || x.shape(0) == z.shape(0)) && (y.rank() == 2 || y.shape(0) == z.shape(0));
    if (ka != kb || m != z.shape(-2) || n != z.shape(-1) || !batchOk) {
      throw new IllegalArgumentException(
          "cpu device, gemm: op(a) is [" + m + ", " + ka + "] (a " + Arrays.toString(x.shape())
              + (transA ? " transposed" : "") + "), op(b) is [" + kb + ", " + n + "] (b " + Arrays.toString(y.shape())
              + (transB ? " transposed" : "") + "), c is " + Arrays.toString(z.shape())
              + ": need op(a) [m, k], op(b) [k, n], c [m, n] with one batch size");
    }
    Gemm.gemm(
        transA ? Gemm.Transpose.TRANSPOSED : Gemm.Transpose.NONE,
        transB ? Gemm.Transpose.TRANSPOSED : Gemm.Transpose.NONE,
        alpha, x, y, beta, z);
  }

  // ================================================================ primitives

  @Override
  public Tensor unary(Unary op, Tensor x) {
    NdArray a = floating(x, "unary " + op, "x");
    return switch (op) {
      case NEG -> Elementwise.neg(a);
      case EXP -> Elementwise.exp(a);
      case LOG -> Elementwise.log(a);
      case SQRT -> Elementwise.sqrt(a);
      case RSQRT -> Elementwise.rsqrt(a);
      case TANH -> Elementwise.tanh(a);
      case SIGMOID -> Elementwise.sigmoid(a);
      case COS -> trig(a, true);
      case SIN -> trig(a, false);
    };
  }

  /** cos or sin in double, rounded once to x's dtype (the kernels have no trigonometry; RoPE tables are small). */
  private static NdArray trig(NdArray a, boolean cos) {
    double[] v = a.toDoubleArray();
    for (int i = 0; i < v.length; i++) {
      v[i] = cos ? Math.cos(v[i]) : Math.sin(v[i]);
    }
    NdArray out = NdArray.fromDoubles(v).reshape(a.shape());
    return a.dtype() == DType.F64 ? out : out.to(a.dtype());
  }

  @Override
  public Tensor binary(Binary op, Tensor a, Tensor b) {
    NdArray x = floating(a, "binary " + op, "a");
    NdArray y = floating(b, "binary " + op, "b");
    sameFloat("binary " + op, x, y);
    return Elementwise.binary(
        switch (op) {
          case ADD -> Elementwise.Binary.ADD;
          case SUB -> Elementwise.Binary.SUB;
          case MUL -> Elementwise.Binary.MUL;
          case DIV -> Elementwise.Binary.DIV;
          case MAXIMUM -> Elementwise.Binary.MAXIMUM;
        },
        x, y);
  }

  @Override
  public Tensor compare(Compare op, Tensor a, Tensor b) {
    NdArray x = nd(a, "compare " + op, "a");
    NdArray y = nd(b, "compare " + op, "b");
    return op == Compare.GREATER ? Elementwise.gt(x, y) : Elementwise.lt(x, y);
  }

  @Override
  public Tensor where(Tensor cond, Tensor a, Tensor b) {
    NdArray c = nd(cond, "where", "cond");
    if (c.dtype() != DType.BOOL) {
      throw new IllegalArgumentException("cpu device, where: cond must be BOOL, got " + c.dtype());
    }
    NdArray x = nd(a, "where", "a");
    NdArray y = nd(b, "where", "b");
    if (x.dtype().isFloating() || y.dtype().isFloating()) {
      sameFloat("where", x, y);
    }
    return Elementwise.where(c, x, y);
  }

  @Override
  public Tensor reduce(Reduction how, Tensor x, int[] axes, boolean keepDims) {
    NdArray a = nd(x, "reduce", "x");
    if (how == Reduction.MEAN) {
      throw new IllegalArgumentException("cpu device, reduce: MEAN is not a device reduction; scale a SUM");
    }
    boolean[] seen = new boolean[a.rank()];
    for (int ax : axes) {
      if (ax < 0 || ax >= a.rank() || seen[ax]) {
        throw new IllegalArgumentException(
            "cpu device, reduce: axes " + Arrays.toString(axes) + " must be distinct and in [0, " + a.rank() + ")");
      }
      seen[ax] = true;
    }
    if (axes.length == 0) {
      return a.copy(); // Reduce.reduce reads an empty list as "every dim"
    }
    Reduce.Op op = switch (how) {
      case SUM -> Reduce.Op.SUM;
      case MAX -> Reduce.Op.MAX;
      case MIN -> Reduce.Op.MIN;
      case MEAN -> throw new AssertionError();
    };
    return Reduce.reduce(a, op, axes, keepDims);
  }

  @Override
  public Tensor gather(Tensor table, Tensor ids) {
    NdArray i = nd(ids, "gather", "ids");
    integral(i, "gather", "ids");
    return Indexing.embedding(nd(table, "gather", "table"), i);
  }

  @Override
  public void scatterAddRows(Tensor dTable, Tensor ids, Tensor src) {
    NdArray dt = floating(dTable, "scatterAddRows", "dTable");
    NdArray i = nd(ids, "scatterAddRows", "ids");
    NdArray s = floating(src, "scatterAddRows", "src");
    integral(i, "scatterAddRows", "ids");
    writable("scatterAddRows", "dTable", dt);
    long[] want = Arrays.copyOf(i.shape(), i.rank() + 1);
    want[i.rank()] = dt.rank() == 2 ? dt.shape(1) : -1;
    if (dt.rank() != 2 || !dt.isContiguous() || !Arrays.equals(s.shape(), want)) {
      throw new IllegalArgumentException(
          "cpu device, scatterAddRows: dTable must be a contiguous [n, d] and src ids.shape + [d]; got dTable "
              + Arrays.toString(dt.shape()) + ", ids " + Arrays.toString(i.shape()) + ", src " + Arrays.toString(s.shape()));
    }
    long rows = dt.shape(0);
    int d = Math.toIntExact(dt.shape(1));
    long[] idv = i.toLongArray();
    double[] sv = s.toDoubleArray();
    MemorySegment seg = dt.segment();
    DType t = dt.dtype();
    int es = t.byteSize();
    // One thread, positions in order: rows hit by several ids accumulate in a fixed order.
    for (int p = 0; p < idv.length; p++) {
      long row = idv[p];
      if (row < 0 || row >= rows) {
        throw new IndexOutOfBoundsException(
            "cpu device, scatterAddRows: id " + row + " at position " + p + " is out of range for " + rows + " rows");
      }
      long base = (dt.offset() + row * d) * es;
      for (int x = 0; x < d; x++) {
        long at = base + (long) x * es;
        Layouts.setDouble(seg, t, at, Layouts.getDouble(seg, t, at) + sv[p * d + x]);
      }
    }
  }

  @Override
  public Tensor pick(Tensor x, Tensor idx) {
    NdArray a = nd(x, "pick", "x");
    NdArray i = nd(idx, "pick", "idx");
    integral(i, "pick", "idx");
    if (a.rank() != i.rank() + 1 || !Arrays.equals(Arrays.copyOf(a.shape(), i.rank()), i.shape())) {
      throw new IllegalArgumentException(
          "cpu device, pick: x must be idx.shape + [n]; got x " + Arrays.toString(a.shape()) + ", idx "
              + Arrays.toString(i.shape()));
    }
    long n = a.shape(-1);
    // Reads only the picked element of each row (the logits of a language model are rows x vocabulary: converting
    // all of them to pick one per row cost 15% of a training step).
    NdArray rows = a.contiguous().reshape(-1, n);
    long[] iv = i.toLongArray();
    NdArray o = NdArray.empty(a.dtype(), i.shape());
    NdArray flat = o.reshape(-1);
    for (int r = 0; r < iv.length; r++) {
      long j = iv[r];
      if (j < 0 || j >= n) {
        throw new IndexOutOfBoundsException(
            "cpu device, pick: index " + j + " at position " + r + " is out of range for a last dim of " + n);
      }
      flat.setDouble(rows.getDouble(r, j), r);
    }
    return o;
  }

  @Override
  public void scatterAddLast(Tensor dx, Tensor idx, Tensor src) {
    NdArray d = floating(dx, "scatterAddLast", "dx");
    NdArray i = nd(idx, "scatterAddLast", "idx");
    NdArray s = floating(src, "scatterAddLast", "src");
    integral(i, "scatterAddLast", "idx");
    writable("scatterAddLast", "dx", d);
    long[] lead = Arrays.copyOf(d.shape(), Math.max(0, d.rank() - 1));
    if (d.rank() < 1 || !d.isContiguous() || i.rank() != d.rank() || !Arrays.equals(i.shape(), s.shape())
        || !Arrays.equals(Arrays.copyOf(i.shape(), i.rank() - 1), lead)) {
      throw new IllegalArgumentException(
          "cpu device, scatterAddLast: dx must be a contiguous S + [n], idx and src S + [k]; got dx "
              + Arrays.toString(d.shape()) + ", idx " + Arrays.toString(i.shape()) + ", src " + Arrays.toString(s.shape()));
    }
    int n = Math.toIntExact(d.shape(-1));
    int k = Math.toIntExact(i.shape(-1));
    long[] iv = i.toLongArray();
    double[] sv = s.toDoubleArray();
    MemorySegment seg = d.segment();
    DType t = d.dtype();
    int es = t.byteSize();
    for (int p = 0; p < iv.length; p++) {
      long j = iv[p];
      if (j < 0 || j >= n) {
        throw new IndexOutOfBoundsException(
            "cpu device, scatterAddLast: index " + j + " at position " + p + " is out of range for a last dim of " + n);
      }
      long at = (d.offset() + (long) (p / k) * n + j) * es;
      Layouts.setDouble(seg, t, at, Layouts.getDouble(seg, t, at) + sv[p]);
    }
  }

  @Override
  public TopK topk(Tensor x, int k) {
    NdArray a = nd(x, "topk", "x");
    if (a.rank() < 1) {
      throw new IllegalArgumentException("cpu device, topk: x must have a last dim");
    }
    Indexing.TopK r = Indexing.topk(a, k, -1, true);
    return new TopK(r.values(), r.indices());
  }

  // ================================================================ rotary position embedding

  /**
   * RoPE in one pass over {@code x}, as {@link Device#rope} defines it: the angles in double
   * ({@code pos · theta^(-2i/d)}, as the eager interpreter computes them), the rotation in {@code x}'s dtype.
   * Rows are split over cores in fixed chunks.
   */
  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse) {
    NdArray a = floating(x, "rope", "x").contiguous();
    if (a.dtype() != DType.F32 && a.dtype() != DType.F64) {
      return Device.super.rope(x, positions, theta, inverse);
    }
    NdArray p = nd(positions, "rope", "positions");
    if (a.rank() < 1 || a.shape(-1) % 2 != 0) {
      throw new IllegalArgumentException("cpu device, rope: x " + Arrays.toString(a.shape())
          + " must have an even last dim (pairs are rotated)");
    }
    int d = Math.toIntExact(a.shape(-1));
    long[] rows = Arrays.copyOf(a.shape(), a.rank() - 1);
    long[] pos = p.expand(rows).contiguous().to(DType.I64).toLongArray();
    double[] inverseFrequency = new double[d / 2];
    for (int i = 0; i < d / 2; i++) {
      inverseFrequency[i] = Math.pow(theta, -2.0 * i / d);
    }
    double sign = inverse ? -1 : 1;
    NdArray out = NdArray.empty(a.dtype(), a.shape());
    MemorySegment src = a.segment();
    MemorySegment dst = out.segment();
    long srcBase = a.offset();
    boolean f32 = a.dtype() == DType.F32;
    Parallel.forChunks(pos.length, Math.max(1, 8192 / d), pos.length, (c, lo, hi) -> {
      for (long r = lo; r < hi; r++) {
        for (int i = 0; i < d / 2; i++) {
          double angle = sign * pos[(int) r] * inverseFrequency[i];
          double cos = Math.cos(angle);
          double sin = Math.sin(angle);
          long e = r * d + 2L * i;
          if (f32) {
            float c0 = (float) cos;
            float s0 = (float) sin;
            float x0 = src.get(Layouts.F32, (srcBase + e) * 4);
            float x1 = src.get(Layouts.F32, (srcBase + e + 1) * 4);
            dst.set(Layouts.F32, e * 4, x0 * c0 - x1 * s0);
            dst.set(Layouts.F32, (e + 1) * 4, x0 * s0 + x1 * c0);
          } else {
            double x0 = src.get(Layouts.F64, (srcBase + e) * 8);
            double x1 = src.get(Layouts.F64, (srcBase + e + 1) * 8);
            dst.set(Layouts.F64, e * 8, x0 * cos - x1 * sin);
            dst.set(Layouts.F64, (e + 1) * 8, x0 * sin + x1 * cos);
          }
        }
      }
    });
    return out;
  }

  // ================================================================ cross-entropy

  /**
   * One pass per row (max, then the sum of exponentials in double) instead of the default's five full-size
   * intermediates: the logits of a language model are rows × vocabulary, the largest tensor of a step.
   */
  @Override
  public Tensor crossEntropy(Tensor logits, Tensor targets) {
    Rows r = crossEntropyRows(logits, targets, "crossEntropy");
    if (r == null) {
      return Device.super.crossEntropy(logits, targets);
    }
    NdArray out = NdArray.empty(r.x.dtype(), r.shape);
    MemorySegment dst = out.segment();
    Parallel.forChunks(r.target.length, Math.max(1, 16384 / r.v), (long) r.target.length * r.v, (c, lo, hi) -> {
      for (long i = lo; i < hi; i++) {
        int row = (int) i;
        double loss = logSumExp(r, row) - r.get(row, r.target[row]);
        if (r.f32) {
          dst.set(Layouts.F32, i * 4, (float) loss);
        } else {
          dst.set(Layouts.F64, i * 8, loss);
        }
      }
    });
    return out;
  }

  @Override
  public Tensor crossEntropyBackward(Tensor logits, Tensor targets, Tensor dLoss) {
    Rows r = crossEntropyRows(logits, targets, "crossEntropyBackward");
    NdArray g = floating(dLoss, "crossEntropyBackward", "dLoss");
    if (r == null || g.dtype() != r.x.dtype()) {
      return Device.super.crossEntropyBackward(logits, targets, dLoss);
    }
    double[] scale = g.expand(r.shape).contiguous().to(DType.F64).toDoubleArray();
    NdArray out = NdArray.empty(r.x.dtype(), r.x.shape());
    MemorySegment dst = out.segment();
    boolean f32 = r.x.dtype() == DType.F32;
    Parallel.forChunks(r.target.length, Math.max(1, 16384 / r.v), (long) r.target.length * r.v, (c, lo, hi) -> {
      for (long i = lo; i < hi; i++) {
        int row = (int) i;
        double lse = logSumExp(r, row);
        long base = (long) row * r.v;
        for (int j = 0; j < r.v; j++) {
          double d = scale[row] * (Math.exp(r.get(row, j) - lse) - (j == r.target[row] ? 1 : 0));
          if (f32) {
            dst.set(Layouts.F32, (base + j) * 4, (float) d);
          } else {
            dst.set(Layouts.F64, (base + j) * 8, d);
          }
        }
      }
    });
    return out;
  }

  /** Logits as contiguous rows and the checked targets; null for dtypes the loops do not take (F32 and F64 only). */
  private static Rows crossEntropyRows(Tensor logits, Tensor targets, String op) {
    NdArray x = floating(logits, op, "logits");
    NdArray t = nd(targets, op, "targets");
    integral(t, op, "targets");
    if (x.rank() != t.rank() + 1 || !Arrays.equals(Arrays.copyOf(x.shape(), t.rank()), t.shape())) {
      throw new IllegalArgumentException("cpu device, " + op + ": logits must be targets.shape + [vocab]; got logits "
          + Arrays.toString(x.shape()) + ", targets " + Arrays.toString(t.shape()));
    }
    if (x.dtype() != DType.F32 && x.dtype() != DType.F64) {
      return null;
    }
    int v = Math.toIntExact(x.shape(-1));
    long[] ids = t.toLongArray();
    for (int r = 0; r < ids.length; r++) {
      if (ids[r] < 0 || ids[r] >= v) {
        throw new IndexOutOfBoundsException("cpu device, " + op + ": target " + ids[r] + " at position " + r
            + " is out of range for a vocabulary of " + v);
      }
    }
    int[] target = new int[ids.length];
    for (int r = 0; r < ids.length; r++) {
      target[r] = (int) ids[r];
    }
    NdArray c = x.contiguous();
    return new Rows(c, c.segment(), c.offset(), v, target, t.shape(), c.dtype() == DType.F32);
  }

  private record Rows(NdArray x, MemorySegment seg, long base, int v, int[] target, long[] shape, boolean f32) {
    double get(int row, int j) {
      long e = base + (long) row * v + j;
      return f32 ? seg.get(Layouts.F32, e * 4) : seg.get(Layouts.F64, e * 8);
    }
  }

  private static double logSumExp(Rows r, int row) {
    double max = Double.NEGATIVE_INFINITY;
    for (int j = 0; j < r.v; j++) {
      max = Math.max(max, r.get(row, j));
    }
    double sum = 0;
    for (int j = 0; j < r.v; j++) {
      sum += Math.exp(r.get(row, j) - max);
    }
    return max + Math.log(sum);
  }

  // ================================================================ fused kernels

  @Override
  public void launch(Kernel kernel, Tensor[] tensors, long[] sizes, double[] scalars) {
    String op = "launch " + kernel.name();
    if (tensors.length != kernel.inputs() + kernel.outputs()) {
      throw new IllegalArgumentException(
          "cpu device, " + op + ": the kernel takes " + kernel.inputs() + " inputs and " + kernel.outputs()
              + " outputs but " + tensors.length + " tensors were given");
    }
    if (sizes.length != 2 || sizes[0] < 0 || sizes[1] < 0) {
      throw new IllegalArgumentException("cpu device, " + op + ": sizes must be [rows, cols], got " + Arrays.toString(sizes));
    }
    MemorySegment[] segments = new MemorySegment[tensors.length];
    DType dtype = null;
    for (int i = 0; i < tensors.length; i++) {
      String role = (i < kernel.inputs() ? "input " + i : "output " + (i - kernel.inputs()));
      NdArray a = floating(tensors[i], op, role);
      if (dtype == null) {
        dtype = a.dtype();
      } else if (a.dtype() != dtype) {
        throw new IllegalArgumentException(
            "cpu device, " + op + ": " + role + " is " + a.dtype() + " but the kernel runs in " + dtype);
      }
      if (!a.isContiguous()) {
        throw new IllegalArgumentException(
            "cpu device, " + op + ": " + role + " (shape " + Arrays.toString(a.shape()) + ", strides "
                + Arrays.toString(a.strides()) + ") must be contiguous");
      }
      if (i >= kernel.inputs()) {
        writable(op, role, a);
      }
      segments[i] = a.segment().asSlice(a.offset() * a.dtype().byteSize(), a.byteSize());
    }
    runRows(kernel, dtype, segments, sizes[0], sizes[1], scalars);
  }

  /** Rows per parallel chunk: about 16K elements, enough to amortise a task, small enough to balance. */
  private static final long CHUNK_ELEMENTS = 1 << 14;

  /**
   * Runs a fused kernel over its rows, split into chunks of rows on {@link Parallel}'s threads when it is large.
   * Generated kernels treat rows independently (a {@code POINTWISE} element or a {@code ROWS} row reads only its own
   * row of full and per-row tensors, plus last-dim vectors and scalars), so a chunk is the same kernel run on slices
   * of the full ({@code rows × cols}) and per-row ({@code rows}) tensors, and the result does not depend on the
   * split. A tensor's role is read off its element count; when two roles have the same count ({@code rows == cols},
   * one row, one column) the launch stays whole rather than guess.
   */
  private static void runRows(
      Kernel kernel, DType dtype, MemorySegment[] segments, long rows, long cols, double[] scalars) {
    long es = dtype.byteSize();
    boolean split = rows > 1 && cols > 1 && rows != cols && rows * cols >= Parallel.MIN_PARALLEL_ELEMENTS
        && Parallel.threads() > 1;
    int[] role = new int[segments.length]; // 0 whole (vector or scalar), 1 full, 2 per row
    for (int i = 0; split && i < segments.length; i++) {
      long n = segments[i].byteSize() / es;
      boolean columnSum = i >= kernel.inputs() && kernel.isColumnSum(i - kernel.inputs());
      if (columnSum && n != rows * cols) {
        split = false; // partial rows that runs of rows share: only a whole launch may write them
      } else if (n == rows * cols) {
        role[i] = 1;
      } else if (n == rows) {
        role[i] = 2;
      } else if (n != cols && n != 1) {
        split = false;
      }
    }
    if (!split) {
      kernel.cpu().run(dtype, segments, rows, cols, scalars);
      return;
    }
    long grain = Math.max(1, CHUNK_ELEMENTS / cols);
    Parallel.forChunks(
        rows,
        grain,
        rows * cols,
        (chunk, start, end) -> {
          MemorySegment[] part = new MemorySegment[segments.length];
          for (int i = 0; i < segments.length; i++) {
            part[i] =
                switch (role[i]) {
                  case 1 -> segments[i].asSlice(start * cols * es, (end - start) * cols * es);
                  case 2 -> segments[i].asSlice(start * es, (end - start) * es);
                  default -> segments[i];
                };
          }
          kernel.cpu().run(dtype, part, end - start, cols, scalars);
        });
  }

  // ================================================================ attention

  @Override
  public AttentionOut attention(Tensor q, Tensor k, Tensor v, Mask mask, double scale) {
    NdArray qa = floating(q, "attention", "q");
    NdArray ka = floating(k, "attention", "k");
    NdArray va = floating(v, "attention", "v");
    sameFloat("attention", qa, ka, va);
    java.util.Objects.requireNonNull(mask, "attention: mask is null; pass Mask.NONE or Mask.CAUSAL");
    return CpuAttention.forward(qa, ka, va, mask, scale);
  }

  @Override
  public AttentionGrads attentionBackward(
      Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, Mask mask, double scale) {
    NdArray qa = floating(q, "attentionBackward", "q");
    NdArray ka = floating(k, "attentionBackward", "k");
    NdArray va = floating(v, "attentionBackward", "v");
    NdArray oa = floating(out, "attentionBackward", "out");
    NdArray la = floating(lse, "attentionBackward", "lse");
    NdArray da = floating(dOut, "attentionBackward", "dOut");
    sameFloat("attentionBackward", qa, ka, va, oa, la, da);
    java.util.Objects.requireNonNull(mask, "attentionBackward: mask is null; pass Mask.NONE or Mask.CAUSAL");
    return CpuAttention.backward(qa, ka, va, oa, la, da, mask, scale);
  }
}
