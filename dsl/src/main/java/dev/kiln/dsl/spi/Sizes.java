package dev.kiln.dsl.spi;

import dev.kiln.dsl.Tensor;
import java.util.Arrays;

/** Small size arithmetic that generated code uses; every function checks what it assumes. */
public final class Sizes {
  private Sizes() {}

  /** {@code a / b}, which must be exact (dim arithmetic such as {@code d_model/num_heads}). */
  public static long exact(long a, long b) {
    if (b == 0 || a % b != 0) {
      throw new IllegalArgumentException(a + " is not divisible by " + b + ": check the config dims (a dim written as"
          + " a quotient must divide exactly)");
    }
    return a / b;
  }

  /** A dim taken from a hyper-parameter ({@code size("h", numHeads)}): it must be positive. */
  public static long dim(long value, String key) {
    if (value <= 0) {
      throw new IllegalArgumentException("'" + key + "' is used as a dim size and must be positive, got " + value);
    }
    return value;
  }

  /** {@code a / b} in floating point (a scalar of a generated constant; never integer division). */
  public static double div(double a, double b) {
    return a / b;
  }

  /** Product of {@code shape[from..to)}. */
  public static long prod(long[] shape, int from, int to) {
    long p = 1;
    for (int i = from; i < to; i++) {
      p *= shape[i];
    }
    return p;
  }

  /** {@code shape[from..to)}. */
  public static long[] range(long[] shape, int from, int to) {
    return Arrays.copyOfRange(shape, from, to);
  }

  /** The arrays one after the other. */
  public static long[] cat(long[]... parts) {
    int n = 0;
    for (long[] p : parts) {
      n += p.length;
    }
    long[] out = new long[n];
    int at = 0;
    for (long[] p : parts) {
      System.arraycopy(p, 0, out, at, p.length);
      at += p.length;
    }
    return out;
  }

  /** Size of axis {@code axis} of {@code shape}, negative counting from the end. */
  public static long size(long[] shape, int axis) {
    int a = axis < 0 ? shape.length + axis : axis;
    if (a < 0 || a >= shape.length) {
      throw new IllegalArgumentException("axis " + axis + " of a shape " + Arrays.toString(shape));
    }
    return shape[a];
  }

  /** Number of elements of a shape. */
  public static long count(long[] shape) {
    return prod(shape, 0, shape.length);
  }

  /** {@code 0, 1, ..., rank - 1}: every axis. */
  public static int[] all(int rank) {
    int[] a = new int[rank];
    for (int i = 0; i < rank; i++) {
      a[i] = i;
    }
    return a;
  }

  /** Rows of a {@code [rows, cols]} iteration over {@code shape}: the product of all dims but the last. */
  public static long rows(long[] shape) {
    return shape.length == 0 ? 1 : prod(shape, 0, shape.length - 1);
  }

  /** Cols of a {@code [rows, cols]} iteration over {@code shape}: the last dim. */
  public static long cols(long[] shape) {
    return shape.length == 0 ? 1 : shape[shape.length - 1];
  }

  /** {@code t} with a trailing dim of 1 when its rank is {@code rank - 1} (a pick's index as a top-k of one). */
  public static Tensor withUnitLast(Device dev, Tensor t, int rank) {
    long[] s = t.shape();
    return s.length == rank ? t : dev.reshape(t, cat(s, new long[] {1}));
  }

  /** {@code a + b} where either may be null (no contribution yet). */
  public static Tensor plus(Device dev, Tensor a, Tensor b) {
    return a == null ? b : b == null ? a : dev.binary(Device.Binary.ADD, a, b);
  }

  /**
   * Checks that {@code actual} equals {@code expected}; the message is the compile-time warning's, so the run-time
   * failure reads as what the compiler could not prove.
   */
  public static void check(long expected, long actual, String message) {
    if (expected != actual) {
      throw new IllegalArgumentException(message + " (at run time: " + expected + " vs " + actual + ")");
    }
  }

  /** Checks that {@code divisor} divides {@code value}, with the compile-time warning's message. */
  public static void checkDivides(long divisor, long value, String message) {
    if (divisor == 0 || value % divisor != 0) {
      throw new IllegalArgumentException(message + " (at run time: " + value + " is not divisible by " + divisor + ")");
    }
  }

  /** A stable 64-bit hash of a parameter name (FNV-1a): its Philox stream, so init does not depend on order. */
  public static long stream(String name) {
    long h = 0xcbf29ce484222325L;
    for (int i = 0; i < name.length(); i++) {
      h ^= name.charAt(i);
      h *= 0x100000001b3L;
    }
    return h;
  }
}
