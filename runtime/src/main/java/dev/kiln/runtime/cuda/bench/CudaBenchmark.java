package dev.kiln.runtime.cuda.bench;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cuda.AttentionMask;
import dev.kiln.runtime.cuda.Cublas;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.CudaDevice;
import dev.kiln.runtime.cuda.CudaEvent;
import dev.kiln.runtime.cuda.CudaGraph;
import dev.kiln.runtime.cuda.CudaKernel;
import dev.kiln.runtime.cuda.CudaStream;
import dev.kiln.runtime.cuda.FlashAttention;
import dev.kiln.runtime.cuda.FusedAdamW;
import dev.kiln.runtime.cuda.KernelArgs;
import dev.kiln.runtime.cuda.KernelLoader;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.SplittableRandom;

/**
 * GPU benchmarks, timed with CUDA events, in the shapes {@code scripts/reference/attention_bench.py} times PyTorch
 * with, so the two logs join line for line (scripts/gpu-check.sh prints the table):
 *
 * <ul>
 *   <li>attention forward and forward+backward, causal, bf16, head dims 64 and 128, sequence 1k-16k, 16k tokens per
 *       batch and 2048 model width (batch = 16384 / n, heads = 2048 / d), the FlashAttention papers' setting;
 *   <li>bf16 GEMM (bf16 out, fp32 accumulation) of the shapes in {@link #GEMM_SHAPES}, through cuBLASLt and through
 *       {@code cublasGemmEx} on the same handle, and through cuBLASLt with an fp32 output
 *       ({@code api=lt_f32out}), as the mixed-precision training step writes its GEMM outputs.
 * </ul>
 *
 * {@code graph} and {@code power} time what a CUDA graph's kernel node costs and the clock and power each kind of kernel
 * holds when sustained (see their methods).
 *
 * <p>Output lines: {@code BENCH attn d=.. n=.. b=.. h=.. fwd_ms=.. fwdbwd_ms=.. tflops=..} and
 * {@code BENCH gemm shape=MxNxK api=lt|gemmex|lt_f32out ms=.. tflops=..}; times are the mean over the timed repetitions after
 * warm-up.
 */
public final class CudaBenchmark {
  private static final long TOKENS = 16384;
  private static final long WIDTH = 2048;

  private CudaBenchmark() {}

  public static void main(String[] args) {
    CudaDevice dev = CudaDevice.first();
    System.out.println("device " + dev);
    // Arguments: the attention repetitions (default 10), "gemm" for the GEMMs alone, "graph" for the cost of a
    // CUDA graph's kernel nodes alone, "power" for the clock and power each kind of kernel holds when sustained,
    // "memory [REPS]" for AdamW's bandwidth against the driver's copy, or "shapes [REPS]" for the attention of the
    // training benchmark's configs at their own shapes.
    if (args.length > 0 && args[0].equals("graph")) {
      graphNodes(dev);
      return;
    }
    if (args.length > 0 && args[0].equals("power")) {
      power(dev);
      return;
    }
    if (args.length > 0 && args[0].equals("memory")) {
      memory(dev, args.length > 1 ? Integer.parseInt(args[1]) : 20);
      return;
    }
    if (args.length > 0 && args[0].equals("shapes")) {
      trainingShapes(dev, args.length > 1 ? Integer.parseInt(args[1]) : 100);
      return;
    }
    boolean gemmOnly = args.length > 0 && args[0].equals("gemm");
    if (!gemmOnly) {
      attention(dev, args.length > 0 ? Integer.parseInt(args[0]) : 10);
    }
    gemm(dev);
  }

