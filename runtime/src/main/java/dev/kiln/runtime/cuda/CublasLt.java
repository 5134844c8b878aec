package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

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
  private static final int CUBLASLT_ALGO_CAP_TILE_IDS = 6;
  private static final int CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX = 7;
  private static final int CUBLASLT_ALGO_CONFIG_ID = 0;
  private static final int CUBLASLT_ALGO_CONFIG_TILE_ID = 1;
  private static final int CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION = 5;
  private static final int CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID = 8;
  /** {@code cublasLtClusterShape_t}: 1x1x1, 2x1x1, 1x2x1, 2x2x1, 4x1x1, 1x4x1, 4x2x1, 2x4x1. */
  private static final short[] CLUSTER_SHAPES = {2, 3, 5, 6, 4, 8, 7, 9};
  /** {@code sizeof(cublasLtMatmulHeuristicResult_t)}: algo (8 × uint64), workspaceSize, state, wavesCount, 4 ints. */
  private static final long HEURISTIC_RESULT_BYTES = 96;
  static final long ALGO_BYTES = 64;
  private static final long WORKSPACE_OFFSET = 64;
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
  private static final Map<List<Object>, GemmChoices.Choice> CHOSEN = new ConcurrentHashMap<>();
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
  /**
   * {@code KILN_GEMM_SEARCH=1}: timing also takes the quickest of a wide search over the heuristic's kernel family
   * ({@link #search}); with {@code KILN_GEMM_TUNE=sustained} they are ranked at the power limit. Opt-in: it costs each
   * timed problem up to {@link #SEARCH_SCREEN_MS} ms of screening on its first call (keep the choices in a
   * {@code KILN_GEMM_CHOICES} file to pay it once).
   */
  private static final boolean SEARCH = TUNE && "1".equals(System.getenv("KILN_GEMM_SEARCH"));
  static final double SEARCH_SCREEN_MS = 3000;
  static final int SEARCH_KEEP = 8;
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
  /** Whether timing takes the wide search's candidates too ({@link #SEARCH} unless a test says otherwise). */
  private boolean wideSearch = SEARCH;
  /** What the last wide search on this handle found, or null before one. */
  private Search lastSearch;

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

  synchronized void searchWidely(boolean on) {
    wideSearch = on && TUNE;
  }

  /** What the last wide search on this handle found (null before one): the configurations Lt accepted, those timed. */
  synchronized Search lastSearch() {
    return lastSearch;
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
      GemmChoices.Choice chosen = CHOSEN.get(key);
      if (chosen == null) {
        String savedKey = GemmChoices.key(workspace.device().name(), librarySource(), p.toString());
        GemmChoices.Choice saved = SAVED == null ? null : SAVED.get(savedKey);
        if (saved != null && saved.algo() != null && !runnable(plan, saved.algo(), workspace.byteSize())) {
          System.err.println("kiln gemm: the algorithm KILN_GEMM_CHOICES (" + SAVED.file() + ") holds for " + p
              + " does not suit this cuBLASLt; timing the problem again (delete the file's line to drop it)");
          saved = null;
        }
        // Rerunning must leave the result as one run would: so the output may not be its own addend.
        boolean timeable = saved == null && (beta.get(JAVA_FLOAT, 0) == 0f || addend != out)
            && !stream.isCapturing();
        GemmChoices.Choice mine = saved != null ? saved
            : timeable ? tune(p, plan, alpha, beta, first, second, addend, out, workspace, stream)
            : GemmChoices.Choice.of(0);
        GemmChoices.Choice earlier = CHOSEN.putIfAbsent(key, mine);
        chosen = earlier != null ? earlier : mine;
        if (SAVED != null && saved == null && timeable && earlier == null) {
          SAVED.put(savedKey, mine);
        }
      }
      plan.algo = algorithm(plan, chosen);
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
   * into the output is harmless; the caller's run that follows writes the result) and returns the fastest, if it beats
   * the heuristic's first answer by {@value #MIN_GAIN_PERCENT}%, else the first answer. The candidates are the
   * heuristic's, and with {@code KILN_GEMM_SEARCH=1} the quickest of the wide search's ({@link #search}). A candidate
   * that fails to run (a rare heuristic answer that the operands do not suit) is dropped.
   */
  private GemmChoices.Choice tune(Problem p, Plan plan, MemorySegment alpha, MemorySegment beta, long first,
      long second, long addend, long out, CudaArray workspace, CudaStream stream) {
    CudaDevice device = workspace.device();
    List<MemorySegment> candidates = new ArrayList<>(plan.candidates);
    String searched = "";
    if (wideSearch) {
      Search found = search(p, plan, alpha, beta, first, second, addend, out, workspace, stream);
      lastSearch = found;
      candidates.addAll(found.kept());
      searched = String.format("; searched %d configurations, screened %d, kept %d", found.valid(), found.screened(),
          found.kept().size());
    }
    int n = candidates.size();
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
            run(p, plan, candidates.getFirst(), alpha, beta, first, second, addend, out, workspace, stream);
          }
        }
        for (int i = 0; i < n; i++) {
          if (round >= 0 && rounds[i][0] == Double.POSITIVE_INFINITY) {
            continue;
          }
          MemorySegment algo = candidates.get(i);
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
      System.err.println(line.append(searched).append("; chose ").append(chosen).append(" (")
          .append(describe(candidates.get(chosen))).append(")"));
    }
    return chosen < plan.candidates.size() ? GemmChoices.Choice.of(chosen)
        : GemmChoices.Choice.of(candidates.get(chosen).toArray(JAVA_BYTE));
  }

  /** What {@link #search} found: how many configurations passed Lt's check, how many were timed, the quickest. */
  record Search(int valid, int screened, List<MemorySegment> kept) {}

  /**
   * The wide search ({@code KILN_GEMM_SEARCH=1}): the heuristic offers {@value #CANDIDATES} configurations, but its
   * first answer's kernel family takes many more: every tile its capabilities list, every custom option (Lt's kernel
   * variants) and the cluster shapes of {@link #CLUSTER_SHAPES}, each kept where {@code cublasLtMatmulAlgoCheck} accepts
   * it for this problem within the workspace. The tiles the heuristic's answers use come first, then the rest. Each is
   * run once to warm up and {@value #TIMED_RUNS} times timed, until {@link #SEARCH_SCREEN_MS} ms of the card's time
   * are spent, and the {@value #SEARCH_KEEP} quickest join the heuristic's answers in {@link #tune}'s rounds. The
   * other fields (stages, split-K, reduction, swizzle) stay as the heuristic set them: an algorithm made from scratch
   * by {@code cublasLtMatmulAlgoInit} was refused at run time (thirty-first session's probe). Why: at the H200's
   * power limit the LM head's forward GEMM of TinyStories (10000 × 32768 × 512) ran 10% faster sustained with a
   * 160×128 tile and no custom option than with the heuristic's answer (docs/cuda.md, "GEMMs").
   */
  private Search search(Problem p, Plan plan, MemorySegment alpha, MemorySegment beta, long first, long second,
      long addend, long out, CudaArray workspace, CudaStream stream) {
    Api a = api();
    MemorySegment base = plan.candidates.getFirst();
    List<MemorySegment> valid = new ArrayList<>();
    try (Arena local = Arena.ofConfined()) {
      MemorySegment written = local.allocate(JAVA_LONG);
      check((int) a.capGet.invokeExact(base, CUBLASLT_ALGO_CAP_TILE_IDS, MemorySegment.NULL, 0L, written),
          "cublasLtMatmulAlgoCapGetAttribute(TILE_IDS)");
      int count = (int) (written.get(JAVA_LONG, 0) / 4);
      MemorySegment ids = local.allocate(JAVA_INT, Math.max(1, count));
      if (count > 0) {
        check((int) a.capGet.invokeExact(base, CUBLASLT_ALGO_CAP_TILE_IDS, ids, 4L * count, written),
            "cublasLtMatmulAlgoCapGetAttribute(TILE_IDS)");
      }
      MemorySegment customMax = local.allocate(JAVA_INT);
      check((int) a.capGet.invokeExact(base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, customMax, 4L, written),
          "cublasLtMatmulAlgoCapGetAttribute(CUSTOM_OPTION_MAX)");
      // The heuristic's own tiles first: the screen's time may run out before the rest.
      java.util.LinkedHashSet<Integer> tiles = new java.util.LinkedHashSet<>();
      for (MemorySegment c : plan.candidates) {
        tiles.add(config(c, CUBLASLT_ALGO_CONFIG_TILE_ID));
      }
      for (int i = 0; i < count; i++) {
        tiles.add(ids.getAtIndex(JAVA_INT, i));
      }
      MemorySegment result = local.allocate(HEURISTIC_RESULT_BYTES, 8);
      MemorySegment value = local.allocate(JAVA_INT);
      for (int tile : tiles) {
        for (int custom = 0; custom <= customMax.get(JAVA_INT, 0); custom++) {
          for (short cluster : CLUSTER_SHAPES) {
            MemorySegment algo = local.allocate(ALGO_BYTES, 8).copyFrom(base);
            value.set(JAVA_INT, 0, tile);
            int rc = (int) a.configSet.invokeExact(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, value, 4L);
            value.set(JAVA_INT, 0, custom);
            rc |= (int) a.configSet.invokeExact(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, value, 4L);
            value.set(JAVA_SHORT, 0, cluster); // a uint16_t attribute
            rc |= (int) a.configSet.invokeExact(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, value, 2L);
            if (rc != 0 || (int) a.algoCheck.invokeExact(handle, plan.desc, plan.first, plan.second, plan.c, plan.c,
                algo, result) != 0 || result.get(JAVA_LONG, WORKSPACE_OFFSET) > workspace.byteSize()
                || plan.candidates.stream().anyMatch(c -> c.mismatch(algo) < 0)) {
              continue;
            }
            valid.add(algo);
          }
        }
      }
      // Screen them on the card, within the time allowed.
      double[] ms = new double[valid.size()];
      Arrays.fill(ms, Double.POSITIVE_INFINITY);
      double spent = 0;
      int screened = 0;
      try (CudaEvent start = new CudaEvent(workspace.device()); CudaEvent end = new CudaEvent(workspace.device())) {
        for (int i = 0; i < valid.size() && spent < SEARCH_SCREEN_MS; i++, screened++) {
          try {
            start.record(stream);
            run(p, plan, valid.get(i), alpha, beta, first, second, addend, out, workspace, stream);
            end.record(stream);
            double warmUp = end.elapsedMillisSince(start);
            start.record(stream);
            for (int r = 0; r < TIMED_RUNS; r++) {
              run(p, plan, valid.get(i), alpha, beta, first, second, addend, out, workspace, stream);
            }
            end.record(stream);
            double timed = end.elapsedMillisSince(start);
            ms[i] = timed / TIMED_RUNS;
            spent += warmUp + timed;
          } catch (CudaException e) {
            ms[i] = Double.POSITIVE_INFINITY; // Lt accepted it, the run refused it: not a candidate
          }
        }
      }
      Integer[] order = new Integer[valid.size()];
      Arrays.setAll(order, i -> i);
      Arrays.sort(order, (x, y) -> Double.compare(ms[x], ms[y]));
      List<MemorySegment> kept = new ArrayList<>();
      for (int i = 0; i < order.length && kept.size() < SEARCH_KEEP && ms[order[i]] < Double.POSITIVE_INFINITY; i++) {
        kept.add(arena.allocate(ALGO_BYTES, 8).copyFrom(valid.get(order[i])));
      }
      return new Search(valid.size(), screened, List.copyOf(kept));
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed (" + describe(p) + ")", t);
    }
  }

  /** The algorithm a choice names for {@code plan}: a heuristic answer by index (the first past the end), or bytes. */
  private MemorySegment algorithm(Plan plan, GemmChoices.Choice choice) {
    if (choice.algo() == null) {
      return plan.candidates.get(choice.index() < plan.candidates.size() ? choice.index() : 0);
    }
    return arena.allocate(ALGO_BYTES, 8).copyFrom(MemorySegment.ofArray(choice.algo()));
  }

  /** Whether Lt accepts {@code algo} for {@code plan}'s problem within the workspace. */
  private boolean runnable(Plan plan, byte[] algo, long workspaceBytes) {
    try (Arena local = Arena.ofConfined()) {
      MemorySegment a = local.allocate(ALGO_BYTES, 8).copyFrom(MemorySegment.ofArray(algo));
      MemorySegment result = local.allocate(HEURISTIC_RESULT_BYTES, 8);
      return (int) api().algoCheck.invokeExact(handle, plan.desc, plan.first, plan.second, plan.c, plan.c, a, result)
          == 0 && result.get(JAVA_LONG, WORKSPACE_OFFSET) <= workspaceBytes;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed (cublasLtMatmulAlgoCheck)", t);
    }
  }

  /** One 32-bit field of an algorithm's configuration (0 where Lt does not say). */
  private static int config(MemorySegment algo, int attribute) {
    try (Arena local = Arena.ofConfined()) {
      MemorySegment v = local.allocate(JAVA_INT);
      MemorySegment written = local.allocate(JAVA_LONG);
      int rc = (int) api().configGet.invokeExact(algo, attribute, v, attribute == CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID
          ? 2L : 4L, written);
      return rc != 0 ? 0 : attribute == CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID ? v.get(JAVA_SHORT, 0) : v.get(JAVA_INT, 0);
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLASLt call failed (cublasLtMatmulAlgoConfigGetAttribute)", t);
    }
  }

  /** An algorithm's kernel family, tile, custom option and cluster shape, as Lt's enums number them (for the log). */
  private static String describe(MemorySegment algo) {
    return "id " + config(algo, CUBLASLT_ALGO_CONFIG_ID) + ", tile " + config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID)
        + ", custom " + config(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION) + ", cluster "
        + config(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID);
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
    final MethodHandle capGet;
    final MethodHandle configSet;
    final MethodHandle configGet;
    final MethodHandle algoCheck;

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
      capGet = find(linker, l, "cublasLtMatmulAlgoCapGetAttribute",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS));
      configSet = find(linker, l, "cublasLtMatmulAlgoConfigSetAttribute", setAttribute);
      configGet = find(linker, l, "cublasLtMatmulAlgoConfigGetAttribute",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS));
      algoCheck = find(linker, l, "cublasLtMatmulAlgoCheck",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
    }

    private static MethodHandle find(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
      MemorySegment sym = l.find(name).orElseThrow(
          () -> new IllegalStateException("cuBLASLt library has no symbol " + name + "; is it cuBLAS 12 or 13?"));
      return linker.downcallHandle(sym, fd);
    }
  }
}
