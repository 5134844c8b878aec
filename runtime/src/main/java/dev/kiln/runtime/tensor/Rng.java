package dev.kiln.runtime.tensor;

import dev.kiln.dsl.DType;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.stream.IntStream;

/**
 * Kiln's deterministic random numbers, built on {@link Philox} 4x32-10.
 *
 * <p><b>Counter discipline.</b> The generator is keyed by the 64-bit seed; the 128-bit counter holds a 64-bit
 * {@code offset} (words 0-1) and a 64-bit {@code stream} (words 2-3). Every call that fills {@code n} elements gives
 * element {@code i} (row-major) the Philox block at counter {@code offset + i} and then advances {@code offset} by
 * {@code n}. So results never depend on thread count or chunking, a fill can be resumed or split anywhere, and a
 * checkpoint saves the generator as a three-number {@link State}. All transcendental math goes through
 * {@link StrictMath}, whose results are bit-identical on every JVM and CPU.
 *
 * <p>Each element consumes one 128-bit block: uniforms use the top 24 (F32), 53 (F64), 8 (BF16) or 11 (F16) bits so
 * they land exactly on the target dtype's grid in {@code [0, 1)}; a normal is one Box–Muller transform of the block's
 * two 53-bit uniforms (the sine twin is not used, which keeps element {@code i} tied to block {@code i}).
 */
public final class Rng {
  /** The generator's complete state: save it with a checkpoint and {@link #Rng(State) restore} it to continue. */
  public record State(long seed, long stream, long offset) {}

  /** Elements per parallel chunk; fills smaller than this run on the calling thread. */
  private static final int CHUNK = 1 << 15;
  private static final double TWO_PI = 6.283185307179586;

  private final long seed;
  private final long stream;
  private long offset;
  private boolean parallel = true;

  public Rng(long seed) {
    this(new State(seed, 0, 0));
  }

  public Rng(State state) {
    this.seed = state.seed();
    this.stream = state.stream();
    this.offset = state.offset();
  }

  public State state() {
    return new State(seed, stream, offset);
  }

  /** An independent generator with the same seed on another stream (e.g. one per data-loader worker or rank). */
  public Rng stream(long newStream) {
    return new Rng(new State(seed, newStream, 0));
  }

  /** Whether large fills may use the common fork-join pool; the numbers are the same either way. */
  public Rng parallel(boolean on) {
    this.parallel = on;
    return this;
  }

  // ---------------------------------------------------------------- the element kernels

  @FunctionalInterface
  private interface Element {
    /** Stores the element for Philox output {@code b} at byte offset {@code at}. */
    void store(MemorySegment seg, long at, int[] b);
  }

  /** Runs {@code f} for every element of {@code out}, element i with block offset+i; then advances the offset. */
  private void fill(NdArray out, Element f) {
    long n = out.numel();
    long base = offset;
    MemorySegment seg = out.segment();
    int es = out.dtype().byteSize();
    if (out.isContiguous()) {
      long first = out.offset();
      long chunks = (n + CHUNK - 1) / CHUNK;
      IntStream range = IntStream.range(0, Math.toIntExact(chunks));
      if (parallel && chunks > 1) {
        range = range.parallel();
      }
      range.forEach(c -> {
        int[] b = new int[4];
        long lo = (long) c * CHUNK;
        long hi = Math.min(n, lo + CHUNK);
        for (long i = lo; i < hi; i++) {
          Philox.block(base + i, stream, seed, b);
          f.store(seg, (first + i) * es, b);
        }
      });
    } else {
      int[] b = new int[4];
      long[] i = {0};
      StridedWalk.forEach(out.shape(), out.strides(), out.offset(), e -> {
        Philox.block(base + i[0]++, stream, seed, b);
        f.store(seg, e * es, b);
      });
    }
    offset += n;
  }

  /** 53 random bits from words {@code hi, lo} as a double in [0, 1). */
  private static double unit53(int hi, int lo) {
    return (((hi & 0xffffffffL) << 21) | ((lo & 0xffffffffL) >>> 11)) * 0x1.0p-53;
  }

