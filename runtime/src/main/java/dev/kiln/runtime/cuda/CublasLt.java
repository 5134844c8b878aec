package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * cuBLASLt through the FFM API: the path {@link Cublas} takes for its GEMMs unless {@code KILN_GEMM_API=gemmex}.
 *
 * <p>Why it and not {@code cublasGemmEx}: Lt's heuristic is asked once per problem (shapes, layouts, types, pointer
 * alignment) with a workspace to offer, for its best {@value #CANDIDATES} algorithms, and the first time a problem is
 * seen they are <em>timed</em> on the call's own operands and the fastest is kept. The heuristic's first answer alone
 * was 1.5× slower than {@code cublasGemmEx} on TinyStories' FFN down-projection (32768×512×1344) on an H200, and
 * {@code cublasGemmEx} itself 1.14× slower than PyTorch there; timing the candidates removes both. The descriptors
 * and the chosen algorithm are kept per problem, so a training step pays the search once per GEMM shape, on its first
 * step. Lt never allocates: its scratch is the caller's workspace, so its GEMMs may be captured into CUDA graphs.
 *
 * <p>The process's first call of a problem decides its algorithm for every handle and every later call. Timing needs
 * the output free to overwrite and the host free to wait, so a first call that accumulates into its own output
 * ({@code beta != 0}; an addend apart from the output is fine) or is
 * being captured into a graph takes the heuristic's first answer untimed; problems under {@link #MIN_TUNED_MACS}
 * multiply-adds are never timed. A candidate replaces the heuristic's first answer only when it is at least
 * {@value #MIN_GAIN_PERCENT}% faster, so near-ties keep the heuristic's answer. Two processes can still choose differently
 * where a candidate's gain sits near that margin, and then round differently in the last bits; {@code KILN_GEMM_TUNE=0}
 * turns timing off for runs that must repeat bit for bit.
 *
 * <p>A problem for which the heuristic finds no kernel is remembered as such and {@link #matmul} returns false; the
 * caller then runs it through {@code cublasGemmEx}.
 *
 * <p>Not thread-safe beyond its own lock: one handle serves one stream (its {@link Cublas}).
 *
 * <p>The library is {@code libcublasLt} of cuBLAS's own version (it is cuBLAS's dependency, so it is already loaded
 * beside it); {@code KILN_CUBLASLT=/path/to/libcublasLt.so} overrides the search.
 */
final class CublasLt implements AutoCloseable {
  private static final int CUBLAS_STATUS_NOT_SUPPORTED = 15;
  private static final int CUBLASLT_MATMUL_DESC_TRANSA = 3;
  private static final int CUBLASLT_MATMUL_DESC_TRANSB = 4;
  private static final int CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5;
  private static final int CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6;
  private static final int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
  private static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;
  private static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
  private static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
  private static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;
  /** {@code sizeof(cublasLtMatmulHeuristicResult_t)}: algo (8 × uint64), workspaceSize, state, wavesCount, 4 ints. */
  private static final long HEURISTIC_RESULT_BYTES = 96;
  private static final long ALGO_BYTES = 64;
  private static final long STATE_OFFSET = 72;
  /** The largest alignment the heuristic is told about; the allocator's blocks are 256-byte aligned. */
  private static final int MAX_ALIGNMENT = 256;
  /** How many algorithms the heuristic is asked for, and timed. */
  static final int CANDIDATES = 8;
  /** How much faster than the heuristic's first answer a candidate must be to replace it. */
  static final int MIN_GAIN_PERCENT = 5;
  /**
   * Problems smaller than this many multiply-adds are not timed: they take a few microseconds whatever the kernel, so
   * their timings are launch noise, and a choice made on noise would differ from handle to handle.
   */
  static final long MIN_TUNED_MACS = 1L << 30;
  /**
   * The timed choice per device and problem, shared by every handle of the process: two engines (eager and graphed,
   * say) run the same kernel on the same problem and so round alike.
   */
  private static final Map<List<Object>, Integer> CHOSEN = new ConcurrentHashMap<>();
  /** Runs of one candidate timed together, in each of {@link #TIMING_ROUNDS} rounds. */
  private static final int TIMED_RUNS = 2;
  /**
   * Rounds of timing: each times every candidate once, in turn, and a candidate's time is its median over the rounds.
   * One pass of three runs a candidate, candidates one after the other, chose differently from call to call on 13 of
   * the four training benchmarks' 48 problems (sixteenth session), once a kernel 27% slower in TinyStories' step
   * (32768×512×512, the projections' input gradients: 33 µs against 26 under ncu). A candidate timed alone at a bad moment (clocks ramping, another
   * process on the card) can lose; interleaved rounds share such moments among all candidates, and the median drops
   * them.
   */
  private static final int TIMING_ROUNDS = 5;
  private static final boolean TUNE = !"0".equals(System.getenv("KILN_GEMM_TUNE"));
  /**
   * {@code KILN_GEMM_TUNE=sustained}: the candidates are timed as a training step runs them, on a card held at its power
   * limit. The heuristic's first answer first runs back to back for {@link #HEAT_MS} ms, so the card reaches the
   * limit, and then each candidate runs back to back for about {@link #SUSTAINED_MS} ms in each round. At the
   * limit a sustained step's clock is set by the power it draws (docs/cuda.md, "Power"), so a kernel that is faster
   * at the boost clock but draws more power can lose to one that moves less data per multiply-add. The default
   * timing, two runs a round, measures them near the boost clock. Opt-in, for comparing the two choices (each
   * process with its own {@code KILN_GEMM_CHOICES} file).
   */
  private static final boolean SUSTAINED = "sustained".equals(System.getenv("KILN_GEMM_TUNE"));
  static final double HEAT_MS = 200;
  static final double SUSTAINED_MS = 20;
  /** At most this many runs a candidate a round in sustained timing: past it a problem's runs are launch-bound anyway. */
  private static final int MAX_SUSTAINED_RUNS = 4096;
  /** {@code KILN_GEMM_LOG=1}: each timing prints its problem, every candidate's time and the choice to stderr. */
  private static final boolean LOG = "1".equals(System.getenv("KILN_GEMM_LOG"));
  /**
   * {@code KILN_GEMM_CHOICES=<file>}: choices are read from the file before any timing and each new one is written
   * back, so a second process (a profiler's run, a rerun that must round alike) takes the first one's kernels.
   */
  private static final GemmChoices SAVED = GemmChoices.fromEnvironment();

  private static volatile Api api;

  /**
   * One GEMM problem as cuBLAS's column-major call sees it ({@link GemmPlan}'s fields, with the leading dimensions
   * already raised to cuBLAS's minimums), its types, and the alignment in bytes of each pointer: an algorithm chosen
   * for 256-byte aligned operands may not run on a view that starts mid-row. {@code separateAddend}: the output is
   * the sum of the product and an addend apart from it (a residual add in the epilogue, {@code Cublas.gemmAdding}).
   * That epilogue reads as many bytes again as it writes, which moves the kernels' times: TinyStories' FFN input
   * gradient (32768×512×1344, fp32 out) ran in 64 µs plain and 78 with the addend on one kernel, 72 and 118 on
   * another, so a choice timed on the plain call (the first of the pair) could cost the adding one 40 µs. It is
   * timed on its own calls.
   */
  record Problem(int opFirst, int opSecond, int m, int n, int k, long ldFirst, long ldSecond, long ldc,
      long strideFirst, long strideSecond, long strideC, int batch, int inType, int outType, int compute,
      int alignFirst, int alignSecond, int alignC, boolean separateAddend) {}

  /**
   * The descriptors and algorithms kept for one {@link Problem}: {@code candidates} in the heuristic's order (empty
   * where no kernel was found), {@code algo} the one in use, {@code tuned} once the candidates have been timed.
   */
  private static final class Plan {
    final MemorySegment desc;
    final MemorySegment first;
    final MemorySegment second;
    final MemorySegment c;
    final List<MemorySegment> candidates;
    MemorySegment algo;
    boolean tuned;

    Plan(MemorySegment desc, MemorySegment first, MemorySegment second, MemorySegment c,
        List<MemorySegment> candidates) {
      this.desc = desc;
      this.first = first;
      this.second = second;
      this.c = c;
      this.candidates = candidates;
      this.algo = candidates.isEmpty() ? null : candidates.getFirst();
      this.tuned = candidates.size() < 2 || !TUNE;
    }

    /** Whether the problem is big enough for its timings to tell kernels apart. */
    static boolean worthTiming(Problem p) {
      return (double) p.m() * p.n() * p.k() * p.batch() >= MIN_TUNED_MACS;
    }
  }

  private final MemorySegment handle;
  private final Arena arena = Arena.ofShared();
  private final Map<Problem, Plan> plans = new HashMap<>();
  private boolean closed;

  CublasLt() {
    Api a = api();
    try (Arena local = Arena.ofConfined()) {
      MemorySegment out = local.allocate(ADDRESS);
      check((int) a.create.invokeExact(out), "cublasLtCreate");
      handle = out.get(ADDRESS, 0);
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed", t);
    }
  }

  /** Where the cuBLASLt library was found, loading it if needed. */
  static String librarySource() {
    return api().source;
  }

  /** Alignment in bytes of a device address, as the heuristic's preference takes it: a power of two up to 256. */
  static int alignment(long address) {
    return address == 0 ? MAX_ALIGNMENT : (int) Math.min(MAX_ALIGNMENT, Long.lowestOneBit(address));
  }

  /**
   * Queues {@code out = alpha * op(first) op(second) + beta * addend} on {@code stream}, scalars read from host memory
   * at the call; {@code addend} is laid out as {@code out} and may be {@code out} itself. Returns false, queuing
   * nothing, where the heuristic found no kernel for {@code p}.
   */
  synchronized boolean matmul(Problem p, MemorySegment alpha, MemorySegment beta, long first, long second,
      long addend, long out, CudaArray workspace, CudaStream stream) {
    if (closed) {
      throw new IllegalStateException("cuBLASLt handle used after close()");
    }
    Plan plan = plans.get(p);
    if (plan == null) {
      plan = plan(p, workspace.byteSize());
      plans.put(p, plan);
    }
    if (plan.algo == null) {
      return false;
    }
    if (!plan.tuned) {
      // The process's first call of a problem decides its algorithm for good: timed where that call allows it, the
      // heuristic's first answer where not. Eager steps and graph replays of one problem then run the same kernel.
      List<Object> key = List.of(workspace.device(), p);
      Integer chosen = CHOSEN.get(key);
      if (chosen == null) {
        String savedKey = GemmChoices.key(workspace.device().name(), librarySource(), p.toString());
        Integer saved = SAVED == null ? null : SAVED.get(savedKey);
        // Rerunning must leave the result as one run would: so the output may not be its own addend.
        boolean timeable = saved == null && (beta.get(JAVA_FLOAT, 0) == 0f || addend != out)
            && !stream.isCapturing();
        int mine = saved != null ? saved
            : timeable ? tune(p, plan, alpha, beta, first, second, addend, out, workspace, stream) : 0;
        Integer earlier = CHOSEN.putIfAbsent(key, mine);
        chosen = earlier != null ? earlier : mine;
        if (SAVED != null && saved == null && timeable && earlier == null) {
          SAVED.put(savedKey, mine);
        }
      }
      plan.algo = plan.candidates.get(chosen < plan.candidates.size() ? chosen : 0);
      plan.tuned = true;
    }
    run(p, plan, plan.algo, alpha, beta, first, second, addend, out, workspace, stream);
    return true;
  }

  private void run(Problem p, Plan plan, MemorySegment algo, MemorySegment alpha, MemorySegment beta, long first,
      long second, long addend, long out, CudaArray workspace, CudaStream stream) {
    MemorySegment d = MemorySegment.ofAddress(out);
    try {
      check((int) api().matmul.invokeExact(handle, plan.desc, alpha, MemorySegment.ofAddress(first), plan.first,
          MemorySegment.ofAddress(second), plan.second, beta, MemorySegment.ofAddress(addend), plan.c, d, plan.c, algo,
          MemorySegment.ofAddress(workspace.address()), workspace.byteSize(),
          MemorySegment.ofAddress(stream.rawHandle())), "cublasLtMatmul(" + describe(p) + ")");
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed", t);
    }
  }

  /**
   * Times each candidate on the call's operands ({@code beta = 0}, or an addend apart from the output, so rerunning
   * into the output is harmless; the
   * caller's run that follows writes the result) and returns the index of the fastest, if it beats the heuristic's
   * first answer by {@value #MIN_GAIN_PERCENT}%, else 0. A candidate that fails to run (a rare heuristic answer that
   * the operands do not suit) is dropped.
   */
  private int tune(Problem p, Plan plan, MemorySegment alpha, MemorySegment beta, long first, long second,
      long addend, long out, CudaArray workspace, CudaStream stream) {
    CudaDevice device = workspace.device();
    int n = plan.candidates.size();
    double[][] rounds = new double[n][TIMING_ROUNDS]; // ms a run
    double[] warm = new double[n]; // the warm-up's single run, ms: sustained timing's estimate of a run
    int[] runs = new int[n];
    Arrays.fill(runs, TIMED_RUNS);
    try (CudaEvent start = new CudaEvent(device); CudaEvent end = new CudaEvent(device)) {
      for (int round = -1; round < TIMING_ROUNDS; round++) { // round -1 warms every candidate up
        if (round == 0 && SUSTAINED) {
          // Bring the card to its power limit before the first timed round.
          int heat = (int) Math.min(64 * MAX_SUSTAINED_RUNS, Math.ceil(HEAT_MS / Math.max(warm[0], 1e-3)));
          for (int r = 0; r < heat; r++) {
            run(p, plan, plan.candidates.get(0), alpha, beta, first, second, addend, out, workspace, stream);
          }
        }
        for (int i = 0; i < n; i++) {
          if (round >= 0 && rounds[i][0] == Double.POSITIVE_INFINITY) {
            continue;
          }
          MemorySegment algo = plan.candidates.get(i);
          int count = round < 0 ? 1 : runs[i];
          try {
            start.record(stream);
            for (int r = 0; r < count; r++) {
              run(p, plan, algo, alpha, beta, first, second, addend, out, workspace, stream);
            }
            end.record(stream);
            double perRun = end.elapsedMillisSince(start) / (double) count;
            if (round >= 0) {
              rounds[i][round] = perRun;
            } else {
              warm[i] = perRun;
              if (SUSTAINED) {
                runs[i] = (int) Math.max(TIMED_RUNS, Math.min(MAX_SUSTAINED_RUNS,
                    Math.ceil(SUSTAINED_MS / Math.max(perRun, 1e-3))));
              }
            }
          } catch (CudaException e) {
            if (i == 0) {
              throw e;
            }
            Arrays.fill(rounds[i], Double.POSITIVE_INFINITY);
          }
        }
      }
    }
    double[] ms = new double[n];
    for (int i = 0; i < n; i++) {
      double[] sorted = rounds[i].clone();
      Arrays.sort(sorted);
      ms[i] = sorted[TIMING_ROUNDS / 2];
    }
    int best = 0;
    for (int i = 1; i < ms.length; i++) {
      if (ms[i] < ms[best]) {
        best = i;
      }
    }
    int chosen = ms[best] <= ms[0] * (1 - MIN_GAIN_PERCENT / 100.0) ? best : 0;
    if (LOG) {
      StringBuilder line = new StringBuilder("kiln gemm ").append(p).append(SUSTAINED ? ": µs per run, sustained"
          : ": µs per run");
      for (double t : ms) {
        line.append(String.format(" %.1f", t * 1000));
      }
      System.err.println(line.append("; chose ").append(chosen));
    }
    return chosen;
  }

  /**
   * Builds the descriptors for {@code p} and asks the heuristic for its best algorithms within the workspace; on a
   * failure, destroys what it created.
   */
  private Plan plan(Problem p, long workspaceBytes) {
    Api a = api();
    String what = describe(p);
    MemorySegment desc = null;
    List<MemorySegment> layouts = new ArrayList<>();
    boolean kept = false;
    try (Arena local = Arena.ofConfined()) {
      MemorySegment out = local.allocate(ADDRESS);
      check((int) a.descCreate.invokeExact(out, p.compute(), Cublas.CUDA_R_32F), "cublasLtMatmulDescCreate");
      desc = out.get(ADDRESS, 0);
      setInt(a.descSet, desc, CUBLASLT_MATMUL_DESC_TRANSA, p.opFirst(), local, "TRANSA");
      setInt(a.descSet, desc, CUBLASLT_MATMUL_DESC_TRANSB, p.opSecond(), local, "TRANSB");
      // Stored shapes: an op-N first operand is m×k, an op-T one k×m (column-major), likewise for the second.
      MemorySegment first = layout(p.inType(), p.opFirst() == 0 ? p.m() : p.k(), p.opFirst() == 0 ? p.k() : p.m(),
          p.ldFirst(), p.batch(), p.strideFirst(), local, layouts);
      MemorySegment second = layout(p.inType(), p.opSecond() == 0 ? p.k() : p.n(),
          p.opSecond() == 0 ? p.n() : p.k(), p.ldSecond(), p.batch(), p.strideSecond(), local, layouts);
      MemorySegment c = layout(p.outType(), p.m(), p.n(), p.ldc(), p.batch(), p.strideC(), local, layouts);
      Plan plan = new Plan(desc, first, second, c, candidates(p, desc, first, second, c, workspaceBytes, local));
      plan.tuned |= !Plan.worthTiming(p);
      kept = true;
      return plan;
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed (" + what + ")", t);
    } finally {
      if (!kept) {
        layouts.forEach(l -> destroy(a.layoutDestroy, l, "cublasLtMatrixLayoutDestroy"));
        if (desc != null) {
          destroy(a.descDestroy, desc, "cublasLtMatmulDescDestroy");
        }
      }
    }
  }

  /** The heuristic's best {@link #CANDIDATES} algorithms for the problem (none where it has no kernel). */
  private List<MemorySegment> candidates(Problem p, MemorySegment desc, MemorySegment first, MemorySegment second,
      MemorySegment c, long workspaceBytes, Arena local) throws Throwable {
    Api a = api();
    MemorySegment out = local.allocate(ADDRESS);
    check((int) a.prefCreate.invokeExact(out), "cublasLtMatmulPreferenceCreate");
    MemorySegment pref = out.get(ADDRESS, 0);
    try {
      MemorySegment ws = local.allocate(JAVA_LONG);
      ws.set(JAVA_LONG, 0, workspaceBytes);
      check((int) a.prefSet.invokeExact(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, ws, 8L),
          "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
      setInt(a.prefSet, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.alignFirst(), local, "ALIGNMENT_A");
      setInt(a.prefSet, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.alignSecond(), local, "ALIGNMENT_B");
      setInt(a.prefSet, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.alignC(), local, "ALIGNMENT_C");
      setInt(a.prefSet, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.alignC(), local, "ALIGNMENT_D");
      MemorySegment results = local.allocate(HEURISTIC_RESULT_BYTES * CANDIDATES, 8);
      MemorySegment count = local.allocate(JAVA_INT);
      int rc = (int) a.heuristic.invokeExact(handle, desc, first, second, c, c, pref, CANDIDATES, results, count);
      if (rc != 0 && rc != CUBLAS_STATUS_NOT_SUPPORTED) {
        check(rc, "cublasLtMatmulAlgoGetHeuristic(" + describe(p) + ")");
      }
      List<MemorySegment> candidates = new ArrayList<>();
      for (int i = 0; rc == 0 && i < count.get(JAVA_INT, 0); i++) {
        MemorySegment result = results.asSlice(i * HEURISTIC_RESULT_BYTES, HEURISTIC_RESULT_BYTES);
        if (result.get(JAVA_INT, STATE_OFFSET) == 0) {
          MemorySegment algo = arena.allocate(ALGO_BYTES, 8);
          algo.copyFrom(result.asSlice(0, ALGO_BYTES));
          candidates.add(algo);
        }
      }
      return List.copyOf(candidates);
    } finally {
      check((int) a.prefDestroy.invokeExact(pref), "cublasLtMatmulPreferenceDestroy");
    }
  }

  /** A column-major layout, added to {@code created} as soon as it exists (so a failure can destroy it). */
  private MemorySegment layout(int type, long rows, long cols, long ld, int batch, long stride, Arena local,
      List<MemorySegment> created) throws Throwable {
    Api a = api();
    MemorySegment out = local.allocate(ADDRESS);
    check((int) a.layoutCreate.invokeExact(out, type, rows, cols, ld), "cublasLtMatrixLayoutCreate(" + rows + "x"
        + cols + ", ld " + ld + ")");
    MemorySegment layout = out.get(ADDRESS, 0);
    created.add(layout);
    if (batch > 1) {
      setInt(a.layoutSet, layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, batch, local, "BATCH_COUNT");
      MemorySegment s = local.allocate(JAVA_LONG);
      s.set(JAVA_LONG, 0, stride);
      check((int) a.layoutSet.invokeExact(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, s, 8L),
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
    }
    return layout;
  }

  /** Sets a 32-bit attribute through one of Lt's {@code *SetAttribute(object, attr, buf, size)} functions. */
  private static void setInt(MethodHandle setter, MemorySegment object, int attr, int value, Arena local, String name)
      throws Throwable {
    MemorySegment v = local.allocate(JAVA_INT);
    v.set(JAVA_INT, 0, value);
    check((int) setter.invokeExact(object, attr, v, 4L), "cuBLASLt SetAttribute(" + name + " = " + value + ")");
  }

  private static String describe(Problem p) {
    return "m=" + p.m() + ", n=" + p.n() + ", k=" + p.k() + (p.batch() > 1 ? ", batch=" + p.batch() : "");
  }

  /** cuBLASLt's statuses are cuBLAS's {@code cublasStatus_t}: one check, with cuBLAS's text for them. */
  private static void check(int status, String call) {
    Cublas.check(status, call);
  }

  @Override
  public synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    Api a = api();
    List<Throwable> failures = new ArrayList<>();
    try {
      for (Plan p : plans.values()) {
        for (MemorySegment layout : new MemorySegment[] {p.first, p.second, p.c}) {
          failures.addAll(destroy(a.layoutDestroy, layout, "cublasLtMatrixLayoutDestroy"));
        }
        failures.addAll(destroy(a.descDestroy, p.desc, "cublasLtMatmulDescDestroy"));
      }
      failures.addAll(destroy(a.destroy, handle, "cublasLtDestroy"));
    } finally {
      plans.clear();
      arena.close();
    }
    if (!failures.isEmpty()) {
      RuntimeException e = failures.getFirst() instanceof RuntimeException r ? r
          : new IllegalStateException("cuBLASLt call failed", failures.getFirst());
      throw e;
    }
  }

  private static List<Throwable> destroy(MethodHandle destroyer, MemorySegment object, String call) {
    try {
      check((int) destroyer.invokeExact(object), call);
      return List.of();
    } catch (Throwable t) {
      return List.of(t);
    }
  }

  private static Api api() {
    Api a = api;
    if (a == null) {
      synchronized (CublasLt.class) {
        if (api == null) {
          api = new Api(NativeLibrary.load("cuBLASLt", "KILN_CUBLASLT", names()));
        }
        a = api;
      }
    }
    return a;
  }

  /** Lt of cuBLAS's own version first (the same folder when cuBLAS came from a file), then the usual sonames. */
  private static List<String> names() {
    List<String> names = new ArrayList<>();
    String cublas = Cublas.librarySource();
    int at = cublas.lastIndexOf("libcublas.so");
    if (at >= 0) {
      names.add(cublas.substring(0, at) + "libcublasLt.so" + cublas.substring(at + "libcublas.so".length()));
    }
    for (String n : List.of("libcublasLt.so.13", "libcublasLt.so.12")) {
      if (!names.contains(n)) {
        names.add(n);
      }
    }
    return names;
  }

  private static final class Api {
    final String source;
    final MethodHandle create;
    final MethodHandle destroy;
    final MethodHandle descCreate;
    final MethodHandle descSet;
    final MethodHandle descDestroy;
    final MethodHandle layoutCreate;
    final MethodHandle layoutSet;
    final MethodHandle layoutDestroy;
    final MethodHandle prefCreate;
    final MethodHandle prefSet;
    final MethodHandle prefDestroy;
    final MethodHandle heuristic;
    final MethodHandle matmul;

    Api(NativeLibrary.Loaded lib) {
      this.source = lib.source();
      SymbolLookup l = lib.lookup();
      Linker linker = Linker.nativeLinker();
      FunctionDescriptor onePointer = FunctionDescriptor.of(JAVA_INT, ADDRESS);
      FunctionDescriptor setAttribute = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG);
      create = find(linker, l, "cublasLtCreate", onePointer);
      destroy = find(linker, l, "cublasLtDestroy", onePointer);
      descCreate = find(linker, l, "cublasLtMatmulDescCreate",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
      descSet = find(linker, l, "cublasLtMatmulDescSetAttribute", setAttribute);
      descDestroy = find(linker, l, "cublasLtMatmulDescDestroy", onePointer);
      layoutCreate = find(linker, l, "cublasLtMatrixLayoutCreate",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG));
      layoutSet = find(linker, l, "cublasLtMatrixLayoutSetAttribute", setAttribute);
      layoutDestroy = find(linker, l, "cublasLtMatrixLayoutDestroy", onePointer);
      prefCreate = find(linker, l, "cublasLtMatmulPreferenceCreate", onePointer);
      prefSet = find(linker, l, "cublasLtMatmulPreferenceSetAttribute", setAttribute);
      prefDestroy = find(linker, l, "cublasLtMatmulPreferenceDestroy", onePointer);
      heuristic = find(linker, l, "cublasLtMatmulAlgoGetHeuristic", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS,
          ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS));
      matmul = find(linker, l, "cublasLtMatmul", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS,
          ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG,
          ADDRESS));
    }

    private static MethodHandle find(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
      MemorySegment sym = l.find(name).orElseThrow(
          () -> new IllegalStateException("cuBLASLt library has no symbol " + name + "; is it cuBLAS 12 or 13?"));
      return linker.downcallHandle(sym, fd);
    }
  }
}
