package dev.kiln.runtime.bench;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.cpu.Simd;
import dev.kiln.runtime.cpu.Softmax;
import dev.kiln.runtime.tensor.NdArray;
import java.io.PrintStream;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.function.Supplier;

/**
 * Memory bandwidth of Kiln's CPU kernels next to a plain memory copy, measured in the same run.
 *
 * <p>Two memory-bound kernels: F32 elementwise {@code add} ({@code 3 * n * 4} bytes moved: two reads, one write) and
 * F32 {@code softmax} along the last dim ({@code 2 * rows * cols * 4} bytes: one read, one write). Each is compared
 * with {@link MemorySegment#copy} moving the same number of bytes (a copy of half as many bytes reads and writes
 * each once), split over the same {@link Parallel} threads and chunks as the kernels so the ratio measures the
 * kernel's efficiency rather than threading. The report gives GB/s (10^9 bytes per second) of each and the kernel
 * as a percentage of the copy.
 *
 * <p>Kernels write into preallocated outputs ({@code binaryInto}, {@code softmaxInto}) and the copy into a
 * preallocated destination: a fresh multi-hundred-MB result would be page-faulted in by the OS on first touch, and
 * that cost (measured here: it cuts the apparent bandwidth several-fold) belongs to the allocator, not the kernel.
 *
 * <p>Each measurement is warmed up ({@code warmup} untimed runs, enough for C2 to compile the loops) and then
 * repeated {@code reps} times; the <b>median</b> is reported, because on a shared machine the best run flatters and
 * the mean is dragged by outliers from other processes.
 *
 * <p>Usage: the {@code kiln bench} command calls {@code BandwidthBenchmark.defaults().run(System.out)}; smaller sizes
 * via the constructor. Memory needed: about {@code 6 * n * 4} bytes for the add part (the defaults: 64M elements,
 * ~1.5 GB off-heap). Run the JVM with {@code --add-modules jdk.incubator.vector} to measure the Vector API path.
 */
public final class BandwidthBenchmark {
  /** One line of the report. */
  public record Result(String kernel, long bytes, double kernelSeconds, double copySeconds) {
    public double kernelGbPerSecond() {
      return bytes / kernelSeconds / 1e9;
    }

    public double copyGbPerSecond() {
      return bytes / copySeconds / 1e9;
    }

    /** Kernel bandwidth as a percentage of the copy's. */
    public double percentOfCopy() {
      return 100 * copySeconds / kernelSeconds;
    }
  }

  private final long addElements;
  private final long softmaxRows;
  private final long softmaxCols;
  private final int warmup;
  private final int reps;

  /**
   * @param addElements elements of each add operand
   * @param softmaxRows rows of the softmax input
   * @param softmaxCols columns (the softmax dim)
   * @param warmup untimed runs before measuring
   * @param reps timed runs; the median is reported
   */
  public BandwidthBenchmark(long addElements, long softmaxRows, long softmaxCols, int warmup, int reps) {
    if (addElements < 1 || softmaxRows < 1 || softmaxCols < 1 || warmup < 0 || reps < 1) {
      throw new IllegalArgumentException("benchmark sizes and reps must be positive, warmup non-negative");
    }
    this.addElements = addElements;
    this.softmaxRows = softmaxRows;
    this.softmaxCols = softmaxCols;
    this.warmup = warmup;
    this.reps = reps;
  }

  /** 64M-element add and a 16384 x 4096 softmax, 3 warm-ups, median of 7. */
  public static BandwidthBenchmark defaults() {
    return new BandwidthBenchmark(64L << 20, 16384, 4096, 3, 7);
  }

  /** Runs both measurements, prints a table to {@code out}, and returns the results. */
  public List<Result> run(PrintStream out) {
    out.printf(Locale.ROOT, "Kiln CPU bandwidth: %d threads, Vector API %s, median of %d after %d warm-ups%n",
        Parallel.threads(), Simd.enabled() ? "on" : "off", reps, warmup);
    List<Result> results = new ArrayList<>();

    NdArray a = NdArray.full(DType.F32, 1.5, addElements);
    NdArray b = NdArray.full(DType.F32, 2.5, addElements);
    long addBytes = 3 * addElements * 4;
    NdArray sum = NdArray.zeros(DType.F32, addElements);
    double addTime = time(() -> Elementwise.binaryInto(Elementwise.Binary.ADD, a, b, sum));
    double addCopy = copyTime(addBytes / 2);
    results.add(new Result("add F32 [" + addElements + "]", addBytes, addTime, addCopy));

    NdArray x = NdArray.full(DType.F32, 0.25, softmaxRows, softmaxCols);
    long smBytes = 2 * softmaxRows * softmaxCols * 4;
    NdArray probs = NdArray.zeros(DType.F32, softmaxRows, softmaxCols);
    double smTime = time(() -> Softmax.softmaxInto(x, -1, false, probs));
    double smCopy = copyTime(smBytes / 2);
    results.add(new Result("softmax F32 [" + softmaxRows + ", " + softmaxCols + "] dim -1", smBytes, smTime, smCopy));

    out.printf(Locale.ROOT, "%-40s %12s %12s %12s %8s%n", "kernel", "MB moved", "kernel GB/s", "copy GB/s",
        "% copy");
    for (Result r : results) {
      out.printf(Locale.ROOT, "%-40s %12.1f %12.2f %12.2f %7.1f%%%n", r.kernel(), r.bytes() / 1e6,
          r.kernelGbPerSecond(), r.copyGbPerSecond(), r.percentOfCopy());
    }
    return results;
  }

  /** Median seconds of {@code op}. */
  private double time(Supplier<NdArray> op) {
    for (int i = 0; i < warmup; i++) {
      op.get();
    }
    double[] t = new double[reps];
    for (int i = 0; i < reps; i++) {
      long t0 = System.nanoTime();
      NdArray r = op.get();
      t[i] = (System.nanoTime() - t0) / 1e9;
      if (r.numel() == 0) {
        throw new IllegalStateException("benchmark op produced nothing");
      }
    }
    return median(t);
  }

  /** Median seconds to copy {@code bytes} between two existing arrays, in chunks across the kernels' threads. */
  private double copyTime(long bytes) {
    NdArray src = NdArray.full(DType.U8, 1, bytes);
    NdArray dst = NdArray.zeros(DType.U8, bytes);
    MemorySegment s = src.segment();
    MemorySegment d = dst.segment();
    long grain = 1L << 17; // 128 KiB per chunk, like the kernels' 32K F32 elements
    Supplier<NdArray> copy = () -> {
      Parallel.forChunks(bytes, grain, bytes, (c, start, end) -> MemorySegment.copy(s, start, d, start, end - start));
      return dst;
    };
    return time(copy);
  }

  private static double median(double[] t) {
    double[] c = t.clone();
    Arrays.sort(c);
    return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
  }

  /** {@code java ... BandwidthBenchmark [addElements rows cols]}: runs with the defaults or the given sizes. */
  public static void main(String[] args) {
    BandwidthBenchmark b = args.length == 3
        ? new BandwidthBenchmark(Long.parseLong(args[0]), Long.parseLong(args[1]), Long.parseLong(args[2]), 3, 7)
        : defaults();
    b.run(System.out);
  }
}
