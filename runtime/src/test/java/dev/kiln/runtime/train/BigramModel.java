package dev.kiln.runtime.train;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.LinkedHashMap;

/**
 * A test-only language model: the next token's logits are {@code table[x] + bias}, a bigram softmax regression over
 * a tiny vocabulary, with the analytic gradient {@code (softmax − onehot(y)) / N}. Small enough to train in
 * milliseconds, deterministic, and checked against finite differences in {@code BigramModelTest}.
 */
public final class BigramModel implements TrainableModel {
  private final int vocab;
  private final ParameterSet params;

  public BigramModel(int vocab, DType dtype, long seed) {
    this.vocab = vocab;
    LinkedHashMap<String, NdArray> p = new LinkedHashMap<>();
    Rng rng = new Rng(seed);
    p.put("table.weight", rng.normal(NdArray.zeros(dtype, vocab, vocab), 0, 0.5));
    p.put("bias", rng.normal(NdArray.zeros(dtype, vocab), 0, 0.1));
    this.params = ParameterSet.of(p);
  }

  @Override
  public ParameterSet parameters() {
    return params;
  }

  @Override
  public double accumulateGradients(NdArray inputs, NdArray targets, ParameterSet gradients) {
    return run(inputs, targets, gradients);
  }

  @Override
  public double loss(NdArray inputs, NdArray targets) {
    return run(inputs, targets, null);
  }

  private double run(NdArray inputs, NdArray targets, ParameterSet grads) {
    long[] x = inputs.toLongArray();
    long[] y = targets.toLongArray();
    double[] table = params.get("table.weight").toDoubleArray();
    double[] bias = params.get("bias").toDoubleArray();
    double[] dTable = new double[vocab * vocab];
    double[] dBias = new double[vocab];
    double loss = 0;
    double[] logits = new double[vocab];
    int n = x.length;
    for (int i = 0; i < n; i++) {
      int xi = (int) x[i];
      int yi = (int) y[i];
      double max = Double.NEGATIVE_INFINITY;
      for (int v = 0; v < vocab; v++) {
        logits[v] = table[xi * vocab + v] + bias[v];
        max = Math.max(max, logits[v]);
      }
      double sum = 0;
      for (int v = 0; v < vocab; v++) {
        sum += Math.exp(logits[v] - max);
      }
      loss += Math.log(sum) + max - logits[yi];
      if (grads != null) {
        for (int v = 0; v < vocab; v++) {
          double d = (Math.exp(logits[v] - max) / sum - (v == yi ? 1 : 0)) / n;
          dTable[xi * vocab + v] += d;
          dBias[v] += d;
        }
      }
    }
    if (grads != null) {
      NdArray gt = grads.get("table.weight");
      NdArray gb = grads.get("bias");
      // Add in the buffer's dtype, element by element (what a generated += backward does).
      for (int k = 0; k < dTable.length; k++) {
        gt.setDouble(gt.getDouble(k / vocab, k % vocab) + dTable[k], k / vocab, k % vocab);
      }
      for (int k = 0; k < vocab; k++) {
        gb.setDouble(gb.getDouble(k) + dBias[k], k);
      }
    }
    return loss / n;
  }
}
