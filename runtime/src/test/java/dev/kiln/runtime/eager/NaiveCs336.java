package dev.kiln.runtime.eager;

import dev.kiln.runtime.tensor.NdArray;
import java.util.Map;

/**
 * The CS336 Transformer written as plain double loops over one sequence at a time ({@code [s][d]} matrices), from
 * the assignment's definitions: {@code y = x W^T} with {@code W: [d_out, d_in]}; RMSNorm
 * {@code x / sqrt(mean(x^2) + eps) * g}; SwiGLU {@code W2 (silu(W1 x) * W3 x)}; RoPE rotating pairs
 * {@code (2i, 2i+1)} of each head by {@code pos * theta^(-2i/d_head)}; causal softmax attention with heads taken as
 * consecutive slices of {@code d_model}; pre-norm blocks. Weights come from a state dict by their CS336 names. It
 * shares no code with the interpreter, the kernels or Einops.
 */
final class NaiveCs336 {
  private final Map<String, NdArray> sd;
  private final int heads;
  private final double theta;
  private final double eps;

  NaiveCs336(Map<String, NdArray> stateDict, int heads, double theta, double eps) {
    this.sd = stateDict;
    this.heads = heads;
    this.theta = theta;
    this.eps = eps;
  }

  double[][] matrix(String name) {
    NdArray w = sd.get(name);
    if (w == null) {
      throw new IllegalArgumentException("no '" + name + "' in " + sd.keySet());
    }
    int rows = (int) w.shape(0);
    int cols = (int) w.shape(1);
    double[] v = w.toDoubleArray();
    double[][] m = new double[rows][cols];
    for (int r = 0; r < rows; r++) {
      System.arraycopy(v, r * cols, m[r], 0, cols);
    }
    return m;
  }

  double[] vector(String name) {
    return sd.get(name).toDoubleArray();
  }

  static double[][] linear(double[][] x, double[][] w) {
    double[][] y = new double[x.length][w.length];
    for (int r = 0; r < x.length; r++) {
      for (int o = 0; o < w.length; o++) {
        double acc = 0;
        for (int i = 0; i < w[o].length; i++) {
          acc += x[r][i] * w[o][i];
        }
        y[r][o] = acc;
      }
    }
    return y;
  }

  double[][] rmsNorm(double[][] x, double[] g) {
    double[][] y = new double[x.length][];
    for (int r = 0; r < x.length; r++) {
      double ms = 0;
      for (double v : x[r]) {
        ms += v * v;
      }
      double inv = 1 / Math.sqrt(ms / x[r].length + eps);
      y[r] = new double[x[r].length];
      for (int i = 0; i < x[r].length; i++) {
        y[r][i] = x[r][i] * inv * g[i];
      }
    }
    return y;
  }

  double[][] swiGlu(double[][] x, String prefix) {
    double[][] a = linear(x, matrix(prefix + "w1.weight"));
    double[][] b = linear(x, matrix(prefix + "w3.weight"));
    for (int r = 0; r < a.length; r++) {
      for (int i = 0; i < a[r].length; i++) {
        a[r][i] = a[r][i] / (1 + Math.exp(-a[r][i])) * b[r][i];
      }
    }
    return linear(a, matrix(prefix + "w2.weight"));
  }

  /** RoPE on one head: {@code x[s][dh]}, in place. */
  void rope(double[][] x, long[] positions) {
    int dh = x[0].length;
    for (int s = 0; s < x.length; s++) {
      for (int i = 0; i < dh / 2; i++) {
        double angle = positions[s] / Math.pow(theta, (2.0 * i) / dh);
        double a = x[s][2 * i];
        double b = x[s][2 * i + 1];
        x[s][2 * i] = a * Math.cos(angle) - b * Math.sin(angle);
        x[s][2 * i + 1] = a * Math.sin(angle) + b * Math.cos(angle);
      }
    }
  }