  /**
   * What a CUDA graph's kernel node costs beyond its kernel: {@value #GRAPH_NODES} dependent launches of one kernel
   * (the 16-byte fp32 → bf16 cast, one read and one write pass) over a few sizes, each timed three ways with CUDA
   * events: one launch alone (after a wait, so the queue is empty), the launches queued back to back on a stream, and
   * the same launches as one graph replay. A training step is a graph of about 160 nodes; the difference between the
   * last two, per node, is what the graph itself saves or costs, and the first against the last bounds the gap
   * between two nodes. Lines: {@code BENCH graph elements=.. alone_us=.. stream_us=.. graph_us=..} (per launch).
   */
  private static void graphNodes(CudaDevice dev) {
    CudaStream stream = dev.defaultStream();
    KernelLoader.Module ops = dev.kernels().module("device_ops");
    CudaKernel cast = ops.kernel("kiln_cast4_f32_bf16");
    for (long n : new long[] {1024, 1L << 20, 1L << 24}) {
      try (CudaArray src = CudaArray.zeros(dev, DType.F32, n);
          CudaArray dst = CudaArray.empty(dev, DType.BF16, n);
          CudaEvent e0 = new CudaEvent(dev);
          CudaEvent e1 = new CudaEvent(dev)) {
        long blocks = Math.min((n / 4 + 255) / 256, 1L << 20);
        Runnable launches = () -> {
          for (int i = 0; i < GRAPH_NODES; i++) {
            cast.launch(stream, blocks, 1, 256, 0, new KernelArgs().ptr(src).ptr(dst).i64(n / 4));
          }
        };
        double alone = Double.MAX_VALUE;
        for (int i = 0; i < 20; i++) {
          stream.synchronize();
          e0.record(stream);
          cast.launch(stream, blocks, 1, 256, 0, new KernelArgs().ptr(src).ptr(dst).i64(n / 4));
          e1.record(stream);
          alone = Math.min(alone, e1.elapsedMillisSince(e0));
        }
        launches.run(); // warm-up
        e0.record(stream);
        launches.run();
        e1.record(stream);
        double queued = e1.elapsedMillisSince(e0);
        try (CudaGraph graph = CudaGraph.capture(stream, launches)) {
          graph.launch(stream);
          double best = Double.MAX_VALUE;
          for (int r = 0; r < 5; r++) {
            e0.record(stream);
            graph.launch(stream);
            e1.record(stream);
            best = Math.min(best, e1.elapsedMillisSince(e0));
          }
          System.out.printf("BENCH graph elements=%d alone_us=%.2f stream_us=%.2f graph_us=%.2f%n", n, alone * 1e3,
              queued * 1e3 / GRAPH_NODES, best * 1e3 / GRAPH_NODES);
        }
      }
    }
  }

  private static final int GRAPH_NODES = 160;

  /**
   * Fused AdamW's bandwidth against the card's own copy. The peer is the driver's device-to-device copy
   * ({@code cuMemcpyDtoDAsync}) of 2 GiB, which reads and writes each byte once, as AdamW does nearly (14 bytes read
   * and 12 written a parameter). AdamW runs over 2²⁸ parameters with bf16 gradients, the masters in two 16-bit planes
   * (26 bytes a parameter) and in fp32 with a bf16 copy (28). xl's step moves 89 GB through AdamW at about 4 TB/s
   * (docs/cuda.md); the ratio says what is left to win there. The graphed step's launch (device scalars,
   * {@code FusedAdamW.step(Prepared, CudaArray)}) runs. Lines: {@code BENCH memory kind=.. gb=.. ms=.. tbps=..
   * of_copy=..} (gigabytes moved a run, the mean time of {@code reps} runs after two, and the rate as a share of the
   * copy's). Then AdamW's bytes without its arithmetic ({@link #traffic}).
   */
  private static void memory(CudaDevice dev, int reps) {
    CudaStream stream = dev.defaultStream();
    long n = 1L << 28;
    long copyBytes = 1L << 31;
    try (CudaArray src = CudaArray.zeros(dev, DType.U8, copyBytes);
        CudaArray dst = CudaArray.empty(dev, DType.U8, copyBytes)) {
      double copyMs = timeMean(dev, reps, () -> dst.copyFrom(src, stream));
      double copyTbps = 2.0 * copyBytes / (copyMs * 1e9);
      printMemory("copy_dtod", 2 * copyBytes, copyMs, copyTbps);
      for (boolean planes : new boolean[] {true, false}) {
        try (CudaArray param = planes ? CudaArray.empty(dev, DType.F32, n) : CudaArray.zeros(dev, DType.F32, n);
            CudaArray grad = CudaArray.fromHost(dev, uniformBf16(n, 7));
            CudaArray m = CudaArray.zeros(dev, DType.F32, n);
            CudaArray v = CudaArray.zeros(dev, DType.F32, n);
            CudaArray upper = CudaArray.zeros(dev, DType.BF16, n);
            CudaArray lower = planes ? CudaArray.zeros(dev, DType.BF16, n) : null;
            CudaArray hyper = CudaArray.fromHost(dev, NdArray.fromFloats(new float[] {1e-4f, 0.9f, 0.95f, 1e-8f,
                0.1f, 0.1f, 0.05f, 1f, 0f, 0f}, 10))) {
          FusedAdamW opt = new FusedAdamW(dev);
          try (FusedAdamW.Prepared p = opt.prepare(List.of(new FusedAdamW.Param(param, grad, m, v, upper, lower)))) {
            double ms = timeMean(dev, reps, () -> opt.step(p, hyper));
            printMemory(planes ? "adamw_planes" : "adamw_fp32_bf16copy", n * (planes ? 26 : 28), ms, copyTbps);
          }
        }
      }
      traffic(dev, reps, copyTbps);
    }
  }

