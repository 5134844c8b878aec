package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.DTypes.Kind;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Pointwise CPU kernels: unary math, binary arithmetic with numpy broadcasting, comparisons, {@code where}, masked
 * fill and in-place accumulation.
 *
 * <p>Inputs may have any strides (views, permutations, stepped slices, stride-0 broadcasts); results are new
 * contiguous arrays except for the {@code ...Into} methods, which write into their first argument.
 *
 * <p><b>Result dtypes.</b>
 * <ul>
 *   <li>Same dtype in, same dtype out.
 *   <li>Two float dtypes promote to the wider: F64 over F32 over BF16/F16; BF16 with F16 gives F32 (neither holds
 *       the other's values).
 *   <li>An integer with a float gives the float. Two integer types give the wider (I64 over I32 over U8 over BOOL).
 *   <li>{@code div} of two integer arrays is true division and gives F32, as PyTorch does; the other arithmetic
 *       ({@code add sub mul pow maximum minimum}) stays integral and is exact in 64-bit ({@code pow} goes through
 *       double, so it is exact up to 2^53, and rejects negative exponents).
 *   <li>Float-only unary functions ({@code exp log sqrt rsqrt tanh sigmoid silu gelu geluTanh reciprocal}) give F32
 *       for integer input; {@code neg abs square relu} keep integer types.
 *   <li>Comparisons give BOOL and compare in the promoted dtype.
 *   <li>Scalar variants: the scalar adopts the array's dtype when the array is floating, and when the array is an
 *       integer type and the scalar is a whole number; otherwise (integer array, fractional scalar) the result is F32.
 * </ul>
 *
 * <p><b>Precision.</b> F32, BF16 and F16 compute in float32 and round once on store (round-to-nearest-even for the
 * narrow types); F64 computes in double; integers compute in long and wrap on store as Java casts do.
 *
 * <p><b>Speed.</b> Work is cut into fixed chunks for {@link Parallel}; within a chunk, runs of elements are loaded
 * into L1-sized scratch blocks (bulk copies for contiguous F32/F64), computed with plain array loops (auto-vectorised
 * by the JIT) or with {@link VectorKernels} when {@link Simd#enabled()}, and stored back. Contiguous F32
 * {@code add sub mul div} skip the scratch blocks and stream straight between the arrays' memory.
 */
public final class Elementwise {
  /** Fixed chunk size for {@link Parallel} (a multiple of the scratch block): results never depend on threads. */
  static final long GRAIN = 32 * Buffers.BLOCK;

  /**
   * Whether contiguous F32 add/sub/mul/div stream straight between segments (default) instead of going through
   * the float[] scratch blocks; {@code -Dkiln.directF32=false} turns it off so the two can be measured.
   */
  static final boolean DIRECT_F32 = !"false".equalsIgnoreCase(System.getProperty("kiln.directF32"));

  private Elementwise() {}

  /** Unary functions; {@code keepsIntegers} ops compute on integer types, the rest give F32 for them. */
  public enum Unary {
    NEG(true),
    ABS(true),
    EXP(false),
    LOG(false),
    SQRT(false),
    RSQRT(false),
    SQUARE(true),
    TANH(false),
    SIGMOID(false),
    SILU(false),
    /** {@code x * Phi(x)} with the exact normal CDF (erf form). */
    GELU(false),
    /** {@code 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))}, the GPT-2 approximation. */
    GELU_TANH(false),
    RELU(true),
    RECIPROCAL(false);

    final boolean keepsIntegers;

    Unary(boolean keepsIntegers) {
      this.keepsIntegers = keepsIntegers;
    }
  }

  /** Binary arithmetic with broadcasting. */
  public enum Binary {
    ADD,
    SUB,
    MUL,
    DIV,
    POW,
    MAXIMUM,
    MINIMUM
  }

  /** Comparisons; the result is BOOL. */
  public enum Compare {
    EQ,
    NE,
    LT,
    LE,
    GT,
    GE
  }

  // ---------------------------------------------------------------- public API: unary

  public static NdArray neg(NdArray x) {
    return unary(Unary.NEG, x);
  }

  public static NdArray abs(NdArray x) {
    return unary(Unary.ABS, x);
  }

  public static NdArray exp(NdArray x) {
    return unary(Unary.EXP, x);
  }

  public static NdArray log(NdArray x) {
    return unary(Unary.LOG, x);
  }

  public static NdArray sqrt(NdArray x) {
    return unary(Unary.SQRT, x);
  }

  public static NdArray rsqrt(NdArray x) {
    return unary(Unary.RSQRT, x);
  }

  public static NdArray square(NdArray x) {
    return unary(Unary.SQUARE, x);
  }

  public static NdArray tanh(NdArray x) {
    return unary(Unary.TANH, x);
  }

  public static NdArray sigmoid(NdArray x) {
    return unary(Unary.SIGMOID, x);
  }

  public static NdArray silu(NdArray x) {
    return unary(Unary.SILU, x);
  }

  /** Exact GeLU (erf form). */
  public static NdArray gelu(NdArray x) {
    return unary(Unary.GELU, x);
  }

  /** GeLU with the tanh approximation. */
  public static NdArray geluTanh(NdArray x) {
    return unary(Unary.GELU_TANH, x);
  }

  public static NdArray relu(NdArray x) {
    return unary(Unary.RELU, x);
  }

  public static NdArray reciprocal(NdArray x) {
    return unary(Unary.RECIPROCAL, x);
  }

  /** Applies {@code op} to every element. */
  public static NdArray unary(Unary op, NdArray x) {
    DType rt = x.dtype().isFloating() || !op.keepsIntegers ? DTypes.floatOf(x.dtype()) : x.dtype();
    NdArray out = NdArray.empty(rt, x.shape());
    drive(
        out,
        new NdArray[] {x},
        DTypes.kindOf(rt),
        new Kernel() {
          @Override
          public void f(float[][] in, float[] o, int n) {
            unaryF(op, in[0], o, n);
          }

          @Override
          public void d(double[][] in, double[] o, int n) {
            unaryD(op, in[0], o, n);
          }

          @Override
          public void l(long[][] in, long[] o, int n) {
            unaryL(op, in[0], o, n);
          }
        },
        null);
    return out;
  }

  // ---------------------------------------------------------------- public API: binary

  public static NdArray add(NdArray a, NdArray b) {
    return binary(Binary.ADD, a, b);
  }

  public static NdArray sub(NdArray a, NdArray b) {
    return binary(Binary.SUB, a, b);
  }

  public static NdArray mul(NdArray a, NdArray b) {
    return binary(Binary.MUL, a, b);
  }

  public static NdArray div(NdArray a, NdArray b) {
    return binary(Binary.DIV, a, b);
  }

  public static NdArray pow(NdArray a, NdArray b) {
    return binary(Binary.POW, a, b);
  }

  public static NdArray maximum(NdArray a, NdArray b) {
    return binary(Binary.MAXIMUM, a, b);
  }

  public static NdArray minimum(NdArray a, NdArray b) {
    return binary(Binary.MINIMUM, a, b);
  }

  public static NdArray add(NdArray a, double s) {
    return binary(Binary.ADD, a, s);
  }

  public static NdArray sub(NdArray a, double s) {
    return binary(Binary.SUB, a, s);
  }

  public static NdArray mul(NdArray a, double s) {
    return binary(Binary.MUL, a, s);
  }

  public static NdArray div(NdArray a, double s) {
    return binary(Binary.DIV, a, s);
  }

  public static NdArray pow(NdArray a, double s) {
    return binary(Binary.POW, a, s);
  }

  public static NdArray maximum(NdArray a, double s) {
    return binary(Binary.MAXIMUM, a, s);
  }

  public static NdArray minimum(NdArray a, double s) {
    return binary(Binary.MINIMUM, a, s);
  }

  /** {@code a op b} with numpy broadcasting. */
  public static NdArray binary(Binary op, NdArray a, NdArray b) {
    DType rt = DTypes.promote(a.dtype(), b.dtype());
    if (op == Binary.DIV && !rt.isFloating()) {
      rt = DType.F32;
    }
    return binaryTo(op, a, b, rt);
  }

  /** {@code a op s}, the scalar taking the array's dtype (see the class javadoc). */
  public static NdArray binary(Binary op, NdArray a, double s) {
    DType rt = scalarResult(a.dtype(), s);
    if (op == Binary.DIV && !rt.isFloating()) {
      rt = DType.F32;
    }
    // The scalar is held in F64 so it is not rounded to a narrow type before the op: a BF16 array plus 0.1 adds
    // float32(0.1), as PyTorch does.
    return binaryTo(op, a, NdArray.scalar(rt.isFloating() ? DType.F64 : DType.I64, s), rt);
  }

  private static DType scalarResult(DType t, double s) {
    if (t.isFloating()) {
      return t;
    }
    if (s != Math.rint(s) || Double.isInfinite(s)) {
      return DType.F32;
    }
    return t == DType.BOOL ? DType.I64 : t;
  }

  private static NdArray binaryTo(Binary op, NdArray a, NdArray b, DType rt) {
    long[] shape = NdArray.broadcastShapes(a.shape(), b.shape());
    NdArray out = NdArray.empty(rt, shape);
    run(op, a, b, rt, shape, out);
    return out;
  }

  /**
   * {@code out = a op b} into an existing array (reusing buffers, or in place when {@code out} is {@code a} or
   * {@code b}): {@code out} must have the broadcast shape and the result dtype {@link #binary} would give, must not
   * be a broadcast view, and may share memory with an input only as exactly the same view. Returns {@code out}.
   */
  public static NdArray binaryInto(Binary op, NdArray a, NdArray b, NdArray out) {
    long[] shape = NdArray.broadcastShapes(a.shape(), b.shape());
    DType rt = DTypes.promote(a.dtype(), b.dtype());
    if (op == Binary.DIV && !rt.isFloating()) {
      rt = DType.F32;
    }
    checkOut(out, shape, rt, a, b);
    run(op, a, b, rt, shape, out);
    return out;
  }

  /** Checks a caller-supplied output array (shared by the {@code ...Into} kernels of this package). */
  static void checkOut(NdArray out, long[] shape, DType rt, NdArray... inputs) {
    if (!Arrays.equals(out.shape(), shape) || out.dtype() != rt) {
      throw new IllegalArgumentException(
          "output array is " + out.dtype() + Arrays.toString(out.shape()) + " but the result is " + rt
              + Arrays.toString(shape));
    }
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] > 1 && out.stride(d) == 0) {
        throw new IllegalArgumentException("output array is a broadcast view (dim " + d + " has stride 0)");
      }
    }
    for (NdArray in : inputs) {
      if (in.sharesStorageWith(out)
          && !(in.offset() == out.offset() && Arrays.equals(in.shape(), out.shape())
              && Arrays.equals(in.strides(), out.strides()))) {
        throw new IllegalArgumentException(
            "output array overlaps an input with a different layout; write into a separate array");
      }
    }
  }

  private static void run(Binary op, NdArray a, NdArray b, DType rt, long[] shape, NdArray out) {
    NdArray ea = a.expand(shape);
    NdArray eb = b.expand(shape);
    boolean direct = DIRECT_F32
        && rt == DType.F32 && a.dtype() == DType.F32 && b.dtype() == DType.F32
            && (op == Binary.ADD || op == Binary.SUB || op == Binary.MUL || op == Binary.DIV);
    if (direct && tiledBroadcastF32(op, ea, eb, out)) {
      return;
    }
    drive(out, new NdArray[] {ea, eb}, DTypes.kindOf(rt), binaryKernel(op), direct ? op : null);
  }

  private static Kernel binaryKernel(Binary op) {
    return new Kernel() {
      @Override
      public void f(float[][] in, float[] o, int n) {
        binaryF(op, in[0], in[1], o, n);
      }

      @Override
      public void d(double[][] in, double[] o, int n) {
        binaryD(op, in[0], in[1], o, n);
      }

      @Override
      public void l(long[][] in, long[] o, int n) {
        binaryL(op, in[0], in[1], o, n);
      }
    };
  }

  // ---------------------------------------------------------------- comparisons

  public static NdArray eq(NdArray a, NdArray b) {
    return compare(Compare.EQ, a, b);
  }

  public static NdArray ne(NdArray a, NdArray b) {
    return compare(Compare.NE, a, b);
  }

  public static NdArray lt(NdArray a, NdArray b) {
    return compare(Compare.LT, a, b);
  }

  public static NdArray le(NdArray a, NdArray b) {
    return compare(Compare.LE, a, b);
  }

  public static NdArray gt(NdArray a, NdArray b) {
    return compare(Compare.GT, a, b);
  }

  public static NdArray ge(NdArray a, NdArray b) {
    return compare(Compare.GE, a, b);
  }

  /** {@code a op b} elementwise with broadcasting, as BOOL. */
  public static NdArray compare(Compare op, NdArray a, NdArray b) {
    long[] shape = NdArray.broadcastShapes(a.shape(), b.shape());
    DType ct = DTypes.promote(a.dtype(), b.dtype());
    NdArray out = NdArray.empty(DType.BOOL, shape);
    drive(
        out,
        new NdArray[] {a.expand(shape), b.expand(shape)},
        DTypes.kindOf(ct),
        new Kernel() {
          @Override
          public void f(float[][] in, float[] o, int n) {
            float[] x = in[0];
            float[] y = in[1];
            for (int i = 0; i < n; i++) {
              o[i] = test(op, Float.compare(x[i], y[i]), x[i] != x[i] || y[i] != y[i], x[i] == y[i]) ? 1 : 0;
            }
          }

          @Override
          public void d(double[][] in, double[] o, int n) {
            double[] x = in[0];
            double[] y = in[1];
            for (int i = 0; i < n; i++) {
              o[i] = test(op, Double.compare(x[i], y[i]), x[i] != x[i] || y[i] != y[i], x[i] == y[i]) ? 1 : 0;
            }
          }

          @Override
          public void l(long[][] in, long[] o, int n) {
            long[] x = in[0];
            long[] y = in[1];
            for (int i = 0; i < n; i++) {
              o[i] = test(op, Long.compare(x[i], y[i]), false, x[i] == y[i]) ? 1 : 0;
            }
          }
        },
        null);
    return out;
  }

  public static NdArray eq(NdArray a, double s) {
    return compare(Compare.EQ, a, s);
  }

  public static NdArray lt(NdArray a, double s) {
    return compare(Compare.LT, a, s);
  }

  public static NdArray gt(NdArray a, double s) {
    return compare(Compare.GT, a, s);
  }

  /** {@code a op s} elementwise, as BOOL; the scalar is compared in F64 against non-F64 floats as in the array. */
  public static NdArray compare(Compare op, NdArray a, double s) {
    DType st = a.dtype().isFloating() || s != Math.rint(s) ? a.dtype() == DType.F64 ? DType.F64 : DType.F32
        : DType.I64;
    return compare(op, a, NdArray.scalar(st, s));
  }

  /**
   * IEEE semantics: every ordered comparison with NaN is false and NE is true ({@code Float.compare} alone would
   * order NaN and split -0.0 from 0.0, so equality uses {@code ==}).
   */
  private static boolean test(Compare op, int cmp, boolean nan, boolean equal) {
    return switch (op) {
      case EQ -> equal;
      case NE -> !equal;
      case LT -> !nan && !equal && cmp < 0;
      case LE -> !nan && (equal || cmp < 0);
      case GT -> !nan && !equal && cmp > 0;
      case GE -> !nan && (equal || cmp > 0);
    };
  }

  // ---------------------------------------------------------------- where, maskedFill

  /** {@code cond ? a : b} elementwise, all three broadcast together; the result has {@code a} and {@code b}'s promoted dtype. */
  public static NdArray where(NdArray cond, NdArray a, NdArray b) {
    long[] shape = NdArray.broadcastShapes(NdArray.broadcastShapes(cond.shape(), a.shape()), b.shape());
    DType rt = DTypes.promote(a.dtype(), b.dtype());
    NdArray out = NdArray.empty(rt, shape);
    NdArray c = cond.dtype() == DType.BOOL ? cond : Elementwise.compare(Compare.NE, cond, 0.0);
    drive(
        out,
        new NdArray[] {c.expand(shape), a.expand(shape), b.expand(shape)},
        DTypes.kindOf(rt),
        new Kernel() {
          @Override
          public void f(float[][] in, float[] o, int n) {
            for (int i = 0; i < n; i++) {
              o[i] = in[0][i] != 0 ? in[1][i] : in[2][i];
            }
          }

          @Override
          public void d(double[][] in, double[] o, int n) {
            for (int i = 0; i < n; i++) {
              o[i] = in[0][i] != 0 ? in[1][i] : in[2][i];
            }
          }

          @Override
          public void l(long[][] in, long[] o, int n) {
            for (int i = 0; i < n; i++) {
              o[i] = in[0][i] != 0 ? in[1][i] : in[2][i];
            }
          }
        },
        null);
    return out;
  }

  /** A copy of {@code x} with {@code value} wherever {@code mask} (broadcast to x's shape) is non-zero. */
  public static NdArray maskedFill(NdArray x, NdArray mask, double value) {
    long[] shape = x.shape();
    long[] both = NdArray.broadcastShapes(shape, mask.shape());
    if (!Arrays.equals(both, shape)) {
      throw new IllegalArgumentException(
          "maskedFill: mask of shape " + Arrays.toString(mask.shape()) + " does not broadcast to the array's shape "
              + Arrays.toString(shape));
    }
    // where() with a fill of x's own dtype keeps x's dtype (promote(t, t) == t) and rounds value as a store would.
    return where(mask, NdArray.scalar(x.dtype(), value), x);
  }

  // ---------------------------------------------------------------- in place

  /** {@code dst += src}, with {@code src} broadcast to dst's shape (gradient accumulation). Returns dst. */
  public static NdArray addInto(NdArray dst, NdArray src) {
    return axpyInto(dst, 1.0, src);
  }

  /**
   * {@code dst += alpha * src}, with {@code src} broadcast to dst's shape, computed in dst's dtype (F64 alpha
   * rounded to float for float32-kind destinations). Returns dst.
   */
  public static NdArray axpyInto(NdArray dst, double alpha, NdArray src) {
    long[] shape = dst.shape();
    long[] both;
    try {
      both = NdArray.broadcastShapes(shape, src.shape());
    } catch (IllegalArgumentException e) {
      both = null;
    }
    if (both == null || !Arrays.equals(both, shape)) {
      throw new IllegalArgumentException(
          "cannot accumulate an array of shape " + Arrays.toString(src.shape()) + " into one of shape "
              + Arrays.toString(shape) + ": the source must broadcast to the destination's shape");
    }
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] > 1 && dst.stride(d) == 0) {
        throw new IllegalArgumentException(
            "cannot accumulate into a broadcast view (dim " + d + " of shape " + Arrays.toString(shape)
                + " has stride 0, so several elements share memory); accumulate into a real array");
      }
    }
    if (dst.storage().segment().isReadOnly()) {
      throw new IllegalArgumentException("cannot accumulate into a read-only array (a read-only mapped file?)");
    }
    NdArray s = src;
    if (s.sharesStorageWith(dst)) {
      // An overlapping source would be read after some of it was already updated; read a snapshot instead.
      s = s.copy();
    }
    NdArray es = s.expand(shape);
    boolean plainAdd = alpha == 1.0;
    float af = (float) alpha;
    drive(
        dst,
        new NdArray[] {dst, es},
        DTypes.kindOf(dst.dtype()),
        new Kernel() {
          @Override
          public void f(float[][] in, float[] o, int n) {
            float[] x = in[0];
            float[] y = in[1];
            if (plainAdd) {
              for (int i = 0; i < n; i++) {
                o[i] = x[i] + y[i];
              }
            } else {
              for (int i = 0; i < n; i++) {
                o[i] = x[i] + af * y[i];
              }
            }
          }

          @Override
          public void d(double[][] in, double[] o, int n) {
            double[] x = in[0];
            double[] y = in[1];
            for (int i = 0; i < n; i++) {
              o[i] = x[i] + alpha * y[i];
            }
          }

          @Override
          public void l(long[][] in, long[] o, int n) {
            long[] x = in[0];
            long[] y = in[1];
            long al = (long) alpha;
            if (al != alpha) {
              throw new IllegalArgumentException(
                  "axpyInto: alpha " + alpha + " is not a whole number, but the destination is " + dst.dtype());
            }
            for (int i = 0; i < n; i++) {
              o[i] = x[i] + al * y[i];
            }
          }
        },
        null);
    return dst;
  }

  // ---------------------------------------------------------------- the driver

  /** One block computation in each compute kind; a kernel implements the kinds its op supports. */
  interface Kernel {
    default void f(float[][] in, float[] out, int n) {
      throw new IllegalStateException("no float kernel");
    }

    default void d(double[][] in, double[] out, int n) {
      throw new IllegalStateException("no double kernel");
    }

    default void l(long[][] in, long[] out, int n) {
      throw new IllegalStateException("no long kernel");
    }
  }

  /**
   * Computes {@code out = kernel(ins...)} over out's shape: fixed chunks in parallel, rows within a chunk, blocks
   * within a row. {@code ins} must already be expanded to out's shape. {@code direct}, when non-null, marks an F32
   * binary op whose contiguous rows may stream straight between segments.
   */
  static void drive(NdArray out, NdArray[] ins, Kind kind, Kernel kernel, Binary direct) {
    NdArray[] all = new NdArray[ins.length + 1];
    all[0] = out;
    System.arraycopy(ins, 0, all, 1, ins.length);
    RowIter it = RowIter.of(out.shape(), all);
    long n = it.numel();
    int k = ins.length;
    MemorySegment os = out.segment();
    Parallel.forChunks(
        n,
        GRAIN,
        n,
        (chunk, start, end) -> {
          float[][] fin = kind == Kind.FLOAT ? new float[k][Buffers.BLOCK] : null;
          float[] fout = kind == Kind.FLOAT ? new float[Buffers.BLOCK] : null;
          double[][] din = kind == Kind.DOUBLE ? new double[k][Buffers.BLOCK] : null;
          double[] dout = kind == Kind.DOUBLE ? new double[Buffers.BLOCK] : null;
          long[][] lin = kind == Kind.LONG ? new long[k][Buffers.BLOCK] : null;
          long[] lout = kind == Kind.LONG ? new long[Buffers.BLOCK] : null;
          it.forRange(
              start,
              end,
              (len, off, st) -> {
                if (direct != null && st[0] == 1 && st[1] == 1 && st[2] == 1) {
                  binaryDirectF32(direct, ins[0].segment(), off[1] * 4, ins[1].segment(), off[2] * 4, os, off[0] * 4,
                      len);
                  return;
                }
                for (long b = 0; b < len; b += Buffers.BLOCK) {
                  int m = (int) Math.min(Buffers.BLOCK, len - b);
                  switch (kind) {
                    case FLOAT -> {
                      for (int j = 0; j < k; j++) {
                        Buffers.load(ins[j], off[j + 1] + b * st[j + 1], st[j + 1], m, fin[j]);
                      }
                      kernel.f(fin, fout, m);
                      Buffers.store(fout, m, out, off[0] + b * st[0], st[0]);
                    }
                    case DOUBLE -> {
                      for (int j = 0; j < k; j++) {
                        Buffers.load(ins[j], off[j + 1] + b * st[j + 1], st[j + 1], m, din[j]);
                      }
                      kernel.d(din, dout, m);
                      Buffers.store(dout, m, out, off[0] + b * st[0], st[0]);
                    }
                    case LONG -> {
                      for (int j = 0; j < k; j++) {
                        Buffers.load(ins[j], off[j + 1] + b * st[j + 1], st[j + 1], m, lin[j]);
                      }
                      kernel.l(lin, lout, m);
                      Buffers.store(lout, m, out, off[0] + b * st[0], st[0]);
                    }
                  }
                }
              });
        });
  }

  /** Shortest contiguous run worth the tile path; shorter ones stay on the general driver. */
  private static final long MIN_RUN = 16;

  /**
   * F32 {@code a op b} into a contiguous output where one operand is broadcast along its leading dims only (e.g.
   * RoPE's {@code [b, h, s, d/2, 2] * [s, d/2, 1]}) and the other is contiguous over its trailing dims (a whole
   * array, or a head-split view such as {@code [b, s, h, d] -> [b, h, s, d]}): the broadcast operand's trailing
   * block is materialised once as a contiguous tile, and each contiguous run of the other operand goes through the
   * streaming kernel against the matching part of the tile. The general driver would walk such shapes in rows as
   * short as the innermost dim (2 for RoPE). Same values in the same order, so the results are bit-identical.
   * Returns false, computing nothing, when the shapes do not fit.
   */
  private static boolean tiledBroadcastF32(Binary op, NdArray ea, NdArray eb, NdArray out) {
    if (!out.isContiguous()) {
      return false;
    }
    long[] shape = out.shape();
    int rank = shape.length;
    int leadA = broadcastLead(ea, shape);
    int leadB = broadcastLead(eb, shape);
    if (leadA == leadB) {
      return false; // neither (or both) broadcast along leading dims: the general driver
    }
    boolean bIsTiled = leadB > leadA;
    NdArray full = bIsTiled ? ea : eb;
    NdArray bcast = bIsTiled ? eb : ea;
    int lead = Math.max(leadA, leadB);
    // The trailing dims [q, rank) over which `full` is contiguous, from lead on at the least.
    int q = rank;
    long expect = 1;
    while (q > lead && (shape[q - 1] == 1 || full.stride(q - 1) == expect)) {
      expect *= shape[q - 1];
      q--;
    }
    long run = NdArray.numel(Arrays.copyOfRange(shape, q, rank));
    long outer = NdArray.numel(Arrays.copyOf(shape, lead));
    long numel = out.numel();
    if (outer < 2 || run < MIN_RUN || numel == 0) {
      return false;
    }
    long runsPerTile = NdArray.numel(Arrays.copyOfRange(shape, lead, q));
    NdArray tile = bcast;
    for (int d = 0; d < lead; d++) {
      tile = tile.select(0, 0);
    }
    tile = tile.contiguous();
    MemorySegment fs = full.segment();
    MemorySegment ts = tile.segment();
    MemorySegment os = out.segment();
    long[] fst = full.strides();
    long fo = full.offset();
    long to = tile.offset();
    long oo = out.offset();
    int qq = q;
    Parallel.forChunks(
        numel / run,
        Math.max(1, GRAIN / run),
        numel,
        (chunk, start, end) -> {
          for (long j = start; j < end; j++) {
            long f = fo;
            long rem = j;
            for (int d = qq - 1; d >= 0; d--) {
              f += (rem % shape[d]) * fst[d];
              rem /= shape[d];
            }
            long fb = f * 4;
            long tb = (to + (j % runsPerTile) * run) * 4;
            long ob = (oo + j * run) * 4;
            if (bIsTiled) {
              binaryDirectF32(op, fs, fb, ts, tb, os, ob, run);
            } else {
              binaryDirectF32(op, ts, tb, fs, fb, os, ob, run);
            }
          }
        });
    return true;
  }

  /** How many leading dims of {@code x} (expanded to {@code shape}) are broadcast (stride 0) or of size 1. */
  private static int broadcastLead(NdArray x, long[] shape) {
    int lead = 0;
    while (lead < shape.length - 1 && (shape[lead] == 1 || x.stride(lead) == 0)) {
      lead++;
    }
    return lead;
  }

  /** Contiguous F32 {@code a op b} straight between segments (byte offsets); Vector API when enabled. */
  static void binaryDirectF32(Binary op, MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o, long ob,
      long n) {
    if (Simd.enabled() && VectorKernels.binary(op, a, ab, b, bb, o, ob, n)) {
      return;
    }
    switch (op) {
      case ADD -> {
        for (long i = 0; i < n; i++) {
          o.set(Layouts.F32, ob + i * 4, a.get(Layouts.F32, ab + i * 4) + b.get(Layouts.F32, bb + i * 4));
        }
      }
      case SUB -> {
        for (long i = 0; i < n; i++) {
          o.set(Layouts.F32, ob + i * 4, a.get(Layouts.F32, ab + i * 4) - b.get(Layouts.F32, bb + i * 4));
        }
      }
      case MUL -> {
        for (long i = 0; i < n; i++) {
          o.set(Layouts.F32, ob + i * 4, a.get(Layouts.F32, ab + i * 4) * b.get(Layouts.F32, bb + i * 4));
        }
      }
      case DIV -> {
        for (long i = 0; i < n; i++) {
          o.set(Layouts.F32, ob + i * 4, a.get(Layouts.F32, ab + i * 4) / b.get(Layouts.F32, bb + i * 4));
        }
      }
      default -> throw new IllegalArgumentException("no direct F32 kernel for " + op);
    }
  }

  // ---------------------------------------------------------------- block math
  //
  // One plain loop per operator (not a loop calling scalar(op, ...) per element): the JIT vectorises a loop whose
  // body is a single arithmetic op, and does not vectorise one that switches on the operator inside. scalar(...)
  // stays the one definition every path is tested against.

  private static final double SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

  static void unaryF(Unary op, float[] x, float[] o, int n) {
    if (Simd.enabled() && VectorKernels.unary(op, x, o, n)) {
      return;
    }
    switch (op) {
      case NEG -> {
        for (int i = 0; i < n; i++) {
          o[i] = -x[i];
        }
      }
      case ABS -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.abs(x[i]);
        }
      }
      case SQUARE -> {
        for (int i = 0; i < n; i++) {
          o[i] = x[i] * x[i];
        }
      }
      case RELU -> {
        for (int i = 0; i < n; i++) {
          o[i] = x[i] > 0 ? x[i] : (x[i] != x[i] ? x[i] : 0f);
        }
      }
      case SQRT -> {
        for (int i = 0; i < n; i++) {
          o[i] = (float) Math.sqrt(x[i]);
        }
      }
      case RECIPROCAL -> {
        for (int i = 0; i < n; i++) {
          o[i] = 1f / x[i];
        }
      }
      default -> {
        // Transcendentals: in double, rounded once to float.
        for (int i = 0; i < n; i++) {
          o[i] = (float) scalar(op, x[i]);
        }
      }
    }
  }

  static void unaryD(Unary op, double[] x, double[] o, int n) {
    switch (op) {
      case NEG -> {
        for (int i = 0; i < n; i++) {
          o[i] = -x[i];
        }
      }
      case SQUARE -> {
        for (int i = 0; i < n; i++) {
          o[i] = x[i] * x[i];
        }
      }
      default -> {
        for (int i = 0; i < n; i++) {
          o[i] = scalar(op, x[i]);
        }
      }
    }
  }

  /** One element in double: the definition every path must agree with. */
  static double scalar(Unary op, double x) {
    return switch (op) {
      case NEG -> -x;
      case ABS -> Math.abs(x);
      case EXP -> Math.exp(x);
      case LOG -> Math.log(x);
      case SQRT -> Math.sqrt(x);
      case RSQRT -> 1 / Math.sqrt(x);
      case SQUARE -> x * x;
      case TANH -> Math.tanh(x);
      case SIGMOID -> 1 / (1 + Math.exp(-x));
      case SILU -> x / (1 + Math.exp(-x));
      case GELU -> Erf.gelu(x);
      case GELU_TANH -> 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
      case RELU -> x > 0 ? x : (x != x ? x : 0.0);
      case RECIPROCAL -> 1 / x;
    };
  }

  static void unaryL(Unary op, long[] x, long[] o, int n) {
    switch (op) {
      case NEG -> {
        for (int i = 0; i < n; i++) {
          o[i] = -x[i];
        }
      }
      case ABS -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.abs(x[i]);
        }
      }
      case SQUARE -> {
        for (int i = 0; i < n; i++) {
          o[i] = x[i] * x[i];
        }
      }
      case RELU -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.max(x[i], 0);
        }
      }
      default -> throw new IllegalStateException(op + " has no integer form");
    }
  }

  static void binaryF(Binary op, float[] a, float[] b, float[] o, int n) {
    switch (op) {
      case ADD -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] + b[i];
        }
      }
      case SUB -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] - b[i];
        }
      }
      case MUL -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] * b[i];
        }
      }
      case DIV -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] / b[i];
        }
      }
      case POW -> {
        for (int i = 0; i < n; i++) {
          o[i] = (float) Math.pow(a[i], b[i]);
        }
      }
      case MAXIMUM -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.max(a[i], b[i]);
        }
      }
      case MINIMUM -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.min(a[i], b[i]);
        }
      }
    }
  }

  static void binaryD(Binary op, double[] a, double[] b, double[] o, int n) {
    for (int i = 0; i < n; i++) {
      o[i] = scalar(op, a[i], b[i]);
    }
  }

  /** One element in double (NaN-propagating maximum/minimum, as PyTorch). */
  static double scalar(Binary op, double a, double b) {
    return switch (op) {
      case ADD -> a + b;
      case SUB -> a - b;
      case MUL -> a * b;
      case DIV -> a / b;
      case POW -> Math.pow(a, b);
      case MAXIMUM -> Math.max(a, b);
      case MINIMUM -> Math.min(a, b);
    };
  }

  static void binaryL(Binary op, long[] a, long[] b, long[] o, int n) {
    switch (op) {
      case ADD -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] + b[i];
        }
      }
      case SUB -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] - b[i];
        }
      }
      case MUL -> {
        for (int i = 0; i < n; i++) {
          o[i] = a[i] * b[i];
        }
      }
      case POW -> {
        for (int i = 0; i < n; i++) {
          if (b[i] < 0) {
            throw new IllegalArgumentException(
                "integer pow with a negative exponent (" + a[i] + "^" + b[i] + ") has no integer result; convert "
                    + "the base to a float dtype first");
          }
          o[i] = (long) Math.pow(a[i], b[i]);
        }
      }
      case MAXIMUM -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.max(a[i], b[i]);
        }
      }
      case MINIMUM -> {
        for (int i = 0; i < n; i++) {
          o[i] = Math.min(a[i], b[i]);
        }
      }
      case DIV -> throw new IllegalStateException("integer DIV is promoted to F32 before it gets here");
    }
  }
}
