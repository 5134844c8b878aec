package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.ConfigLoader;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.TrainableModel;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln bench train}: full training steps (forward, cross-entropy, backward, AdamW) of the CS336 Transformer LM
 * on the CPU — Kiln's compiled model next to PyTorch eager on the same config, in the same run — as tokens/s and MFU.
 *
 * <p>MFU is model FLOPs per second over the machine's measured peak: the best float32 GEMM (OpenBLAS, 2048³) of this
 * run. Model FLOPs per token are {@code 6·N + 12·L·d·T} (N: parameters except the embedding table, which is a lookup;
 * L layers, width d, context T — the attention products, PaLM's accounting), the same figure for both sides.
 */
@Command(name = "train", description = "Training tokens/s and MFU on the CPU: Kiln next to PyTorch (same config, same run).")
public final class BenchTrainCommand implements Callable<Integer> {
  @Option(names = "--vocab", description = "Vocabulary size (default: ${DEFAULT-VALUE}).")
  int vocab = 10_000;

  @Option(names = "--context", description = "Context length (default: ${DEFAULT-VALUE}).")
  int context = 256;

  @Option(names = "--d-model", description = "Width (default: ${DEFAULT-VALUE}).")
  int dModel = 256;

  @Option(names = "--layers", description = "Blocks (default: ${DEFAULT-VALUE}).")
  int layers = 4;

  @Option(names = "--heads", description = "Attention heads (default: ${DEFAULT-VALUE}).")
  int heads = 8;

  @Option(names = "--d-ff", description = "Feed-forward width (default: ${DEFAULT-VALUE}).")
  int dFf = 672;

  @Option(names = "--batch", description = "Sequences per step (default: ${DEFAULT-VALUE}).")
  int batch = 8;

  @Option(names = "--steps", description = "Timed steps per side; the median is reported (default: ${DEFAULT-VALUE}).")
  int steps = 6;

  @Option(names = "--warmup", description = "Untimed steps first (default: ${DEFAULT-VALUE}).")
  int warmup = 2;

  @Option(names = "--python", description = "Python with PyTorch for the peer (default: ${DEFAULT-VALUE}); 'none'"
      + " skips it.")
  String python = "/usr/bin/python3";

  @Option(names = "--device", description = "cpu (default), or cuda: the CS336 sizes on the GPU, one JSON line per"
      + " config; the PyTorch peer is scripts/reference/train_bench_gpu.py, joined by train_bench_table.py.")
  String device = "cpu";

  @Option(names = "--configs", split = ",", description = "With --device cuda: small, medium, large, xl, tinystories"
      + " (default: all).")
  List<String> configs = List.of("small", "medium", "large", "xl", "tinystories");

  @Option(names = "--precision", description = "With --device cuda: bf16 (mixed, default) or fp32.")
  String precision = "bf16";

  @Option(names = "--graphs", description = "With --device cuda: replay each step after the first as a CUDA graph.")
  boolean graphs;

  @Override
  public Integer call() throws Exception {
    if (device.equals("cuda")) {
      configs.forEach(GpuTrainBench::size);
      CudaModelDevice.Precision p = switch (precision) {
        case "bf16" -> CudaModelDevice.Precision.BF16;
        case "fp32" -> CudaModelDevice.Precision.FP32;
        default -> throw new IllegalArgumentException("--precision must be bf16 or fp32, got " + precision);
      };
      GpuTrainBench.run(configs, p, steps, warmup, graphs, System.out);
      return 0;
    }
    if (!device.equals("cpu")) {
      throw new IllegalArgumentException("--device must be cpu or cuda, got " + device);
    }
    for (int v : new int[] {vocab, context, dModel, layers, heads, dFf, batch, steps}) {
      if (v < 1) {
        throw new IllegalArgumentException("every size and --steps must be positive");
      }
    }
    PrintStream out = System.out;
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("vocab_size", vocab);
    m.put("context_length", context);
    m.put("d_model", dModel);
    m.put("num_layers", layers);
    m.put("num_heads", heads);
    m.put("d_ff", dFf);
    ModelConfig config = ConfigLoader.modelFromTree(m, "kiln bench train");
    Cs336Lm lm = Cs336Lm.create(config, 0, DType.F32);
    TrainableModel model = lm.trainable();
    ParameterSet params = model.parameters();
    long embedding = params.get("token_embeddings.weight").numel();
    double flopsPerToken = 6.0 * (params.numel() - embedding) + 12.0 * layers * dModel * context;
    double peak = peakGflops();
    long tokens = (long) batch * context;
    out.printf(Locale.ROOT, "CS336 LM: vocab %d, context %d, d_model %d, %d layers, %d heads, d_ff %d; batch %d"
            + " (%,d tokens/step); %,d parameters; %.1f MFLOP/token%n",
        vocab, context, dModel, layers, heads, dFf, batch, tokens, params.numel(), flopsPerToken / 1e6);
    out.printf(Locale.ROOT, "machine peak (OpenBLAS sgemm 2048^3, best of 3): %.1f GFLOP/s on %d cores%n%n", peak,
        Runtime.getRuntime().availableProcessors());

    double kilnStep = kilnStep(model);
    out.printf("%-42s %8s  %10s  %6s%n", "side", "ms/step", "tokens/s", "MFU");
    row(out, "Kiln (compiled DSL model, CPU)", kilnStep, tokens, flopsPerToken, peak);
    if (python.equals("none")) {
      return 0;
    }
    Map<String, Object> peer = pytorch();
    if (peer == null) {
      return 0;
    }
    double torchStep = ((Number) peer.get("median_step_s")).doubleValue();
    row(out, String.valueOf(peer.get("peer")), torchStep, tokens, flopsPerToken, peak);
    out.printf(Locale.ROOT, "%nKiln / PyTorch throughput: %.2fx  (PyTorch's own sgemm check: %.1f GFLOP/s)%n",
        torchStep / kilnStep, ((Number) peer.get("sgemm_gflops")).doubleValue());
    return 0;
  }

  /** Median seconds of a full step: accumulate gradients, clip-free AdamW update, zero the gradients. */
  private double kilnStep(TrainableModel model) {
    ParameterSet params = model.parameters();
    ParameterSet grads = ParameterSet.zerosLike(params);
    AdamW opt = new AdamW(params, 0.9, 0.95, 1e-8, 0.1);
    Rng rng = new Rng(1);
    double[] times = new double[steps];
    for (int i = -warmup; i < steps; i++) {
      NdArray x = rng.integers(NdArray.zeros(DType.I64, batch, context), 0, vocab);
      NdArray y = rng.integers(NdArray.zeros(DType.I64, batch, context), 0, vocab);
      long t0 = System.nanoTime();
      grads.zero();
      model.accumulateGradients(x, y, grads);
      opt.step(grads, 1e-3);
      if (i >= 0) {
        times[i] = (System.nanoTime() - t0) / 1e9;
      }
    }
    Arrays.sort(times);
    return times[steps / 2];
  }

  /** The best float32 GEMM of this run (OpenBLAS called directly, 2048³), through {@code kiln bench gemm}'s code. */
  private static double peakGflops() {
    PrintStream quiet = new PrintStream(java.io.OutputStream.nullOutputStream());
    return new dev.kiln.runtime.bench.GemmBenchmark(new int[] {2048}, 3).run(quiet)[0].directGflops();
  }

  private static void row(PrintStream out, String side, double stepSeconds, long tokens, double flopsPerToken,
      double peak) {
    double tps = tokens / stepSeconds;
    out.printf(Locale.ROOT, "%-42s %8.1f  %10.0f  %5.1f%%%n", side, stepSeconds * 1e3, tps,
        100 * tps * flopsPerToken / (peak * 1e9));
  }

  /** Runs {@code scripts/reference/train_bench.py} with the same config; null (with the reason printed) if it can't. */
  private Map<String, Object> pytorch() throws IOException, InterruptedException {
    String home = System.getProperty("kiln.home", ".");
    Path script = Path.of(home, "scripts", "reference", "train_bench.py");
    if (!Files.isRegularFile(script)) {
      System.out.println("PyTorch peer: " + script + " not found (run from the project folder or through bin/kiln)");
      return null;
    }
    List<String> cmd = new ArrayList<>(List.of(python, script.toString(),
        "--vocab", "" + vocab, "--context", "" + context, "--d-model", "" + dModel, "--layers", "" + layers,
        "--heads", "" + heads, "--d-ff", "" + dFf, "--batch", "" + batch, "--steps", "" + steps, "--warmup",
        "" + warmup, "--threads", "" + Runtime.getRuntime().availableProcessors()));
    Process p;
    try {
      p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    } catch (IOException e) {
      System.out.println("PyTorch peer: cannot start " + python + " (" + e.getMessage() + "); install it with"
          + " apt-get install python3-torch libopenblas0-pthread, or pass --python none");
      return null;
    }
    String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (!p.waitFor(30, TimeUnit.MINUTES) || p.exitValue() != 0) {
      System.out.println("PyTorch peer failed:\n" + text.strip());
      return null;
    }
    String last = text.strip().lines().reduce((x, y) -> y).orElse("");
    return Json.parseObject(last);
  }
}
