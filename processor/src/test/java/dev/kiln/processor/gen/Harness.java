package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Config;
import dev.kiln.dsl.spi.Context;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.eager.Eager;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Runs one generated module on the CPU device next to the eager interpreter: the generated forward against the
 * eager forward of the same record, and the generated backward against central finite differences of the eager
 * forward, all in float64.
 */
final class Harness {
  static final Device CPU = new CpuDevice();

  final Generated gen;
  final String module;
  final Object compiled;
  final Record params;
  final Map<String, Object> config;

  Harness(Generated gen, String module, Map<String, Object> config, long seed, DType dtype) {
    this.gen = gen;
    this.module = module;
    this.config = config;
    Class<?> c = gen.type(compiledName(module));
    try {
      compiled = c.getConstructor(Device.class, DType.class).newInstance(CPU, dtype);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(e);
    }
    params = (Record) Generated.call(compiled, "init", Config.of(config), seed);
  }

  static String compiledName(String module) {
    int dot = module.lastIndexOf('.');
    return module.substring(0, dot + 1) + "Compiled" + module.substring(dot + 1);
  }

  /** The generated forward (or loss) with a fresh context, which it returns through {@code ctx}. */
  Tensor forward(String method, Context ctx, Object... inputs) {
    Object[] args = new Object[inputs.length + 2];
    args[0] = ctx;
    args[1] = params;
    System.arraycopy(inputs, 0, args, 2, inputs.length);
    return (Tensor) Generated.call(compiled, method, args);
  }

  /** The user's own method on the record: the eager interpreter, in float64. */
  Tensor eager(String method, Object... inputs) {
    try (Eager.Scope s = Eager.precision(DType.F64)) {
      return (Tensor) Generated.call(params, method, inputs);
    }
  }

  /** The gradient record's tensors by state-dict key, and the input gradients. */
  @SuppressWarnings("unchecked")
  Map<String, Tensor> stateDict(Record r) {
    return (Map<String, Tensor>) Generated.call(compiled, "stateDict", r);
  }

  static NdArray random(Random rnd, long... shape) {
    NdArray a = NdArray.zeros(DType.F64, shape);
    double[] d = new double[(int) a.numel()];
    for (int i = 0; i < d.length; i++) {
      d[i] = rnd.nextGaussian();
    }
    return NdArray.fromDoubles(d, shape);
  }

  static NdArray ints(Random rnd, long bound, long... shape) {
    long n = NdArray.numel(shape);
    long[] d = new long[(int) n];
    for (int i = 0; i < n; i++) {
      d[i] = rnd.nextLong(bound);
    }
    return NdArray.fromLongs(d, shape);
  }

  static NdArray arange(long n) {
    long[] d = new long[(int) n];
    for (int i = 0; i < n; i++) {
      d[i] = i;
    }
    return NdArray.fromLongs(d, n);
  }

  static double maxAbsDiff(Tensor a, Tensor b) {
    double[] x = ((NdArray) a).toDoubleArray();
    double[] y = ((NdArray) b).toDoubleArray();
    assertTrue(java.util.Arrays.equals(a.shape(), b.shape()),
        () -> "shapes differ: " + java.util.Arrays.toString(a.shape()) + " vs " + java.util.Arrays.toString(b.shape()));
    double m = 0;
    for (int i = 0; i < x.length; i++) {
      m = Math.max(m, Math.abs(x[i] - y[i]));
    }
    return m;
  }

  static double maxAbs(Tensor a) {
    double m = 0;
    for (double v : ((NdArray) a).toDoubleArray()) {
      m = Math.max(m, Math.abs(v));
    }
    return m;
  }

  /** {@code Σ y ⊙ w}: the scalar whose gradient with respect to {@code y} is {@code w}. */
  static double dot(Tensor y, NdArray w) {
    double[] a = ((NdArray) y).toDoubleArray();
    double[] b = w.toDoubleArray();
    double s = 0;
    for (int i = 0; i < a.length; i++) {
      s += a[i] * b[i];
    }
    return s;
  }

  /** One tensor's analytic gradient against central differences at sampled elements. */
  record Check(String name, double relativeError, int elements) {}

  /**
   * Checks the generated backward of {@code method} (with {@code backward} its generated backward) against central
   * differences of {@code L = Σ eager(inputs) ⊙ w}. {@code differentiable} names the inputs (by position) that have
   * gradients; the rest must come back null.
   */
  List<Check> gradientCheck(String method, String generatedForward, String generatedBackward, Object[] inputs,
      boolean[] differentiable, Random rnd, int samplesPerTensor) {
    Context ctx = new Context();
    Tensor y = forward(generatedForward, ctx, inputs);
    NdArray w = random(rnd, y.shape());
    Record grads = (Record) Generated.call(compiled, generatedBackward, ctx, params, w);
    Map<String, NdArray> targets = new LinkedHashMap<>();
    Map<String, Tensor> analytic = new LinkedHashMap<>();
    Map<String, Tensor> paramDict = stateDict(params);
    Record gradParams = (Record) component(grads, 0);
    Map<String, Tensor> gradDict = stateDict(gradParams);
    for (var e : paramDict.entrySet()) {
      targets.put(e.getKey(), (NdArray) e.getValue());
      analytic.put(e.getKey(), gradDict.get(e.getKey()));
    }
    for (int i = 0; i < inputs.length; i++) {
      Object g = component(grads, i + 1);
      if (differentiable[i]) {
        assertTrue(g != null, "input " + i + " of " + module + " must get a gradient");
        targets.put("input " + i, (NdArray) inputs[i]);
        analytic.put("input " + i, (Tensor) g);
      } else {
        assertTrue(g == null, "input " + i + " of " + module + " is not differentiable but got a gradient");
      }
    }
    List<Check> out = new ArrayList<>();
    double h = 1e-5;
    for (var e : targets.entrySet()) {
      NdArray t = e.getValue();
      double[] a = ((NdArray) analytic.get(e.getKey())).toDoubleArray();
      int n = (int) t.numel();
      double worst = 0;
      double scale = 0;
      int checked = Math.min(n, samplesPerTensor);
      double[] numeric = new double[checked];
      int[] at = new int[checked];
      for (int k = 0; k < checked; k++) {
        at[k] = n <= samplesPerTensor ? k : rnd.nextInt(n);
        long[] idx = unravel(at[k], t.shape());
        double old = t.getDouble(idx);
        t.setDouble(old + h, idx);
        double plus = dot(eager(method, inputs), w);
        t.setDouble(old - h, idx);
        double minus = dot(eager(method, inputs), w);
        t.setDouble(old, idx);
        numeric[k] = (plus - minus) / (2 * h);
        scale = Math.max(scale, Math.abs(numeric[k]));
      }
      for (int k = 0; k < checked; k++) {
        worst = Math.max(worst, Math.abs(a[at[k]] - numeric[k]));
      }
      out.add(new Check(e.getKey(), worst / Math.max(scale, 1e-8), checked));
    }
    return out;
  }

  static Object component(Record r, int i) {
    try {
      return r.getClass().getRecordComponents()[i].getAccessor().invoke(r);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(e);
    }
  }

  static long[] unravel(long flat, long[] shape) {
    long[] idx = new long[shape.length];
    for (int d = shape.length - 1; d >= 0; d--) {
      idx[d] = flat % shape[d];
      flat /= shape[d];
    }
    return idx;
  }
}