  private static void requireFloating(NdArray out, String what) {
    if (!out.dtype().isFloating()) {
      throw new IllegalArgumentException(what + " fills F32, F64, BF16 or F16 arrays, not " + out.dtype());
    }
  }

  // ---------------------------------------------------------------- distributions

  /** Uniform on {@code [0, 1)}, on the dtype's own grid (so never rounds up to 1). */
  public NdArray uniform(NdArray out) {
    requireFloating(out, "uniform");
    DType t = out.dtype();
    fill(out, (s, at, b) -> {
      double u = switch (t) {
        case F64 -> unit53(b[0], b[1]);
        case F32 -> (b[0] >>> 8) * 0x1.0p-24;
        case F16 -> (b[0] >>> 21) * 0x1.0p-11;
        default -> (b[0] >>> 24) * 0x1.0p-8; // BF16
      };
      Layouts.setDouble(s, t, at, u);
    });
    return out;
  }

  /** Uniform on {@code [lo, hi)}; a value that would round to {@code hi} in the dtype is stepped just below it. */
  public NdArray uniform(NdArray out, double lo, double hi) {
    requireFloating(out, "uniform");
    if (!(lo < hi) || Double.isInfinite(hi - lo)) {
      throw new IllegalArgumentException("uniform needs finite lo < hi, got [" + lo + ", " + hi + ")");
    }
    DType t = out.dtype();
    fill(out, (s, at, b) -> storeWithin(s, t, at, lo + (hi - lo) * unit53(b[0], b[1]), lo, hi, false));
    return out;
  }

  /** Normal with the given mean and standard deviation (Box–Muller). */
  public NdArray normal(NdArray out, double mean, double std) {
    requireFloating(out, "normal");
    DType t = out.dtype();
    fill(out, (s, at, b) -> {
      double u1 = 1 - unit53(b[0], b[1]); // (0, 1]: log stays finite
      double u2 = unit53(b[2], b[3]);
      double z = StrictMath.sqrt(-2 * StrictMath.log(u1)) * StrictMath.cos(TWO_PI * u2);
      Layouts.setDouble(s, t, at, mean + std * z);
    });
    return out;
  }

  /** {@code truncNormal(out, mean, std, mean - 3 std, mean + 3 std)}, as CS336 initialises weights. */
  public NdArray truncNormal(NdArray out, double mean, double std) {
    return truncNormal(out, mean, std, mean - 3 * std, mean + 3 * std);
  }

  /**
   * Normal(mean, std) conditioned on {@code [a, b]} (PyTorch's {@code trunc_normal_}), by inverse CDF: a uniform
   * between Φ(α) and Φ(β) mapped through Φ⁻¹. Every stored value lies in {@code [a, b]} even after rounding to the
   * dtype. Precision degrades when the whole interval sits far in one tail (beyond ~8σ), as in PyTorch.
   */
  public NdArray truncNormal(NdArray out, double mean, double std, double a, double b) {
    requireFloating(out, "truncNormal");
    if (!(std > 0) || !(a < b) || Double.isNaN(mean)) {
      throw new IllegalArgumentException(
          "truncNormal needs std > 0 and a < b, got mean " + mean + ", std " + std + ", [" + a + ", " + b + "]");
    }
    DType t = out.dtype();
    double alpha = (a - mean) / std;
    double beta = (b - mean) / std;
    double pa = NormalCdf.cdf(alpha);
    double pb = NormalCdf.cdf(beta);
    fill(out, (s, at, blk) -> {
      double u = ((((blk[0] & 0xffffffffL) << 21) | ((blk[1] & 0xffffffffL) >>> 11)) + 0.5) * 0x1.0p-53; // (0,1)
      double x = NormalCdf.inverse(pa + u * (pb - pa));
      double v = mean + std * Math.clamp(x, alpha, beta);
      storeWithin(s, t, at, v, a, b, true);
    });
    return out;
  }