  /**
   * AdamW's bytes without its arithmetic ({@code bench_memory.cu}), over 2²⁸ parameters: its nine arrays as it
   * streams them ({@code adam_traffic}), the same bytes with m and v interleaved, seven arrays ({@code
   * adam_traffic_mv}), and a 2 GiB copy in the same blocks ({@code copy_kernel}); each as a share of the driver's
   * copy's rate {@code copyTbps}. Whether the number of arrays a kernel streams at once costs the card bandwidth.
   */
  private static void traffic(CudaDevice dev, int reps, double copyTbps) {
    CudaStream stream = dev.defaultStream();
    KernelLoader.Module bench = dev.kernels().module("bench_memory");
    long n = 1L << 28;
    long groups = n / 4;
    long blocks = groups / TRAFFIC_VECTORS_A_BLOCK;
    try (CudaArray grad = CudaArray.zeros(dev, DType.BF16, n); CudaArray hi = CudaArray.zeros(dev, DType.BF16, n);
        CudaArray lo = CudaArray.zeros(dev, DType.BF16, n); CudaArray m = CudaArray.zeros(dev, DType.F32, n);
        CudaArray v = CudaArray.zeros(dev, DType.F32, n)) {
      CudaKernel nine = bench.kernel("kiln_bench_adam_traffic");
      double ms = timeMean(dev, reps, () -> nine.launch(stream, blocks, 1, TRAFFIC_THREADS, 0,
          new KernelArgs().ptr(grad).ptr(hi).ptr(lo).ptr(m).ptr(v).i64(groups)));
      printMemory("adam_traffic", n * 26, ms, copyTbps);
      // m and v as one array of twice the length: the same bytes, read as [m0..3, v0..3] runs.
      CudaKernel seven = bench.kernel("kiln_bench_adam_traffic_mv");
      try (CudaArray mv = CudaArray.zeros(dev, DType.F32, 2 * n)) {
        ms = timeMean(dev, reps, () -> seven.launch(stream, blocks, 1, TRAFFIC_THREADS, 0,
            new KernelArgs().ptr(grad).ptr(hi).ptr(lo).ptr(mv).i64(groups)));
        printMemory("adam_traffic_mv", n * 26, ms, copyTbps);
      }
    }
    long bytes = 1L << 31;
    try (CudaArray src = CudaArray.zeros(dev, DType.U8, bytes); CudaArray dst = CudaArray.empty(dev, DType.U8, bytes)) {
      CudaKernel copy = bench.kernel("kiln_bench_copy16");
      double ms = timeMean(dev, reps, () -> copy.launch(stream, bytes / 16 / TRAFFIC_VECTORS_A_BLOCK, 1,
          TRAFFIC_THREADS, 0,
          new KernelArgs().ptr(src).ptr(dst).i64(bytes / 16)));
      printMemory("copy_kernel", 2 * bytes, ms, copyTbps);
    }
  }

