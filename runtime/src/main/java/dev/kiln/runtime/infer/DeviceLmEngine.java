package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Device.Binary;
import dev.kiln.dsl.spi.Device.Unary;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.CudaGraph;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * {@link TransformerLmEngine}'s equations with a KV cache, written against the {@link Device} SPI, so that generation
 * runs where the device is: on {@link CudaModelDevice} the weights and the cache live in GPU memory and a decode step
 * is one CUDA-graph launch and one download of the {@code vocab_size} logits; on the CPU device it is the same code
 * on the host, which is how the tests hold it to the reference engine.
 *
 * <p>Every variant of {@link ModelConfig} is implemented, as in the reference. The prompt runs as one chunk through
 * the device's fused causal attention. Each later token is a <em>decode step of fixed shapes</em>: its token id and
 * position are in one-element device buffers, its keys and values are added into cache rows that hold zeros
 * ({@link Device#scatterAddRows} at the position the buffer holds), and its query attends to the whole cache with two
 * GEMMs and a softmax, the positions after it masked to −∞ by comparing an iota with the position. Nothing in a step
 * depends on the host, so on the GPU the second decode step is captured as a CUDA graph and every later one replays
 * it: three tiny host copies, one graph launch and one download of the logits a token, where the launches of about
 * 40 kernels a layer from Java would dominate. The cache holds keys after QK-norm and RoPE, {@code [context_length,
 * d_model]} per layer (a row per position), read by the GEMMs as the strided view {@code [num_heads, context_length,
 * d_head]}.
 *
 * <p>Statistics are float32 here (norms are reductions on the device), where the reference engine takes them in
 * double: logits agree within 1e-4 relative (measured up to 4.7e-5 on tiny random models). Not thread-safe: one
 * engine serves one generation at a time.
 *
 * <p>The first capture turns on the device's graph mode ({@link CudaModelDevice#enableGraphs}): from then on every
 * {@code upload} on that device is served from a cache of permanent tensors. Give the engine a device of its own, as
 * {@code kiln generate} does.
 */
public final class DeviceLmEngine implements NextTokenModel, AutoCloseable {
  private static final double GELU_CUBIC = 0.044715;
  private static final double GELU_SCALE = Math.sqrt(2 / Math.PI);

  private record Norm(Tensor gain, Tensor bias) {}

  private record Layer(Norm ln1, Tensor q, Tensor k, Tensor v, Tensor out, Norm qNorm, Norm kNorm, Norm ln2, Tensor w1,
      Tensor w2, Tensor w3) {}

  private final Device dev;
  /** The same object as {@link #dev} when it is the GPU device (for scopes and uploads), else null. */
  private final CudaModelDevice cuda;
  private final ModelConfig c;
  private final Tensor tokenEmbeddings;
  private final Tensor positionEmbeddings;
  private final List<Layer> layers = new ArrayList<>();
  private final Norm lnFinal;
  private final Tensor lmHead;
  /** Per layer {@code [context_length, d_model]}: row p holds position p's keys (values), zeros past the last one. */
  private final Tensor[] keys;
  private final Tensor[] values;
  /** A decode step's inputs: the token id and its position (I64 for gather and RoPE, F32 for the mask). */
  private final Tensor tokenInput;
  private final Tensor positionInput;
  private final Tensor positionAsFloat;
  /** 0, 1, ..., context_length − 1 in F32: the cache rows' positions, compared with the step's. */
  private final Tensor cachePositions;
  /** The decode step as a CUDA graph (GPU only, from the second step on), and the logits it writes. */
  private CudaGraph decodeGraph;
  private Tensor graphLogits;
  private boolean decodedEagerly;
  private boolean graphFailed;
  /** Set when a failure could not be cleaned up: the cache may hold rows that later steps would add to. */
  private boolean broken;
  /** The scalars the equations use, made once (on the GPU each {@code full} is a kernel launch). */
  private final Map<Double, Tensor> constants = new HashMap<>();
  /** GPU memory of the weights, the cache, the constants and the decode graph's step, freed by {@link #close}. */
  private final List<CudaArray> owned = new ArrayList<>();
  private int position;
  private boolean closed;

  /** Moves {@code weights} (checked by {@link LmWeights#from}) onto {@code device} and allocates the cache there. */
  public DeviceLmEngine(LmWeights weights, Device device) {
    this.c = weights.config();
    TransformerLmEngine.requireUsable(c, "model config");
    this.dev = device;
    this.cuda = device instanceof CudaModelDevice g ? g : null;
    if (cuda != null && cuda.precision() != CudaModelDevice.Precision.FP32) {
      throw new IllegalArgumentException("generation runs in fp32: give DeviceLmEngine a CudaModelDevice made with"
          + " Precision.FP32, not " + cuda.precision());
    }
    CudaModelDevice.Scope scope = cuda == null ? null : cuda.scope();
    try {
      tokenEmbeddings = put(weights.tokenEmbeddings());
      positionEmbeddings = weights.positionEmbeddings() == null ? null : put(weights.positionEmbeddings());
      for (int l = 0; l < c.numLayers(); l++) {
        LmWeights.Layer w = weights.layer(l);
        layers.add(new Layer(norm(w.ln1()), put(w.q()), put(w.k()), put(w.v()), put(w.out()), norm(w.qNorm()),
            norm(w.kNorm()), norm(w.ln2()), put(w.w1()), put(w.w2()), w.w3() == null ? null : put(w.w3())));
      }
      lnFinal = norm(weights.lnFinal());
      lmHead = c.tiedEmbeddings() ? tokenEmbeddings : put(weights.lmHead());
      keys = new Tensor[c.numLayers()];
      values = new Tensor[c.numLayers()];
      for (int l = 0; l < c.numLayers(); l++) {
        keys[l] = dev.zeros(DType.F32, c.contextLength(), c.dModel());
        values[l] = dev.zeros(DType.F32, c.contextLength(), c.dModel());
      }
      tokenInput = dev.zeros(DType.I64, 1);
      positionInput = dev.zeros(DType.I64, 1);
      positionAsFloat = dev.zeros(DType.F32, 1);
      float[] rows = new float[c.contextLength()];
      for (int i = 0; i < rows.length; i++) {
        rows[i] = i;
      }
      NdArray hostRows = NdArray.fromFloats(rows, rows.length);
      cachePositions = cuda != null ? cuda.fromHost(hostRows) : hostRows;
      for (double v : new double[] {1.0 / c.dModel(), 1.0 / c.headDim(), c.normEps(), 0, 0.5, 1, GELU_CUBIC,
          GELU_SCALE, Double.NEGATIVE_INFINITY}) {
        constants.computeIfAbsent(v, x -> dev.full(DType.F32, x));
      }
    } catch (RuntimeException | Error e) {
      if (scope != null) {
        scope.close();
      }
      throw e;
    }
    if (scope != null) {
      owned.addAll(scope.detach());
    }
  }

  private Tensor put(NdArray host) {
    NdArray a = host.contiguous();
    return cuda != null ? cuda.fromHost(a) : a;
  }

  private Norm norm(LmWeights.Norm n) {
    if (n == null) {
      return null;
    }
    Tensor g = put(NdArray.fromFloats(n.weight(), n.weight().length));
    Tensor b = n.bias() == null ? null : put(NdArray.fromFloats(n.bias(), n.bias().length));
    return new Norm(g, b);
  }

  @Override
  public ModelConfig config() {
    return c;
  }

  @Override
  public int position() {
    return position;
  }

  @Override
  public NdArray prefill(int[] promptIds) {
    requireUsable();
    TokenChecks.requirePrompt(promptIds, c);
    position = 0;
    return append(promptIds);
  }

  @Override
  public NdArray decode(int tokenId) {
    return append(new int[] {tokenId});
  }

  /**
   * Feeds {@code ids} at positions {@code position()..} and returns the logits of the last, float32
   * {@code [vocab_size]}. From an empty cache they run as one chunk; after it, one at a time. A failed call leaves
   * {@link #position()} where it was and the cache rows it added to zeroed again, so the same tokens can be fed again.
   */
  public NdArray append(int[] ids) {
    requireUsable();
    TokenChecks.requireAppendable(ids, position, c);
    int start = position;
    try {
      NdArray logits = null;
      int i = 0;
      if (position == 0) {
        for (int l = 0; l < c.numLayers(); l++) {
          // Decode steps add into cache rows: every row past the prompt must hold zeros, whatever ran before.
          dev.fill(keys[l], 0);
          dev.fill(values[l], 0);
        }
        logits = prefillChunk(ids);
        position = ids.length;
        i = ids.length;
      }
      for (; i < ids.length; i++) {
        logits = decodeStep(ids[i], position);
        position++;
      }
      return logits;
    } catch (RuntimeException | Error e) {
      // Rows start..position may hold this call's keys and values (the failing step's row included).
      long rows = Math.min(position + 1L, c.contextLength()) - start;
      position = start;
      try {
        for (int l = 0; l < c.numLayers(); l++) {
          dev.fill(dev.narrow(keys[l], 0, start, rows), 0);
          dev.fill(dev.narrow(values[l], 0, start, rows), 0);
        }
      } catch (RuntimeException | Error cleanup) {
        // The cache may now hold stale rows that later steps would add to: this engine cannot be trusted again.
        broken = true;
        e.addSuppressed(cleanup);
      }
      throw e;
    }
  }

  private void requireUsable() {
    if (closed) {
      throw new IllegalStateException("the engine is closed");
    }
    if (broken) {
      throw new IllegalStateException("an earlier failure left this engine's KV cache unusable; make a new engine");
    }
  }

  // ---------------------------------------------------------------- the forward pass

  /** The prompt at positions {@code 0..n-1}, in one pass; the logits of the last position. */
  private NdArray prefillChunk(int[] ids) {
    int t = ids.length;
    try (CudaModelDevice.Scope s = cuda == null ? null : cuda.scope()) {
      long[] positions = new long[t];
      Arrays.setAll(positions, i -> i);
      long[] tokens = new long[t];
      Arrays.setAll(tokens, i -> ids[i]);
      Tensor rows = integers(positions);
      Tensor x = dev.gather(tokenEmbeddings, integers(tokens));
      return logits(layers(x, rows, (l, layer, in) -> prefillAttention(l, layer, in, rows)));
    }
  }

  /**
   * One token at {@code at} (the cache holds positions {@code 0..at-1}): eager on the CPU and for the first step on
   * the GPU (which warms up every kernel and cuBLAS plan), a CUDA-graph replay after that. A failed capture is
   * reported once, and the engine goes on with eager steps.
   */
  private NdArray decodeStep(int token, int at) {
    setInput(tokenInput, token);
    setInput(positionInput, at);
    setInput(positionAsFloat, at);
    if (cuda == null || !decodedEagerly || graphFailed) {
      NdArray logits;
      try (CudaModelDevice.Scope s = cuda == null ? null : cuda.scope()) {
        logits = logits(decodeForward());
      }
      decodedEagerly = true;
      return logits;
    }
    if (decodeGraph == null) {
      captureDecodeStep();
    }
    decodeGraph.launch(cuda.gpu().defaultStream());
    return hostLogits(cuda.download(graphLogits));
  }

  /** Records the decode step once; its memory (activations, the logits) belongs to the graph from then on. */
  private void captureDecodeStep() {
    cuda.enableGraphs();
    CudaModelDevice.Scope s = cuda.scope();
    Tensor[] out = new Tensor[1];
    try {
      decodeGraph = cuda.capture(() -> out[0] = layersToLogits(decodeForward()));
    } catch (RuntimeException | Error e) {
      s.close();
      graphFailed = true;
      throw new IllegalStateException("capturing the decode step as a CUDA graph failed (later steps run eagerly): "
          + e.getMessage(), e);
    }
    graphLogits = out[0];
    owned.addAll(s.detach());
  }

  /** The decode step's work, reading only device buffers: the final hidden row {@code [1, d_model]}. */
  private Tensor decodeForward() {
    Tensor x = dev.gather(tokenEmbeddings, tokenInput);
    // −∞ for the cache rows after the step's position, 0 for it and the rows before.
    Tensor mask = dev.where(dev.compare(Device.Compare.GREATER, cachePositions, positionAsFloat),
        scalar(Double.NEGATIVE_INFINITY), scalar(0));
    return layers(x, positionInput, (l, layer, in) -> decodeAttention(l, layer, in, mask));
  }

  /** Attention of one layer given its input rows. */
  private interface AttentionFn {
    Tensor apply(int l, Layer layer, Tensor in);
  }

  /** Learned positions, then every block; {@code positions}: those of the rows of {@code x} (I64). */
  private Tensor layers(Tensor x, Tensor positions, AttentionFn attention) {
    NormPlacement placement = c.normPlacement();
    if (c.positions() == Positions.LEARNED) {
      x = dev.binary(Binary.ADD, x, dev.gather(positionEmbeddings, positions));
    }
    for (int l = 0; l < c.numLayers(); l++) {
      Layer layer = layers.get(l);
      Tensor attnIn = placement == NormPlacement.PRE ? norm(x, layer.ln1()) : x;
      x = dev.binary(Binary.ADD, x, attention.apply(l, layer, attnIn));
      if (placement == NormPlacement.POST) {
        x = norm(x, layer.ln1());
      }
      Tensor ffnIn = placement == NormPlacement.PRE ? norm(x, layer.ln2()) : x;
      x = dev.binary(Binary.ADD, x, ffn(layer, ffnIn));
      if (placement == NormPlacement.POST) {
        x = norm(x, layer.ln2());
      }
    }
    return x;
  }

  /** The last row's logits {@code [1, vocab_size]} on the device. */
  private Tensor layersToLogits(Tensor x) {
    Tensor last = dev.narrow(x, 0, x.shape()[0] - 1, 1);
    if (c.normPlacement() != NormPlacement.NONE) {
      last = norm(last, lnFinal);
    }
    return linear(last, lmHead);
  }

  private NdArray logits(Tensor x) {
    return hostLogits(dev.download(layersToLogits(x)));
  }

  private NdArray hostLogits(double[] logits) {
    float[] f = new float[logits.length];
    for (int i = 0; i < f.length; i++) {
      f[i] = (float) logits[i];
    }
    return NdArray.fromFloats(f, c.vocabSize());
  }

  /** {@code v} as an I64 vector on the device: a plain host copy (an upload would be cached once graphs are on). */
  private Tensor integers(long[] v) {
    NdArray host = NdArray.fromLongs(v, v.length);
    return cuda != null ? cuda.fromHost(host) : host;
  }

  /** Writes {@code value} into the one-element device buffer {@code buffer}. */
  private void setInput(Tensor buffer, long value) {
    NdArray host = buffer.dtype() == DType.I64 ? NdArray.fromLongs(new long[] {value}, 1)
        : NdArray.fromFloats(new float[] {value}, 1);
    if (cuda != null) {
      cuda.copyFromHost(host, buffer);
    } else {
      dev.copy(host, buffer);
    }
  }

  private Tensor scalar(double v) {
    Tensor t = constants.get(v);
    return t != null ? t : dev.full(DType.F32, v);
  }

  /** {@code x W^T} for {@code x: [rows, d_in]}, {@code W: [d_out, d_in]}. */
  private Tensor linear(Tensor x, Tensor weight) {
    Tensor out = dev.empty(DType.F32, x.shape()[0], weight.shape()[0]);
    dev.gemm(x, false, weight, true, out, 1, 0);
    return out;
  }

  /**
   * Normalises {@code x} over its last dim: RMSNorm {@code x / sqrt(mean(x²) + eps) · g}, or LayerNorm
   * {@code (x − mean) / sqrt(var + eps) · g + b} with the biased variance.
   */
  private Tensor norm(Tensor x, Norm n) {
    int last = x.rank() - 1;
    double inverseWidth = 1.0 / x.shape()[last];
    Tensor centered = x;
    if (c.norm() == NormType.LAYERNORM) {
      Tensor mean = dev.binary(Binary.MUL, dev.reduce(Reduction.SUM, x, new int[] {last}, true),
          scalar(inverseWidth));
      centered = dev.binary(Binary.SUB, x, mean);
    }
    Tensor meanSquare = dev.binary(Binary.MUL,
        dev.reduce(Reduction.SUM, dev.binary(Binary.MUL, centered, centered), new int[] {last}, true),
        scalar(inverseWidth));
    Tensor inv = dev.unary(Unary.RSQRT, dev.binary(Binary.ADD, meanSquare, scalar(c.normEps())));
    Tensor y = dev.binary(Binary.MUL, dev.binary(Binary.MUL, centered, inv), n.gain());
    return n.bias() == null ? y : dev.binary(Binary.ADD, y, n.bias());
  }

  /** q, k, v of {@code x} as {@code [heads, T, d_head]} views, after QK-norm and RoPE at {@code positions}. */
  private Tensor[] projections(Layer layer, Tensor x, Tensor positions) {
    long t = x.shape()[0];
    int h = c.numHeads();
    int dh = c.headDim();
    Tensor q = dev.reshape(linear(x, layer.q()), t, h, dh);
    Tensor k = dev.reshape(linear(x, layer.k()), t, h, dh);
    Tensor v = dev.reshape(linear(x, layer.v()), t, h, dh);
    if (c.qkNorm()) {
      q = norm(q, layer.qNorm());
      k = norm(k, layer.kNorm());
    }
    q = dev.permute(q, 1, 0, 2);
    k = dev.permute(k, 1, 0, 2);
    v = dev.permute(v, 1, 0, 2);
    if (c.positions() == Positions.ROPE) {
      q = dev.rope(q, positions, c.ropeTheta(), false);
      k = dev.rope(k, positions, c.ropeTheta(), false);
    }
    return new Tensor[] {q, k, v};
  }

  /** The prompt's causal self-attention (fused), its keys and values copied into cache rows {@code 0..T-1}. */
  private Tensor prefillAttention(int l, Layer layer, Tensor x, Tensor positions) {
    long t = x.shape()[0];
    Tensor[] qkv = projections(layer, x, positions);
    dev.copy(dev.permute(qkv[1], 1, 0, 2), cacheRows(keys[l], t));
    dev.copy(dev.permute(qkv[2], 1, 0, 2), cacheRows(values[l], t));
    Tensor o = dev.attention(qkv[0], qkv[1], qkv[2], Mask.CAUSAL, 1 / Math.sqrt(c.headDim())).out();
    return linear(mergeHeads(o), layer.out());
  }

  /** Rows {@code 0..t-1} of a layer's cache as {@code [t, heads, d_head]}. */
  private Tensor cacheRows(Tensor cache, long t) {
    return dev.narrow(dev.reshape(cache, c.contextLength(), c.numHeads(), c.headDim()), 0, 0, t);
  }

  /**
   * One query against the whole cache: its key and value are added into the zero row at the step's position, then
   * softmax over every row with {@code mask} (−∞ after the position) added to the scores.
   */
  private Tensor decodeAttention(int l, Layer layer, Tensor x, Tensor mask) {
    int h = c.numHeads();
    int dh = c.headDim();
    long len = c.contextLength();
    Tensor[] qkv = projections(layer, x, positionInput);
    dev.scatterAddRows(keys[l], positionInput, dev.reshape(dev.contiguous(dev.permute(qkv[1], 1, 0, 2)), 1,
        c.dModel()));
    dev.scatterAddRows(values[l], positionInput, dev.reshape(dev.contiguous(dev.permute(qkv[2], 1, 0, 2)), 1,
        c.dModel()));
    Tensor cachedKeys = dev.permute(cacheRows(keys[l], len), 1, 0, 2);
    Tensor cachedValues = dev.permute(cacheRows(values[l], len), 1, 0, 2);
    Tensor scores = dev.empty(DType.F32, h, 1, len);
    dev.gemm(qkv[0], false, cachedKeys, true, scores, 1 / Math.sqrt(dh), 0);
    scores = dev.binary(Binary.ADD, scores, mask);
    Tensor max = dev.reduce(Reduction.MAX, scores, new int[] {2}, true);
    Tensor e = dev.unary(Unary.EXP, dev.binary(Binary.SUB, scores, max));
    Tensor p = dev.binary(Binary.DIV, e, dev.reduce(Reduction.SUM, e, new int[] {2}, true));
    Tensor o = dev.empty(DType.F32, h, 1, dh);
    dev.gemm(p, false, cachedValues, false, o, 1, 0);
    return linear(mergeHeads(o), layer.out());
  }

  /** {@code [heads, T, d_head]} → {@code [T, d_model]}. */
  private Tensor mergeHeads(Tensor o) {
    long t = o.shape()[1];
    return dev.reshape(dev.contiguous(dev.permute(o, 1, 0, 2)), t, (long) c.numHeads() * c.headDim());
  }

  private Tensor ffn(Layer layer, Tensor x) {
    Tensor hidden = linear(x, layer.w1());
    Tensor act = switch (c.ffn()) {
      case SWIGLU -> dev.binary(Binary.MUL, silu(hidden), linear(x, layer.w3()));
      case SILU -> silu(hidden);
      case GELU -> geluTanh(hidden);
      case RELU -> dev.binary(Binary.MAXIMUM, hidden, scalar(0));
      case SQUARED_RELU -> {
        Tensor r = dev.binary(Binary.MAXIMUM, hidden, scalar(0));
        yield dev.binary(Binary.MUL, r, r);
      }
    };
    return linear(act, layer.w2());
  }

  private Tensor silu(Tensor x) {
    return dev.binary(Binary.MUL, x, dev.unary(Unary.SIGMOID, x));
  }

  /** {@code 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))}, as {@code Ops.gelu}. */
  private Tensor geluTanh(Tensor x) {
    Tensor cube = dev.binary(Binary.MUL, dev.binary(Binary.MUL, x, x), x);
    Tensor inner = dev.binary(Binary.MUL, dev.binary(Binary.ADD, x, dev.binary(Binary.MUL, cube, scalar(GELU_CUBIC))),
        scalar(GELU_SCALE));
    Tensor half = dev.binary(Binary.MUL, x, scalar(0.5));
    return dev.binary(Binary.MUL, half, dev.binary(Binary.ADD, dev.unary(Unary.TANH, inner), scalar(1)));
  }

  /** Frees the weights, the cache and the decode graph on the GPU (nothing to free on the CPU). */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    RuntimeException first = null;
    List<AutoCloseable> all = new ArrayList<>();
    if (decodeGraph != null) {
      all.add(decodeGraph);
    }
    all.addAll(owned);
    for (AutoCloseable a : all) {
      try {
        a.close();
      } catch (Exception e) {
        if (first == null) {
          first = e instanceof RuntimeException r ? r : new IllegalStateException(e);
        } else {
          first.addSuppressed(e);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }
}