  /** Integers uniform on {@code [lo, hi)} into an I32 or I64 array, without modulo bias. */
  public NdArray integers(NdArray out, long lo, long hi) {
    DType t = out.dtype();
    if (t != DType.I32 && t != DType.I64) {
      throw new IllegalArgumentException("integers fills I32 or I64 arrays, not " + t);
    }
    if (lo >= hi || hi - lo <= 0) {
      throw new IllegalArgumentException("integers needs lo < hi with hi - lo < 2^63, got [" + lo + ", " + hi + ")");
    }
    if (t == DType.I32 && (lo < Integer.MIN_VALUE || hi - 1 > Integer.MAX_VALUE)) {
      throw new IllegalArgumentException("range [" + lo + ", " + hi + ") does not fit an I32 array");
    }
    long range = hi - lo;
    fill(out, (s, at, b) -> Layouts.setLong(s, t, at, lo + bounded(range, b)));
    return out;
  }

  /**
   * A uniform value in {@code [0, range)} from one block: Lemire's multiply-shift on the first 64 bits, retried on the
   * second 64 bits in the rare biased zone; a second rejection (probability below (range/2^64)^2) is accepted.
   */
  private static long bounded(long range, int[] b) {
    long r = ((b[0] & 0xffffffffL) << 32) | (b[1] & 0xffffffffL);
    long lo = r * range;
    if (Long.compareUnsigned(lo, range) < 0) {
      long threshold = Long.remainderUnsigned(-range, range);
      if (Long.compareUnsigned(lo, threshold) < 0) {
        r = ((b[2] & 0xffffffffL) << 32) | (b[3] & 0xffffffffL);
      }
    }
    return Math.unsignedMultiplyHigh(r, range);
  }

  /** A uniformly random permutation of {@code 0..n-1} (Fisher–Yates; step k uses block offset+k). */
  public NdArray permutation(long n) {
    NdArray out = NdArray.arange(DType.I64, n);
    MemorySegment s = out.segment();
    int[] b = new int[4];
    for (long i = n - 1, k = 0; i > 0; i--, k++) {
      Philox.block(offset + k, stream, seed, b);
      long j = bounded(i + 1, b);
      long vi = s.get(Layouts.I64, i * 8);
      s.set(Layouts.I64, i * 8, s.get(Layouts.I64, j * 8));
      s.set(Layouts.I64, j * 8, vi);
    }
    offset += n;
    return out;
  }

  /**
   * One category per row of {@code probs[..., V]} (non-negative weights, normalised per row), as I64 ids of shape
   * {@code [...]}. Row r uses block offset+r.
   */
  public NdArray categorical(NdArray probs) {
    return multinomial(probs, 1, true).squeeze(-1);
  }