  double[][] attention(double[][] x, long[] positions, String prefix) {
    int s = x.length;
    double[][] q = linear(x, matrix(prefix + "q_proj.weight"));
    double[][] k = linear(x, matrix(prefix + "k_proj.weight"));
    double[][] v = linear(x, matrix(prefix + "v_proj.weight"));
    int d = q[0].length;
    int dh = d / heads;
    double[][] merged = new double[s][d];
    for (int h = 0; h < heads; h++) {
      double[][] qh = new double[s][dh];
      double[][] kh = new double[s][dh];
      for (int i = 0; i < s; i++) {
        System.arraycopy(q[i], h * dh, qh[i], 0, dh);
        System.arraycopy(k[i], h * dh, kh[i], 0, dh);
      }
      rope(qh, positions);
      rope(kh, positions);
      for (int i = 0; i < s; i++) {
        double[] w = new double[i + 1];
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j <= i; j++) {
          double acc = 0;
          for (int c = 0; c < dh; c++) {
            acc += qh[i][c] * kh[j][c];
          }
          w[j] = acc / Math.sqrt(dh);
          max = Math.max(max, w[j]);
        }
        double z = 0;
        for (int j = 0; j <= i; j++) {
          w[j] = Math.exp(w[j] - max);
          z += w[j];
        }
        for (int c = 0; c < dh; c++) {
          double acc = 0;
          for (int j = 0; j <= i; j++) {
            acc += w[j] / z * v[j][h * dh + c];
          }
          merged[i][h * dh + c] = acc;
        }
      }
    }
    return linear(merged, matrix(prefix + "output_proj.weight"));
  }

  double[][] block(double[][] x, long[] positions, String prefix) {
    double[][] a = attention(rmsNorm(x, vector(prefix + "ln1.weight")), positions, prefix + "attn.");
    double[][] h = add(x, a);
    return add(h, swiGlu(rmsNorm(h, vector(prefix + "ln2.weight")), prefix + "ffn."));
  }

  double[][] lm(long[] tokens, long[] positions, int layers) {
    double[][] table = matrix("token_embeddings.weight");
    double[][] x = new double[tokens.length][];
    for (int i = 0; i < tokens.length; i++) {
      x[i] = table[(int) tokens[i]].clone();
    }
    for (int l = 0; l < layers; l++) {
      x = block(x, positions, "layers." + l + ".");
    }
    return linear(rmsNorm(x, vector("ln_final.weight")), matrix("lm_head.weight"));
  }

  static double crossEntropy(double[][] logits, long[] targets) {
    double total = 0;
    for (int r = 0; r < logits.length; r++) {
      double max = Double.NEGATIVE_INFINITY;
      for (double z : logits[r]) {
        max = Math.max(max, z);
      }
      double sum = 0;
      for (double z : logits[r]) {
        sum += Math.exp(z - max);
      }
      total += max + Math.log(sum) - logits[r][(int) targets[r]];
    }
    return total / logits.length;
  }

  static double[][] add(double[][] a, double[][] b) {
    double[][] y = new double[a.length][];
    for (int r = 0; r < a.length; r++) {
      y[r] = new double[a[r].length];
      for (int i = 0; i < a[r].length; i++) {
        y[r][i] = a[r][i] + b[r][i];
      }
    }
    return y;
  }

  /** Sequence {@code b} of a {@code [B, S, D]} array as {@code [S][D]}. */
  static double[][] sequence(NdArray x, int b) {
    int s = (int) x.shape(1);
    int d = (int) x.shape(2);
    double[] v = x.toDoubleArray();
    double[][] m = new double[s][d];
    for (int i = 0; i < s; i++) {
      System.arraycopy(v, (b * s + i) * d, m[i], 0, d);
    }
    return m;
  }

  /** {@code [B][S][D]} flattened row-major. */
  static double[] flatten(double[][][] x) {
    int s = x[0].length;
    int d = x[0][0].length;
    double[] out = new double[x.length * s * d];
    for (int b = 0; b < x.length; b++) {
      for (int i = 0; i < s; i++) {
        System.arraycopy(x[b][i], 0, out, (b * s + i) * d, d);
      }
    }
    return out;
  }
}
