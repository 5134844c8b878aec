package dev.kiln.processor.ir;

/**
 * A scalar known at init time: a literal, a hyper-parameter, the size of an axis of a value, or arithmetic on
 * those. Scalars feed {@link Primitive#CONST} and conditions.
 */
public sealed interface Scalar {
  record Lit(double value) implements Scalar {
    @Override
    public String toString() {
      return value == Math.rint(value) && Math.abs(value) < 1e15 ? Long.toString((long) value) : Double.toString(value);
    }
  }

  /** A hyper-parameter component, read from {@code configKey}. */
  record Hyper(String component, String configKey) implements Scalar {
    @Override
    public String toString() {
      return component;
    }
  }

  /** Size of one axis of {@code value}, {@code axis} counted from the end (-1 is the last axis). */
  record AxisSize(Value value, int axis) implements Scalar {
    @Override
    public String toString() {
      return "size(" + value + ", " + axis + ")";
    }
  }

  /** Number of elements of {@code value}. */
  record Count(Value value) implements Scalar {
    @Override
    public String toString() {
      return "count(" + value + ")";
    }
  }

  /** Arithmetic: {@code + - * /}, and {@code ln}, {@code sqrt} as unary ({@code right} null). */
  record Op(String op, Scalar left, Scalar right) implements Scalar {
    @Override
    public String toString() {
      return right == null ? op + "(" + left + ")" : "(" + left + " " + op + " " + right + ")";
    }
  }
}
