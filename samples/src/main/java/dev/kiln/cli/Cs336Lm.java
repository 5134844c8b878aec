package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Config;
import dev.kiln.dsl.spi.Context;
import dev.kiln.dsl.spi.Device;
import dev.kiln.models.cs336.CompiledTransformerLm;
import dev.kiln.models.cs336.TransformerLm;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.infer.LmWeights;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.CompiledModel;
import dev.kiln.runtime.train.CudaEngine;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.LmModule;
import dev.kiln.runtime.train.ModelConfig;
import java.util.ArrayList;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The CS336 Transformer LM of {@code kiln-models}, compiled by Kiln's processor, built from a {@link ModelConfig} for
 * the trainer and for {@code kiln forward}.
 *
 * <p>This glue lives in {@code samples}, the one module that sees both the runtime and the models: the runtime's
 * {@link CompiledModel} reaches the generated {@link CompiledTransformerLm} through three method references, so the
 * runtime needs neither a compile-time dependency on {@code kiln-models} nor reflection (a renamed module fails here,
 * at compile time, not at run time).
 */
public final class Cs336Lm {
  private final ModelConfig config;
  private final CompiledTransformerLm compiled;
  private final CompiledModel<TransformerLm> model;
  private final Map<Long, NdArray> positions = new HashMap<>();

  private Cs336Lm(ModelConfig config, DType dtype, long seed) {
    this.config = config;
    this.compiled = new CompiledTransformerLm(new CpuDevice(), dtype);
    TransformerLm params = compiled.init(Config.of(LmModule.moduleConfig(config)), seed);
    if (config.tiedEmbeddings()) {
      params = params.withTiedEmbeddings();
    }
    this.model = new CompiledModel<>(new Program(compiled, null), params,
        LmModule.names(config, compiled.stateDict(params).keySet()));
  }

  /**
   * The model on a GPU, as the CUDA trainer's engine: the compiled module runs on {@code dev}, its parameters
   * initialised there (bit for bit the CPU's initialisation: the same Philox streams), AdamW state on the device.
   * The engine's host parameter arrays are filled only when a checkpoint asks for them.
   */
  public static CudaEngine<TransformerLm> cudaEngine(ModelConfig config, long seed, CudaModelDevice dev,
      TrainConfig.OptimizerConfig optimizer) {
    CompiledTransformerLm compiled = new CompiledTransformerLm(dev, DType.F32);
    TransformerLm params = compiled.init(Config.of(LmModule.moduleConfig(config)), seed);
    if (config.tiedEmbeddings()) {
      params = params.withTiedEmbeddings();
    }
    Map<String, Tensor> sd = compiled.stateDict(params);
    Map<String, String> names = LmModule.names(config, sd.keySet());
    Map<String, NdArray> host = new LinkedHashMap<>();
    names.forEach((key, name) -> host.putIfAbsent(name, NdArray.empty(DType.F32, sd.get(key).shape())));
    return new CudaEngine<>(dev, new Program(compiled, dev), params, names, ParameterSet.of(host), optimizer);
  }

  /**
   * A freshly initialised model (CS336's initialisation; the parameter with state-dict key {@code k} drawn from
   * Philox({@code seed}) stream {@code Sizes.stream(k)}), with parameters of {@code dtype} (F32 or F64).
   */
  public static Cs336Lm create(ModelConfig config, long seed, DType dtype) {
    return new Cs336Lm(config, dtype, seed);
  }

  /**
   * A model holding the weights of {@code stateDict} (copied, converted to {@code dtype}). Every missing, unexpected
   * or misshapen tensor is named, with the expected and the found shape, before anything is copied.
   *
   * @param source what the weights came from (a file), for messages
   */
  public static Cs336Lm load(ModelConfig config, Map<String, ? extends NdArray> stateDict, String source,
      DType dtype) {
    Map<String, long[]> expected = LmWeights.expectedShapes(config);
    List<String> problems = new ArrayList<>();
    for (Map.Entry<String, long[]> e : expected.entrySet()) {
      NdArray a = stateDict.get(e.getKey());
      if (a == null) {
        problems.add("missing tensor " + e.getKey() + " (expected shape " + Arrays.toString(e.getValue()) + ")"
            + (e.getKey().equals("lm_head.weight") ? "; if the model shares it with token_embeddings.weight, set"
                + " tied_embeddings: true" : ""));
      } else if (!Arrays.equals(a.shape(), e.getValue())) {
        problems.add("tensor " + e.getKey() + " has shape " + Arrays.toString(a.shape()) + " but the config needs "
            + Arrays.toString(e.getValue()));
      } else if (!a.dtype().isFloating()) {
        problems.add("tensor " + e.getKey() + " has dtype " + a.dtype() + "; weights must be floating point");
      }
    }
    for (String n : stateDict.keySet()) {
      if (!expected.containsKey(n)) {
        problems.add("unexpected tensor " + n + " " + Arrays.toString(stateDict.get(n).shape())
            + " (not part of this model config: check norm_placement, norm, ffn, positions, tied_embeddings,"
            + " qk_norm)");
      }
    }
    if (!problems.isEmpty()) {
      throw new IllegalArgumentException(source + ": the weights do not fit the model config; " + (problems.size()
          == 1 ? problems.get(0) : problems.size() + " problems:\n  - " + String.join("\n  - ", problems)));
    }
    // The initial values are overwritten; a fixed seed keeps loading deterministic and cheap to reason about.
    Cs336Lm lm = new Cs336Lm(config, dtype, 0);
    lm.model.parameters().forEach((n, a) -> a.copyFrom(stateDict.get(n)));
    return lm;
  }