  /**
   * {@code n} categories per row of {@code probs[..., V]} as I64 ids of shape {@code [..., n]}, like
   * {@code torch.multinomial}. With replacement, draw k of row r uses block {@code offset + r*n + k} (inverse CDF).
   * Without replacement, category j of row r gets the key {@code log(u)/p} from block {@code offset + r*V + j} and the
   * n largest keys win, in order (Efraimidis–Spirakis), which has the law of drawing one at a time and renormalising;
   * it needs at least n non-zero weights per row.
   */
  public NdArray multinomial(NdArray probs, int n, boolean replacement) {
    if (probs.rank() < 1 || !probs.dtype().isFloating()) {
      throw new IllegalArgumentException(
          "multinomial needs floating probabilities of shape [..., V], got " + probs.dtype() + " "
              + Arrays.toString(probs.shape()));
    }
    if (n < 1) {
      throw new IllegalArgumentException("multinomial needs n >= 1, got " + n);
    }
    int v = Math.toIntExact(probs.shape(-1));
    long[] outShape = probs.shape();
    outShape[outShape.length - 1] = n;
    NdArray out = NdArray.zeros(DType.I64, outShape);
    double[] p = probs.toDoubleArray();
    long rows = v == 0 ? 0 : p.length / v;
    if (v == 0) {
      throw new IllegalArgumentException("multinomial over an empty category dim (V = 0)");
    }
    MemorySegment s = out.segment();
    int[] b = new int[4];
    for (int r = 0; r < rows; r++) {
      int base = r * v;
      double sum = 0;
      int nonzero = 0;
      for (int j = 0; j < v; j++) {
        double x = p[base + j];
        if (!(x >= 0) || Double.isInfinite(x)) {
          throw new IllegalArgumentException(
              "probability " + x + " at row " + r + ", category " + j + " is negative, infinite or NaN");
        }
        sum += x;
        nonzero += x > 0 ? 1 : 0;
      }
      if (!(sum > 0)) {
        throw new IllegalArgumentException("row " + r + " of the probabilities sums to 0");
      }
      if (replacement) {
        for (int k = 0; k < n; k++) {
          Philox.block(offset + (long) r * n + k, stream, seed, b);
          double u = unit53(b[0], b[1]) * sum;
          int pick = -1;
          double cum = 0;
          for (int j = 0; j < v; j++) {
            cum += p[base + j];
            if (p[base + j] > 0) {
              pick = j; // last non-zero so far: the fallback if rounding leaves u >= the final cum
              if (cum > u) {
                break;
              }
            }
          }
          s.set(Layouts.I64, ((long) r * n + k) * 8, pick);
        }
      } else {
        if (n > nonzero) {
          throw new IllegalArgumentException(
              "cannot draw " + n + " categories without replacement from row " + r + ", which has only " + nonzero
                  + " non-zero probabilities");
        }
        double[] keys = new double[v];
        Integer[] idx = new Integer[v];
        for (int j = 0; j < v; j++) {
          Philox.block(offset + (long) r * v + j, stream, seed, b);
          double u = (((((b[0] & 0xffffffffL) << 21) | ((b[1] & 0xffffffffL) >>> 11)) + 0.5) * 0x1.0p-53);
          keys[j] = p[base + j] > 0 ? StrictMath.log(u) / (p[base + j] / sum) : Double.NEGATIVE_INFINITY;
          idx[j] = j;
        }
        Arrays.sort(idx, (x, y) -> Double.compare(keys[y], keys[x]));
        for (int k = 0; k < n; k++) {
          s.set(Layouts.I64, ((long) r * n + k) * 8, idx[k]);
        }
      }
    }
    offset += rows * (replacement ? n : v);
    return out;
  }

  // ---------------------------------------------------------------- exact bounds in narrow dtypes

  /**
   * Stores {@code v} rounded to the dtype, then steps it to the neighbouring representable value while it lies
   * outside {@code [lo, hi]} ({@code [lo, hi)} when not {@code hiInclusive}): rounding to bf16 could otherwise push a
   * sample a hair past the bound.
   */
  static void storeWithin(MemorySegment s, DType t, long at, double v, double lo, double hi, boolean hiInclusive) {
    Layouts.setDouble(s, t, at, v);
    double r = Layouts.getDouble(s, t, at);
    while (r > hi || (!hiInclusive && r == hi)) {
      r = step(t, r, false);
      Layouts.setDouble(s, t, at, r);
    }
    while (r < lo) {
      r = step(t, r, true);
      Layouts.setDouble(s, t, at, r);
    }
  }

  /** The next value of dtype {@code t} above (or below) {@code r}, which must be representable in {@code t}. */
  static double step(DType t, double r, boolean up) {
    return switch (t) {
      case F64 -> up ? Math.nextUp(r) : Math.nextDown(r);
      case F32 -> up ? Math.nextUp((float) r) : Math.nextDown((float) r);
      case F16 -> Float.float16ToFloat(stepBits(Float.floatToFloat16((float) r), r, up));
      case BF16 -> Layouts.bf16ToFloat(stepBits(Layouts.floatToBf16((float) r), r, up));
      default -> throw new IllegalArgumentException("not a floating dtype: " + t);
    };
  }

  /** Sign-magnitude neighbour for 16-bit floats. */
  private static short stepBits(short bits, double r, boolean up) {
    if (r == 0) {
      return (short) (up ? 0x0001 : 0x8001);
    }
    boolean away = (r > 0) == up; // moving away from zero grows the magnitude
    return (short) (away ? bits + 1 : bits - 1);
  }
}
