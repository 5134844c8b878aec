package dev.kiln.runtime.eager;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Gradient checks by central finite differences in float64: the oracle for every backward pass in Kiln.
 *
 * <p>A check takes named inputs, a scalar function of them written with Kiln ops (a module's loss, a composite op,
 * anything that ends in a one-element tensor) and the analytic gradients to test. It copies every floating input
 * to float64, evaluates the function inside {@link Eager#precision Eager.precision(F64)} — so every op, parameters
 * included, runs in double — and for each element of each checked input takes
 * {@code (f(x + h e_i) - f(x - h e_i)) / 2h} with {@code h = step * max(1, |x_i|)}. Integer inputs (token ids,
 * targets) pass through unperturbed.
 *
 * <p><b>Error measure.</b> Per tensor, {@code ||analytic - numeric||_2 / max(||analytic||_2, ||numeric||_2, 1e-12)}.
 * With the default step 1e-6 the finite difference itself is good to about 1e-9 relative on smooth functions of
 * moderate size (truncation ~h², rounding ~1e-16 |f| / h), so a correct float64 backward scores well under 1e-6;
 * functions with kinks (relu, max) need inputs away from the kinks.
 *
 * <pre>{@code
 * var x = NdArray.fromDoubles(new double[] {1, -2, 3});
 * GradCheck.Result r = GradCheck.check(Map.of("x", x), in -> sum(square(in.get("x"))),
 *     Map.of("x", Elementwise.mul(x, 2.0)));
 * r.assertBelow(1e-6);
 * }</pre>
 */
public final class GradCheck {
  /** The default relative step. */
  public static final double DEFAULT_STEP = 1e-6;

  private GradCheck() {}

  /** A scalar function of named tensors, evaluated through the eager interpreter. */
  @FunctionalInterface
  public interface ScalarFunction {
    Tensor apply(Map<String, NdArray> inputs);
  }

  /** The outcome of {@link #check}: per checked tensor, the relative error and where the worst element is. */
  public record Result(
      Map<String, Double> relativeErrors,
      Map<String, Double> maxAbsoluteErrors,
      Map<String, String> worstElements,
      Map<String, NdArray> numeric) {

    /** The largest relative error over all checked tensors. */
    public double maxRelativeError() {
      return relativeErrors.values().stream().mapToDouble(Double::doubleValue).max().orElse(0);
    }

    /** Throws an {@link AssertionError} naming every tensor whose relative error is not below {@code tolerance}. */
    public void assertBelow(double tolerance) {
      StringBuilder b = new StringBuilder();
      for (Map.Entry<String, Double> e : relativeErrors.entrySet()) {
        if (!(e.getValue() < tolerance)) {
          b.append("\n  ").append(e.getKey()).append(": relative error ").append(e.getValue()).append(" (worst ")
              .append(worstElements.get(e.getKey())).append(')');
        }
      }
      if (!b.isEmpty()) {
        throw new AssertionError("gradient check failed, tolerance " + tolerance + ":" + b);
      }
    }

    @Override
    public String toString() {
      return "GradCheck.Result" + relativeErrors;
    }
  }

  /** {@link #numericGradients(Map, ScalarFunction, Iterable, double)} for every floating input, default step. */
  public static Map<String, NdArray> numericGradients(Map<String, NdArray> inputs, ScalarFunction f) {
    return numericGradients(inputs, f, floatingNames(inputs), DEFAULT_STEP);
  }

  /**
   * Central finite differences of {@code f} with respect to each input named in {@code wrt}, as float64 arrays of
   * the inputs' shapes. The inputs themselves are not modified.
   */
  public static Map<String, NdArray> numericGradients(
      Map<String, NdArray> inputs, ScalarFunction f, Iterable<String> wrt, double step) {
    if (!(step > 0)) {
      throw new IllegalArgumentException("step must be positive, got " + step);
    }
    Map<String, NdArray> x = new LinkedHashMap<>();
    for (Map.Entry<String, NdArray> e : inputs.entrySet()) {
      NdArray a = e.getValue();
      x.put(e.getKey(), a.dtype().isFloating() ? a.to(DType.F64) : a);
    }
    Map<String, NdArray> view = Collections.unmodifiableMap(x);
    Map<String, NdArray> grads = new LinkedHashMap<>();
    try (Eager.Scope scope = Eager.precision(DType.F64)) {
      for (String name : wrt) {
        NdArray a = x.get(name);
        if (a == null) {
          throw new IllegalArgumentException("no input named '" + name + "'; inputs are " + inputs.keySet());
        }
        if (!a.dtype().isFloating()) {
          throw new IllegalArgumentException(
              "input '" + name + "' is " + a.dtype() + "; only floating inputs have gradients");
        }
        MemorySegment s = a.segment();
        long base = a.offset();
        double[] g = new double[Math.toIntExact(a.numel())];
        for (int i = 0; i < g.length; i++) {
          long at = (base + i) * 8L;
          double xi = Layouts.getDouble(s, DType.F64, at);
          double h = step * Math.max(1, Math.abs(xi));
          Layouts.setDouble(s, DType.F64, at, xi + h);
          double up = scalar(f, view);
          Layouts.setDouble(s, DType.F64, at, xi - h);
          double down = scalar(f, view);
          Layouts.setDouble(s, DType.F64, at, xi);
          g[i] = (up - down) / (2 * h);
        }
        grads.put(name, NdArray.fromDoubles(g, a.shape()));
      }
    }
    return grads;
  }

  /** {@link #check(Map, ScalarFunction, Map, double)} with the default step. */
  public static Result check(Map<String, NdArray> inputs, ScalarFunction f, Map<String, ? extends Tensor> analytic) {
    return check(inputs, f, analytic, DEFAULT_STEP);
  }

  /**
   * Compares {@code analytic} gradients (any floating dtype, keyed by input name; inputs not named there are not
   * checked) with central finite differences of {@code f}.
   */
  public static Result check(
      Map<String, NdArray> inputs, ScalarFunction f, Map<String, ? extends Tensor> analytic, double step) {
    for (Map.Entry<String, ? extends Tensor> e : analytic.entrySet()) {
      NdArray in = inputs.get(e.getKey());
      if (in == null) {
        throw new IllegalArgumentException(
            "analytic gradient '" + e.getKey() + "' names no input; inputs are " + inputs.keySet());
      }
      if (!Arrays.equals(in.shape(), e.getValue().shape())) {
        throw new IllegalArgumentException(
            "analytic gradient '" + e.getKey() + "' has shape " + Arrays.toString(e.getValue().shape())
                + " but the input has shape " + Arrays.toString(in.shape()));
      }
      if (!(e.getValue() instanceof NdArray)) {
        throw new IllegalArgumentException("analytic gradient '" + e.getKey() + "' is not an NdArray");
      }
    }
    Map<String, NdArray> numeric = numericGradients(inputs, f, analytic.keySet(), step);
    Map<String, Double> rel = new LinkedHashMap<>();
    Map<String, Double> abs = new LinkedHashMap<>();
    Map<String, String> worst = new LinkedHashMap<>();
    for (String name : analytic.keySet()) {
      double[] a = ((NdArray) analytic.get(name)).toDoubleArray();
      double[] n = numeric.get(name).toDoubleArray();
      double diff = 0;
      double na = 0;
      double nn = 0;
      double maxAbs = 0;
      int at = 0;
      for (int i = 0; i < a.length; i++) {
        double d = a[i] - n[i];
        diff += d * d;
        na += a[i] * a[i];
        nn += n[i] * n[i];
        if (!(Math.abs(d) <= maxAbs)) {
          maxAbs = Math.abs(d);
          at = i;
        }
      }
      double r = Math.sqrt(diff) / Math.max(Math.max(Math.sqrt(na), Math.sqrt(nn)), 1e-12);
      rel.put(name, Double.isNaN(r) ? Double.POSITIVE_INFINITY : r);
      abs.put(name, maxAbs);
      worst.put(name, a.length == 0 ? "none" : "flat element " + at + ": analytic " + a[at] + ", numeric " + n[at]);
    }
    return new Result(rel, abs, worst, numeric);
  }

  private static double scalar(ScalarFunction f, Map<String, NdArray> x) {
    Tensor y = f.apply(x);
    if (!(y instanceof NdArray a) || a.numel() != 1) {
      throw new IllegalArgumentException(
          "the function under a gradient check must return a one-element NdArray, got "
              + (y == null ? "null" : Arrays.toString(y.shape())));
    }
    return a.item();
  }

  private static Iterable<String> floatingNames(Map<String, NdArray> inputs) {
    return inputs.entrySet().stream().filter(e -> e.getValue().dtype().isFloating()).map(Map.Entry::getKey).toList();
  }
}
