package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Gemm.Transpose;
import dev.kiln.runtime.cpu.Softmax;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Runs a CS336-family Transformer LM for generation, in float32 on the CPU: {@link #prefill} the prompt once, then
 * {@link #decode} one token per step against a per-layer KV cache; {@link #forwardAll} is the plain full-sequence
 * causal forward (no cache), the reference the cached path must reproduce.
 *
 * <p>Every variant of {@link ModelConfig} is implemented: norm placement pre (CS336) / post / none, RMSNorm or
 * LayerNorm, FFN SwiGLU / SiLU / GeLU (tanh form, as {@code Ops.gelu}) / ReLU / squared ReLU, RoPE / NoPE / learned
 * absolute positions, tied embeddings and QK-norm. {@code docs/inference.md} gives the exact equations and names.
 *
 * <p>With a cache, the query at absolute position {@code p} attends to keys {@code 0..p} (the causal mask aligned
 * bottom-right), and keys are rotated by RoPE at their own absolute positions when they enter the cache. The cache
 * holds {@code context_length} positions; a call that would go past it fails and leaves the cache as it was (no
 * sliding window: a model trained on windows of {@code context_length} never saw a position beyond it).
 *
 * <p>Projections are {@link Gemm} calls (a GEMV when decoding one token), attention is two GEMMs per head batch with
 * a {@link Softmax} in between, activations and residual adds are {@link Elementwise} kernels; norms and RoPE are
 * row loops in double. Not thread-safe: one engine serves one generation at a time.
 */
public final class TransformerLmEngine implements NextTokenModel {
  private final ModelConfig c;
  private final LmWeights w;
  private final KvCache cache;
  private final double[] ropeCos;
  private final double[] ropeSin;
  private int position;

  /** An engine over checked weights (see {@link LmWeights#from}), with an empty cache. */
  public TransformerLmEngine(LmWeights weights) {
    this.w = weights;
    this.c = weights.config();
    requireUsable(c, "model config");
    this.cache = new KvCache(c, c.contextLength());
    if (c.positions() == Positions.ROPE) {
      int half = c.headDim() / 2;
      ropeCos = new double[c.contextLength() * half];
      ropeSin = new double[c.contextLength() * half];
      for (int p = 0; p < c.contextLength(); p++) {
        for (int i = 0; i < half; i++) {
          double angle = p * Math.pow(c.ropeTheta(), -2.0 * i / c.headDim());
          ropeCos[p * half + i] = Math.cos(angle);
          ropeSin[p * half + i] = Math.sin(angle);
        }
      }
    } else {
      ropeCos = null;
      ropeSin = null;
    }
  }

  /** Checks {@code stateDict} against {@code config} (see {@link LmWeights#from}) and builds an engine. */
  public static TransformerLmEngine load(ModelConfig config, Map<String, NdArray> stateDict, String source) {
    requireUsable(config, source);
    return new TransformerLmEngine(LmWeights.from(config, stateDict, source));
  }

  /** The config's own consistency rules (sizes, divisibility); {@code source} names it in the message. */
  public static void requireUsable(ModelConfig c, String source) {
    List<String> p = new ArrayList<>();
    String[] keys = {"vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"};
    int[] values = {c.vocabSize(), c.contextLength(), c.dModel(), c.numLayers(), c.numHeads(), c.dFf()};
    for (int i = 0; i < keys.length; i++) {
      if (values[i] <= 0) {
        p.add(keys[i] + " must be > 0, got " + values[i]);
      }
    }
    if (c.numHeads() > 0 && c.dModel() % c.numHeads() != 0) {
      p.add("d_model (" + c.dModel() + ") is not divisible by num_heads (" + c.numHeads() + ")");
    } else if (c.numHeads() > 0 && c.positions() == Positions.ROPE && c.headDim() % 2 != 0) {
      p.add("RoPE rotates pairs of dims, but the head width d_model / num_heads = " + c.headDim() + " is odd");
    }
    if (!(c.normEps() > 0)) {
      p.add("norm_eps must be > 0, got " + c.normEps());
    }
    if (c.positions() == Positions.ROPE && !(c.ropeTheta() > 0)) {
      p.add("rope_theta must be > 0, got " + c.ropeTheta());
    }
    if (!p.isEmpty()) {
      throw new IllegalArgumentException(source + ": " + String.join("; ", p));
    }
  }

  @Override
  public ModelConfig config() {
    return c;
  }

  /** Tokens in the cache: the absolute position the next token will take. */
  @Override
  public int position() {
    return position;
  }

  /** Empties the cache (its memory is kept). */
  public void reset() {
    position = 0;
  }

  /**
   * Empties the cache, runs the prompt through the model once, filling the cache with its keys and values, and
   * returns the logits of the last position, float32 {@code [vocab_size]}: the distribution of the first new token.
   */
  @Override
  public NdArray prefill(int[] promptIds) {
    TokenChecks.requirePrompt(promptIds, c);
    reset();
    return append(promptIds);
  }

  /**
   * Feeds one token at position {@link #position()} and returns the logits of the next position, float32
   * {@code [vocab_size]}.
   *
   * @throws IllegalStateException when the cache is full (position == context_length)
   */
  @Override
  public NdArray decode(int tokenId) {
    return append(new int[] {tokenId});
  }

  /**
   * Feeds {@code ids} at positions {@code position()..position()+n-1} in one pass (a chunked prefill) and returns
   * the logits of the last one. The cache is left unchanged if the call fails.
   */
  public NdArray append(int[] ids) {
    TokenChecks.requireAppendable(ids, position, c);
    NdArray logits = run(ids, position, cache, false);
    position += ids.length;
    return logits.view(c.vocabSize());
  }

  /**
   * The full causal forward of {@code ids} (at positions 0..n-1) without touching the cache: logits float32
   * {@code [n, vocab_size]}. Each position sees itself and the positions before it.
   */
  public NdArray forwardAll(int[] ids) {
    if (ids.length == 0) {
      throw new IllegalArgumentException("forwardAll needs at least one token");
    }
    if (ids.length > c.contextLength()) {
      throw new IllegalArgumentException("the sequence has " + ids.length + " tokens but the model's"
          + " context_length is " + c.contextLength());
    }
    TokenChecks.requireIds(ids, c);
    return run(ids, 0, new KvCache(c, ids.length), true);
  }

  // ---------------------------------------------------------------- the forward pass

  /** Tokens {@code ids} at positions {@code start..}, attending over {@code kv}; logits of all rows or the last. */
  private NdArray run(int[] ids, int start, KvCache kv, boolean allPositions) {
    int t = ids.length;
    NormPlacement placement = c.normPlacement();
    NdArray x = embed(ids, start);
    for (int l = 0; l < c.numLayers(); l++) {
      LmWeights.Layer layer = w.layer(l);
      NdArray attnIn = placement == NormPlacement.PRE ? norm(x, layer.ln1(), newRows(t, c.dModel())) : x;
      Elementwise.addInto(x, attention(l, layer, attnIn, start, kv));
      if (placement == NormPlacement.POST) {
        norm(x, layer.ln1(), x);
      }
      NdArray ffnIn = placement == NormPlacement.PRE ? norm(x, layer.ln2(), newRows(t, c.dModel())) : x;
      Elementwise.addInto(x, ffn(layer, ffnIn));
      if (placement == NormPlacement.POST) {
        norm(x, layer.ln2(), x);
      }
    }
    NdArray rows = allPositions ? x : x.narrow(0, t - 1, 1);
    if (placement != NormPlacement.NONE) {
      rows = norm(rows, w.lnFinal(), newRows(rows.shape(0), c.dModel()));
    }
    return linear(rows, w.lmHead());
  }

  private static NdArray newRows(long rows, long width) {
    return NdArray.zeros(DType.F32, rows, width);
  }

  private NdArray embed(int[] ids, int start) {
    int d = c.dModel();
    long rowBytes = 4L * d;
    NdArray x = newRows(ids.length, d);
    NdArray table = w.tokenEmbeddings();
    for (int i = 0; i < ids.length; i++) {
      MemorySegment.copy(table.segment(), (table.offset() + (long) ids[i] * d) * 4, x.segment(), i * rowBytes,
          rowBytes);
    }
    if (c.positions() == Positions.LEARNED) {
      Elementwise.addInto(x, w.positionEmbeddings().narrow(0, start, ids.length));
    }
    return x;
  }

  /** {@code x W^T} for {@code x: [rows, d_in]}, {@code W: [d_out, d_in]}. */
  private static NdArray linear(NdArray x, NdArray weight) {
    NdArray out = newRows(x.shape(0), weight.shape(0));
    if (x.shape(0) == 1) {
      // One row (a decode step): computed as the column W x^T, the form OpenBLAS 0.3.31 runs faster (best of 30,
      // interleaved, 2 busy Cooperlake cores: W [10000, 512] 2.26 ms vs 2.95 ms as a row, [1344, 512] 0.05 vs
      // 0.15 ms). Same memory: out [1, d_out] viewed as [d_out, 1].
      Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, 1.0, weight, x, 0.0, out.view(weight.shape(0), 1));
    } else {
      Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, 1.0, x, weight, 0.0, out);
    }
    return out;
  }

  private NdArray attention(int l, LmWeights.Layer layer, NdArray x, int start, KvCache kv) {
    int t = (int) x.shape(0);
    int h = c.numHeads();
    int dh = c.headDim();
    NdArray q = linear(x, layer.q()).view(t, h, dh);
    NdArray k = linear(x, layer.k()).view(t, h, dh);
    NdArray v = linear(x, layer.v()).view(t, h, dh);
    if (c.qkNorm()) {
      norm(q.view((long) t * h, dh), layer.qNorm(), q.view((long) t * h, dh));
      norm(k.view((long) t * h, dh), layer.kNorm(), k.view((long) t * h, dh));
    }
    if (c.positions() == Positions.ROPE) {
      rope(q, start);
      rope(k, start);
    }
    kv.write(l, start, k, v);
    int len = start + t;
    // scores[head, i, j] = q_i . k_j / sqrt(d_head), one GEMM per head over the cache's strided [len, d_head] view.
    NdArray scores = NdArray.zeros(DType.F32, h, t, len);
    Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, 1.0 / Math.sqrt(dh), q.permute(1, 0, 2),
        kv.keys(l, len).permute(1, 0, 2), 0.0, scores);
    maskFuture(scores, start);
    Softmax.softmaxInto(scores, -1, false, scores);
    NdArray o = NdArray.zeros(DType.F32, t, h, dh);
    Gemm.gemm(Transpose.NONE, Transpose.NONE, 1.0, scores, kv.values(l, len).permute(1, 0, 2), 0.0,
        o.permute(1, 0, 2));
    return linear(o.view(t, (long) h * dh), layer.out());
  }

  /** Sets {@code scores[h, i, j] = -inf} where key {@code j} comes after the query's position {@code start + i}. */
  private static void maskFuture(NdArray scores, int start) {
    long heads = scores.shape(0);
    long t = scores.shape(1);
    long len = scores.shape(2);
    MemorySegment s = scores.segment();
    for (long hd = 0; hd < heads; hd++) {
      for (long i = 0; i < t; i++) {
        long row = (hd * t + i) * len;
        for (long j = start + i + 1; j < len; j++) {
          s.setAtIndex(ValueLayout.JAVA_FLOAT, row + j, Float.NEGATIVE_INFINITY);
        }
      }
    }
  }

  /** Rotates each pair {@code (2i, 2i+1)} of every head of {@code x: [T, heads, d_head]} by its row's position. */
  private void rope(NdArray x, int start) {
    int t = (int) x.shape(0);
    int h = (int) x.shape(1);
    int dh = (int) x.shape(2);
    int half = dh / 2;
    MemorySegment s = x.segment();
    long base = x.offset();
    for (int i = 0; i < t; i++) {
      int table = (start + i) * half;
      for (int hd = 0; hd < h; hd++) {
        long at = base + ((long) i * h + hd) * dh;
        for (int p = 0; p < half; p++) {
          double cos = ropeCos[table + p];
          double sin = ropeSin[table + p];
          double even = s.getAtIndex(ValueLayout.JAVA_FLOAT, at + 2 * p);
          double odd = s.getAtIndex(ValueLayout.JAVA_FLOAT, at + 2 * p + 1);
          s.setAtIndex(ValueLayout.JAVA_FLOAT, at + 2 * p, (float) (even * cos - odd * sin));
          s.setAtIndex(ValueLayout.JAVA_FLOAT, at + 2 * p + 1, (float) (even * sin + odd * cos));
        }
      }
    }
  }

  /**
   * Normalises each row of {@code x: [rows, n]} (contiguous) into {@code out} (which may be {@code x}): RMSNorm
   * {@code x / sqrt(mean(x²) + eps) · g}, or LayerNorm {@code (x − mean) / sqrt(var + eps) · g + b} with the biased
   * variance, as PyTorch's {@code LayerNorm}. Statistics in double.
   */
  private NdArray norm(NdArray x, LmWeights.Norm norm, NdArray out) {
    int rows = (int) x.shape(0);
    int n = (int) x.shape(1);
    float[] g = norm.weight();
    float[] b = norm.bias();
    boolean layerNorm = c.norm() == NormType.LAYERNORM;
    double eps = c.normEps();
    float[] row = new float[n];
    MemorySegment src = x.segment();
    MemorySegment dst = out.segment();
    for (int r = 0; r < rows; r++) {
      long from = (x.offset() + (long) r * n) * 4;
      MemorySegment.copy(src, ValueLayout.JAVA_FLOAT, from, row, 0, n);
      double mean = 0;
      if (layerNorm) {
        for (float v : row) {
          mean += v;
        }
        mean /= n;
      }
      double sq = 0;
      for (float v : row) {
        sq += (v - mean) * (v - mean);
      }
      double inv = 1 / Math.sqrt(sq / n + eps);
      for (int i = 0; i < n; i++) {
        double y = (row[i] - mean) * inv * g[i];
        row[i] = (float) (b == null ? y : y + b[i]);
      }
      MemorySegment.copy(row, 0, dst, ValueLayout.JAVA_FLOAT, (out.offset() + (long) r * n) * 4, n);
    }
    return out;
  }

  private NdArray ffn(LmWeights.Layer layer, NdArray x) {
    NdArray hidden = linear(x, layer.w1());
    NdArray act = switch (c.ffn()) {
      case SWIGLU -> Elementwise.binaryInto(Elementwise.Binary.MUL, Elementwise.silu(hidden),
          linear(x, layer.w3()), hidden);
      case SILU -> Elementwise.silu(hidden);
      case GELU -> Elementwise.geluTanh(hidden);
      case RELU -> Elementwise.relu(hidden);
      case SQUARED_RELU -> {
        NdArray r = Elementwise.relu(hidden);
        yield Elementwise.binaryInto(Elementwise.Binary.MUL, r, r, r);
      }
    };
    return linear(act, layer.w2());
  }
}