  /**
   * The weights of a model folder (a Kiln run or checkpoint, or a CS336/PyTorch folder), checked against its config,
   * as {@link #load(ModelConfig, Map, String, DType)} does.
   */
  public static Cs336Lm load(ModelFolder folder, DType dtype) throws java.io.IOException {
    Path weights = Files.isRegularFile(folder.dir().resolve("model.safetensors"))
        ? folder.dir().resolve("model.safetensors") : folder.dir().resolve("model.safetensors.index.json");
    try (SafetensorsFile st = SafetensorsFile.open(folder.dir())) {
      Map<String, NdArray> sd = new LinkedHashMap<>();
      for (String n : st.names()) {
        sd.put(n, st.get(n));
      }
      return load(folder.config(), sd, weights.toString(), dtype);
    }
  }

  public ModelConfig config() {
    return config;
  }

  /** The model as the trainer sees it (parameters by state-dict name, loss, gradients). */
  public CompiledModel<TransformerLm> trainable() {
    return model;
  }

  /**
   * This model's weights on a GPU: the same generated code on {@code dev}, parameters copied from the host (for
   * {@code kiln forward --device cuda} and {@code kiln generate --device cuda}). F32 models only.
   */
  public OnCuda onCuda(CudaModelDevice dev) {
    return new OnCuda(dev);
  }

  /** The model on a GPU; see {@link #onCuda}. */
  public final class OnCuda {
    private final CudaModelDevice dev;
    private final CompiledTransformerLm gpu;
    private final TransformerLm params;
    private final Program program;

    private OnCuda(CudaModelDevice dev) {
      this.dev = dev;
      this.gpu = new CompiledTransformerLm(dev, DType.F32);
      TransformerLm p = gpu.init(Config.of(LmModule.moduleConfig(config)), 0);
      if (config.tiedEmbeddings()) {
        p = p.withTiedEmbeddings();
      }
      this.params = p;
      Map<String, Tensor> host = compiled.stateDict(model.params());
      for (Map.Entry<String, Tensor> e : gpu.stateDict(params).entrySet()) {
        NdArray h = (NdArray) host.get(e.getKey());
        if (h.dtype() != DType.F32) {
          throw new IllegalArgumentException("the GPU runs F32 models; this one is " + h.dtype());
        }
        dev.copyFromHost(h, e.getValue());
      }
      this.program = new Program(gpu, dev);
    }

    /** Logits {@code [batch, seq, vocab_size]} of token ids {@code [batch, seq]} (I64), computed on the GPU. */
    public NdArray logits(NdArray tokenIds) {
      try (CudaModelDevice.Scope s = dev.scope()) {
        Tensor ids = dev.fromHost(tokenIds);
        long seq = tokenIds.shape(tokenIds.rank() - 1);
        return dev.toHost(gpu.forward(new Context(), params, ids, dev.iota(DType.I64, seq)));
      }
    }

    /** The mean loss of a batch and the gradient of every parameter by trainer name, computed on the GPU. */
    public CompiledModel.LossAndGradients lossAndGradients(NdArray inputs, NdArray targets) {
      Map<String, String> names = LmModule.names(config, gpu.stateDict(params).keySet());
      try (CudaModelDevice.Scope s = dev.scope()) {
        Context ctx = new Context();
        double loss = dev.download(program.loss(ctx, params, dev.fromHost(inputs), dev.fromHost(targets)))[0];
        Map<String, Tensor> g = gpu.stateDict(program.lossBackward(ctx, params, dev.full(DType.F32, 1.0)));
        Map<String, NdArray> out = new LinkedHashMap<>();
        names.forEach((key, name) -> {
          NdArray gi = dev.toHost(g.get(key));
          NdArray sum = out.get(name);
          if (sum == null) {
            out.put(name, gi);
          } else {
            out.put(name, (NdArray) new CpuDevice().binary(Device.Binary.ADD, sum, gi));
          }
        });
        return new CompiledModel.LossAndGradients(loss, out);
      }
    }
  }

  /** Logits {@code [batch, seq, vocab_size]} of token ids {@code [batch, seq]} (I64), at positions 0..seq-1. */
  public NdArray logits(NdArray tokenIds) {
    return (NdArray) compiled.forward(new Context(), model.params(), tokenIds, positions(tokenIds));
  }

  private NdArray positions(NdArray tokenIds) {
    long seq = tokenIds.shape(tokenIds.rank() - 1);
    return positions.computeIfAbsent(seq, s -> NdArray.arange(DType.I64, s));
  }

  /** The generated code's loss and gradients on one device ({@code cuda} null: the CPU). */
  private record Program(CompiledTransformerLm compiled, CudaModelDevice cuda)
      implements CompiledModel.Program<TransformerLm> {
    @Override
    public Tensor loss(Context ctx, TransformerLm params, Tensor inputs, Tensor targets) {
      long seq = inputs.shape()[inputs.rank() - 1];
      Tensor positions = cuda != null ? cuda.iota(DType.I64, seq) : NdArray.arange(DType.I64, seq);
      return compiled.loss(ctx, params, inputs, positions, targets);
    }

    @Override
    public TransformerLm lossBackward(Context ctx, TransformerLm params, Tensor dLoss) {
      return compiled.lossBackward(ctx, params, dLoss).params();
    }

    @Override
    public Map<String, Tensor> stateDict(TransformerLm record) {
      return compiled.stateDict(record);
    }
  }
}
