package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cuda.CudaEvent;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.CudaEngine;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.TrainingEngine;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Full CS336 training steps on a GPU (forward, loss, backward, global-norm clipping, fused AdamW), for the named
 * model sizes of CS336 assignment 2 and the TinyStories config of assignment 1. Prints one JSON line per config in
 * the format of {@code scripts/reference/train_bench_gpu.py} (the PyTorch peer), so
 * {@code scripts/reference/train_bench_table.py} lines both up.
 *
 * <p>MFU counts {@code 6·N·tokens + 6·L·T·d·tokens} FLOPs per step: N the matmul weights (projections, FFN, LM head;
 * not the embedding table or norm gains), the attention term PaLM's {@code 12·L·T·d} halved for the causal mask;
 * peak 989.4 TFLOP/s (H200 dense bf16). The same definition as the peer's.
 *
 * <p>Timing, as the peer's: with {@code --graphs}, {@code ms_per_step} is the mean of steps queued back to back
 * ({@code TrainingEngine.queueStep}: the host queues step k + 1 while the GPU runs step k, as the trainer does) on a
 * pool of batches made before timing, and {@code median_ms} the median of steps each queued and awaited alone.
 * Eager steps are each awaited (the loss download waits), for both figures.
 */
final class GpuTrainBench {
  /** A benchmark config: model and batch. */
  record Size(String name, int dModel, int dFf, int layers, int heads, int context, int batch) {}

  static final List<Size> SIZES = List.of(
      new Size("small", 768, 3072, 12, 12, 512, 4),
      new Size("medium", 1024, 4096, 24, 16, 512, 4),
      new Size("large", 1280, 5120, 36, 20, 512, 4),
      new Size("xl", 2560, 10240, 32, 32, 512, 4),
      new Size("tinystories", 512, 1344, 4, 16, 256, 128));

  private static final double PEAK = 989.4e12;
  /** The global gradient norm each step clips to, as Kiln's trainer does; the peer's {@code --clip} default. */
  private static final double CLIP = 1.0;
  private static final int VOCAB = 10_000;
  /** Batches made before timing and cycled through, as the peer does. */
  private static final int POOL = 8;

  private GpuTrainBench() {}

  private static void check(double loss, int step) {
    if (!Double.isFinite(loss)) {
      throw new IllegalStateException("loss is " + loss + " at step " + step);
    }
  }

  static Size size(String name) {
    return SIZES.stream().filter(s -> s.name().equals(name)).findFirst().orElseThrow(() ->
        new IllegalArgumentException("unknown config '" + name + "'; known: "
            + SIZES.stream().map(Size::name).toList()));
  }

  /** Times {@code steps} steps after {@code warmup} of each config; one JSON line each on {@code out}. */
  static void run(List<String> configs, CudaModelDevice.Precision precision, int steps, int warmup,
      boolean graphs, PrintStream out) {
    CudaModelDevice dev = new CudaModelDevice(0, precision);
    for (String name : configs) {
      Size s = size(name);
      Map<String, Object> line = new LinkedHashMap<>();
      line.put("impl", "kiln");
      line.put("config", s.name());
      try {
        line.putAll(measure(dev, s, steps, warmup, graphs));
      } catch (RuntimeException | OutOfMemoryError e) {
        line.put("error", String.valueOf(e));
      }
      line.put("device", dev.gpu().toString());
      line.put("precision", precision.name().toLowerCase(java.util.Locale.ROOT));
      line.put("cuda_graphs", graphs);
      line.put("gemm_api", dev.gemmApi().name().toLowerCase(java.util.Locale.ROOT));
      out.println(Json.write(line));
      out.flush();
      dev.gpu().allocator().emptyCache();
    }
  }

