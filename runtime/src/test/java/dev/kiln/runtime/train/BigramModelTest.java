package dev.kiln.runtime.train;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import org.junit.jupiter.api.Test;

/** The test model's analytic gradient against central finite differences, in float64. */
class BigramModelTest {
  @Test
  void gradientMatchesFiniteDifferences() {
    int v = 6;
    BigramModel m = new BigramModel(v, DType.F64, 21);
    Rng r = new Rng(4);
    NdArray x = r.integers(NdArray.zeros(DType.I64, 3, 5), 0, v);
    NdArray y = r.integers(NdArray.zeros(DType.I64, 3, 5), 0, v);
    ParameterSet g = ParameterSet.zerosLike(m.parameters());
    double loss = m.accumulateGradients(x, y, g);
    assertEquals(loss, m.loss(x, y), 0);
    // Accumulation adds: a second call doubles the buffer.
    ParameterSet twice = ParameterSet.zerosLike(m.parameters());
    m.accumulateGradients(x, y, twice);
    m.accumulateGradients(x, y, twice);
    double h = 1e-5;
    for (String name : m.parameters().names()) {
      NdArray p = m.parameters().get(name);
      double[] flat = p.toDoubleArray();
      long[] shape = p.shape();
      for (int i = 0; i < flat.length; i++) {
        long[] idx = shape.length == 2 ? new long[] {i / shape[1], i % shape[1]} : new long[] {i};
        double orig = p.getDouble(idx);
        p.setDouble(orig + h, idx);
        double up = m.loss(x, y);
        p.setDouble(orig - h, idx);
        double down = m.loss(x, y);
        p.setDouble(orig, idx);
        double fd = (up - down) / (2 * h);
        // Central differences: truncation error ~h²·f''' ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11.
        assertEquals(fd, g.get(name).getDouble(idx), 1e-8, name + idx[0]);
        assertEquals(2 * g.get(name).getDouble(idx), twice.get(name).getDouble(idx), 1e-15);
      }
    }
  }
}