  /** bench_memory.cu's blocks: KILN_BENCH_THREADS threads, KILN_BENCH_U vectors (groups of four) a thread. */
  private static final int TRAFFIC_THREADS = 256;
  private static final int TRAFFIC_VECTORS_A_BLOCK = TRAFFIC_THREADS * 4;

  /** One line of {@link #memory}: what moved {@code bytes} in {@code ms}, its rate and the share of the copy's. */
  private static void printMemory(String kind, long bytes, double ms, double copyTbps) {
    double tbps = bytes / (ms * 1e9);
    System.out.printf("BENCH memory kind=%s gb=%.2f ms=%.4f tbps=%.3f of_copy=%.3f%n", kind, bytes / 1e9, ms, tbps,
        tbps / copyTbps);
  }

  /** The mean time of {@code reps} runs of {@code once} queued back to back, after two for warm-up, in ms. */
  private static double timeMean(CudaDevice dev, int reps, Runnable once) {
    CudaStream stream = dev.defaultStream();
    try (CudaEvent e0 = new CudaEvent(dev); CudaEvent e1 = new CudaEvent(dev)) {
      once.run();
      once.run();
      e0.record(stream);
      for (int i = 0; i < reps; i++) {
        once.run();
      }
      e1.record(stream);
      return e1.elapsedMillisSince(e0) / reps;
    }
  }

  /**
   * The clock and power at which three kinds of kernel run when each runs alone for 2 s, after 0.5 s for the card's
   * power controller to settle: TinyStories' attention (heads of 32 over 256 rows, forward and backward, the
   * whole-head kernels), its LM head's GEMM (32768 × 10000 × 512, bf16) and a memory-bound stream (a 2²⁸-element
   * fp32 → bf16 cast). A training step holds the H200 at its 700 W limit (docs/cuda.md, "Power"); how close each kind
   * comes to the limit on its own tells what a step gains from shortening it: work done at low power costs the step
   * less energy than its time. {@code nvidia-smi} samples the SM clock, the instantaneous power and the clock-event
   * reasons every 50 ms. Lines: {@code BENCH power kind=.. ms=.. sm_mhz=.. of_max=.. watts=.. capped=..} (the mean
   * time an iteration; the clock as a share of the card's maximum; the share of samples the power cap held).
   */
  private static void power(CudaDevice dev) {
    CudaStream stream = dev.defaultStream();
    long numel = TOKENS * WIDTH;
    long d = 32, n = 256, b = TOKENS / n, h = WIDTH / d;
    long m = 32768, cols = 10000, k = 512;
    long stream28 = 1L << 28;
    try (CudaArray q = CudaArray.fromHost(dev, uniformBf16(numel, 1));
        CudaArray kk = CudaArray.fromHost(dev, uniformBf16(numel, 2));
        CudaArray v = CudaArray.fromHost(dev, uniformBf16(numel, 3));
        CudaArray g = CudaArray.fromHost(dev, uniformBf16(numel, 4));
        CudaArray out = CudaArray.empty(dev, DType.BF16, b, h, n, d);
        CudaArray dq = CudaArray.empty(dev, DType.BF16, b, h, n, d);
        CudaArray dk = CudaArray.empty(dev, DType.BF16, b, h, n, d);
        CudaArray dv = CudaArray.empty(dev, DType.BF16, b, h, n, d);
        CudaArray lse = CudaArray.empty(dev, DType.F32, b, h, n);
        CudaArray a = CudaArray.fromHost(dev, uniformBf16(m * k, 5));
        CudaArray w = CudaArray.fromHost(dev, uniformBf16(cols * k, 6));
        CudaArray logits = CudaArray.empty(dev, DType.BF16, m, cols);
        CudaArray src = CudaArray.zeros(dev, DType.F32, stream28);
        CudaArray dst = CudaArray.empty(dev, DType.BF16, stream28);
        Cublas blas = new Cublas(stream, Cublas.GemmApi.LT)) {
      FlashAttention fa = new FlashAttention(stream);
      CudaArray vq = q.view(b, h, n, d), vk = kk.view(b, h, n, d), vv = v.view(b, h, n, d), vg = g.view(b, h, n, d);
      float scale = (float) (1 / Math.sqrt(d));
      CudaArray am = a.view(m, k);
      CudaArray wt = w.view(cols, k).transpose(0, 1);
      CudaKernel cast = dev.kernels().module("device_ops").kernel("kiln_cast4_f32_bf16");
      long blocks = Math.min((stream28 / 4 + 255) / 256, 1L << 20);
      sustain(dev, "attention_d32_n256_fwdbwd", () -> {
        fa.forwardInto(vq, vk, vv, AttentionMask.CAUSAL, scale, out, lse);
        fa.backwardInto(vq, vk, vv, out, lse, vg, AttentionMask.CAUSAL, scale, dq, dk, dv);
      });
      sustain(dev, "gemm_32768x10000x512", () -> blas.matmul(am, wt, logits));
      sustain(dev, "cast_f32_bf16_2^28", () -> cast.launch(stream, blocks, 1, 256, 0,
          new KernelArgs().ptr(src).ptr(dst).i64(stream28 / 4)));
    }
  }

