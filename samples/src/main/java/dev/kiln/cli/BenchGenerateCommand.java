package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.infer.DeviceLmEngine;
import dev.kiln.runtime.infer.LmWeights;
import dev.kiln.runtime.infer.NextTokenModel;
import dev.kiln.runtime.infer.TransformerLmEngine;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.ModelConfig;
import java.io.PrintStream;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln bench generate}: prefill and decode speed of the device engine ({@link DeviceLmEngine}, on the GPU by
 * default) next to the CPU's KV-cache engine ({@link TransformerLmEngine}), the peer, in the same run, on one model
 * with random weights (the CS336 TinyStories shape by default).
 */
@Command(
    name = "generate",
    description = {
      "Prefill time and decode tokens/s of generation on --device (the KV-cache engine on the device SPI) next to the"
          + " CPU's KV-cache engine, same model (random weights), same tokens, and the ratio.",
      "Each side generates once untimed first (JIT, kernel loading, cuBLAS's algorithm choice)."
    })
public final class BenchGenerateCommand implements Callable<Integer> {
  @Option(names = "--device", description = "cuda (default) or cpu: where the device engine runs.")
  String device = "cuda";

  @Option(names = "--vocab", description = "Vocabulary size (default: ${DEFAULT-VALUE}).")
  int vocab = 10_000;

  @Option(names = "--context", description = "Context length (default: ${DEFAULT-VALUE}).")
  int context = 256;

  @Option(names = "--d-model", description = "Width (default: ${DEFAULT-VALUE}).")
  int dModel = 512;

  @Option(names = "--layers", description = "Blocks (default: ${DEFAULT-VALUE}).")
  int layers = 4;

  @Option(names = "--heads", description = "Attention heads (default: ${DEFAULT-VALUE}).")
  int heads = 16;

  @Option(names = "--d-ff", description = "Feed-forward width (default: ${DEFAULT-VALUE}).")
  int dFf = 1344;

  @Option(names = "--prompt", description = "Prompt tokens (default: ${DEFAULT-VALUE}).")
  int prompt = 16;

  @Option(names = "--tokens", description = "Decode steps timed (default: ${DEFAULT-VALUE}).")
  int tokens = 200;

  @Override
  public Integer call() {
    for (int v : new int[] {vocab, context, dModel, layers, heads, dFf, prompt, tokens}) {
      if (v < 1) {
        throw new IllegalArgumentException("every size, --prompt and --tokens must be positive");
      }
    }
    if (prompt + tokens > context) {
      throw new IllegalArgumentException("--prompt " + prompt + " plus --tokens " + tokens + " pass --context "
          + context + "; lower one of them or raise --context");
    }
    Device dev = switch (device) {
      case "cuda" -> new CudaModelDevice(0, CudaModelDevice.Precision.FP32);
      case "cpu" -> new CpuDevice();
      default -> throw new IllegalArgumentException("--device must be cuda or cpu, got " + device);
    };
    ModelConfig c = new ModelConfig(vocab, context, dModel, layers, heads, dFf, 10_000.0,
        ModelConfig.NormPlacement.PRE, ModelConfig.NormType.RMSNORM, 1e-5, ModelConfig.Ffn.SWIGLU,
        ModelConfig.Positions.ROPE, false, false, 0.0);
    LmWeights w = LmWeights.from(c, randomWeights(c), "random weights");
    int[] ids = new int[prompt + tokens];
    NdArray drawn = new Rng(2).integers(NdArray.zeros(DType.I64, ids.length), 0, vocab);
    for (int i = 0; i < ids.length; i++) {
      ids[i] = (int) drawn.getLong(i);
    }
    PrintStream out = System.out;
    out.printf(Locale.ROOT, "generate: d_model %d, %d layers, %d heads, d_ff %d, vocab %d; prompt %d tokens, %d"
        + " decode steps%n", dModel, layers, heads, dFf, vocab, prompt, tokens);
    double[] peer = time(new TransformerLmEngine(w), ids);
    out.printf(Locale.ROOT, "  cpu KV-cache engine (peer)        prefill %8.2f ms   decode %8.1f tokens/s%n", peer[0],
        peer[1]);
    try (DeviceLmEngine engine = new DeviceLmEngine(w, dev)) {
      double[] kiln = time(engine, ids);
      out.printf(Locale.ROOT, "  device engine on %-16s prefill %8.2f ms   decode %8.1f tokens/s%n", dev.name(),
          kiln[0], kiln[1]);
      out.printf(Locale.ROOT, "decode speed-up against the cpu engine: %.2fx%n", kiln[1] / peer[1]);
    }
    return 0;
  }

  /** Untimed pass, then {prefill ms, decode tokens/s} of the timed one. */
  private double[] time(NextTokenModel engine, int[] ids) {
    int[] head = java.util.Arrays.copyOf(ids, prompt);
    double[] result = new double[2];
    for (int pass = 0; pass < 2; pass++) {
      long t0 = System.nanoTime();
      engine.prefill(head);
      long t1 = System.nanoTime();
      int steps = pass == 0 ? Math.min(tokens, 8) : tokens;
      for (int i = 0; i < steps; i++) {
        engine.decode(ids[prompt + i]);
      }
      long t2 = System.nanoTime();
      result[0] = (t1 - t0) / 1e6;
      result[1] = steps / ((t2 - t1) / 1e9);
    }
    return result;
  }

  /** Matrices N(0, 1/d_in), embeddings N(0, 1), norm gains 1: a model whose activations stay near unit scale. */
  private static Map<String, NdArray> randomWeights(ModelConfig c) {
    Rng rng = new Rng(1);
    Map<String, NdArray> sd = new LinkedHashMap<>();
    int stream = 0;
    for (Map.Entry<String, long[]> e : LmWeights.expectedShapes(c).entrySet()) {
      long[] s = e.getValue();
      NdArray a = NdArray.zeros(DType.F32, s);
      Rng r = rng.stream(stream++);
      if (s.length == 1) {
        r.normal(a, 1, 0);
      } else {
        r.normal(a, 0, e.getKey().contains("embeddings") ? 1 : 1 / Math.sqrt(s[1]));
      }
      sd.put(e.getKey(), a);
    }
    return sd;
  }
}