  private static Map<String, Object> measure(CudaModelDevice dev, Size s, int steps, int warmup, boolean graphs) {
    ModelConfig config = new ModelConfig(VOCAB, s.context(), s.dModel(), s.layers(), s.heads(), s.dFf(), 10_000.0,
        ModelConfig.NormPlacement.PRE, ModelConfig.NormType.RMSNORM, 1e-5, ModelConfig.Ffn.SWIGLU,
        ModelConfig.Positions.ROPE, false, false, 0.0);
    // torch.optim.AdamW's form and settings, as the peer script runs it.
    TrainConfig.OptimizerConfig opt = new TrainConfig.OptimizerConfig(TrainConfig.OptimizerName.ADAMW, 0.9, 0.999,
        1e-8, 0.01, AdamW.Formula.PYTORCH, 0, false);
    long buildStart = System.nanoTime();
    try (CudaEngine<?> engine = Cs336Lm.cudaEngine(config, 0, dev, opt)) {
      double buildSeconds = (System.nanoTime() - buildStart) / 1e9;
      if (graphs) {
        engine.enableGraphs(CLIP);
      }
      ParameterSet p = engine.hostParameters();
      long matmul = 0;
      for (String n : p.names()) {
        NdArray a = p.get(n);
        if (a.rank() == 2 && !n.startsWith("token_embeddings") && !n.startsWith("position_embeddings")) {
          matmul += a.numel();
        }
      }
      long tokens = (long) s.batch() * s.context();
      double flops = 6.0 * matmul * tokens + 6.0 * s.layers() * s.context() * s.dModel() * tokens;
      Rng rng = new Rng(1);
      double[] times = new double[steps];
      double gpuMillis = 0;
      long launchesBefore = 0;
      double bulkMillis = Double.NaN;
      CudaEvent begin = new CudaEvent(dev.gpu());
      CudaEvent end = new CudaEvent(dev.gpu());
      if (graphs) {
        // As the peer times and as the trainer runs graph steps: a pool of batches made before timing (host RNG is
        // not timed; the copy of each batch to the device is), steps queued back to back (the host queues step
        // k + 1 while the GPU runs step k), results awaited at the end: the mean. Then each step alone, queued and
        // awaited: the median, which includes the host's round trip per step.
        NdArray[][] pool = new NdArray[POOL][];
        for (int b = 0; b < POOL; b++) {
          pool[b] = new NdArray[] {rng.integers(NdArray.zeros(DType.I64, s.batch(), s.context()), 0, VOCAB),
              rng.integers(NdArray.zeros(DType.I64, s.batch(), s.context()), 0, VOCAB)};
        }
        for (int i = 0; i < warmup; i++) {
          check(engine.queueStep(1e-4, pool[i % POOL][0], pool[i % POOL][1]).await().loss(), i - warmup);
        }
        launchesBefore = dev.launches();
        List<TrainingEngine.QueuedStep> queued = new ArrayList<>();
        dev.synchronize();
        long t0 = System.nanoTime();
        begin.record(dev.gpu().defaultStream());
        for (int i = 0; i < steps; i++) {
          queued.add(engine.queueStep(1e-4, pool[i % POOL][0], pool[i % POOL][1]));
        }
        end.record(dev.gpu().defaultStream());
        for (int i = 0; i < steps; i++) {
          check(queued.get(i).await().loss(), i);
        }
        bulkMillis = (System.nanoTime() - t0) / 1e6 / steps;
        gpuMillis = end.elapsedMillisSince(begin);
        for (int i = 0; i < steps; i++) {
          long t1 = System.nanoTime();
          check(engine.queueStep(1e-4, pool[i % POOL][0], pool[i % POOL][1]).await().loss(), i);
          times[i] = (System.nanoTime() - t1) / 1e9;
        }
      } else {
        for (int i = -warmup; i < steps; i++) {
          NdArray x = rng.integers(NdArray.zeros(DType.I64, s.batch(), s.context()), 0, VOCAB);
          NdArray y = rng.integers(NdArray.zeros(DType.I64, s.batch(), s.context()), 0, VOCAB);
          if (i == 0) {
            launchesBefore = dev.launches();
          }
          long t0 = System.nanoTime();
          begin.record(dev.gpu().defaultStream());
          engine.beginStep(1e-4);
          double loss = engine.accumulate(x, y);
          engine.clipGradients(1, CLIP);
          engine.update(1e-4);
          end.record(dev.gpu().defaultStream());
          dev.synchronize();
          if (i >= 0) {
            times[i] = (System.nanoTime() - t0) / 1e9;
            // GPU time between the step's first and last queued work, waits for the host included: the gap to the
            // wall time is host work the GPU never overlapped.
            gpuMillis += end.elapsedMillisSince(begin);
          }
          check(loss, i);
        }
      }
      // One more step with the device's profiler on (an event after every operation): where the time goes. A graph
      // replay is one launch with nothing to time inside it, so there is no profile with graphs.
      if (graphs) {
        System.err.println("no profile of the " + s.name() + " step: it is one CUDA-graph replay (run without"
            + " --graphs for the per-operation profile)");
      }
      NdArray px = rng.integers(NdArray.zeros(DType.I64, s.batch(), s.context()), 0, VOCAB);
      dev.profile(true);
      engine.beginStep(1e-4);
      engine.accumulate(px, px);
      engine.clipGradients(1, CLIP);
      engine.update(1e-4);
      dev.profile(false);
      if (!graphs) {
        System.err.println("profile of one " + s.name() + " step (GPU time between consecutive operations):");
        System.err.print(dev.profileReport());
      }
      double[] sorted = times.clone();
      Arrays.sort(sorted);
      double mean = graphs ? bulkMillis / 1e3 : Arrays.stream(times).sum() / steps;
      Map<String, Object> r = new LinkedHashMap<>();
      r.put("params", p.numel());
      r.put("ms_per_step", mean * 1e3);
      r.put("median_ms", sorted[steps / 2] * 1e3);
      r.put("tokens_per_s", tokens / mean);
      r.put("mfu", flops / (mean * PEAK));
      r.put("gpu_event_ms_per_step", gpuMillis / steps);
      r.put("launches_per_step", (dev.launches() - launchesBefore) / steps);
      r.put("timing", graphs ? "queued steps (mean), each step awaited (median)" : "each step awaited");
      r.put("peak_mem_gib", dev.gpu().allocator().stats().peakBytesInUse() / (double) (1L << 30));
      r.put("build_s", buildSeconds);
      r.put("clip", CLIP);
      return r;
    }
  }
}
