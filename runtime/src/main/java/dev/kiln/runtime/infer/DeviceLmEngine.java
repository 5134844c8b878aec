package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Device.Binary;
import dev.kiln.dsl.spi.Device.Unary;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.ArrayList;
import java.util.List;

/**
 * {@link TransformerLmEngine}'s equations with a KV cache, written against the {@link Device} SPI, so that generation
 * runs where the device is: on {@link CudaModelDevice} the weights and the cache live in GPU memory and a decode step
 * is a few dozen kernel launches and one download of the {@code vocab_size} logits; on the CPU device it is the same
 * code on the host, which is how the tests hold it to the reference engine.
 *
 * <p>Every variant of {@link ModelConfig} is implemented, as in the reference. The prompt runs as one chunk through
 * the device's fused causal attention; each later token attends to the cache with two GEMMs and a softmax (one query
 * against {@code position + 1} keys; the fused kernels take equal query and key lengths only). The cache holds keys
 * after QK-norm and RoPE, laid out {@code [num_heads, context_length, d_head]} per layer so the keys of positions
 * {@code 0..p} are a strided view that cuBLAS reads in place.
 *
 * <p>Statistics are float32 here (norms are reductions on the device), where the reference engine takes them in
 * double: logits agree to about 1e-5 relative. Not thread-safe: one engine serves one generation at a time.
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
  private final Tensor[] keys;
  private final Tensor[] values;
  /**
   * The scalars the equations use, made once: on the GPU each {@code full} is a kernel launch, and a decode step is
   * bound by launches.
   */
  private final java.util.Map<Double, Tensor> constants = new java.util.HashMap<>();
  /** GPU memory of the weights, the cache and the constants, freed by {@link #close}. */
  private final List<CudaArray> owned;
  private int position;
  private boolean closed;

  /** Moves {@code weights} (checked by {@link LmWeights#from}) onto {@code device} and allocates the cache there. */
  public DeviceLmEngine(LmWeights weights, Device device) {
    this.c = weights.config();
    TransformerLmEngine.requireUsable(c, "model config");
    this.dev = device;
    this.cuda = device instanceof CudaModelDevice g ? g : null;
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
        keys[l] = dev.empty(DType.F32, c.numHeads(), c.contextLength(), c.headDim());
        values[l] = dev.empty(DType.F32, c.numHeads(), c.contextLength(), c.headDim());
      }
      for (double v : new double[] {1.0 / c.dModel(), 1.0 / c.headDim(), c.normEps(), 0, 0.5, 1, GELU_CUBIC,
          GELU_SCALE}) {
        constants.computeIfAbsent(v, x -> dev.full(DType.F32, x));
      }
    } catch (RuntimeException | Error e) {
      if (scope != null) {
        scope.close();
      }
      throw e;
    }
    owned = scope == null ? List.of() : scope.detach();
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
    if (promptIds.length == 0) {
      throw new IllegalArgumentException("the prompt is empty: prefill needs at least one token");
    }
    if (promptIds.length > c.contextLength()) {
      throw new IllegalArgumentException("the prompt has " + promptIds.length + " tokens but the model's"
          + " context_length is " + c.contextLength() + "; shorten the prompt");
    }
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
   * {@link #position()} where it was, so whatever it wrote into the cache is never read.
   */
  public NdArray append(int[] ids) {
    if (closed) {
      throw new IllegalStateException("the engine is closed");
    }
    if (ids.length == 0) {
      throw new IllegalArgumentException("append needs at least one token");
    }
    if (position + ids.length > c.contextLength()) {
      throw new IllegalStateException("the context is full: " + position + " tokens are cached and "
          + ids.length + " more would pass the model's context_length of " + c.contextLength()
          + " (Kiln does not slide the window; start a new generation with a shorter prompt)");
    }
    for (int i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] >= c.vocabSize()) {
        throw new IllegalArgumentException("token id " + ids[i] + " at index " + i + " is outside the model's"
            + " vocabulary [0, " + c.vocabSize() + ")");
      }
    }
    NdArray logits;
    if (position == 0) {
      logits = run(ids, 0);
    } else {
      logits = null;
      for (int i = 0; i < ids.length; i++) {
        logits = run(new int[] {ids[i]}, position + i);
      }
    }
    position += ids.length;
    return logits;
  }

  // ---------------------------------------------------------------- the forward pass

  /** Tokens {@code ids} at positions {@code start..}; with {@code start > 0}, exactly one token. */
  private NdArray run(int[] ids, int start) {
    int t = ids.length;
    try (CudaModelDevice.Scope s = cuda == null ? null : cuda.scope()) {
      NormPlacement placement = c.normPlacement();
      Tensor x = dev.gather(tokenEmbeddings, tokens(ids));
      // A decode step's position is a fill kernel, not an upload: host copies wait for the GPU.
      Tensor positions = c.positions() != Positions.ROPE ? null
          : t == 1 ? dev.full(DType.I64, start, 1) : dev.iota(DType.I64, t);
      if (c.positions() == Positions.LEARNED) {
        x = dev.binary(Binary.ADD, x, dev.narrow(positionEmbeddings, 0, start, t));
      }
      for (int l = 0; l < c.numLayers(); l++) {
        Layer layer = layers.get(l);
        Tensor attnIn = placement == NormPlacement.PRE ? norm(x, layer.ln1()) : x;
        x = dev.binary(Binary.ADD, x, attention(l, layer, attnIn, start, positions));
        if (placement == NormPlacement.POST) {
          x = norm(x, layer.ln1());
        }
        Tensor ffnIn = placement == NormPlacement.PRE ? norm(x, layer.ln2()) : x;
        x = dev.binary(Binary.ADD, x, ffn(layer, ffnIn));
        if (placement == NormPlacement.POST) {
          x = norm(x, layer.ln2());
        }
      }
      Tensor last = dev.narrow(x, 0, t - 1, 1);
      if (placement != NormPlacement.NONE) {
        last = norm(last, lnFinal);
      }
      double[] logits = dev.download(linear(last, lmHead));
      float[] f = new float[logits.length];
      for (int i = 0; i < f.length; i++) {
        f[i] = (float) logits[i];
      }
      return NdArray.fromFloats(f, c.vocabSize());
    }
  }

  /** {@code ids} as an I64 vector on the device. */
  private Tensor tokens(int[] ids) {
    double[] v = new double[ids.length];
    for (int i = 0; i < v.length; i++) {
      v[i] = ids[i];
    }
    return dev.upload(DType.I64, new long[] {v.length}, v);
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

  /** {@code positions}: those of the rows of {@code x} (RoPE only, else null). */
  private Tensor attention(int l, Layer layer, Tensor x, int start, Tensor positions) {
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
    // [heads, T, d_head] views: the layout of the cache and of attention's operands.
    q = dev.permute(q, 1, 0, 2);
    k = dev.permute(k, 1, 0, 2);
    v = dev.permute(v, 1, 0, 2);
    if (c.positions() == Positions.ROPE) {
      q = dev.rope(q, positions, c.ropeTheta(), false);
      k = dev.rope(k, positions, c.ropeTheta(), false);
    }
    dev.copy(k, dev.narrow(keys[l], 1, start, t));
    dev.copy(v, dev.narrow(values[l], 1, start, t));
    double scale = 1 / Math.sqrt(dh);
    Tensor o;
    if (start == 0) {
      o = dev.attention(q, k, v, Mask.CAUSAL, scale).out();
    } else {
      // One query at position `start` against the cached keys 0..start: nothing to mask.
      long len = start + t;
      Tensor scores = dev.empty(DType.F32, h, t, len);
      dev.gemm(q, false, dev.narrow(keys[l], 1, 0, len), true, scores, scale, 0);
      Tensor max = dev.reduce(Reduction.MAX, scores, new int[] {2}, true);
      Tensor e = dev.unary(Unary.EXP, dev.binary(Binary.SUB, scores, max));
      Tensor p = dev.binary(Binary.DIV, e, dev.reduce(Reduction.SUM, e, new int[] {2}, true));
      o = dev.empty(DType.F32, h, t, dh);
      dev.gemm(p, false, dev.narrow(values[l], 1, 0, len), false, o, 1, 0);
    }
    Tensor merged = dev.reshape(dev.contiguous(dev.permute(o, 1, 0, 2)), t, (long) h * dh);
    return linear(merged, layer.out());
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

  /** Frees the weights and the cache on the GPU (nothing to free on the CPU). */
  @Override
  public void close() {
    if (!closed) {
      closed = true;
      owned.forEach(CudaArray::close);
    }
  }
}