  private static void sustain(CudaDevice dev, String kind, Runnable once) {
    CudaStream stream = dev.defaultStream();
    try (CudaEvent e0 = new CudaEvent(dev); CudaEvent e1 = new CudaEvent(dev)) {
      once.run();
      e0.record(stream);
      once.run();
      e1.record(stream);
      int batch = (int) Math.max(1, Math.ceil(20 / Math.max(1e-3, e1.elapsedMillisSince(e0)))); // about 20 ms
      runFor(stream, once, batch, 500);
      java.nio.file.Path samples = java.nio.file.Files.createTempFile("kiln-power", ".csv");
      Process smi = null;
      try {
        smi = new ProcessBuilder("nvidia-smi",
            "--query-gpu=clocks.sm,clocks.max.sm,power.draw.instant,clocks_event_reasons.active",
            "--format=csv,noheader,nounits", "-lms", "50").redirectErrorStream(true).redirectOutput(samples.toFile())
            .start();
      } catch (java.io.IOException e) {
        System.out.println("(no nvidia-smi: times only) " + e.getMessage());
      }
      e0.record(stream);
      long iterations = runFor(stream, once, batch, 2000);
      e1.record(stream);
      double ms = e1.elapsedMillisSince(e0) / iterations;
      double[] mean = new double[3];
      int count = 0;
      int capped = 0;
      if (smi != null) {
        smi.destroy();
        smi.waitFor();
        for (String line : java.nio.file.Files.readAllLines(samples)) {
          String[] f = line.split(",");
          try {
            for (int i = 0; i < 3; i++) {
              mean[i] += Double.parseDouble(f[i].trim());
            }
            capped += (Long.decode(f[3].trim()) & 0x4) != 0 ? 1 : 0;
            count++;
          } catch (RuntimeException e) {
            // a header, a partial last line or a field the driver does not report: not a sample
          }
        }
      }
      java.nio.file.Files.deleteIfExists(samples);
      if (count == 0) {
        System.out.printf("BENCH power kind=%s ms=%.4f%n", kind, ms);
      } else {
        System.out.printf("BENCH power kind=%s ms=%.4f sm_mhz=%.0f of_max=%.3f watts=%.0f capped=%.2f%n", kind, ms,
            mean[0] / count, mean[0] / mean[1], mean[2] / count, (double) capped / count);
      }
    } catch (java.io.IOException e) {
      throw new java.io.UncheckedIOException(e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while sampling nvidia-smi", e);
    }
  }

  /** Runs {@code once} in batches, waiting for each, until {@code millis} have passed; returns the iterations. */
  private static long runFor(CudaStream stream, Runnable once, int batch, double millis) {
    long start = System.nanoTime();
    long iterations = 0;
    while ((System.nanoTime() - start) / 1e6 < millis) {
      for (int i = 0; i < batch; i++) {
        once.run();
      }
      iterations += batch;
      stream.synchronize();
    }
    return iterations;
  }

  /** Uniform values in [-1, 1) as bf16, filled quickly on the host. */
  private static NdArray uniformBf16(long n, long seed) {
    Storage s = Storage.allocate(n * 2);
    MemorySegment m = s.segment();
    SplittableRandom r = new SplittableRandom(seed);
    for (long i = 0; i < n; i++) {
      float f = (float) (r.nextDouble() * 2 - 1);
      m.set(ValueLayout.JAVA_SHORT_UNALIGNED, i * 2, (short) (Float.floatToRawIntBits(f) >>> 16));
    }
    return NdArray.of(s, DType.BF16, n);
  }

  /**
   * q, k, v and dO (random bf16 of {@code numel} elements), then out, dq, dk, dv (bf16) and lse (fp32, one a row at
   * d = 32): what {@link #time} views at each shape.
   */
  private record AttentionBuffers(CudaArray[] all) implements AutoCloseable {
    static AttentionBuffers of(CudaDevice dev, long numel) {
      CudaArray[] all = new CudaArray[9];
      try {
        for (int i = 0; i < 4; i++) {
          all[i] = CudaArray.fromHost(dev, uniformBf16(numel, i + 1));
        }
        for (int i = 4; i < 8; i++) {
          all[i] = CudaArray.empty(dev, DType.BF16, numel);
        }
        all[8] = CudaArray.empty(dev, DType.F32, numel / 32);
        return new AttentionBuffers(all);
      } catch (RuntimeException | Error e) {
        new AttentionBuffers(all).close();
        throw e;
      }
    }

    @Override
    public void close() {
      for (CudaArray a : all) {
        if (a != null) {
          a.close();
        }
      }
    }
  }

  private static void attention(CudaDevice dev, int reps) {
    CudaStream stream = dev.defaultStream();
    try (AttentionBuffers buffers = AttentionBuffers.of(dev, TOKENS * WIDTH)) {
      CudaArray[] bufs = buffers.all();
      FlashAttention fa = new FlashAttention(stream);
      for (long d : new long[] {64, 128}) {
        for (long n : new long[] {1024, 2048, 4096, 8192, 16384}) {
          double[] t = time(dev, fa, bufs, d, n, reps);
          long b = TOKENS / n, h = WIDTH / d;
          System.out.printf("BENCH attn d=%d n=%d b=%d h=%d fwd_ms=%.4f fwdbwd_ms=%.4f tflops=%.1f%n", d, n, b, h,
              t[0], t[1], 3.5 * causalForwardFlops(b, h, n, d) / (t[1] * 1e-3) / 1e12);
        }
      }
      // Every compiled alternative to the default launch choices, timed in the same run so the default can be
      // re-chosen. d32 and d80 are TinyStories' and xl's head dims.
      FlashAttention.Tuning base = FlashAttention.Tuning.DEFAULT;
      for (int d : new int[] {32, 64, 80, 128}) {
        for (String pass : new String[] {"fwd", "bwd"}) {
          boolean fwd = pass.equals("fwd");
          List<String> options = (fwd ? FlashAttention.Tuning.FORWARD_VARIANTS
              : FlashAttention.Tuning.BACKWARD_VARIANTS).get(d);
          for (String variant : options) {
            if (variant.equals(fwd ? base.forward().get(d) : base.backward().get(d)) && d != 32 && d != 80) {
              continue; // the default of d64 and d128 is timed above
            }
            FlashAttention alt = new FlashAttention(stream,
                fwd ? base.withForward(d, variant) : base.withBackward(d, variant));
            for (long n : new long[] {256, 512, 2048, 16384}) {
              double[] t = time(dev, alt, bufs, d, n, reps);
              System.out.printf("BENCHVAR %s=%s d=%d n=%d fwd_ms=%.4f fwdbwd_ms=%.4f%n", pass, variant, d, n, t[0],
                  t[1]);
            }
          }
        }
      }
    }
  }

  /**
   * {config, batch, heads, n, d} of the training benchmark's attention (`kiln bench train`'s configs), as
   * attention_bench.py's TRAINING_SHAPES: where its step spends its attention time, next to the peer's kernel.
   */
  static final long[][] TRAINING_SHAPES = {{128, 16, 256, 32}, {4, 12, 512, 64}, {4, 16, 512, 64}, {4, 20, 512, 64},
      {4, 32, 512, 80}};
  static final String[] TRAINING_CONFIGS = {"tinystories", "small", "medium", "large", "xl"};

  /**
   * The attention of each {@link #TRAINING_SHAPES} config with the default kernels, causal, bf16: lines {@code BENCH
   * attnshape config=.. d=.. n=.. b=.. h=.. fwd_ms=.. fwdbwd_ms=.. tflops=..}.
   */
  private static void trainingShapes(CudaDevice dev, int reps) {
    long numel = 0;
    for (long[] s : TRAINING_SHAPES) {
      numel = Math.max(numel, s[0] * s[1] * s[2] * s[3]);
    }
    CudaStream stream = dev.defaultStream();
    try (AttentionBuffers buffers = AttentionBuffers.of(dev, numel)) {
      CudaArray[] bufs = buffers.all();
      FlashAttention fa = new FlashAttention(stream);
      for (int i = 0; i < TRAINING_SHAPES.length; i++) {
        long[] s = TRAINING_SHAPES[i];
        double[] t = time(dev, fa, bufs, new long[] {s[0], s[1], s[2], s[3]}, reps);
        System.out.printf("BENCH attnshape config=%s d=%d n=%d b=%d h=%d fwd_ms=%.4f fwdbwd_ms=%.4f tflops=%.1f%n",
            TRAINING_CONFIGS[i], s[3], s[2], s[0], s[1], t[0], t[1],
            3.5 * causalForwardFlops(s[0], s[1], s[2], s[3]) / (t[1] * 1e-3) / 1e12);
      }
    }
  }

  /** Causal: half the score matrix. Forward 2 GEMMs (4 n^2 d); backward 5 (10 n^2 d): 3.5x forward in all. */
  private static double causalForwardFlops(long b, long h, long n, long d) {
    return 4.0 * b * h * n * n * d / 2;
  }

  /** {mean forward ms, mean forward+backward ms} over {@code reps} after two warm-up rounds. */
  private static double[] time(CudaDevice dev, FlashAttention fa, CudaArray[] bufs, long d, long n, int reps) {
    // d = 80 (xl's head dim): 25 heads, the buffers' first 16k x 2000 elements
    return time(dev, fa, bufs, new long[] {TOKENS / n, WIDTH / d, n, d}, reps);
  }

  /** As {@link #time(CudaDevice, FlashAttention, CudaArray[], long, long, int)} at {@code shape} = [b, h, n, d]. */
  private static double[] time(CudaDevice dev, FlashAttention fa, CudaArray[] bufs, long[] shape, int reps) {
    CudaStream stream = dev.defaultStream();
    long b = shape[0], h = shape[1], n = shape[2], d = shape[3];
    CudaArray[] v = new CudaArray[8];
    for (int i = 0; i < v.length; i++) {
      v[i] = bufs[i].narrow(0, 0, b * h * n * d).view(shape);
    }
    CudaArray vq = v[0], vk = v[1], vv = v[2], vg = v[3], vo = v[4], vdq = v[5], vdk = v[6], vdv = v[7];
    CudaArray vl = bufs[8].narrow(0, 0, b * h * n).view(b, h, n);
    float scale = (float) (1 / Math.sqrt(d));
    try (CudaEvent e0 = new CudaEvent(dev);
        CudaEvent e1 = new CudaEvent(dev);
        CudaEvent e2 = new CudaEvent(dev)) {
      for (int i = 0; i < 2; i++) {
        fa.forwardInto(vq, vk, vv, AttentionMask.CAUSAL, scale, vo, vl);
        fa.backwardInto(vq, vk, vv, vo, vl, vg, AttentionMask.CAUSAL, scale, vdq, vdk, vdv);
      }
      e0.record(stream);
      for (int i = 0; i < reps; i++) {
        fa.forwardInto(vq, vk, vv, AttentionMask.CAUSAL, scale, vo, vl);
      }
      e1.record(stream);
      for (int i = 0; i < reps; i++) {
        fa.forwardInto(vq, vk, vv, AttentionMask.CAUSAL, scale, vo, vl);
        fa.backwardInto(vq, vk, vv, vo, vl, vg, AttentionMask.CAUSAL, scale, vdq, vdk, vdv);
      }
      e2.record(stream);
      return new double[] {e1.elapsedMillisSince(e0) / reps, e2.elapsedMillisSince(e1) / reps};
    }
  }

  /**
   * The GEMM shapes timed, {@code {M, N, K}} of {@code C[M, N] = A[M, K] @ B[N, K]ᵀ} (the layout of {@code x @ Wᵀ}):
   * two squares, then the CS336 xl model's FFN up/down projections (2048 tokens, 2560 ↔ 10240) and TinyStories' (32768
   * tokens, 512 ↔ 1344) and its LM head (10000 outputs).
   */
  static final long[][] GEMM_SHAPES = {
      {4096, 4096, 4096}, {8192, 8192, 8192},
      {2048, 10240, 2560}, {2048, 2560, 10240},
      {32768, 1344, 512}, {32768, 512, 1344}, {32768, 512, 512}, {32768, 10000, 512}};

  private static void gemm(CudaDevice dev) {
    CudaStream stream = dev.defaultStream();
    try (Cublas blas = new Cublas(stream, Cublas.GemmApi.LT);
        CudaEvent e0 = new CudaEvent(dev);
        CudaEvent e1 = new CudaEvent(dev)) {
      System.out.println("gemm via " + blas.gemmPath() + ", against cublasGemmEx on the same handle");
      for (long[] shape : GEMM_SHAPES) {
        long m = shape[0], n = shape[1], k = shape[2];
        try (CudaArray flatA = CudaArray.fromHost(dev, uniformBf16(m * k, 5));
            CudaArray flatB = CudaArray.fromHost(dev, uniformBf16(n * k, 6));
            CudaArray c = CudaArray.empty(dev, DType.BF16, m, n);
            CudaArray c32 = CudaArray.empty(dev, DType.F32, m, n)) {
          CudaArray a = flatA.view(m, k);
          CudaArray bt = flatB.view(n, k).transpose(0, 1);
          for (Cublas.GemmApi api : Cublas.GemmApi.values()) {
            blas.setGemmApi(api);
            String name = api.name().toLowerCase(java.util.Locale.ROOT);
            time(blas, a, bt, c, stream, e0, e1, m, n, k, name);
            if (api == Cublas.GemmApi.LT) {
              // The same product written in fp32, as the mixed-precision training step's GEMMs write today: at K = 512
              // the output is as many bytes as both inputs' reads, so its width shows in the time.
              time(blas, a, bt, c32, stream, e0, e1, m, n, k, "lt_f32out");
            }
          }
        }
      }
    }
  }

  private static void time(Cublas blas, CudaArray a, CudaArray b, CudaArray c, CudaStream stream, CudaEvent e0,
      CudaEvent e1, long m, long n, long k, String name) {
    for (int i = 0; i < 3; i++) {
      blas.matmul(a, b, c);
    }
    int reps = 20;
    e0.record(stream);
    for (int i = 0; i < reps; i++) {
      blas.matmul(a, b, c);
    }
    e1.record(stream);
    double ms = e1.elapsedMillisSince(e0) / reps;
    System.out.printf("BENCH gemm shape=%dx%dx%d api=%s ms=%.4f tflops=%.1f%n", m, n, k, name, ms,
        2.0 * m * n * k / (ms * 1e-3) / 1e12);
  }
}
