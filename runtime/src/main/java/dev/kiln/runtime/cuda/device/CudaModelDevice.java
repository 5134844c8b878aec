package dev.kiln.runtime.cuda.device;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Kernel;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.AttentionMask;
import dev.kiln.runtime.cuda.Cublas;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.CudaDevice;
import dev.kiln.runtime.cuda.CudaKernel;
import dev.kiln.runtime.cuda.CudaStream;
import dev.kiln.runtime.cuda.FlashAttention;
import dev.kiln.runtime.cuda.KernelArgs;
import dev.kiln.runtime.cuda.KernelLoader;
import dev.kiln.runtime.cuda.MasterPlanes;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.tensor.Storage;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;

/**
 * The device SPI on an NVIDIA GPU: generated {@code Compiled<Module>} code runs here unchanged. GEMMs go to cuBLAS,
 * attention to Kiln's FlashAttention kernels, the processor's fused kernels to their {@code extern "C"} functions
 * (fatbins built by nvcc, else NVRTC), and the remaining primitives to {@code device_ops.cu}. Everything is queued
 * on the GPU's default stream in call order; {@link #download} and {@link #synchronize} wait.
 *
 * <p><b>Precision.</b> Models run in F32 ({@link DType#F64} is refused with a pointer to the CPU device, which is the
 * float64 reference). With {@link Precision#BF16} the device does what {@code torch.autocast(dtype=bfloat16)} does for
 * a Transformer: GEMMs and attention read bf16 operands and accumulate in fp32, every other operation (norms,
 * softmax, cross-entropy, residual adds, reductions) and every stored activation stays fp32. A parameter registered
 * with {@link #withBf16Twin} carries a bf16 copy that the optimizer rewrites after each update, so GEMMs on weights
 * cast nothing; activations are cast on the way into a GEMM (a memory-bound pass, small next to the GEMM).
 *
 * <p><b>Memory.</b> Device memory comes from the GPU's caching allocator. Tensors made while a {@link Scope} is open
 * belong to it and are returned to the cache when it closes (one scope per training step: the next step reuses the
 * same blocks, no {@code cuMemAlloc}); tensors made outside any scope live until {@link #release}. Using a tensor
 * after its scope closed fails with "used after close".
 *
 * <p><b>Errors.</b> Device code cannot throw: an embedding id out of range is recorded in an error word and raised
 * as {@link IndexOutOfBoundsException} at the next {@link #download}/{@link #synchronize}. Not thread-safe: one
 * thread drives a device (as generated code does).
 */
public final class CudaModelDevice implements Device {
  /** Arithmetic of GEMMs and attention. */
  public enum Precision {
    /** Everything in fp32 (attention uses the exact SIMT kernels: correct, not fast). */
    FP32,
    /** bf16 GEMM and attention operands with fp32 accumulation; everything else fp32 (mixed precision). */
    BF16
  }

  private static final int BLOCK = 256;
  private static final long MAX_GRID = 1L << 20;

  private final CudaDevice gpu;
  private final CudaStream stream;
  private final Cublas cublas;
  private final FlashAttention flash;
  private final Precision precision;
  private final CudaArray errorWord;
  private final ArrayDeque<Scope> scopes = new ArrayDeque<>();
  private final CpuDevice host = new CpuDevice();
  /** A bf16 cast of an F32 array made in the current step, by the memory it was cast from. */
  private record CastKey(Object buffer, long offset, List<Long> shape, List<Long> strides) {
    static CastKey of(CudaArray a) {
      return new CastKey(a.bufferIdentity(), a.offset(), Arrays.stream(a.shape()).boxed().toList(),
          Arrays.stream(a.strides()).boxed().toList());
    }
  }

  /**
   * bf16 casts of GEMM operands made while a scope is open, so an activation read by several GEMMs (q, k and v
   * projections; forward and weight-gradient products) is cast once. Dropped when any scope closes; an entry goes
   * as soon as its source memory is written ({@link #written}).
   */
  private final Map<CastKey, CudaArray> castCache = new java.util.HashMap<>();
  private final Map<Object, List<CastKey>> castsByBuffer = new IdentityHashMap<>();
  /**
   * Each row's log-sum-exp, written by the cross-entropy forward of logits read in the open scope (kiln_xent_cached4),
   * so that the backward of the same logits streams the gradient from it (kiln_xent_grad4) instead of reducing every
   * row again. Dropped with {@link #castCache}: when a scope closes, or the logits' memory is written.
   */
  private final Map<CastKey, CudaArray> lseCache = new java.util.HashMap<>();
  /**
   * The loss gradient that the last backward of logits of a shape took, where it was one known value for every row
   * (the seed 1 times the mean's 1/n in a training step) and its result went to the LM head's GEMMs alone, in bf16:
   * the cross-entropy forward of such logits then writes that gradient ahead ({@link #xentAhead}). Learned by the
   * backward, forgotten when a forward's gradient goes unused (an evaluation pass) and learned again.
   */
  private final Map<List<Object>, Float> xentGradPlans = new java.util.HashMap<>();

  /** A logits gradient its forward wrote ahead: for the targets it was computed for and the loss gradient g. */
  private record AheadGrad(CastKey targets, float g, CudaArray grad16, List<Object> plan) {}

  /**
   * Gradients the cross-entropy forward wrote ahead in the open scope, by logits, for the backward of the same
   * logits and targets under the same loss gradient. Dropped like {@link #lseCache}.
   */
  private final Map<CastKey, AheadGrad> xentAhead = new java.util.HashMap<>();

  /**
   * True when {@code a} and {@code b} have one shape and one set of strides and cover a gapless range of memory (a
   * contiguous array or a permutation of one): element {@code a.offset() + e} then sits at {@code b.offset() + e}.
   */
  private static boolean denseLike(CudaArray a, CudaArray b) {
    if (!Arrays.equals(a.shape(), b.shape()) || !Arrays.equals(a.strides(), b.strides())) {
      return false;
    }
    long[][] dims = new long[a.rank()][];
    for (int i = 0; i < a.rank(); i++) {
      dims[i] = new long[] {a.stride(i), a.shape(i)};
    }
    Arrays.sort(dims, (x, y) -> Long.compare(x[0], y[0]));
    long expect = 1;
    for (long[] d : dims) {
      if (d[1] == 1) {
        continue;
      }
      if (d[0] != expect) {
        return false;
      }
      expect *= d[1];
    }
    return true;
  }

  /** A bf16 copy of a dense F32 array: it serves every view of that array's memory, whatever the view's shape. */
  private record DenseCast(CudaArray source, CudaArray cast) {
    /** The cast laid out as {@code view} (a view of {@code source}'s memory), or null when it reaches outside. */
    CudaArray serve(CudaArray view) {
      long first = view.offset() - source.offset();
      long last = first;
      for (int i = 0; i < view.rank(); i++) {
        if (view.shape(i) == 0) {
          return null;
        }
        if (view.stride(i) < 0) {
          return null;
        }
        last += (view.shape(i) - 1) * view.stride(i);
      }
      if (first < 0 || last >= source.numel()) {
        return null;
      }
      return cast.strided(view.shape(), view.strides(), cast.offset() + first);
    }
  }

  /**
   * Casts of whole gapless arrays ({@link #denseLike}) by the source's buffer: a GEMM often reads a reshaped view of
   * what was cast, or of what a kernel wrote in both precisions (the cross-entropy gradient, RoPE's result). Cleared
   * like {@link #castCache}.
   */
  private final Map<Object, List<DenseCast>> denseCasts = new IdentityHashMap<>();

  /**
   * Arrays known to hold one value in every element ({@link #zeros}, {@link #full}, views of them and products of
   * them; {@link #knownValue}), by identity. Adding a known zero is no work: a gradient that one branch of the model
   * leaves at zero (the z-loss's, when it is off) would otherwise cost a pass over the logits. A known loss gradient
   * (the seed times the mean's 1/n) lets the cross-entropy's forward write the logits' gradient ahead
   * ({@link #xentGradPlans}). Only arrays made inside a scope count; entries go when their memory is written or their
   * scope closes.
   */
  private final Map<CudaArray, Double> knownValues = new IdentityHashMap<>();

  /**
   * GEMMs whose bf16 result nothing has touched yet ({@link #gemm}): each runs when its output's memory is first
   * touched (the buffer's deferred producer), unless a residual add takes it first as {@code out = x + a b} in one
   * cuBLASLt call ({@link #binary}), or its scope ends with nothing having read it (dropped).
   */
  private final List<PendingGemm> pendingGemms = new ArrayList<>();
  private boolean fuseGemmAdds = !"0".equals(System.getenv("KILN_GEMM_ADD_FUSION"));
  private boolean stackGemms = !"0".equals(System.getenv("KILN_GEMM_STACKING"));
  private boolean useGradientArenas = !"0".equals(System.getenv("KILN_GRADIENT_ARENA"));
  private boolean batchSiblingGemms = !"0".equals(System.getenv("KILN_SIBLING_GEMMS"));
  /**
   * Deferred GEMMs that run as one strided-batched GEMM ({@link #runSiblings}), by member: consecutive ones reading
   * the same {@code A} with {@code B}s at one stride in one buffer (the q, k and v projections of one input, whose
   * bf16 weights lie end to end; the FFN's {@code w1} and {@code w3}, {@code w2} between them).
   */
  private final Map<PendingGemm, List<PendingGemm>> siblings = new IdentityHashMap<>();

  /**
   * Generated kernels whose twin output ({@code Kernel.twinOutput}: a norm backward's input gradient) was seen cast
   * to bf16 for GEMMs: their next launches take the {@code _tw} variant, which writes that copy from registers, and
   * the copy is remembered as the output's cast. Learned per kernel name, kept for the device's life.
   */
  private final java.util.Set<String> twinWanted = new java.util.HashSet<>();
  /** The generated kernel that last wrote a twin-capable output, by the output's buffer, in the open scope. */
  private final Map<Object, String> twinWriters = new IdentityHashMap<>();

  /** A deferred GEMM: {@code out = alpha · a b}, the operands as cuBLAS takes them. */
  private record PendingGemm(float alpha, CudaArray a, CudaArray b, CudaArray out) {}

  /**
   * RoPE results that attention's kernels may compute themselves, by the result's buffer ({@link #ropeByAttention}).
   * A forward RoPE of q or k (bf16, for attention alone, the processor says) is not launched: its kernel becomes the
   * result's deferred producer, and an attention over two such results runs the whole-head kernel that turns q and k
   * as it loads them ({@link FlashAttention#forwardRotatingInto}); its backward does the same and turns dq and dk
   * back as it stores them, so the gradients it returns are again deferred RoPEs (of the gradients before RoPE), and
   * RoPE's backward of one returns its source without a launch. Anything else that touches a result's memory runs its
   * kernel first. An entry goes when its source is written (after its kernel runs), when the result is, and when its
   * scope ends. {@code KILN_ROPE_FUSION=0} or {@link #fuseRope(boolean)} turns this off.
   */
  private final Map<Object, DeferredRope> deferredRopes = new IdentityHashMap<>();
  /**
   * The buffers of attention's gradients interleaved for one GEMM ({@link #attentionGradients}) since a scope last
   * closed: RoPE's backward may rotate dq and dk there in place, where the processor says nothing else reads them.
   * Forgotten when any scope closes (a buffer given back may come again for something else); a gradient forgotten
   * so is only rotated into a new array.
   */
  private final java.util.Set<Object> interleavedGradients = java.util.Collections.newSetFromMap(
      new IdentityHashMap<>());
  private boolean fuseRope = !"0".equals(System.getenv("KILN_ROPE_FUSION"));

  /** {@code result = rope(source, positions, theta)}, both bf16 of one shape; computed once its producer has run. */
  private record DeferredRope(CudaArray source, CudaArray positions, double theta, CudaArray result) {}

  /** bf16 copies attention made in forward, by the {@code out} tensor they belong to, for its backward. */
  private final Map<CudaArray, CudaArray[]> attentionBf16 = new IdentityHashMap<>();
  /** RoPE inverse frequencies by (theta, half width): tiny, permanent, made before any capture needs them. */
  private final Map<List<Double>, CudaArray> ropeTables = new java.util.HashMap<>();
  private long launches;
  private boolean poison;
  private boolean gemmOperandsInBf16 = true;
  private boolean gemmResultsInBf16 = true;
  private boolean paramGradientsInBf16 = !"0".equals(System.getenv("KILN_BF16_PARAM_GRADS"));
  private boolean mastersInPlanes = !"0".equals(System.getenv("KILN_MASTER_PLANES"));
  /** Inside a CUDA-graph capture: nothing may synchronise or copy from the host. */
  private boolean capturing;
  /** Uploads and iotas served from a content cache (persistent tensors), so a captured graph never copies them. */
  private Map<ConstKey, CudaTensor> constants;

  private record ConstKey(DType dtype, List<Long> shape, List<Double> values) {}

  /** A device on GPU {@code ordinal} with {@code precision}; throws {@link IllegalStateException} without a GPU. */
  public CudaModelDevice(int ordinal, Precision precision) {
    try {
      this.gpu = CudaDevice.get(ordinal);
    } catch (IllegalStateException e) {
      throw new IllegalStateException(e.getMessage() + "; run on the CPU instead (--device cpu, training.device: cpu)",
          e);
    }
    this.stream = gpu.defaultStream();
    this.cublas = new Cublas(stream);
    this.flash = new FlashAttention(stream);
    this.precision = precision;
    this.errorWord = CudaArray.zeros(gpu, DType.I64, 2);
  }

  @Override
  public String name() {
    return "cuda:" + gpu.ordinal();
  }

  public CudaDevice gpu() {
    return gpu;
  }

  public Precision precision() {
    return precision;
  }

  /** Which cuBLAS entry point runs this device's GEMMs ({@code KILN_GEMM_API}, cuBLASLt by default). */
  public Cublas.GemmApi gemmApi() {
    return cublas.gemmApi();
  }

  /** Kernel launches and cuBLAS calls queued so far (what CUDA graphs would save on). */
  public long launches() {
    return launches;
  }

  // ================================================================ scopes and host transfers

  /** A region whose tensors are freed together; scopes nest, the innermost collects. */
  public final class Scope implements AutoCloseable {
    private final List<CudaArray> owned = new ArrayList<>();
    /** The weight gradients made in this scope, laid out as the twin arena they mirror ({@link #gradientSlot}). */
    private final Map<CudaArray, GradientArena> gradientArenas = new IdentityHashMap<>();
    private boolean closed;

    /** Whether {@code t}'s memory is this scope's (made in it, or kept into it from a scope inside it). */
    public boolean owns(Tensor t) {
      CudaArray a = arr(t, "owns", "t");
      for (CudaArray o : owned) {
        if (o.sharesBufferWith(a)) {
          return true;
        }
      }
      return false;
    }

    /**
     * Keeps {@code t} (made in this scope, or a view of a tensor made in it) alive past it: its memory moves to the
     * enclosing scope, or becomes permanent when there is none.
     */
    public Tensor keep(Tensor t) {
      CudaArray a = arr(t, "keep", "t");
      List<CudaArray> moved = new ArrayList<>();
      owned.removeIf(o -> {
        boolean same = o.sharesBufferWith(a);
        if (same) {
          moved.add(o);
        }
        return same;
      });
      Scope outer = null;
      boolean below = false;
      for (Scope s : scopes) { // innermost first
        if (below) {
          outer = s;
          break;
        }
        below = s == this;
      }
      if (outer != null) {
        outer.owned.addAll(moved);
      }
      return t;
    }

    @Override
    public void close() {
      for (CudaArray a : detach()) {
        a.close();
      }
    }

    /**
     * Ends the scope without freeing its tensors and hands them to the caller, who closes them when done: a captured
     * CUDA graph keeps using the memory of the step it recorded.
     */
    public List<CudaArray> detach() {
      if (closed) {
        return List.of();
      }
      closed = true;
      if (scopes.peek() != this) {
        throw new IllegalStateException("cuda device: scopes must close innermost first");
      }
      settleDeferredWork(owned);
      gradientArenas.clear();
      scopes.pop();
      interleavedGradients.clear();
      castCache.clear();
      castsByBuffer.clear();
      twinWriters.clear();
      lseCache.clear();
      if (!xentAhead.isEmpty()) {
        // A gradient written ahead and never taken: the pass was not followed by its backward (an evaluation).
        xentAhead.values().forEach(a -> xentGradPlans.remove(a.plan()));
        xentAhead.clear();
      }
      denseCasts.clear();
      if (!attentionBf16.isEmpty()) {
        // Keyed by the attention output, which may be a view (laid out like v) of an array this scope owns.
        java.util.Set<Object> buffers = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        owned.forEach(a -> buffers.add(a.bufferIdentity()));
        attentionBf16.keySet().removeIf(k -> buffers.contains(k.bufferIdentity()));
      }
      if (!knownValues.isEmpty()) {
        java.util.Set<Object> buffers = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        owned.forEach(a -> buffers.add(a.bufferIdentity()));
        knownValues.keySet().removeIf(z -> buffers.contains(z.bufferIdentity()));
      }
      List<CudaArray> out = new ArrayList<>(owned);
      owned.clear();
      return out;
    }
  }

  /** Opens a scope: tensors made until it closes are freed when it closes. */
  public Scope scope() {
    Scope s = new Scope();
    scopes.push(s);
    return s;
  }

  private CudaArray track(CudaArray a) {
    Scope s = scopes.peek();
    if (s != null) {
      s.owned.add(a);
    }
    return a;
  }

  private CudaTensor wrap(CudaArray a) {
    return new CudaTensor(a, null);
  }

  private CudaArray newArray(DType dtype, long... shape) {
    return track(temp(dtype, shape));
  }

  /**
   * A new scope array of {@code like}'s shape and dtype whose dims lie in memory in {@code like}'s stride order, as
   * torch's {@code preserve_format}. A result made from a head-split view ({@code [b, h, s, d]} over a
   * {@code [b, s, h·d]} projection) keeps that layout, so the rearrange that merges the heads again is a view, not a
   * copy. Contiguous (or broadcast) inputs give a contiguous result.
   */
  private CudaArray newArrayLike(CudaArray like) {
    return newArrayLike(like, like.dtype(), like.shape());
  }

  private CudaArray newArrayLike(CudaArray like, DType dtype, long[] shape) {
    return allocLike(like, shape, physical -> newArray(dtype, physical));
  }

  /**
   * An array of {@code shape} laid out as {@link #newArrayLike} lays it out, allocated (in memory order) by
   * {@code alloc}, which owns the memory: the result may be a permuted view of what {@code alloc} returned.
   */
  private static CudaArray allocLike(CudaArray like, long[] shape, java.util.function.Function<long[], CudaArray> alloc) {
    int r = like.rank();
    if (like.isContiguous() || r < 2 || Arrays.stream(like.strides()).anyMatch(x -> x == 0)) {
      return alloc.apply(shape);
    }
    // Dims by decreasing stride, ties in dim order: the physical order of like's memory.
    Integer[] order = new Integer[r];
    for (int i = 0; i < r; i++) {
      order[i] = i;
    }
    Arrays.sort(order, (x, y) -> Long.compare(like.stride(y), like.stride(x)));
    long[] physical = new long[r];
    int[] back = new int[r];
    for (int i = 0; i < r; i++) {
      physical[i] = shape[order[i]];
      back[order[i]] = i;
    }
    return alloc.apply(physical).permute(back);
  }

  /**
   * A scratch array outside every scope, which the caller closes as soon as the work reading it is queued: blocks
   * are reused only on this device's one stream, so a later user cannot overtake the work queued before it.
   */
  private CudaArray temp(DType dtype, long... shape) {
    CudaArray a = CudaArray.empty(gpu, stream, dtype, shape);
    if (capturing) {
      // A captured graph reuses this memory at every replay: it stays with the scope (the graph keeps the scope's
      // memory), and the caller's close() acts on a view, which frees nothing.
      track(a);
      a = a.strided(a.shape(), a.strides(), a.offset());
    }
    return poison ? a.poison() : a;
  }

  // ================================================================ profiling

  private final Map<String, double[]> profile = new java.util.TreeMap<>();
  private boolean profiling;
  /** Timing events, reused across profiles; the first {@code marks.size() + 1} are recorded in this profile. */
  private final List<dev.kiln.runtime.cuda.CudaEvent> profileEvents = new ArrayList<>();
  private final List<String> marks = new ArrayList<>();

  /**
   * With {@code on}, the device records a CUDA event after every operation, and {@link #profileReport} charges the
   * GPU time between consecutive events to the operation's kind. Nothing waits: the queue runs as it would, so the
   * figures add up to the step's GPU time. Where the host falls behind (a launch-bound step), the GPU's idle time
   * before an operation is charged to that operation.
   */
  public void profile(boolean on) {
    if (on && !profiling) {
      notCapturing("profile");
      profile.clear();
      marks.clear();
      profileEvent(0).record(stream);
    }
    profiling = on;
  }

  private dev.kiln.runtime.cuda.CudaEvent profileEvent(int i) {
    while (profileEvents.size() <= i) {
      profileEvents.add(new dev.kiln.runtime.cuda.CudaEvent(gpu));
    }
    return profileEvents.get(i);
  }

  /**
   * GPU milliseconds and calls per kind of operation since {@link #profile} was turned on, slowest first, then the
   * total; waits for the profiled work to finish.
   */
  public String profileReport() {
    if (!marks.isEmpty()) {
      profileEvent(marks.size()).synchronize();
      for (int i = 0; i < marks.size(); i++) {
        double[] acc = profile.computeIfAbsent(marks.get(i), k -> new double[2]);
        acc[0] += profileEvents.get(i + 1).elapsedMillisSince(profileEvents.get(i));
        acc[1]++;
      }
      marks.clear();
    }
    StringBuilder b = new StringBuilder();
    profile.entrySet().stream().sorted((x, y) -> Double.compare(y.getValue()[0], x.getValue()[0]))
        .forEach(e -> b.append(String.format(java.util.Locale.ROOT, "%-52s %9.3f ms %7d calls%n", e.getKey(),
            e.getValue()[0], (long) e.getValue()[1])));
    b.append(String.format(java.util.Locale.ROOT, "%-52s %9.3f ms %7d calls%n", "total",
        profile.values().stream().mapToDouble(v -> v[0]).sum(),
        (long) profile.values().stream().mapToDouble(v -> v[1]).sum()));
    return b.toString();
  }

  /** Charges the GPU time since the last operation to {@code kind} when profiling (for work queued elsewhere). */
  public void mark(String kind) {
    if (profiling) {
      marks.add(kind);
      profileEvent(marks.size()).record(stream);
    }
  }

  /**
   * With {@code on}, every tensor the device makes starts as NaN (floats) or all-ones bits: tests turn it on so an
   * element a kernel forgot to write cannot pass for a right answer.
   */
  public void poisonNewTensors(boolean on) {
    this.poison = on;
  }

  /** Frees a tensor made outside any scope (a parameter, an optimizer state) now. */
  public void release(Tensor t) {
    if (t instanceof CudaTensor c) {
      c.array().close();
      if (c.lowerPlane() != null) {
        c.lowerPlane().close();
      }
      CudaArray twin = c.bf16Twin();
      TwinArena arena = twin == null ? null : twinArenas.remove(twin);
      if (arena != null) {
        arena.live().remove(twin);
        if (arena.live().isEmpty()) {
          arena.owner().close();
        }
      } else if (twin != null) {
        twin.close();
      }
    }
  }

  /** A copy of {@code host} on this device. */
  public CudaTensor fromHost(NdArray host) {
    notCapturing("fromHost");
    return wrap(track(CudaArray.fromHost(gpu, host)));
  }

  private void notCapturing(String op) {
    if (capturing) {
      throw new IllegalStateException("cuda device, " + op + ": not allowed while a CUDA graph is being captured (it"
          + " copies between host and device or waits for the GPU); do it before the capture");
    }
  }

  // ================================================================ CUDA graphs

  /**
   * Prepares the device for CUDA-graph capture: uploads and iotas are served from a content cache of permanent
   * tensors from now on (a graph cannot copy from the host). cuBLAS needs nothing: its handle has a fixed workspace
   * from the start (see {@link dev.kiln.runtime.cuda.Cublas}), so it never allocates inside a capture.
   */
  public void enableGraphs() {
    if (constants == null) {
      constants = new java.util.HashMap<>();
    }
  }

  /**
   * Records what {@code work} queues into a CUDA graph ({@link #enableGraphs} first). Host copies and waits inside
   * {@code work} fail with a message that names them.
   */
  public dev.kiln.runtime.cuda.CudaGraph capture(Runnable work) {
    if (constants == null) {
      throw new IllegalStateException("cuda device: call enableGraphs() before capturing a graph");
    }
    capturing = true;
    try {
      return dev.kiln.runtime.cuda.CudaGraph.capture(stream, work);
    } finally {
      capturing = false;
    }
  }

  /** A permanent tensor with these contents, made once (graph mode). */
  private CudaTensor constant(DType dtype, long[] shape, double[] values) {
    ConstKey key = new ConstKey(dtype, Arrays.stream(shape).boxed().toList(),
        Arrays.stream(values).boxed().toList());
    CudaTensor t = constants.get(key);
    if (t == null) {
      notCapturing("a constant tensor first seen during capture");
      t = wrap(CudaArray.fromHost(gpu, (NdArray) host.upload(dtype, shape, values)));
      constants.put(key, t);
    }
    return t;
  }

  /** A host copy of {@code t}; waits for the work queued before it. */
  public NdArray toHost(Tensor t) {
    notCapturing("toHost");
    synchronize();
    return arr(t, "toHost", "t").toHost();
  }

  /** Copies {@code host} into the contiguous device tensor {@code dst} of the same shape and dtype. */
  public void copyFromHost(NdArray host, Tensor dst) {
    notCapturing("copyFromHost");
    written(arr(dst, "copyFromHost", "dst"));
    arr(dst, "copyFromHost", "dst").copyFromHost(host);
  }

  /**
   * Gives {@code param} (F32, contiguous, made outside a scope) a bf16 twin for {@link Precision#BF16} GEMMs, filled
   * now; whoever updates the parameter must rewrite it (the fused AdamW does). The tensor is changed in place, so
   * the model's parameter record needs no rebuilding. Returns the twin.
   */
  public CudaArray withBf16Twin(Tensor param) {
    CudaTensor t = ct(param, "withBf16Twin", "param");
    if (t.bf16Twin() != null) {
      return t.bf16Twin();
    }
    CudaArray p = t.array();
    if (p.dtype() != DType.F32 || !p.isContiguous()) {
      throw new IllegalArgumentException("cuda device: a bf16 twin needs a contiguous F32 parameter, got " + p);
    }
    CudaArray twin = CudaArray.empty(gpu, stream, DType.BF16, p.shape());
    copyArray(p, twin);
    t.attachBf16Twin(twin);
    return twin;
  }

  /**
   * {@link #withBf16Twin} for several parameters at once, their twins laid end to end in one allocation in the
   * order given (each at a 256-byte boundary): the weights of projections declared one after another ({@code q},
   * {@code k}, {@code v}) are then rows of one matrix, and a GEMM over their stacked rows needs no copy
   * ({@link #launch}'s sums of GEMMs). The allocation is returned when the last of its parameters is
   * {@link #release}d. A parameter that has a twin already keeps it.
   */
  public List<CudaArray> withBf16Twins(List<? extends Tensor> params) {
    List<CudaTensor> fresh = new ArrayList<>();
    long elements = 0;
    for (Tensor param : params) {
      CudaTensor t = ct(param, "withBf16Twins", "param");
      CudaArray p = t.array();
      if (p.dtype() != DType.F32 || !p.isContiguous()) {
        throw new IllegalArgumentException("cuda device: a bf16 twin needs a contiguous F32 parameter, got " + p);
      }
      if (t.bf16Twin() == null && !fresh.contains(t)) {
        fresh.add(t);
        elements += twinSlot(p.numel());
      }
    }
    if (!fresh.isEmpty()) {
      CudaArray arena = CudaArray.empty(gpu, stream, DType.BF16, elements);
      java.util.Set<CudaArray> live = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
      long at = 0;
      for (CudaTensor t : fresh) {
        CudaArray p = t.array();
        CudaArray twin = arena.strided(p.shape(), NdArray.contiguousStrides(p.shape()), at);
        at += twinSlot(p.numel());
        copyArray(p, twin);
        t.attachBf16Twin(twin);
        live.add(twin);
        twinArenas.put(twin, new TwinArena(arena, live));
      }
    }
    List<CudaArray> twins = new ArrayList<>();
    for (Tensor param : params) {
      twins.add(((CudaTensor) param).bf16Twin());
    }
    return twins;
  }

  /**
   * {@link #withBf16Twins(List)} for a state dict, in the order of {@link #twinOrder}, so that the weights the stacked
   * GEMMs read together lie end to end; the twins by key, in the state dict's order.
   */
  public Map<String, CudaArray> withBf16Twins(Map<String, ? extends Tensor> stateDict) {
    List<String> keys = twinOrder(stateDict);
    List<Tensor> ordered = new ArrayList<>();
    keys.forEach(k -> ordered.add(stateDict.get(k)));
    List<CudaArray> made = withBf16Twins(ordered);
    Map<String, CudaArray> out = new java.util.LinkedHashMap<>();
    stateDict.keySet().forEach(k -> out.put(k, made.get(keys.indexOf(k))));
    return out;
  }

  /**
   * The state dict's keys, each parameter followed by the later ones of the same module (the same key up to its last
   * two parts: {@code layers.0.ffn.} of {@code layers.0.ffn.w3.weight}) and shape: {@code w1, w3, w2} for an FFN's
   * {@code w1, w2, w3}, where w1 and w3 are {@code [d_ff, d_model]} and w2 is not; q, k, v and the output projection
   * stay as declared. The stacked GEMMs of SwiGLU's backward ({@link #emptyGemmOperands}) need w1 and w3 end to end
   * in this order, the order in which the generated code lays out the gradients that multiply them (the module's
   * declaration order).
   */
  public static List<String> twinOrder(Map<String, ? extends Tensor> stateDict) {
    List<String> keys = new ArrayList<>(stateDict.keySet());
    List<String> out = new ArrayList<>();
    java.util.Set<String> placed = new java.util.HashSet<>();
    for (int i = 0; i < keys.size(); i++) {
      String k = keys.get(i);
      if (!placed.add(k)) {
        continue;
      }
      out.add(k);
      for (int j = i + 1; j < keys.size(); j++) {
        String o = keys.get(j);
        if (!placed.contains(o) && moduleOf(o).equals(moduleOf(k))
            && Arrays.equals(stateDict.get(o).shape(), stateDict.get(k).shape())) {
          placed.add(o);
          out.add(o);
        }
      }
    }
    return out;
  }

  /** A state-dict key without its last two parts (the component and the tensor's name): its module's prefix. */
  private static String moduleOf(String key) {
    int last = key.lastIndexOf('.');
    int before = last < 0 ? -1 : key.lastIndexOf('.', last - 1);
    return before < 0 ? "" : key.substring(0, before + 1);
  }

  /** Elements a twin takes in an arena: its own, rounded up to 128 (256 bytes, the allocator's alignment). */
  private static long twinSlot(long numel) {
    return (numel + 127) / 128 * 128;
  }

  /** One allocation of {@link #withBf16Twins} and its twins not yet released; the last release frees it. */
  private record TwinArena(CudaArray owner, java.util.Set<CudaArray> live) {}

  private final Map<CudaArray, TwinArena> twinArenas = new IdentityHashMap<>();

  /**
   * Rewrites the bf16 twin of {@code param} (if it has one) from its fp32 values, after they were loaded; for a
   * master kept in planes ({@link #keepMasterInPlanes}), both planes.
   */
  public void refreshBf16Twin(Tensor param) {
    CudaTensor t = ct(param, "refreshBf16Twin", "param");
    if (t.lowerPlane() != null) {
      written(t.bf16Twin());
      written(t.lowerPlane());
      MasterPlanes.split(stream, t.array(), t.bf16Twin(), t.lowerPlane());
      launches++;
    } else if (t.bf16Twin() != null) {
      copyArray(t.array(), t.bf16Twin());
    }
  }

  /**
   * Whether {@link #keepMasterInPlanes} may keep master weights in two planes (the default; {@code
   * KILN_MASTER_PLANES=0} says no). The trainer asks this for the parameters only GEMMs read.
   */
  public boolean storesMastersInPlanes() {
    return mastersInPlanes && precision == Precision.BF16;
  }

  /** Turns {@link #storesMastersInPlanes} off or on for parameters not yet in planes. */
  public void storeMastersInPlanes(boolean on) {
    mastersInPlanes = on;
  }

  /**
   * Keeps {@code param}'s fp32 master weight from now on as two 16-bit planes ({@link MasterPlanes}): its bf16 twin,
   * which becomes the upper plane (the weight rounded with ties away from zero instead of to even: one weight in
   * 65,536 a bf16 step apart), and a lower plane made here. Whoever updates the weight then updates the planes (the
   * fused AdamW does) and calls {@link #masterChangedInPlanes} after each update; the fp32 array is left to go stale and
   * is rewritten from the planes when something next reads it. That is for parameters only GEMMs read, through the
   * twin: anything else reading the fp32 array pays for a join. Returns the lower plane (the existing one if already in
   * planes).
   *
   * @throws IllegalArgumentException for a parameter without a bf16 twin
   */
  public CudaArray keepMasterInPlanes(Tensor param) {
    CudaTensor t = ct(param, "keepMasterInPlanes", "param");
    if (t.lowerPlane() != null) {
      return t.lowerPlane();
    }
    if (t.bf16Twin() == null || !t.bf16Twin().isContiguous()) {
      throw new IllegalArgumentException("cuda device: a master weight kept in planes needs a contiguous bf16 twin as"
          + " its upper plane (withBf16Twin first); " + t + " has " + (t.bf16Twin() == null ? "none" : "a strided one"));
    }
    if (!t.array().coversBuffer()) {
      // The join is deferred on the buffer: a parameter sharing it would run the join whenever it is read.
      throw new IllegalArgumentException("cuda device: a master weight kept in planes needs an allocation of its own; "
          + t + " is a view of a larger one");
    }
    CudaArray lower = CudaArray.empty(gpu, stream, DType.BF16, t.array().shape());
    t.attachLowerPlane(lower);
    refreshBf16Twin(t);
    return lower;
  }

  /**
   * Says that the planes of {@code param}'s master weight ({@link #keepMasterInPlanes}) were updated in stream order
   * and its fp32 array is stale: the first use of the array's memory after this (a host copy, a kernel, a copy) joins
   * the planes into it first, through the buffer's deferred producer, which reads the planes as the stream then has
   * them. Cheap when called after every update: a join already pending stays as it is.
   */
  public void masterChangedInPlanes(Tensor param) {
    CudaTensor t = ct(param, "masterChangedInPlanes", "param");
    if (t.lowerPlane() == null) {
      throw new IllegalArgumentException("cuda device: " + t + " does not keep its master weight in planes");
    }
    CudaArray master = t.array();
    if (!master.producerPending()) {
      CudaArray upper = t.bf16Twin();
      CudaArray lower = t.lowerPlane();
      master.deferProducer(() -> {
        MasterPlanes.join(stream, upper, lower, master);
        masterJoins++;
        launches++;
        mark("kiln_planes_join");
      });
    }
  }

  /**
   * How many times a master weight's planes were joined into its fp32 array ({@link #masterChangedInPlanes}): a
   * training step that reads its weights only through their bf16 copies joins none.
   */
  public long masterJoins() {
    return masterJoins;
  }

  private long masterJoins;

  /** {@code dst += src} element by element ({@code src} broadcasts to {@code dst}, which must be contiguous). */
  public void addInto(Tensor dst, Tensor src) {
    CudaArray d = floating(dst, "addInto", "dst");
    CudaArray s0 = arr(src, "addInto", "src");
    // A bf16 gradient (emptyParamGradient) added into an fp32 sum (micro-batches, a tied weight's two uses): widened
    // first, exactly.
    CudaArray s = d.dtype() == DType.F32 && s0.dtype() == DType.BF16 ? widened(s0) : floating(src, "addInto", "src");
    sameFloat("addInto", d, s);
    requireContiguous(d, "addInto", "dst");
    written(d);
    if (d.dtype() == DType.F32 && vectorizable(d, s)) {
      launchFlat("kiln_binary4_f32", d.numel() / 4, new KernelArgs().ptr(d).ptr(s).ptr(d).i64(d.numel() / 4)
          .i32(Binary.ADD.ordinal()));
      return;
    }
    long[] shape = d.shape();
    StridedPlan p = StridedPlan.of(shape, d.strides(), bstrides(s, shape, "src"));
    // out = dst read at the same index it is written: an in-place add.
    launchFlat(p.kernel("kiln_binary_" + suffix(d.dtype())), p.numel(), new KernelArgs().ptr(d).struct(p.strideWords(0))
        .ptr(s).struct(p.strideWords(1)).struct(p.shapeWords()).ptr(d).i64(p.numel()).i32(Binary.ADD.ordinal()));
  }

  /**
   * {@code out[i] = } the squared L2 norm of tensor {@code i} (F64, summed on the device), without waiting: what a
   * captured step uses for clipping. {@code out} must be contiguous F64 with one element per tensor.
   */
  public void sumsOfSquaresInto(List<? extends Tensor> tensors, CudaArray out) {
    checkSquaresOut(out, tensors.size());
    if (!stream.isCapturing()) { // a table is uploaded; a captured step prepares its own (squaresTable)
      try (SquaresTable table = squaresTable(tensors)) {
        if (table != null) {
          sumsOfSquaresInto(table, out);
          return;
        }
      }
    }
    fill(wrap(out), 0);
    for (int i = 0; i < tensors.size(); i++) {
      CudaArray t = arr(tensors.get(i), "sumsOfSquares", "tensor " + i);
      CudaArray a = contiguousArray(t.dtype() == DType.BF16 ? t : floating(tensors.get(i), "sumsOfSquares",
          "tensor " + i));
      long n = a.numel();
      if (n == 0) {
        continue;
      }
      long blocks = Math.min((n + BLOCK * 8L - 1) / (BLOCK * 8L), 1024);
      op("kiln_sumsq_" + suffix(a.dtype())).launch(stream, blocks, 1, BLOCK, 0,
          new KernelArgs().ptr(a).i64(n).ptr(out.address() + 8L * i));
      launches++;
    }
  }

  private static void checkSquaresOut(CudaArray out, int tensors) {
    if (out.dtype() != DType.F64 || out.numel() < tensors) {
      throw new IllegalArgumentException("cuda device, sumsOfSquaresInto: out must be F64 with " + tensors
          + " elements, got " + out);
    }
  }

  /**
   * Tensors uploaded as one table of 32-byte entries (address, elements, first block) for
   * {@link #sumsOfSquaresInto(SquaresTable, CudaArray)}: one launch over all of them. Its tensors must outlive it.
   */
  public record SquaresTable(CudaArray table, int count, long blocks) implements AutoCloseable {
    @Override
    public void close() {
      table.close();
    }
  }

  /** Elements each block of {@code kiln_sumsq_multi_f32} sums (KILN_SUMSQ_CHUNK). */
  private static final long SQUARES_CHUNK = 8192;

  /**
   * The table of {@code tensors} for one launch of squared norms, where every one is a contiguous F32 or BF16 tensor
   * (an engine's gradients, the GEMM weight gradients bf16 in mixed precision); else null, and
   * {@link #sumsOfSquaresInto(List, CudaArray)} takes a launch per tensor. Built outside a capture: a captured step
   * passes it to {@link #sumsOfSquaresInto(SquaresTable, CudaArray)}.
   */
  public SquaresTable squaresTable(List<? extends Tensor> tensors) {
    notCapturing("squaresTable");
    if (tensors.isEmpty()) {
      return null;
    }
    Storage host = Storage.allocate(32L * tensors.size());
    long blocks = describeSquares(tensors, host.segment());
    return blocks < 0 ? null
        : new SquaresTable(CudaArray.fromHost(gpu, NdArray.of(host, DType.U8, 32L * tensors.size())), tensors.size(),
            blocks);
  }

  /**
   * Rewrites {@code table} in place for {@code tensors} (as many, of the same sizes, in other memory): a launch
   * captured in a CUDA graph reads the table at its address, so the graph then sums these.
   */
  public void refillSquaresTable(SquaresTable table, List<? extends Tensor> tensors) {
    notCapturing("refillSquaresTable");
    Storage host = Storage.allocate(32L * tensors.size());
    if (tensors.size() != table.count() || describeSquares(tensors, host.segment()) != table.blocks()) {
      throw new IllegalArgumentException("cuda device: a squares table of " + table.count() + " tensors refilled"
          + " with " + tensors.size() + " of other sizes or layouts");
    }
    table.table().copyFromHost(NdArray.of(host, DType.U8, 32L * tensors.size()));
  }

  /** The squares kernel's descriptors of {@code tensors} into {@code t}; its blocks, or -1 for a layout it lacks. */
  private static long describeSquares(List<? extends Tensor> tensors, MemorySegment t) {
    long blocks = 0;
    for (int i = 0; i < tensors.size(); i++) {
      CudaArray a = arr(tensors.get(i), "sumsOfSquares", "tensor " + i);
      if ((a.dtype() != DType.F32 && a.dtype() != DType.BF16) || !a.isContiguous()) {
        return -1;
      }
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, 32L * i, a.address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, 32L * i + 8, a.numel());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, 32L * i + 16, blocks);
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, 32L * i + 24, a.dtype() == DType.BF16 ? 1L : 0L);
      blocks += (a.numel() + SQUARES_CHUNK - 1) / SQUARES_CHUNK;
    }
    return blocks;
  }

  /** {@code out[i] = } the squared L2 norm of the table's tensor {@code i}, in one launch, without waiting. */
  public void sumsOfSquaresInto(SquaresTable table, CudaArray out) {
    checkSquaresOut(out, table.count());
    fill(wrap(out), 0);
    if (table.blocks() > 0) {
      op("kiln_sumsq_multi_f32").launch(stream, table.blocks(), 1, BLOCK, 0,
          new KernelArgs().ptr(table.table()).i32(table.count()).ptr(out));
      launches++;
    }
  }

  /**
   * The squared L2 norm of each tensor, summed in double on the device and read back in one transfer (gradient
   * clipping's global norm).
   */
  public double[] sumsOfSquares(List<? extends Tensor> tensors) {
    CudaArray out = CudaArray.empty(gpu, stream, DType.F64, Math.max(1, tensors.size()));
    try {
      sumsOfSquaresInto(tensors, out);
      synchronize();
      return Arrays.copyOf(out.toHost().toDoubleArray(), tensors.size());
    } finally {
      out.close();
    }
  }

  /** Waits for the GPU, then raises an index error recorded by a kernel since the last check. */
  public void synchronize() {
    notCapturing("synchronize");
    gpu.synchronize();
    NdArray err = errorWord.toHost();
    long bad = err.getLong(0);
    if (bad != 0) {
      long bound = err.getLong(1);
      errorWord.copyFromHost(NdArray.zeros(DType.I64, 2));
      throw new IndexOutOfBoundsException("cuda device: id " + (bad - 1) + " is out of range for a dim of size "
          + bound + " (an embedding or cross-entropy target beyond the vocabulary?)");
    }
  }

  // ================================================================ arguments

  private static CudaTensor ct(Tensor t, String op, String role) {
    if (t instanceof CudaTensor c) {
      return c;
    }
    throw new IllegalArgumentException("cuda device, " + op + ": " + role + " is "
        + (t == null ? "null" : "a " + t.getClass().getSimpleName())
        + ", not a tensor of the cuda device (move host arrays with fromHost)");
  }

  private static CudaArray arr(Tensor t, String op, String role) {
    return ct(t, op, role).array();
  }

  private static CudaArray floating(Tensor t, String op, String role) {
    CudaArray a = arr(t, op, role);
    if (a.dtype() != DType.F32 && a.dtype() != DType.F64) {
      throw new IllegalArgumentException("cuda device, " + op + ": " + role + " must be F32 (or F64), got "
          + a.dtype());
    }
    return a;
  }

  private static void sameFloat(String op, CudaArray... xs) {
    for (CudaArray x : xs) {
      if (x.dtype() != xs[0].dtype()) {
        throw new IllegalArgumentException("cuda device, " + op + ": operands mix " + xs[0].dtype() + " and "
            + x.dtype());
      }
    }
  }

  private static void requireContiguous(CudaArray a, String op, String role) {
    if (!a.isContiguous()) {
      throw new IllegalArgumentException("cuda device, " + op + ": " + role + " must be contiguous, got " + a);
    }
  }

  private static String suffix(DType t) {
    return switch (t) {
      case F32 -> "f32";
      case F64 -> "f64";
      case BF16 -> "bf16";
      case I32 -> "i32";
      case I64 -> "i64";
      case U8 -> "u8";
      case BOOL -> "b8";
      default -> throw new IllegalArgumentException("cuda device: no kernels for dtype " + t);
    };
  }

  private CudaKernel op(String symbol) {
    return gpu.kernels().module("device_ops").kernel(symbol);
  }

  private void launchFlat(String symbol, long n, KernelArgs args) {
    if (n == 0) {
      return;
    }
    long blocks = Math.min((n + BLOCK - 1) / BLOCK, MAX_GRID);
    op(symbol).launch(stream, blocks, 1, BLOCK, 0, args);
    launches++;
    mark(symbol);
  }

  // ================================================================ memory

  @Override
  public Tensor empty(DType dtype, long... shape) {
    return wrap(newArray(dtype, shape));
  }

  /**
   * In mixed precision, an F32 output that only GEMMs read is stored in bf16: every GEMM would round it to bf16 before
   * use, so the results are the same, the kernel writes half the bytes and no cast kernel reads it again. The tensor
   * says {@code BF16}; anything but {@link #gemm} and views refuses it as it refuses any bf16 activation.
   */
  @Override
  public Tensor emptyGemmOperand(DType dtype, long... shape) {
    return emptyMixed(gemmOperandsInBf16, dtype, shape);
  }

  /**
   * In mixed precision with GEMM stacking on, {@code count} bf16 outputs side by side in the rows of one
   * {@code [rows, count · cols]} matrix (output i in columns {@code i · cols} on), views with that row stride: the
   * SwiGLU backward's gradients for {@code w1} and {@code w3}. Their input gradients {@code dA W1 + dB W3} are then
   * one GEMM of {@code [dA dB]} and {@code [W1; W3]} ({@link #addToPendingGemm}; the engine lays same-shaped sibling
   * weights end to end), and their weight gradients one GEMM of {@code [dA dB]ᵀ X} over stacked rows
   * ({@link #runGradientGemms}). Elsewhere, or where cols is not a multiple of 8 (the kernels' 16-byte stores), one
   * {@link #emptyGemmOperand} each.
   */
  @Override
  public Tensor[] emptyGemmOperands(DType dtype, int count, long... shape) {
    boolean low = gemmOperandsInBf16 && precision == Precision.BF16 && dtype == DType.F32;
    if (!low || !stackGemms || !fuseGemmAdds || count < 2 || shape.length == 0 || shape[shape.length - 1] % 8 != 0) {
      return Device.super.emptyGemmOperands(dtype, count, shape);
    }
    int r = shape.length;
    long cols = shape[r - 1];
    long rows = NdArray.numel(shape) / Math.max(cols, 1);
    CudaArray all = newArray(DType.BF16, rows, count * cols);
    long[] strides = new long[r];
    strides[r - 1] = 1;
    for (int i = r - 2; i >= 0; i--) {
      strides[i] = i == r - 2 ? count * cols : strides[i + 1] * shape[i + 1];
    }
    Tensor[] out = new Tensor[count];
    for (int i = 0; i < count; i++) {
      out[i] = wrap(all.strided(shape, strides, all.offset() + i * cols));
    }
    return out;
  }

  /** A new tensor, in bf16 where {@code bf16} and mixed precision allow it for an F32 one. */
  private Tensor emptyMixed(boolean bf16, DType dtype, long[] shape) {
    boolean low = bf16 && precision == Precision.BF16 && dtype == DType.F32;
    return wrap(newArray(low ? DType.BF16 : dtype, shape));
  }

  /**
   * Whether {@link #emptyGemmOperand} stores in bf16 under mixed precision (the default). Off, such outputs are fp32
   * and cast before their GEMMs, as any activation: the reference the bf16 storage must match bit for bit.
   */
  public void storeGemmOperandsInBf16(boolean on) {
    gemmOperandsInBf16 = on;
  }

  /**
   * In mixed precision, a GEMM output whose readers all take bf16 (the processor says so: {@link
   * Device#emptyGemmResult}) is stored in bf16, as {@code torch.autocast} keeps a linear layer's output: the GEMM
   * writes half the bytes, and the fused kernels that read it ({@code _in16} variants), attention and the
   * cross-entropy read half. This rounds the value once, where fp32 storage would not; {@link
   * #storeGemmResultsInBf16} turns it off.
   */
  @Override
  public Tensor emptyGemmResult(DType dtype, long... shape) {
    return emptyMixed(gemmResultsInBf16, dtype, shape);
  }

  /**
   * Whether {@link #emptyGemmResult} stores in bf16 under mixed precision (the default). Off, GEMM outputs are fp32
   * as every activation but the GEMM-only ones: a step's results then differ by the rounding alone.
   */
  public void storeGemmResultsInBf16(boolean on) {
    gemmResultsInBf16 = on;
  }

  /**
   * In mixed precision, a parameter's gradient that a GEMM computes (the processor says so: {@link
   * Device#emptyParamGradient}, a linear layer's weight gradient) is stored in bf16, as {@code torch.autocast} rounds
   * it: there the GEMM differentiates the weight's bf16 cast, and the cast's backward widens the bf16 gradient to
   * fp32. The GEMM writes half the bytes, and the gradient norm and AdamW read half (6 bytes a parameter less a
   * step; a mixed launch of AdamW takes fp32 and bf16 gradients). Gradients summed over micro-batches are summed in
   * fp32. {@link #storeParamGradientsInBf16} or {@code KILN_BF16_PARAM_GRADS=0} turns it off.
   */
  @Override
  public Tensor emptyParamGradient(DType dtype, long... shape) {
    return emptyMixed(paramGradientsInBf16, dtype, shape);
  }

  /**
   * {@link #emptyParamGradient(DType, long...)} for {@code param}'s own gradient: where the parameter's bf16 twin lies
   * in an arena ({@link #withBf16Twins}, which the trainer uses for every parameter), the gradient is stored in bf16
   * at the twin's offset of one allocation the open scope makes as large as that arena (the first such request of a
   * scope makes it). The q, k and v projections' weight gradients then lie end to end as their twins do, and their
   * GEMMs, each deferred while the next continues its rows ({@link #gemm}), run as one ({@link #runGradientGemms}). A
   * second gradient of one parameter in a scope, or one of another shape, gets memory of its own.
   */
  @Override
  public Tensor emptyParamGradient(Tensor param, DType dtype, long... shape) {
    CudaArray slot = gradientSlot(param, dtype, shape);
    return slot != null ? wrap(slot) : emptyParamGradient(dtype, shape);
  }

  private CudaArray gradientSlot(Tensor param, DType dtype, long[] shape) {
    if (!stackGemms || !useGradientArenas || !paramGradientsInBf16 || precision != Precision.BF16
        || dtype != DType.F32 || scopes.isEmpty() || !(param instanceof CudaTensor t) || t.bf16Twin() == null) {
      return null;
    }
    CudaArray twin = t.bf16Twin();
    TwinArena arena = twinArenas.get(twin);
    if (arena == null || !Arrays.equals(twin.shape(), shape) || !twin.isContiguous()) {
      return null;
    }
    // By the arena's allocation: each twin has a TwinArena record of its own.
    GradientArena g = scopes.peek().gradientArenas.computeIfAbsent(arena.owner(),
        owner -> new GradientArena(newArray(DType.BF16, owner.numel()), new java.util.HashSet<>()));
    if (!g.taken().add(twin.offset())) {
      return null;
    }
    return g.memory().strided(shape, NdArray.contiguousStrides(shape), twin.offset());
  }

  /**
   * Turns the gradient arenas of {@link #emptyParamGradient(Tensor, DType, long...)} (and so the weight-gradient GEMMs
   * run as one) off or on; on by default, or as {@code KILN_GRADIENT_ARENA=0} says. Stacking off
   * ({@link #stackGemms}) turns them off too.
   */
  public void layOutGradientsAsTwins(boolean on) {
    useGradientArenas = on;
  }

  /** A scope's weight gradients in one allocation, at their twins' offsets; {@code taken} the offsets handed out. */
  private record GradientArena(CudaArray memory, java.util.Set<Long> taken) {}

  /**
   * Whether {@link #emptyParamGradient} stores in bf16 under mixed precision (the default). Off, GEMM weight gradients
   * are fp32, the GEMM's accumulator unrounded.
   */
  public void storeParamGradientsInBf16(boolean on) {
    paramGradientsInBf16 = on;
  }

  @Override
  public Tensor zeros(DType dtype, long... shape) {
    return full(dtype, 0, shape);
  }

  @Override
  public Tensor full(DType dtype, double value, long... shape) {
    CudaTensor t = (CudaTensor) empty(dtype, shape);
    if (scopes.isEmpty()) {
      fill(t, value);
      return t;
    }
    // A step's own value: filled when first used, so one nobody reads costs no launch (the zero gradients of
    // parameters a config leaves unused: 28 fills a TinyStories step). Stream order keeps the fill before its reader.
    CudaArray a = t.array();
    // Not through fill(): its bookkeeping would forget the array's known value. Deferred on the buffer, so a view
    // (a broadcast of the loss gradient) runs it when touched, and a known zero that an add returns past never does.
    a.deferProducer(() -> launchFill(a, value));
    // Only a step's own values: a zero made outside every scope may be a parameter (a bias), which the optimizer
    // rewrites in place. The value as the array holds it: fp32's rounding of a double, for instance.
    Double stored = storedValue(dtype, value);
    if (stored != null) {
      knownValues.put(a, stored);
    }
    return t;
  }

  /**
   * {@code value} as {@link #launchFill} stores it in an array of {@code dtype}: exact in f64, rounded to nearest in
   * f32; in other dtypes only zero is tracked (it is zero in every one).
   */
  private static Double storedValue(DType dtype, double value) {
    return switch (dtype) {
      case F64 -> value;
      case F32 -> (double) (float) value;
      default -> value == 0 ? 0.0 : null;
    };
  }

  /** The one value every element of {@code a} holds where the open scope knows it ({@link #knownValues}), or null. */
  private Double knownValue(CudaArray a) {
    return knownValues.get(a);
  }

  private boolean isKnownZero(CudaArray a) {
    Double v = knownValues.get(a);
    return v != null && v == 0;
  }

  /**
   * Whether the open scope knows every element of {@code t} is zero (a {@link #zeros} of the step, such as the
   * gradient of a parameter the config leaves unused), whether or not its fill has run.
   */
  public boolean isKnownZero(Tensor t) {
    return isKnownZero(arr(t, "isKnownZero", "t"));
  }

  /** A view of {@code from}'s memory, known to hold {@code from}'s one value where that is known. */
  private CudaArray viewOf(CudaArray from, CudaArray view) {
    Double v = knownValues.get(from);
    if (v != null) {
      knownValues.put(view, v);
    }
    return view;
  }

  @Override
  public Tensor upload(DType dtype, long[] shape, double[] values) {
    if (constants != null) {
      return constant(dtype, shape, values);
    }
    return fromHost((NdArray) host.upload(dtype, shape, values));
  }

  @Override
  public double[] download(Tensor x) {
    return toHost(x).toDoubleArray();
  }

  @Override
  public Tensor iota(DType dtype, long n) {
    if (constants != null) {
      double[] v = new double[Math.toIntExact(n)];
      for (int i = 0; i < v.length; i++) {
        v[i] = i;
      }
      return constant(dtype, new long[] {n}, v);
    }
    return fromHost(NdArray.arange(dtype, n));
  }

  @Override
  public void fill(Tensor out, double value) {
    CudaArray o = arr(out, "fill", "out");
    written(o);
    launchFill(o, value);
  }

  /** Queues the fill kernel, no bookkeeping: {@link #full}'s deferred fill, of an array nothing has read yet. */
  private void launchFill(CudaArray o, double value) {
    StridedPlan p = StridedPlan.of(o.shape(), o.strides());
    launchFlat(p.kernel("kiln_fill_" + suffix(o.dtype())), p.numel(),
        new KernelArgs().ptr(o).struct(p.shapeWords()).struct(p.strideWords(0)).i64(p.numel()).f64(value));
  }

  @Override
  public void fillTruncatedNormal(Tensor out, double std, double bound, long seed, long stream) {
    CudaArray o = floating(out, "fillTruncatedNormal", "out");
    written(o);
    // Drawn on the host with the runtime's Philox generator, so every device initialises a model bit for bit alike.
    NdArray h = NdArray.empty(o.dtype(), o.shape());
    new Rng(seed).stream(stream).truncNormal(h, 0, std, -bound, bound);
    o.copyFromHost(h);
  }

  @Override
  public void copy(Tensor src, Tensor dst) {
    copyArray(arr(src, "copy", "src"), arr(dst, "copy", "dst"));
  }

  private void copyArray(CudaArray s, CudaArray d) {
    written(d);
    if (s.dtype() == DType.F32 && d.dtype() == DType.BF16 && d.address() % 8 == 0
        && (vectorizable(d, s) || sameDenseLayout(d, s))) {
      launchFlat("kiln_cast4_f32_bf16", d.numel() / 4, new KernelArgs().ptr(s).ptr(d).i64(d.numel() / 4));
      return;
    }
    long[] ss = StridedPlan.broadcastStrides(s.shape(), s.strides(), d.shape(), "cuda device, copy: src");
    StridedPlan p = StridedPlan.of(d.shape(), ss, d.strides());
    String name = "kiln_copy_" + suffix(s.dtype()) + "_" + suffix(d.dtype());
    if (p.rank() > 1 && p.innerSize() % 4 == 0 && p.fits32()) {
      // A strided walk: four elements of a row a thread, so the offsets' divisions are done once for the four (a
      // head-split view's copy was bound by that arithmetic, not by memory).
      launchFlat(name + "_32x4", p.numel() / 4, new KernelArgs().ptr(s).struct(p.shapeWords())
          .struct(p.strideWords(0)).ptr(d).struct(p.strideWords(1)).i64(p.numel() / 4).i64(p.innerStride(0))
          .i64(p.innerStride(1)));
      return;
    }
    launchFlat(p.kernel(name), p.numel(),
        new KernelArgs().ptr(s).struct(p.shapeWords()).struct(p.strideWords(0)).ptr(d).struct(p.strideWords(1))
            .i64(p.numel()));
  }

  @Override
  public Tensor cast(Tensor x, DType dtype) {
    CudaArray a = arr(x, "cast", "x");
    CudaArray out = newArray(dtype, a.shape());
    copyArray(a, out);
    return wrap(out);
  }

  private CudaArray contiguousArray(CudaArray a) {
    if (a.isContiguous()) {
      return a;
    }
    CudaArray out = newArray(a.dtype(), a.shape());
    copyArray(a, out);
    return out;
  }

  // ================================================================ views

  @Override
  public Tensor reshape(Tensor x, long... shape) {
    CudaTensor t = ct(x, "reshape", "x");
    long[] target = inferShape(t.array(), shape);
    return new CudaTensor(viewOf(t.array(), reshapeArray(t.array(), target)), t.bf16Twin() == null ? null
        : reshapeArray(t.bf16Twin(), target));
  }

  private CudaArray reshapeArray(CudaArray a, long[] target) {
    long[] st = NdArray.viewStrides(a.shape(), a.strides(), target);
    if (st != null) {
      return a.strided(target, st, a.offset());
    }
    CudaArray c = contiguousArray(a);
    return c.strided(target, NdArray.contiguousStrides(target), c.offset());
  }

  private static long[] inferShape(CudaArray a, long[] shape) {
    long n = a.numel();
    long known = 1;
    int infer = -1;
    for (int i = 0; i < shape.length; i++) {
      if (shape[i] == -1 && infer < 0) {
        infer = i;
      } else if (shape[i] < 0) {
        throw new IllegalArgumentException("cuda device, reshape: bad shape " + Arrays.toString(shape));
      } else {
        known *= shape[i];
      }
    }
    long[] out = shape.clone();
    if (infer >= 0) {
      if (known == 0 || n % known != 0) {
        throw new IllegalArgumentException("cuda device, reshape: cannot infer -1 in " + Arrays.toString(shape)
            + " for " + n + " elements");
      }
      out[infer] = n / known;
    } else if (known != n) {
      throw new IllegalArgumentException("cuda device, reshape: " + Arrays.toString(a.shape()) + " (" + n
          + " elements) to " + Arrays.toString(shape));
    }
    return out;
  }

  @Override
  public Tensor permute(Tensor x, int... order) {
    CudaTensor t = ct(x, "permute", "x");
    return new CudaTensor(viewOf(t.array(), t.array().permute(order)), t.bf16Twin() == null ? null
        : t.bf16Twin().permute(order));
  }

  @Override
  public Tensor expand(Tensor x, long... shape) {
    CudaTensor t = ct(x, "expand", "x");
    return new CudaTensor(viewOf(t.array(), t.array().expand(shape)), t.bf16Twin() == null ? null
        : t.bf16Twin().expand(shape));
  }

  @Override
  public Tensor narrow(Tensor x, int dim, long start, long length) {
    CudaTensor t = ct(x, "narrow", "x");
    return new CudaTensor(viewOf(t.array(), t.array().narrow(dim, start, length)), t.bf16Twin() == null ? null
        : t.bf16Twin().narrow(dim, start, length));
  }

  @Override
  public Tensor contiguous(Tensor x) {
    CudaTensor t = ct(x, "contiguous", "x");
    return t.array().isContiguous() ? t : wrap(contiguousArray(t.array()));
  }

  // ================================================================ GEMM

  @Override
  public void gemm(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, double alpha, double beta) {
    CudaTensor ta = ct(a, "gemm", "a");
    CudaTensor tb = ct(b, "gemm", "b");
    CudaArray z = arr(c, "gemm", "c");
    if (!(z.dtype() == DType.BF16 && precision == Precision.BF16 && beta == 0)) {
      z = floating(c, "gemm", "c"); // a bf16 output only as emptyGemmResult makes it, written, not accumulated
    }
    CudaArray x = ta.array();
    CudaArray y = tb.array();
    if (precision == Precision.BF16) {
      // Operands stored in bf16 (outputs only GEMMs read, see emptyGemmOperand; GEMM results, see emptyGemmResult)
      // are what the GEMM reads anyway.
      DType f = z.dtype() == DType.BF16 ? DType.F32 : z.dtype();
      for (CudaArray o : new CudaArray[] {x, y}) {
        if (o.dtype() != DType.BF16 && o.dtype() != f) {
          throw new IllegalArgumentException("cuda device, gemm: operands mix " + o.dtype() + " and " + f);
        }
      }
    } else {
      sameFloat("gemm", x, y, z);
    }
    if (z.dtype() == DType.F64) {
      throw new IllegalArgumentException("cuda device, gemm: F64 is not supported on the GPU (the CUDA device runs"
          + " F32 models, with bf16 GEMMs in mixed precision); use the cpu device for float64");
    }
    if (z.rank() < 2 || z.rank() > 3 || x.rank() < 2 || x.rank() > z.rank() || y.rank() < 2 || y.rank() > z.rank()) {
      throw new IllegalArgumentException("cuda device, gemm: c must be [batch, m, n] or [m, n], and a and b rank 2"
          + " (shared) or c's rank; got a " + Arrays.toString(x.shape()) + ", b " + Arrays.toString(y.shape())
          + ", c " + Arrays.toString(z.shape()));
    }
    written(z);
    List<CudaArray> temps = new ArrayList<>(4);
    try {
      if (precision == Precision.BF16) {
        x = bf16Of(ta, temps);
        y = bf16Of(tb, temps);
      }
      CudaArray opA = gemmOperand(transA ? x.transpose(-2, -1) : x, temps);
      CudaArray opB = gemmOperand(transB ? y.transpose(-2, -1) : y, temps);
      CudaArray memory = gradientSlotMemory(z, beta, temps);
      if (memory != null) {
        // A weight gradient in a scope's gradient arena: deferred while the next ones continue its rows (the v, k
        // and q projections' come one after another, in that order), so that they run as one GEMM
        // (runGradientGemms). One that does not continue them runs them first: the GEMMs keep their order in the
        // step, each waiting at most until the next weight gradient's GEMM.
        PendingGemm p = new PendingGemm((float) alpha, opA, opB, z);
        List<PendingGemm> run = pendingIn(memory);
        if (!run.isEmpty() && !stacksUnder(run.getLast(), p, run.getFirst()) && !stacksUnder(p, run.getFirst(), p)) {
          memory.produce();
        }
        if (!memory.producerPending()) {
          memory.deferProducer(() -> runGradientGemms(memory));
        }
        pendingGemms.add(p);
        return;
      }
      if (deferrable(z, beta, temps)) {
        PendingGemm p = new PendingGemm((float) alpha, opA, opB, z);
        List<PendingGemm> group = siblingGroupFor(p);
        pendingGemms.add(p);
        if (group == null) {
          z.deferProducer(() -> runPending(p));
        } else {
          if (group.size() == 1) {
            PendingGemm first = group.getFirst();
            first.out().dropProducer();
            first.out().deferProducer(() -> runSiblings(group));
          }
          group.add(p);
          siblings.put(p, group);
          z.deferProducer(() -> runSiblings(group));
        }
        return;
      }
      cublas.gemm((float) alpha, opA, opB, (float) beta, z);
      launches++;
    } finally {
      temps.forEach(CudaArray::close);
    }
    if (profiling) {
      // One line per GEMM shape (m×n×k, operand layouts), so a slow shape stands out in the profile.
      long k = transA ? x.shape(-2) : x.shape(-1);
      mark("gemm " + (z.rank() == 3 ? "batched " + z.shape(0) + "× " : "")
          + (precision == Precision.BF16 ? "bf16 " : "fp32 ") + z.shape(-2) + "x" + z.shape(-1) + "x" + k + " "
          + (transA ? "T" : "N") + (transB ? "T" : "N"));
    }
  }

  /**
   * Whether the GEMM writing {@code z} may wait for its first reader ({@link #pendingGemms}): a bf16 result of mixed
   * precision (a projection's output, {@link #emptyGemmResult}) that is the whole of a buffer the innermost scope
   * made, not accumulated, its operands not scratch copies. Its reader is often a residual add, which then takes the
   * GEMM with the addend in its epilogue instead.
   */
  private boolean deferrable(CudaArray z, double beta, List<CudaArray> temps) {
    if (!fuseGemmAdds || precision != Precision.BF16 || scopes.isEmpty() || z.dtype() != DType.BF16 || beta != 0
        || !temps.isEmpty() || z.rank() != 2 || !z.coversBuffer() || z.producerPending()) {
      return false;
    }
    for (CudaArray o : scopes.peek().owned) {
      if (o.sharesBufferWith(z)) {
        return true;
      }
    }
    return false;
  }

  /**
   * The innermost scope's gradient arena of which {@code z} is a slot, where this GEMM (written, not accumulated, its
   * operands not scratch copies) may write it later; else null.
   */
  private CudaArray gradientSlotMemory(CudaArray z, double beta, List<CudaArray> temps) {
    if (beta != 0 || !temps.isEmpty() || z.dtype() != DType.BF16 || z.rank() != 2 || !z.isContiguous()
        || scopes.isEmpty()) {
      return null;
    }
    for (GradientArena g : scopes.peek().gradientArenas.values()) {
      if (g.memory().sharesBufferWith(z)) {
        return g.memory();
      }
    }
    return null;
  }

  /**
   * Runs the deferred GEMMs of a gradient arena ({@link #emptyParamGradient(Tensor, DType, long...)}), in the order of
   * their outputs. Consecutive ones whose outputs lie end to end, that share {@code B} and whose {@code A}s lie one
   * after another in one matrix run as one GEMM over the stacked rows: the q, k and v projections' weight gradients
   * {@code dW_i = dY_iᵀ X}, where attention's backward wrote {@code dY_q}, {@code dY_k} and {@code dY_v}
   * interleaved ({@link #attentionGradients}) and the arena holds the three results as the twin arena holds the
   * weights. Each output element is the same dot product over the same K as alone; only cuBLAS's choice of kernel
   * for the larger problem may change its summation order.
   */
  private void runGradientGemms(CudaArray memory) {
    List<PendingGemm> run = pendingIn(memory);
    pendingGemms.removeAll(run);
    for (int i = 0; i < run.size();) {
      PendingGemm first = run.get(i);
      int j = i + 1;
      long m = first.out().shape(0);
      while (j < run.size() && stacksUnder(run.get(j - 1), run.get(j), first)) {
        m += run.get(j).out().shape(0);
        j++;
      }
      CudaArray a = j - i == 1 ? null
          : first.a().strided(new long[] {m, first.a().shape(1)}, first.a().strides(), first.a().offset());
      if (a != null && cublasLayout(a)) {
        long n = first.out().shape(1);
        cublas.gemm(first.alpha(), a, first.b(), 0f, memory.strided(new long[] {m, n}, new long[] {n, 1},
            first.out().offset()));
        launches++;
        mark("gemm over stacked rows (" + (j - i) + " weight gradients)");
      } else {
        for (int g = i; g < j; g++) {
          cublas.gemm(run.get(g).alpha(), run.get(g).a(), run.get(g).b(), 0f, run.get(g).out());
          launches++;
          mark("gemm (weight gradient, deferred)");
        }
      }
      i = j;
    }
  }

  /** The deferred GEMMs writing {@code memory} (a gradient arena), by the offset of their outputs. */
  private List<PendingGemm> pendingIn(CudaArray memory) {
    List<PendingGemm> run = new ArrayList<>();
    for (PendingGemm p : pendingGemms) {
      if (p.out().sharesBufferWith(memory)) {
        run.add(p);
      }
    }
    run.sort(java.util.Comparator.comparingLong(p -> p.out().offset()));
    return run;
  }

  /**
   * Whether {@code next} continues {@code prev}'s rows in a GEMM that began at {@code first}: its output just after
   * {@code prev}'s, as wide; the same B; its A the rows after {@code prev}'s A, laid out alike.
   */
  private static boolean stacksUnder(PendingGemm prev, PendingGemm next, PendingGemm first) {
    CudaArray pa = prev.a();
    CudaArray na = next.a();
    CudaArray fb = first.b();
    CudaArray nb = next.b();
    return next.alpha() == first.alpha()
        && next.out().offset() == prev.out().offset() + prev.out().numel()
        && next.out().shape(1) == first.out().shape(1)
        && nb.sharesBufferWith(fb) && nb.offset() == fb.offset() && Arrays.equals(nb.shape(), fb.shape())
        && Arrays.equals(nb.strides(), fb.strides()) && nb.dtype() == fb.dtype()
        && na.sharesBufferWith(pa) && na.dtype() == pa.dtype() && na.rank() == 2 && pa.rank() == 2
        && na.shape(1) == pa.shape(1) && Arrays.equals(na.strides(), pa.strides())
        && na.offset() == pa.offset() + pa.shape(0) * pa.stride(0);
  }

  /** Whether cuBLAS takes {@code m} as it lies (rows or columns contiguous); else {@link #gemmOperand} copies it. */
  private static boolean cublasLayout(CudaArray m) {
    int r = m.rank();
    long rows = m.shape(r - 2);
    long cols = m.shape(r - 1);
    long rs = m.stride(r - 2);
    long cs = m.stride(r - 1);
    boolean rowMajor = (cols == 1 || cs == 1) && (rows == 1 || rs >= cols);
    boolean colMajor = (rows == 1 || rs == 1) && (cols == 1 || cs >= rows);
    return rowMajor || colMajor;
  }

  /**
   * The group {@code p} joins as the next of a strided batch ({@link #siblings}), or null: the GEMM deferred just
   * before it has the same alpha and the same {@code A} (buffer, offset, shape, strides), a {@code B} laid out alike
   * in the same buffer, {@code p}'s minus its offset one stride on (the first two set the stride), and an output of
   * the same shape, each output the whole of a buffer that nothing has touched. A group of one is made and returned
   * for the first pair; the caller adds {@code p}.
   */
  private List<PendingGemm> siblingGroupFor(PendingGemm p) {
    if (!batchSiblingGemms || pendingGemms.isEmpty()) {
      return null;
    }
    PendingGemm last = pendingGemms.getLast();
    CudaArray a = p.a(), la = last.a(), b = p.b(), lb = last.b();
    boolean fits = last.alpha() == p.alpha() && last.out().coversBuffer() && last.out().producerPending()
        && Arrays.equals(last.out().shape(), p.out().shape()) && last.out().dtype() == p.out().dtype()
        && a.sharesBufferWith(la) && a.offset() == la.offset() && Arrays.equals(a.shape(), la.shape())
        && Arrays.equals(a.strides(), la.strides()) && a.dtype() == la.dtype()
        && b.sharesBufferWith(lb) && Arrays.equals(b.shape(), lb.shape()) && Arrays.equals(b.strides(), lb.strides())
        && b.dtype() == lb.dtype() && b.rank() == 2 && a.rank() == 2;
    if (!fits) {
      return null;
    }
    List<PendingGemm> group = siblings.get(last);
    long stride = b.offset() - lb.offset();
    if (group == null) {
      return stride > 0 ? new ArrayList<>(List.of(last)) : null;
    }
    // Joining only after the group's last member keeps the stride (a group whose tail a scope's end dropped takes
    // no more members).
    return group.getLast() == last && stride == lb.offset() - group.get(group.size() - 2).b().offset() ? group : null;
  }

  /**
   * Runs a group of sibling GEMMs ({@link #siblings}) that are still deferred as one strided-batched GEMM: their
   * results are first moved end to end into one allocation ({@link CudaArray#relocateEndToEnd}; nothing has been
   * given their addresses), {@code A} is read with batch stride 0 and the {@code B}s at their stride. Each result
   * element is the same dot product as alone; only cuBLAS's choice of kernel for the batched problem may change its
   * summation order. What the group's first reader asked for runs with the rest; members a scope's end dropped
   * are left out. Should a member's memory be in use already, each GEMM runs on its own.
   */
  private void runSiblings(List<PendingGemm> group) {
    List<PendingGemm> live = new ArrayList<>();
    for (PendingGemm g : group) {
      siblings.remove(g);
      if (pendingGemms.remove(g)) {
        g.out().dropProducer(); // the one being produced has none left; the others must not run on their own
        live.add(g);
      }
    }
    if (live.size() == 1 || !live.stream().allMatch(g -> g.out().movable())) {
      for (PendingGemm g : live) { // a member's memory already in use: each GEMM on its own
        cublas.gemm(g.alpha(), g.a(), g.b(), 0f, g.out());
        launches++;
        mark("gemm (deferred to its first reader)");
      }
      return;
    }
    List<CudaArray> outs = new ArrayList<>();
    live.forEach(g -> outs.add(g.out()));
    CudaArray c = CudaArray.relocateEndToEnd(outs);
    // The members left lie at the group's stride: a scope's end drops the members it made, and scopes close
    // innermost first, so what is dropped is the group's tail, never a member between two others.
    CudaArray b0 = live.getFirst().b();
    long stride = live.get(1).b().offset() - b0.offset();
    CudaArray b = b0.strided(new long[] {live.size(), b0.shape(0), b0.shape(1)},
        new long[] {stride, b0.stride(0), b0.stride(1)}, b0.offset());
    cublas.gemm(live.getFirst().alpha(), live.getFirst().a(), b, 0f, c);
    launches++;
    mark("gemm, strided batch of " + live.size() + " sharing A");
  }

  /**
   * Turns running consecutive deferred GEMMs that share {@code A} as one strided-batched GEMM ({@link #siblings})
   * off or on; on by default, or as {@code KILN_SIBLING_GEMMS=0} says.
   */
  public void batchSiblingGemms(boolean on) {
    batchSiblingGemms = on;
  }

  private void runPending(PendingGemm p) {
    pendingGemms.remove(p);
    cublas.gemm(p.alpha(), p.a(), p.b(), 0f, p.out());
    launches++;
    mark("gemm (deferred to its first reader)");
  }

  /**
   * At a scope's end, for deferred GEMMs and RoPEs ({@link #pendingGemms}, {@link #deferredRopes}): one whose result
   * outlives the scope but reads memory the scope made runs now, before that memory goes (running it runs what it
   * reads first); then one whose result the scope made is dropped (nothing can read that memory any more; a captured
   * graph never runs it). In that order, so that nothing still to run reads memory whose producer was dropped.
   */
  private void settleDeferredWork(List<CudaArray> owned) {
    if (pendingGemms.isEmpty() && deferredRopes.isEmpty()) {
      return;
    }
    java.util.Set<Object> buffers = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
    owned.forEach(a -> buffers.add(a.bufferIdentity()));
    for (PendingGemm p : List.copyOf(pendingGemms)) {
      if (!buffers.contains(p.out().bufferIdentity())
          && (buffers.contains(p.a().bufferIdentity()) || buffers.contains(p.b().bufferIdentity()))) {
        p.out().produce();
      }
    }
    for (DeferredRope r : List.copyOf(deferredRopes.values())) {
      if (!buffers.contains(r.result().bufferIdentity()) && (buffers.contains(r.source().bufferIdentity())
          || buffers.contains(r.positions().bufferIdentity()))) {
        deferredRopes.remove(r.result().bufferIdentity());
        r.result().produce();
      }
    }
    for (PendingGemm p : List.copyOf(pendingGemms)) {
      if (buffers.contains(p.out().bufferIdentity())) {
        p.out().dropProducer();
        pendingGemms.remove(p);
        siblings.remove(p);
      }
    }
    deferredRopes.values().removeIf(r -> {
      boolean made = buffers.contains(r.result().bufferIdentity());
      if (made) {
        r.result().dropProducer();
      }
      return made;
    });
  }

  /**
   * Turns deferring GEMMs to their readers (and so the fused residual adds) off or on (on by default, or as
   * {@code KILN_GEMM_ADD_FUSION=0} says): off, every GEMM runs when called and every add is a kernel of its own.
   */
  public void fuseGemmAdds(boolean on) {
    fuseGemmAdds = on;
  }

  /** cuBLAS needs rows or columns contiguous; anything else is copied (into a scratch array) first. */
  private CudaArray gemmOperand(CudaArray m, List<CudaArray> temps) {
    if (cublasLayout(m)) {
      return m;
    }
    CudaArray c = temp(m.dtype(), m.shape());
    temps.add(c);
    copyArray(m, c);
    return c;
  }

  /**
   * The bf16 form of an F32 tensor: its twin when it has one; else, inside a scope, a cast shared by every GEMM of
   * the scope that reads the same memory; outside, a cast into a scratch array.
   */
  private CudaArray bf16Of(CudaTensor t, List<CudaArray> temps) {
    if (t.bf16Twin() != null) {
      return t.bf16Twin();
    }
    CudaArray a = t.array();
    if (a.dtype() == DType.BF16) {
      return a;
    }
    if (scopes.isEmpty()) {
      CudaArray out = temp(DType.BF16, a.shape());
      temps.add(out);
      copyArray(a, out);
      return out;
    }
    CudaArray hit = rememberedCast(a);
    if (hit != null) {
      return hit;
    }
    String writer = twinWriters.get(a.bufferIdentity());
    if (writer != null) {
      twinWanted.add(writer); // from its next launch on, that kernel writes this copy itself
    }
    CudaArray out = newArray(DType.BF16, a.shape());
    copyArray(a, out);
    rememberCast(a, out);
    return out;
  }

  /** A bf16 copy of {@code a}'s values made in the open scope (by a cast or by the kernel that wrote a), or null. */
  private CudaArray rememberedCast(CudaArray a) {
    CudaArray hit = castCache.get(CastKey.of(a));
    if (hit != null) {
      return hit;
    }
    for (DenseCast d : denseCasts.getOrDefault(a.bufferIdentity(), List.of())) {
      CudaArray served = d.serve(a);
      if (served != null) {
        return served;
      }
    }
    return null;
  }

  /**
   * Records that {@code cast} holds {@code source}'s values rounded to bf16, for the GEMMs of the open scope (a kernel
   * that wrote both, or {@link #bf16Of}'s cast). Forgotten when the source is written or the scope closes.
   */
  private void rememberCast(CudaArray source, CudaArray cast) {
    CastKey key = CastKey.of(source);
    castCache.put(key, cast);
    castsByBuffer.computeIfAbsent(key.buffer(), b -> new ArrayList<>()).add(key);
    if (denseLike(source, cast)) {
      denseCasts.computeIfAbsent(key.buffer(), b -> new ArrayList<>()).add(new DenseCast(source, cast));
    }
  }

  /** Forgets the casts of memory that {@code a} is about to change; runs deferred GEMMs that read it first. */
  private void written(CudaArray a) {
    if (!pendingGemms.isEmpty()) {
      for (PendingGemm p : List.copyOf(pendingGemms)) {
        if (p.a().sharesBufferWith(a) || p.b().sharesBufferWith(a)) {
          p.out().produce();
        }
      }
    }
    if (!deferredRopes.isEmpty()) {
      // A RoPE reading this memory runs before it changes; one writing it is no longer a RoPE of its source.
      for (DeferredRope r : List.copyOf(deferredRopes.values())) {
        boolean reads = r.source().sharesBufferWith(a) || r.positions().sharesBufferWith(a);
        if (reads || r.result().sharesBufferWith(a)) {
          deferredRopes.remove(r.result().bufferIdentity());
          if (reads) {
            r.result().produce();
          }
        }
      }
    }
    if (!knownValues.isEmpty()) {
      knownValues.keySet().removeIf(z -> z.sharesBufferWith(a));
    }
    twinWriters.remove(a.bufferIdentity()); // another writer: its casts teach nothing about the kernel
    if (!lseCache.isEmpty()) {
      lseCache.keySet().removeIf(k -> k.buffer() == a.bufferIdentity());
    }
    if (!xentAhead.isEmpty()) {
      xentAhead.entrySet().removeIf(e -> e.getKey().buffer() == a.bufferIdentity()
          || e.getValue().targets().buffer() == a.bufferIdentity());
    }
    if (!castsByBuffer.isEmpty()) {
      List<CastKey> keys = castsByBuffer.remove(a.bufferIdentity());
      if (keys != null) {
        keys.forEach(castCache::remove);
      }
      denseCasts.remove(a.bufferIdentity());
    }
  }

  // ================================================================ primitives

  @Override
  public Tensor unary(Unary op, Tensor x) {
    CudaArray a = floating(x, "unary " + op, "x");
    CudaArray out = newArray(a.dtype(), a.shape());
    StridedPlan p = StridedPlan.of(a.shape(), a.strides());
    launchFlat(p.kernel("kiln_unary_" + suffix(a.dtype())), p.numel(), new KernelArgs().ptr(a).struct(p.shapeWords())
        .struct(p.strideWords(0)).ptr(out).i64(p.numel()).i32(op.ordinal()));
    return wrap(out);
  }

  /**
   * True when {@code a} and {@code b} are the same permutation of dense memory (equal shapes and strides, no gaps):
   * element-wise work on them is then work on their flat buffers, as on contiguous arrays. A head-split view of a
   * projection and the bf16 copy laid out like it are such a pair. Alignment is as {@link #vectorizable} asks.
   */
  private static boolean sameDenseLayout(CudaArray a, CudaArray b) {
    if (!Arrays.equals(a.shape(), b.shape()) || !Arrays.equals(a.strides(), b.strides()) || a.numel() % 4 != 0
        || a.numel() == 0 || b.address() % 16 != 0 || (a.dtype() == DType.F32 && a.address() % 16 != 0)) {
      return false;
    }
    long[] strides = a.strides().clone();
    long[] shape = a.shape();
    Integer[] order = new Integer[shape.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(order, (x, y) -> Long.compare(strides[y], strides[x]));
    long expect = 1;
    for (int i = order.length - 1; i >= 0; i--) {
      if (shape[order[i]] != 1 && strides[order[i]] != expect) {
        return false;
      }
      expect *= shape[order[i]];
    }
    return true;
  }

  /**
   * Whether the four-a-thread contiguous kernels may take these operands: all contiguous with {@code out}'s shape, a
   * multiple of 4 elements, and the fp32 ones 16-byte aligned.
   */
  private static boolean vectorizable(CudaArray out, CudaArray... in) {
    if (out.numel() % 4 != 0 || out.numel() == 0 || !out.isContiguous()
        || (out.dtype() == DType.F32 && out.address() % 16 != 0)) {
      return false;
    }
    for (CudaArray a : in) {
      // fp32 operands through 16-byte loads; bf16 ones (mixedBinary) through 8-byte loads.
      boolean aligned = a.dtype() == DType.F32 ? a.address() % 16 == 0 : a.dtype() == DType.BF16 && a.address() % 8 == 0;
      if (!a.isContiguous() || !Arrays.equals(a.shape(), out.shape()) || !aligned) {
        return false;
      }
    }
    return true;
  }

  @Override
  public Tensor binary(Binary op, Tensor a, Tensor b) {
    return binary(op, a, b, false);
  }

  /**
   * With {@code bf16Result} (every reader takes bf16), adding a remembered zero to a bf16 operand returns that
   * operand as it is: the logits' gradient when z-loss is off, read next only by the LM head's GEMMs.
   */
  @Override
  public Tensor binary(Binary op, Tensor a, Tensor b, boolean bf16Result) {
    if (op == Binary.ADD && !pendingGemms.isEmpty()) {
      Tensor fused = addToPendingGemm(a, b, bf16Result);
      if (fused != null) {
        return fused;
      }
    }
    CudaArray ux = ct(a, "binary " + op, "a").array();
    CudaArray uy = ct(b, "binary " + op, "b").array();
    Double vx = knownValue(ux);
    Double vy = knownValue(uy);
    if (op == Binary.MUL && vx != null && vy != null && ux.dtype() == uy.dtype()
        && (ux.dtype() == DType.F32 || ux.dtype() == DType.F64)) {
      // A product of two known values (the loss's seed times the mean's 1/n) is a known value, filled when first
      // touched, if ever (the operands' own fills are not run). The host's product is the kernel's: one IEEE
      // multiply in the dtype, rounded to nearest.
      double product = ux.dtype() == DType.F32 ? (double) ((float) (double) vx * (float) (double) vy) : vx * vy;
      return full(ux.dtype(), product, NdArray.broadcastShapes(ux.shape(), uy.shape()));
    }
    CudaArray x = operandOrBf16Result(a, "binary " + op, "a");
    CudaArray y = operandOrBf16Result(b, "binary " + op, "b");
    if (bf16Result && op == Binary.ADD && (isKnownZero(x) && y.dtype() == DType.BF16
        || isKnownZero(y) && x.dtype() == DType.BF16)) {
      CudaArray other = isKnownZero(x) ? y : x;
      if (Arrays.equals(other.shape(), NdArray.broadcastShapes(x.shape(), y.shape()))) {
        return wrap(other);
      }
    }
    if (x.dtype() == DType.BF16 || y.dtype() == DType.BF16) {
      return mixedBinary(op, x, y);
    }
    sameFloat("binary " + op, x, y);
    long[] shape = NdArray.broadcastShapes(x.shape(), y.shape());
    if (op == Binary.ADD && (isKnownZero(x) || isKnownZero(y))) {
      // x + 0 is x: the result is the other operand itself (tensors are values; nothing writes into an operand).
      CudaArray other = isKnownZero(x) ? y : x;
      if (Arrays.equals(other.shape(), shape)) {
        return wrap(other);
      }
    }
    CudaArray out = newArray(x.dtype(), shape);
    if (out.dtype() == DType.F32 && vectorizable(out, x, y)) {
      launchFlat("kiln_binary4_f32", out.numel() / 4, new KernelArgs().ptr(x).ptr(y).ptr(out).i64(out.numel() / 4)
          .i32(op.ordinal()));
      return wrap(out);
    }
    StridedPlan p = StridedPlan.of(shape, bstrides(x, shape, "a"), bstrides(y, shape, "b"));
    launchFlat(p.kernel("kiln_binary_" + suffix(x.dtype())), p.numel(), new KernelArgs().ptr(x).struct(p.strideWords(0)).ptr(y)
        .struct(p.strideWords(1)).struct(p.shapeWords()).ptr(out).i64(p.numel()).i32(op.ordinal()));
    return wrap(out);
  }

  /**
   * {@code x + g}, where {@code g} is the whole result of a GEMM still deferred ({@link #pendingGemms}) and {@code x}
   * an fp32 array of its shape (the residual stream), as one cuBLASLt call with {@code x} in its epilogue: the
   * fp32 sum is written directly, and the add's own pass (TinyStories: 40 µs, 8 a step) is gone. The sum is of the
   * GEMM's fp32 accumulator, not of its bf16 rounding, so it is the more exact one. The GEMM stays deferred for
   * another reader of {@code g}, if any comes. Null where the operands do not suit. With {@code bf16Result} (every
   * reader takes bf16), a sum of two GEMMs over stacked operands is written in bf16.
   */
  private Tensor addToPendingGemm(Tensor a, Tensor b, boolean bf16Result) {
    CudaTensor[] ts = {ct(a, "binary ADD", "a"), ct(b, "binary ADD", "b")};
    PendingGemm pa = wholePending(ts[0].array());
    PendingGemm pb = wholePending(ts[1].array());
    if (pa != null && pb != null && pa != pb && Arrays.equals(pa.out().shape(), pb.out().shape())
        && Arrays.equals(ts[0].array().shape(), ts[1].array().shape())) {
      // Two deferred GEMMs (the input gradients of w1 and w3). Where their operands lie side by side (SwiGLU's
      // gradients from emptyGemmOperands, the twins of w1 and w3 end to end), one GEMM of K = 2 d_ff sums them in
      // its fp32 accumulator, rounded to bf16 once where every reader takes that (a norm's backward next).
      CudaArray[] ab = stackGemms ? stackedOperands(new ArrayList<>(List.of(pa, pb))) : null;
      if (ab != null) {
        CudaArray out = newArray(bf16Result ? DType.BF16 : DType.F32, ts[0].array().shape());
        cublas.gemm(pa.alpha(), ab[0], ab[1], 0f, out.view(ab[0].shape(0), ab[1].shape(1)));
        launches++;
        mark("gemm over stacked operands (a sum of 2 GEMMs)");
        return wrap(out);
      }
      // Else the first writes fp32 and the second adds it in its epilogue. Their bf16 results stay deferred, for
      // other readers.
      CudaArray first = temp(DType.F32, pa.out().shape());
      try {
        cublas.gemm(pa.alpha(), pa.a(), pa.b(), 0f, first);
        launches++;
        mark("gemm (fp32, the first of a sum of two)");
        Tensor firstSum = wrap(first.view(ts[0].array().shape()));
        Tensor sum = addToPendingGemm(firstSum, b, false);
        return sum != null ? sum : binary(Binary.ADD, firstSum, b);
      } finally {
        first.close(); // stream-ordered: the memory is reused only by work queued after the reads above
      }
    }
    for (int side = 0; side < 2; side++) {
      CudaArray g = ts[1 - side].array();
      CudaArray x = ts[side].array();
      PendingGemm p = wholePending(g);
      if (p == null || x.dtype() != DType.F32 || !x.isContiguous() || !Arrays.equals(x.shape(), g.shape())
          || x.sharesBufferWith(g)) {
        continue;
      }
      CudaArray out = newArray(DType.F32, x.shape());
      long[] mn = p.out().shape();
      if (!cublas.gemmAdding(p.alpha(), p.a(), p.b(), x.view(mn), out.view(mn))) {
        return null;
      }
      launches++;
      mark("gemm + residual add");
      return wrap(out);
    }
    return null;
  }

  /**
   * A sum kernel's work ({@code Kernel.sumOfInputs}: {@code arrays} its inputs, then its output at {@code inputs}) as
   * one GEMM, where its inputs are deferred GEMMs {@code A_i B_i} whose {@code A_i} lie side by side in the columns
   * of one matrix and whose {@code B_i} lie one under another in the rows of another: {@code [A_1 … A_n]} times
   * {@code [B_1; …; B_n]}, {@code K = Σ K_i}, written into the output in its dtype (fp32, or bf16 where the
   * processor found every reader takes that: a norm's backward next, {@link #emptyGemmResult}). That is the input
   * gradient of the q, k and v projections: attention's backward writes dq, dk and dv interleaved
   * ({@link #attentionGradients}), and
   * {@link #withBf16Twins} lays the three weights end to end. One input that is not such a GEMM, fp32 and laid out
   * as the output, is added in the GEMM's epilogue (an fp32 output only). So n GEMMs and the sum's pass become one
   * GEMM, which sums in its fp32 accumulator rather than adding n bf16 roundings. The deferred GEMMs stay deferred
   * for any other reader (a scope's end drops them unread). Returns false, queuing nothing, where the inputs do not
   * suit.
   */
  private boolean stackedSum(CudaArray[] arrays, int inputs) {
    CudaArray out = arrays[inputs];
    if (!stackGemms || !fuseGemmAdds || precision != Precision.BF16
        || out.dtype() != DType.F32 && out.dtype() != DType.BF16 || !out.isContiguous() || out.numel() == 0) {
      return false;
    }
    List<PendingGemm> parts = new ArrayList<>();
    CudaArray addend = null;
    for (int i = 0; i < inputs; i++) {
      CudaArray in = arrays[i];
      if (!Arrays.equals(in.shape(), out.shape())) {
        return false;
      }
      PendingGemm p = wholePending(in);
      if (p != null && !parts.contains(p)) {
        parts.add(p);
      } else if (addend == null && in.dtype() == DType.F32 && in.isContiguous() && !in.sharesBufferWith(out)) {
        addend = in;
      } else {
        return false;
      }
    }
    CudaArray[] ab = parts.size() < 2 ? null : stackedOperands(parts);
    if (ab == null || ab[0].shape(0) * ab[1].shape(1) != out.numel()) {
      return false;
    }
    CudaArray a = ab[0];
    CudaArray b = ab[1];
    long m = a.shape(0);
    long n = b.shape(1);
    CudaArray o = out.view(m, n);
    if (addend != null && out.dtype() != DType.F32) {
      return false; // the epilogue's addend and the result share a dtype
    }
    written(out);
    if (addend != null) {
      if (!cublas.gemmAdding(parts.get(0).alpha(), a, b, addend.view(m, n), o)) {
        return false;
      }
    } else {
      cublas.gemm(parts.get(0).alpha(), a, b, 0f, o);
    }
    launches++;
    mark("gemm over stacked operands (a sum of " + parts.size() + " GEMMs" + (addend != null ? " and an addend)"
        : ")"));
    return true;
  }

  /**
   * The operands {@code [A_1 … A_n]} and {@code [B_1; …; B_n]} of one GEMM that sums the deferred GEMMs
   * {@code parts} ({@code A_i B_i}, all of one alpha), where the {@code A_i} (bf16, rows contiguous) lie side by side in the
   * columns of one matrix and the {@code B_i} one under another in the rows of another, in the same order; else null.
   * Sorts {@code parts} by where their {@code A_i} lie.
   */
  private static CudaArray[] stackedOperands(List<PendingGemm> parts) {
    parts.sort(java.util.Comparator.comparingLong(p -> p.a().offset()));
    CudaArray a0 = parts.get(0).a();
    CudaArray b0 = parts.get(0).b();
    if (a0.rank() != 2 || b0.rank() != 2) {
      return null;
    }
    long m = a0.shape(0);
    long n = b0.shape(1);
    long k = 0;
    for (PendingGemm p : parts) {
      CudaArray a = p.a();
      CudaArray b = p.b();
      boolean fits = p.alpha() == parts.get(0).alpha() && a.rank() == 2 && b.rank() == 2
          && a.dtype() == DType.BF16 && b.dtype() == DType.BF16 && a.sharesBufferWith(a0) && b.sharesBufferWith(b0)
          && a.shape(0) == m && a.stride(1) == 1 && a.stride(0) == a0.stride(0) && a.offset() == a0.offset() + k
          && b.shape(1) == n && b.stride(1) == 1 && b.stride(0) == b0.stride(0)
          && b.offset() == b0.offset() + k * b0.stride(0) && a.shape(1) == b.shape(0);
      if (!fits) {
        return null;
      }
      k += a.shape(1);
    }
    if (k > a0.stride(0)) {
      return null; // A's rows would overlap
    }
    return new CudaArray[] {a0.strided(new long[] {m, k}, new long[] {a0.stride(0), 1}, a0.offset()),
        b0.strided(new long[] {k, n}, new long[] {b0.stride(0), 1}, b0.offset())};
  }

  /**
   * Turns running sums of GEMMs over stacked operands as one GEMM ({@link #stackedSum}, with attention's gradients
   * interleaved for it) off or on; on by default, or as {@code KILN_GEMM_STACKING=0} says.
   */
  public void stackGemms(boolean on) {
    stackGemms = on;
  }

  /**
   * The row stride of {@code a} seen as a {@code [rows, cols]} matrix whose rows are contiguous (its leading dims
   * merged): {@code cols} for a contiguous array, more for rows of a wider matrix ({@link #emptyGemmOperands}); -1
   * where it is not such a matrix.
   */
  private static long rowStride(CudaArray a, long rows, long cols) {
    if (a.isContiguous()) {
      return cols;
    }
    long[] st = a.numel() == rows * cols ? NdArray.viewStrides(a.shape(), a.strides(), new long[] {rows, cols}) : null;
    return st == null || st[1] != 1 || st[0] < cols ? -1 : st[0];
  }

  /** The deferred GEMM whose whole result {@code g} is (contiguous, all of it), or null. */
  private PendingGemm wholePending(CudaArray g) {
    for (PendingGemm q : pendingGemms) {
      if (q.out().sharesBufferWith(g) && q.out().coversBuffer()) { // not a gradient arena's slots
        return g.isContiguous() && g.numel() == q.out().numel() ? q : null;
      }
    }
    return null;
  }

  /**
   * An F32 operand, or in mixed precision a BF16 one: a GEMM output kept in bf16 ({@link #emptyGemmResult}), which
   * the processor lets only ops that take bf16 read (the binary ops among them).
   */
  private CudaArray operandOrBf16Result(Tensor t, String op, String role) {
    CudaArray a = arr(t, op, role);
    return a.dtype() == DType.BF16 && precision == Precision.BF16 ? a : floating(t, op, role);
  }

  /**
   * A binary op with a bf16 operand (or two), the result in fp32: one 4-wide kernel reading the bf16 operand as it
   * is when both are contiguous and equally shaped (the residual add of a projection's output, the sum of two
   * projections' input gradients), else the bf16 operands widened to fp32 first (exactly) and the fp32 path.
   */
  private Tensor mixedBinary(Binary op, CudaArray x, CudaArray y) {
    for (CudaArray o : new CudaArray[] {x, y}) {
      if (o.dtype() != DType.BF16 && o.dtype() != DType.F32) {
        throw new IllegalArgumentException("cuda device, binary " + op + ": operands mix " + x.dtype() + " and "
            + y.dtype());
      }
    }
    long[] shape = NdArray.broadcastShapes(x.shape(), y.shape());
    CudaArray out = newArray(DType.F32, shape);
    if (vectorizable(out, x, y)) {
      launchFlat("kiln_binary4_" + suffix(x.dtype()) + "_" + suffix(y.dtype()), out.numel() / 4,
          new KernelArgs().ptr(x).ptr(y).ptr(out).i64(out.numel() / 4).i32(op.ordinal()));
      return wrap(out);
    }
    out.close();
    return binary(op, wrap(widened(x)), wrap(widened(y)));
  }

  /** {@code a} itself when it is not bf16, else an fp32 copy of it (exact), laid out as {@code a}. */
  private CudaArray widened(CudaArray a) {
    if (a.dtype() != DType.BF16) {
      return a;
    }
    CudaArray wide = newArrayLike(a, DType.F32, a.shape());
    copyArray(a, wide);
    return wide;
  }

  private static long[] bstrides(CudaArray a, long[] shape, String role) {
    return StridedPlan.broadcastStrides(a.shape(), a.strides(), shape, "cuda device: " + role);
  }

  @Override
  public Tensor compare(Compare op, Tensor a, Tensor b) {
    CudaArray x = floating(a, "compare " + op, "a");
    CudaArray y = floating(b, "compare " + op, "b");
    sameFloat("compare " + op, x, y);
    long[] shape = NdArray.broadcastShapes(x.shape(), y.shape());
    CudaArray out = newArray(DType.BOOL, shape);
    StridedPlan p = StridedPlan.of(shape, bstrides(x, shape, "a"), bstrides(y, shape, "b"));
    launchFlat(p.kernel("kiln_compare_" + suffix(x.dtype())), p.numel(), new KernelArgs().ptr(x).struct(p.strideWords(0))
        .ptr(y).struct(p.strideWords(1)).struct(p.shapeWords()).ptr(out).i64(p.numel()).i32(op.ordinal()));
    return wrap(out);
  }

  @Override
  public Tensor where(Tensor cond, Tensor a, Tensor b) {
    CudaArray c = arr(cond, "where", "cond");
    if (c.dtype() != DType.BOOL) {
      throw new IllegalArgumentException("cuda device, where: cond must be BOOL, got " + c.dtype());
    }
    CudaArray x = floating(a, "where", "a");
    CudaArray y = floating(b, "where", "b");
    sameFloat("where", x, y);
    long[] shape = NdArray.broadcastShapes(NdArray.broadcastShapes(c.shape(), x.shape()), y.shape());
    CudaArray out = newArray(x.dtype(), shape);
    StridedPlan p = StridedPlan.of(shape, bstrides(c, shape, "cond"), bstrides(x, shape, "a"),
        bstrides(y, shape, "b"));
    launchFlat(p.kernel("kiln_where_" + suffix(x.dtype())), p.numel(), new KernelArgs().ptr(c).struct(p.strideWords(0)).ptr(x)
        .struct(p.strideWords(1)).ptr(y).struct(p.strideWords(2)).struct(p.shapeWords()).ptr(out).i64(p.numel()));
    return wrap(out);
  }

  @Override
  public Tensor reduce(Reduction how, Tensor x, int[] axes, boolean keepDims) {
    CudaArray in = arr(x, "reduce", "x");
    // A bf16 input in mixed precision: a gradient the GEMMs wrote so for a module whose backward takes it in bf16
    // (the processor's Result.bf16Gradient: LayerNorm's bias gradient sums it over the rows). Summed in fp32 from
    // the bf16 values, read as they are where the rows are contiguous, else from an exact fp32 copy.
    boolean bf16 = in.dtype() == DType.BF16 && precision == Precision.BF16;
    CudaArray a = bf16 ? in : floating(x, "reduce", "x");
    if (how == Reduction.MEAN) {
      throw new IllegalArgumentException("cuda device, reduce: MEAN is not a device reduction (scale a SUM)");
    }
    int r = a.rank();
    boolean[] red = new boolean[r];
    for (int ax : axes) {
      int d = ax < 0 ? ax + r : ax;
      if (d < 0 || d >= r || red[d]) {
        throw new IllegalArgumentException("cuda device, reduce: bad or repeated axis " + ax + " for rank " + r);
      }
      red[d] = true;
    }
    List<Long> keptShape = new ArrayList<>();
    long[] outKeep = new long[r];
    int[] order = new int[r];
    int k = 0;
    long rows = 1;
    long cols = 1;
    for (int d = 0; d < r; d++) {
      outKeep[d] = red[d] ? 1 : a.shape(d);
      if (!red[d]) {
        keptShape.add(a.shape(d));
        order[k++] = d;
        rows *= a.shape(d);
      } else {
        cols *= a.shape(d);
      }
    }
    for (int d = 0; d < r; d++) {
      if (red[d]) {
        order[k++] = d;
      }
    }
    long[] outShape = keepDims ? outKeep : keptShape.stream().mapToLong(Long::longValue).toArray();
    boolean leading = true;
    boolean seenKept = false;
    for (int d = 0; d < r; d++) {
      if (!red[d]) {
        seenKept |= a.shape(d) != 1;
      } else if (seenKept && a.shape(d) != 1) {
        leading = false;
      }
    }
    if (bf16 && !(a.isContiguous() && leading && rows > 1 && cols > 1)) {
      try (CudaArray wide = temp(DType.F32, a.shape())) {
        copyArray(a, wide);
        return reduce(how, wrap(wide), axes, keepDims); // stream-ordered: the copy is freed after its reader
      }
    }
    CudaArray out = newArray(bf16 ? DType.F32 : a.dtype(), outShape);
    int opCode = switch (how) {
      case SUM -> 0;
      case MAX -> 1;
      case MIN -> 2;
      default -> throw new IllegalArgumentException("cuda device, reduce: " + how);
    };
    String t = bf16 ? "bf16" : suffix(a.dtype());
    if (cols == 1 || rows * cols == 0) {
      // Nothing reduced (or nothing to reduce over): a copy, or the empty reduction's identity.
      if (rows * cols == 0) {
        fill(wrap(out), opCode == 0 ? 0 : (opCode == 1 ? Double.NEGATIVE_INFINITY : Double.POSITIVE_INFINITY));
      } else {
        copyArray(a.strided(outShape, stridesOfKept(a, red, outShape.length, keepDims), a.offset()), out);
      }
      return wrap(out);
    }
    if (a.isContiguous() && leading && rows > 1) {
      reduceColumns(t, a, out, cols, rows, opCode);
      mark("reduce columns");
    } else {
      boolean direct = a.isContiguous() && isIdentity(order);
      CudaArray src = direct ? a : temp(a.dtype(), permuted(a.shape(), order));
      if (!direct) {
        copyArray(a.permute(order), src);
      }
      // A block a row; the whole GPU's threads are few where the rows are (a loss's mean is one row): 1,024 a block.
      int block = rows < gpu.multiprocessors() && cols >= 4096 ? 1024 : BLOCK;
      op("kiln_reduce_rows_" + t).launch(stream, rows, 1, block, 0,
          new KernelArgs().ptr(src).ptr(out).i64(rows).i64(cols).i32(opCode));
      launches++;
      if (!direct) {
        src.close();
      }
      mark("reduce rows");
    }
    return wrap(out);
  }

  private static long[] permuted(long[] shape, int[] order) {
    long[] out = new long[order.length];
    for (int i = 0; i < order.length; i++) {
      out[i] = shape[order[i]];
    }
    return out;
  }

  private static long[] stridesOfKept(CudaArray a, boolean[] red, int outRank, boolean keepDims) {
    long[] st = new long[outRank];
    int j = 0;
    for (int d = 0; d < a.rank(); d++) {
      if (keepDims) {
        st[j++] = a.stride(d);
      } else if (!red[d]) {
        st[j++] = a.stride(d);
      }
    }
    return st;
  }

  private static boolean isIdentity(int[] order) {
    for (int i = 0; i < order.length; i++) {
      if (order[i] != i) {
        return false;
      }
    }
    return true;
  }

  /** out[c] = reduce over r of a[r, c] for contiguous a [reducedRows, keptCols]: chunks of rows, then the chunks. */
  private void reduceColumns(String t, CudaArray a, CudaArray out, long reduced, long kept, int opCode) {
    long colBlocks = (kept + 31) / 32;
    // Up to SINGLE_PASS_ROWS rows, one launch: a norm's weight gradient ([263, 512] partial sums at TinyStories'
    // shape) took two launches of 3.0 and 2.1 us, and a second launch costs a graph step as much again.
    long chunks = reduced <= SINGLE_PASS_ROWS ? 1
        : Math.max(1, Math.min(Math.min(reduced / 64, 256), Math.max(1, 2048 / colBlocks)));
    long perChunk = (reduced + chunks - 1) / chunks;
    chunks = (reduced + perChunk - 1) / perChunk;
    CudaKernel k = op("kiln_reduce_cols_" + t);
    if (chunks == 1) {
      // 32 row lanes where each would still take 8 rows or more: a norm's weight gradient at xl ([256, 2,560] partial
      // sums, 80 blocks) has a thread's rows in flight 4 at a time, and with 8 lanes each took 32 of them.
      int threads = reduced >= 256 ? 1024 : BLOCK;
      k.launch(stream, colBlocks, 1, threads, 0, new KernelArgs().ptr(a).ptr(out).i64(reduced).i64(kept).i32(opCode)
          .i64(reduced));
      launches++;
      return;
    }
    try (CudaArray partial = temp(out.dtype(), chunks, kept)) {
      k.launch(stream, colBlocks, chunks, BLOCK, 0, new KernelArgs().ptr(a).ptr(partial).i64(reduced).i64(kept)
          .i32(opCode).i64(perChunk));
      // The partial sums are in the output's dtype (fp32 for a bf16 input).
      op("kiln_reduce_cols_" + suffix(out.dtype())).launch(stream, colBlocks, 1, BLOCK, 0, new KernelArgs()
          .ptr(partial).ptr(out).i64(chunks).i64(kept).i32(opCode).i64(chunks));
    }
    launches += 2;
  }

  // ================================================================ indexing

  private static CudaArray ids(Tensor t, String op) {
    CudaArray a = arr(t, op, "ids");
    if (a.dtype() != DType.I32 && a.dtype() != DType.I64) {
      throw new IllegalArgumentException("cuda device, " + op + ": ids must be I32 or I64, got " + a.dtype());
    }
    return a;
  }

  @Override
  public Tensor gather(Tensor table, Tensor idsT) {
    CudaArray tab = contiguousArray(floating(table, "gather", "table"));
    CudaArray id = contiguousArray(ids(idsT, "gather"));
    if (tab.rank() != 2) {
      throw new IllegalArgumentException("cuda device, gather: table must be [n, d], got "
          + Arrays.toString(tab.shape()));
    }
    long d = tab.shape(1);
    long[] shape = Arrays.copyOf(id.shape(), id.rank() + 1);
    shape[id.rank()] = d;
    CudaArray out = newArray(tab.dtype(), shape);
    long count = id.numel();
    if (count > 0) {
      boolean four = rowsOfFloat4(tab, out, d);
      op("kiln_gather_rows" + (four ? "4_" : "_") + suffix(tab.dtype()) + "_" + suffix(id.dtype())).launch(stream,
          count, 1, four ? float4RowBlock(d) : rowBlock(d), 0, new KernelArgs().ptr(tab).ptr(id).ptr(out)
              .i64(count).i64(four ? d / 4 : d).i64(tab.shape(0)).ptr(errorWord));
      launches++;
      mark("gather rows");
    }
    return wrap(out);
  }

  @Override
  public void scatterAddRows(Tensor dTable, Tensor idsT, Tensor src) {
    CudaArray tab = floating(dTable, "scatterAddRows", "dTable");
    requireContiguous(tab, "scatterAddRows", "dTable");
    written(tab);
    CudaArray id = contiguousArray(ids(idsT, "scatterAddRows"));
    CudaArray s = contiguousArray(floating(src, "scatterAddRows", "src"));
    sameFloat("scatterAddRows", tab, s);
    long d = tab.shape(1);
    long count = id.numel();
    if (s.numel() != count * d) {
      throw new IllegalArgumentException("cuda device, scatterAddRows: src " + Arrays.toString(s.shape())
          + " is not ids " + Arrays.toString(id.shape()) + " + [" + d + "]");
    }
    if (count > 0) {
      boolean four = rowsOfFloat4(tab, s, d);
      op("kiln_scatter_rows" + (four ? "4_" : "_") + suffix(tab.dtype()) + "_" + suffix(id.dtype())).launch(stream,
          count, 1, four ? float4RowBlock(d) : rowBlock(d), 0, new KernelArgs().ptr(tab).ptr(id).ptr(s).i64(count)
              .i64(four ? d / 4 : d).i64(tab.shape(0)).ptr(errorWord));
      launches++;
      mark("scatter-add rows");
    }
  }

  /**
   * Whether the row kernels of gather and scatter-add may move {@code d}-wide rows of {@code a} and {@code b} (both
   * contiguous) as float4s ({@code kiln_gather_rows4_f32}, {@code kiln_scatter_rows4_f32}): fp32, d a multiple of 4,
   * both starting on 16 bytes.
   */
  private static boolean rowsOfFloat4(CudaArray a, CudaArray b, long d) {
    return a.dtype() == DType.F32 && d % 4 == 0 && a.address() % 16 == 0 && b.address() % 16 == 0;
  }

  /** Threads for a row of {@code d / 4} float4s: one each, in whole warps, up to 256 (the rest loop). */
  private static int float4RowBlock(long d) {
    return (int) Math.min(256, (d / 4 + 31) / 32 * 32);
  }

  @Override
  public Tensor pick(Tensor x, Tensor idx) {
    CudaArray a = contiguousArray(floating(x, "pick", "x"));
    CudaArray id = contiguousArray(ids(idx, "pick"));
    long n = a.shape(-1);
    long rows = id.numel();
    if (a.numel() != rows * n) {
      throw new IllegalArgumentException("cuda device, pick: x " + Arrays.toString(a.shape()) + " is not idx "
          + Arrays.toString(id.shape()) + " + [n]");
    }
    CudaArray out = newArray(a.dtype(), id.shape());
    launchFlat("kiln_pick_" + suffix(a.dtype()) + "_" + suffix(id.dtype()), rows,
        new KernelArgs().ptr(a).ptr(id).ptr(out).i64(rows).i64(n).ptr(errorWord));
    return wrap(out);
  }

  @Override
  public void scatterAddLast(Tensor dx, Tensor idx, Tensor src) {
    CudaArray d = floating(dx, "scatterAddLast", "dx");
    requireContiguous(d, "scatterAddLast", "dx");
    written(d);
    CudaArray id = contiguousArray(ids(idx, "scatterAddLast"));
    CudaArray s = contiguousArray(floating(src, "scatterAddLast", "src"));
    sameFloat("scatterAddLast", d, s);
    long n = d.shape(-1);
    long k = id.shape(-1);
    long rows = id.numel() / Math.max(k, 1);
    if (d.numel() != rows * n || s.numel() != id.numel()) {
      throw new IllegalArgumentException("cuda device, scatterAddLast: dx " + Arrays.toString(d.shape()) + ", idx "
          + Arrays.toString(id.shape()) + ", src " + Arrays.toString(s.shape()) + " do not line up");
    }
    launchFlat("kiln_scatter_last_" + suffix(d.dtype()) + "_" + suffix(id.dtype()), rows * k,
        new KernelArgs().ptr(d).ptr(id).ptr(s).i64(rows).i64(n).i64(k).ptr(errorWord));
  }

  @Override
  public TopK topk(Tensor x, int k) {
    // Top-k (mixture-of-experts routing) is small next to the GEMMs around it; it runs on the host copy.
    TopK r = host.topk(toHost(x), k);
    return new TopK(fromHost((NdArray) r.values()), fromHost((NdArray) r.indices()));
  }

  /**
   * The partial rows of {@code kernel}'s column-sum outputs, checked: each is {@code [partials, cols]} with
   * {@code 1 <= partials <= rows}, all alike (the generated code allocates them with {@link #columnSumRows}).
   */
  private static long columnSumPartials(Kernel kernel, CudaArray[] arrays, long rows, long cols, String what) {
    long partials = -1;
    for (int i = 0; i < kernel.outputs(); i++) {
      if (kernel.isColumnSum(i)) {
        CudaArray a = arrays[kernel.inputs() + i];
        long p = cols == 0 ? 0 : a.numel() / cols;
        if (p * cols != a.numel() || p < 1 || p > rows || (partials >= 0 && p != partials)) {
          throw new IllegalArgumentException("cuda device, " + what + ": column-sum output " + i + " has "
              + a.numel() + " elements; it must be [partials, " + cols + "] with 1 <= partials <= " + rows
              + ", as columnSumRows gives (other column sums: " + partials + " rows)");
        }
        partials = p;
      }
    }
    return partials;
  }

  /**
   * At most one partial row per block the GPU keeps resident (the kernel's fp32 variant's occupancy at its launch
   * size, times the SMs), in runs of equal length: one wave of blocks then does every row. Runs a row short of that
   * (4,682 blocks for 4,224 places) left a second wave of a tenth of the blocks, each as long as the first, and the
   * norm's backward ran 24% slower than with one row a block. On TinyStories' norms (32,768 rows of 512, 2,979 blocks
   * resident on an H200) the partial rows are 6 MB instead of a 64 MB full output, written and then summed.
   */
  @Override
  public long columnSumRows(Kernel kernel, long rows, long cols) {
    if (rows <= 1) {
      return Math.max(rows, 1);
    }
    RowLaunch shape = rowLaunch(kernel, rows, cols, DType.F32);
    int block = shape.threads();
    int shared = shape.sharedBytes();
    int perSm = residentBlocks(kernel, shape.function(kernel, "f32"), block, shared);
    long resident = (long) gpu.multiprocessors() * Math.max(1, perSm);
    long per = (rows + resident - 1) / resident;
    return (rows + per - 1) / per;
  }

  /**
   * How {@code kernel}, a generated ROWS kernel, is launched over {@code rows × cols} in {@code dtype} with 16-byte
   * aligned tensors (as this device allocates them): the warp-row or block-row form where its module has it (one a
   * processor of before that form does not), else one row a block.
   */
  public RowLaunch rowLaunch(Kernel kernel, long rows, long cols, DType dtype) {
    return rowLaunch(kernel, rows, cols, dtype, true, "f32");
  }

  /**
   * The bf16 copy of {@code kernel}'s twin output for its {@code _tw} variant to write, made now, where the kernel is
   * one whose output was cast for GEMMs before ({@link #twinWanted}), in mixed precision inside a scope, on an fp32
   * variant; else null.
   */
  private CudaArray twinFor(Kernel kernel, CudaArray[] arrays, String variant) {
    if (kernel.twinOutput() < 0 || precision != Precision.BF16 || scopes.isEmpty()
        || !twinWanted.contains(kernel.name()) || !(variant.equals("f32") || variant.equals("f32_in16"))) {
      return null;
    }
    CudaArray out = arrays[kernel.inputs() + kernel.twinOutput()];
    return out.isContiguous() ? newArray(DType.BF16, out.shape()) : null;
  }

  private RowLaunch rowLaunch(Kernel kernel, long rows, long cols, DType dtype, boolean aligned, String variant) {
    RowLaunch shape = RowLaunch.of(kernel, rows, cols, dtype, gpu.multiprocessors(), aligned);
    if (shape.span() > 0 && !gpu.kernels().generated(kernel.cudaResource()).has(shape.function(kernel, variant))) {
      return RowLaunch.oneRowABlock(kernel, cols, dtype);
    }
    if (shape.blockRow()) {
      // A block-row block must fit an SM: its registers times its threads (the _tw variant's too, when it has one).
      for (String function : List.of(shape.function(kernel, variant), shape.function(kernel, variant + "_tw"))) {
        if (gpu.kernels().generated(kernel.cudaResource()).has(function)
            && residentBlocks(kernel, function, shape.threads(), 0) == 0) {
          return RowLaunch.oneRowABlock(kernel, cols, dtype);
        }
      }
    }
    return shape;
  }

  /** Dynamic shared memory a column-sum row kernel may take for its sums: the default limit, 48 KB. */
  private static final long COLUMN_SUMS_SHARED = 48 * 1024;

  /**
   * A generated ROWS kernel's launch: its warp-row form ({@code <name>_w<span>_<variant>}: one warp a row,
   * {@code rowGroups} rows a block, the row in registers, 4 entries a load) where {@code span > 0}, its block-row form
   * ({@code <name>_b<span>_<variant>}, {@code blockRow}: the same with one block of {@code rowThreads} a row, for rows
   * longer than a warp takes), else its one-row-a-block form ({@code rowThreads} threads a row, {@code rowGroups} 1);
   * and the dynamic shared memory of its column sums (0 where they are summed in the output itself).
   *
   * <p>The warp-row form takes every row of up to 1,024 fp32 entries, a multiple of 4, with 16-byte aligned tensors;
   * the block-row form longer ones, up to 2,048 entries a float4 group of a thread covers (8,192 at the widest span).
   * The one-row-a-block form loads the row again for each pass a scalar at a time and waits at two barriers per
   * reduction: with it TinyStories' norms (32,768 rows of 512) ran at half the memory bandwidth, forward 49 us and
   * backward 83 against 27 and 52 for the warp-row form in a micro-benchmark on the H200. With one row a warp but the
   * scalar loads kept, they ran no faster (55 and 104 us under ncu): the instructions, not the rows in flight, were
   * the bound. Eight rows a block where the rows fill the GPU with eight warps a block, else four.
   */
  public record RowLaunch(int span, boolean blockRow, int rowThreads, int rowGroups, int sharedBytes) {
    /** The spans the processor generates warp-row forms for (CudaEmitter.WARP_ROW_SPANS): rows up to 128 span. */
    static final int[] SPANS = {2, 4, 8};
    /**
     * The spans of the block-row forms (CudaEmitter.BLOCK_ROW_SPANS): the first whose block of whole warps covers the
     * row in at most {@link #BLOCK_ROW_WARPS} is taken. On xl's norms (2,048 rows of 2,560, under ncu on the H200)
     * spans 2 and 4 ran alike: forward 8.3 us, backward 25.9 and 25.8 us. {@code KILN_BLOCK_ROWS=0} leaves such rows
     * to the one-row-a-block form, for comparisons.
     */
    static final int[] BLOCK_SPANS = "0".equals(System.getenv("KILN_BLOCK_ROWS")) ? new int[0] : new int[] {2, 4};

    /**
     * At most 16 warps a row: 512 threads hold 128 registers each, more than the block-row kernels take (70 at span
     * 2 for the norm's backward); 1,024 threads (a row of 16,384 at span 4) failed to launch for want of registers.
     */
    static final int BLOCK_ROW_WARPS = 16;

    public int threads() {
      return rowThreads * rowGroups;
    }

    /** The kernel's function for {@code variant} (f32, f32_bf16, ...). */
    String function(Kernel kernel, String variant) {
      return kernel.name() + (span > 0 ? (blockRow ? "_b" : "_w") + span : "") + "_" + variant;
    }

    /**
     * The warp-row or block-row form where {@code rows × cols} in {@code dtype} allow it (tensors aligned), else one
     * row a block.
     */
    static RowLaunch of(Kernel kernel, long rows, long cols, DType dtype, int multiprocessors, boolean aligned) {
      int sums = Long.bitCount(kernel.columnSums());
      boolean vectors = aligned && dtype == DType.F32 && cols > 0 && cols % 4 == 0;
      if (vectors && cols <= 128L * SPANS[SPANS.length - 1]) {
        int span = 0;
        for (int j : SPANS) {
          if (span == 0 && 128L * j >= cols) {
            span = j;
          }
        }
        int groups = rows >= (long) multiprocessors * 64 ? 8 : 4;
        while (groups > 1 && (long) sums * groups * cols * dtype.byteSize() > COLUMN_SUMS_SHARED) {
          groups /= 2;
        }
        long bytes = (long) sums * groups * cols * dtype.byteSize();
        if (bytes <= COLUMN_SUMS_SHARED) {
          return new RowLaunch(span, false, 32, groups, (int) bytes);
        }
      } else if (vectors) {
        for (int j : BLOCK_SPANS) {
          long warps = (cols + 128L * j - 1) / (128L * j);
          if (warps <= BLOCK_ROW_WARPS) {
            // Column sums go from each thread's registers to the block's partial row: no shared memory.
            return new RowLaunch(j, true, (int) warps * 32, 1, 0);
          }
        }
      }
      return oneRowABlock(kernel, cols, dtype);
    }

    static RowLaunch oneRowABlock(Kernel kernel, long cols, DType dtype) {
      long bytes = Long.bitCount(kernel.columnSums()) * cols * dtype.byteSize();
      return new RowLaunch(0, false, generatedRowBlock(cols), 1, bytes <= COLUMN_SUMS_SHARED ? (int) bytes : 0);
    }
  }

  /** Blocks of a generated row kernel an SM holds, by kernel, block size and shared bytes (columnSumRows). */
  private final Map<String, Integer> residentRowBlocks = new java.util.concurrent.ConcurrentHashMap<>();

  /** How many blocks of {@code threads} (and {@code shared} bytes) of a generated row kernel's function an SM holds. */
  private int residentBlocks(Kernel kernel, String function, int threads, int shared) {
    return residentRowBlocks.computeIfAbsent(function + "/" + threads + "/" + shared, key ->
        gpu.kernels().generated(kernel.cudaResource()).kernel(function).residentBlocks(threads, shared));
  }

  /** Row entries each thread of kiln_xent_cached keeps in registers (its PER template argument). */
  private static final int XENT_CACHED_PER_THREAD = 16;
  /** float4s each thread of kiln_xent_cached4 keeps in registers (its PER4), and the rows it takes (512 threads). */
  private static final int XENT_CACHED4_PER_THREAD = 8;
  private static final long XENT_CACHED4_MAX = 4L * XENT_CACHED4_PER_THREAD * 512;

  /**
   * Threads of a generated ROWS kernel's block (one block per row): about 8 elements a thread, in whole warps. A
   * row of a norm is short (512 to 2,560 entries); with 256 threads a row, an SM held 8 rows at a time and the
   * kernels ran at a fifth of the memory bandwidth; small blocks let 32 rows share an SM.
   */
  private static int generatedRowBlock(long cols) {
    long warps = (cols + 8 * 32 - 1) / (8 * 32);
    return (int) Math.min(1024, Math.max(32, warps * 32));
  }

  /** Column sums over at most this many rows run as one launch ({@link #reduceColumns}). */
  private static final long SINGLE_PASS_ROWS = 1024;

  private static int rowBlock(long cols) {
    if (cols >= 4096) {
      return 1024;
    }
    if (cols >= 1024) {
      return 512;
    }
    if (cols >= 256) {
      return 256;
    }
    return cols > 64 ? 128 : 64;
  }

  // ================================================================ cross-entropy

  /**
   * One block per row: the log-sum-exp (rows of up to 16,384 entries held in registers, longer ones swept online),
   * then the loss of the target. Inside a scope, rows that {@code kiln_xent_cached4} takes also leave their
   * log-sum-exp for the backward of the same logits ({@link #lseCache}), and where the backward of such logits took
   * one known loss gradient before ({@link #xentGradPlans}), the gradient itself ({@link #xentAhead}).
   */
  @Override
  public Tensor crossEntropy(Tensor logits, Tensor targets) {
    CudaArray[] xt = crossEntropyOperands(logits, targets, "crossEntropy");
    CudaArray out = newArray(computeDtype(xt[0]), xt[1].shape());
    CudaArray lse = !scopes.isEmpty() && vectorXent(xt[0]) ? newArray(DType.F32, xt[1].shape()) : null;
    Float g = lse != null && bf16GradientOnly(xt[0]) ? xentGradPlans.get(xentPlanKey(xt[0])) : null;
    // The gradient written ahead, in the same pass over the logits (the row is in registers for the loss already):
    // the backward then reads nothing (TinyStories: 0.66 GB read and one launch less a step).
    CudaArray ahead = g != null ? newArray(DType.BF16, xt[0].shape()) : null;
    crossEntropyLaunch(xt[0], xt[1], null, out, ahead, lse, g != null ? g : 0f);
    if (lse != null) {
      lseCache.put(CastKey.of(xt[0]), lse);
    }
    if (ahead != null) {
      xentAhead.put(CastKey.of(xt[0]), new AheadGrad(CastKey.of(xt[1]), g, ahead, xentPlanKey(xt[0])));
    }
    return wrap(out);
  }

  /** Whether the backward of logits {@code x} may return its gradient in bf16 alone (given bf16Result). */
  private boolean bf16GradientOnly(CudaArray x) {
    return precision == Precision.BF16 && !scopes.isEmpty() && vectorXent(x) && gemmResultsInBf16
        && computeDtype(x) == DType.F32;
  }

  private static List<Object> xentPlanKey(CudaArray logits) {
    return List.of(logits.dtype(), Arrays.stream(logits.shape()).boxed().toList());
  }

  /**
   * From the forward's log-sum-exp where the scope kept it ({@code kiln_xent_grad4}: no reduction, the row streamed
   * once), else one block per row: the log-sum-exp again, then the row's gradient from the same registers (longer
   * rows are read a second time).
   */
  @Override
  public Tensor crossEntropyBackward(Tensor logits, Tensor targets, Tensor dLoss) {
    return crossEntropyBackward(logits, targets, dLoss, false);
  }

  /**
   * With {@code bf16Result} (every reader takes bf16: the LM head's GEMMs) in mixed precision, the gradient is
   * returned in bf16 alone: the kernel writes no fp32 copy (TinyStories: 1.3 GB a step), as autocast's gradient of
   * bf16 logits is bf16.
   */
  @Override
  public Tensor crossEntropyBackward(Tensor logits, Tensor targets, Tensor dLoss, boolean bf16Result) {
    CudaArray[] xt = crossEntropyOperands(logits, targets, "crossEntropyBackward");
    CudaArray gu = ct(dLoss, "crossEntropyBackward", "dLoss").array();
    if (gu.dtype() != DType.F32 && gu.dtype() != DType.F64 || gu.dtype() != computeDtype(xt[0])) {
      throw new IllegalArgumentException("cuda device, crossEntropyBackward: operands mix " + xt[0].dtype() + " and "
          + gu.dtype() + " (dLoss must be " + computeDtype(xt[0]) + ")");
    }
    boolean bf16Only = bf16Result && bf16GradientOnly(xt[0]) && gu.dtype() == DType.F32;
    Double uniform = bf16Only && Arrays.equals(gu.shape(), xt[1].shape()) ? knownValue(gu) : null;
    if (uniform != null) {
      // One value for every row: the next forward of such logits writes the gradient ahead for it.
      float gv = (float) (double) uniform;
      xentGradPlans.put(xentPlanKey(xt[0]), gv);
      // Taken or not, the entry is settled here: one left at the scope's end means a pass without its backward.
      AheadGrad ahead = xentAhead.remove(CastKey.of(xt[0]));
      if (ahead != null && ahead.g() == gv && ahead.targets().equals(CastKey.of(xt[1]))) {
        return wrap(ahead.grad16());
      }
    }
    CudaArray g = floating(dLoss, "crossEntropyBackward", "dLoss");
    CudaArray dense = newArray(g.dtype(), xt[1].shape());
    copyArray(g, dense); // the loss's gradient is often a broadcast scalar (the mean's 1/n)
    // In mixed precision the gradient is read next by the head's two GEMMs, which would cast it to bf16: the kernel
    // writes that copy too, from registers, which saves reading the fp32 gradient again; or only that copy.
    CudaArray out16 = precision == Precision.BF16 && !scopes.isEmpty() && vectorXent(xt[0])
        ? newArray(DType.BF16, xt[0].shape()) : null;
    CudaArray out = bf16Only ? null : newArray(g.dtype(), xt[0].shape());
    crossEntropyLaunch(xt[0], xt[1], dense, out, out16, lseCache.get(CastKey.of(xt[0])), 0f);
    if (bf16Only) {
      return wrap(out16);
    }
    if (out16 != null) {
      rememberCast(out, out16);
    }
    return wrap(out);
  }

  /**
   * True when {@code x}'s rows go through {@code kiln_xent_cached4}: fp32 rows starting on 16 bytes, or bf16 ones on
   * 8, a multiple of 4 long, that fit it.
   */
  private static boolean vectorXent(CudaArray x) {
    long v = x.shape(-1);
    boolean aligned = x.dtype() == DType.F32 ? x.address() % 16 == 0 : x.dtype() == DType.BF16 && x.address() % 8 == 0;
    return aligned && v % 4 == 0 && v <= XENT_CACHED4_MAX;
  }

  /** The dtype a kernel computes {@code x} in: fp32 for a bf16 array (a GEMM result kept in bf16), else its own. */
  private static DType computeDtype(CudaArray x) {
    return x.dtype() == DType.BF16 ? DType.F32 : x.dtype();
  }

  /**
   * Logits and targets, contiguous and checked. Logits may be bf16 in mixed precision (the LM head's output kept so,
   * see {@link #emptyGemmResult}); such rows that {@code kiln_xent_cached4} cannot take are widened to fp32 first.
   */
  private CudaArray[] crossEntropyOperands(Tensor logits, Tensor targets, String op) {
    CudaArray given = arr(logits, op, "logits");
    CudaArray x = given.dtype() == DType.BF16 && precision == Precision.BF16 ? contiguousArray(given)
        : contiguousArray(floating(logits, op, "logits"));
    if (x.dtype() == DType.BF16 && !vectorXent(x)) {
      CudaArray wide = newArray(DType.F32, x.shape());
      copyArray(x, wide);
      x = wide;
    }
    CudaArray t = contiguousArray(ids(targets, op));
    if (x.rank() != t.rank() + 1 || !Arrays.equals(Arrays.copyOf(x.shape(), t.rank()), t.shape())) {
      throw new IllegalArgumentException("cuda device, " + op + ": logits must be targets.shape + [vocab]; got logits "
          + Arrays.toString(x.shape()) + ", targets " + Arrays.toString(t.shape()));
    }
    return new CudaArray[] {x, t};
  }

  /**
   * The forward ({@code dLoss} null) writes each row's log-sum-exp into {@code lse} where given, and with
   * {@code out16} the bf16 gradient for a loss gradient of {@code gAhead} in every row ({@code kiln_xent_cached4}
   * only); the backward reads the log-sum-exp from {@code lse} where given ({@code kiln_xent_grad4}), which only
   * {@code kiln_xent_cached4}'s rows have.
   */
  private void crossEntropyLaunch(CudaArray x, CudaArray t, CudaArray dLoss, CudaArray out, CudaArray out16,
      CudaArray lse, float gAhead) {
    long rows = t.numel();
    long v = x.shape(-1);
    if (rows == 0) {
      return;
    }
    String types = suffix(x.dtype()) + "_" + suffix(t.dtype());
    if (dLoss != null && lse != null && vectorXent(x)) {
      // Whole warps, up to 256 threads a row: rows are many (a batch's tokens), each 4-wide group is independent.
      int block = (int) Math.min(256, (v / 4 + 31) / 32 * 32);
      KernelArgs args = new KernelArgs().ptr(x).ptr(t).ptr(lse).ptr(dLoss).ptrOrNull(out).ptrOrNull(out16)
          .i64(rows).i64(v).ptr(errorWord);
      op("kiln_xent_grad4_" + types).launch(stream, Math.min(rows, MAX_GRID), 1, block, 0, args);
      launches++;
      mark("cross-entropy backward");
      return;
    }
    KernelArgs args = new KernelArgs().ptr(x).ptr(t);
    args.ptrOrNull(dLoss).ptrOrNull(out); // null: the bf16 copy only (kiln_xent_cached4)
    if (vectorXent(x)) {
      // XENT_CACHED4_PER_THREAD float4s a thread, in whole warps.
      long perWarp = 4L * XENT_CACHED4_PER_THREAD * 32;
      int block = (int) ((v + perWarp - 1) / perWarp * 32);
      args.ptrOrNull(out16).ptrOrNull(dLoss == null ? lse : null).f32(gAhead).i64(rows).i64(v).ptr(errorWord);
      op("kiln_xent_cached4_" + types).launch(stream, Math.min(rows, MAX_GRID), 1, block, 0, args);
      launches++;
      mark(dLoss == null ? "cross-entropy" : "cross-entropy backward");
      return;
    }
    if (out16 != null) {
      throw new IllegalStateException("cuda device: a bf16 gradient copy needs kiln_xent_cached4");
    }
    args.i64(rows).i64(v).ptr(errorWord);
    if (v <= XENT_CACHED_PER_THREAD * 1024L) {
      // The row in registers (XENT_CACHED_PER_THREAD entries a thread): read once, each exponential taken once.
      int block = (int) Math.max(64, (v + XENT_CACHED_PER_THREAD * 32L - 1) / (XENT_CACHED_PER_THREAD * 32L) * 32);
      op("kiln_xent_cached_" + types).launch(stream, Math.min(rows, MAX_GRID), 1, block, 0, args);
    } else {
      op("kiln_xent_" + types).launch(stream, Math.min(rows, MAX_GRID), 1, rowBlock(v), 0, args);
    }
    launches++;
    mark(dLoss == null ? "cross-entropy" : "cross-entropy backward");
  }

  // ================================================================ rotary position embedding

  /**
   * One kernel: one warp per token when the rows sharing a position lie back to back (a token's heads; see
   * {@link #ropeTokens}), else a warp per row (or per 32 / half rows, for narrow heads). The positions are read where
   * they are (broadcast by strides); cos and sin come from a table made once per (theta, width) for positions below
   * {@link #ROPE_TABLE_POSITIONS} (fp32), else from the inverse frequencies, so nothing is uploaded or expanded per
   * call. An {@code x} of rank up to 4 with a contiguous last dim (the head-split view of a projection) is read in
   * place.
   */
  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse) {
    return rope(x, positions, theta, inverse, false);
  }

  /**
   * With {@code forGemms} (only GEMMs and attention read the result, the processor says) in mixed precision, the
   * result is written in bf16 only, as {@link #emptyGemmOperand} would allocate it: the bf16 copy is all its readers
   * see, and the fp32 write (a third of the traffic) is saved.
   */
  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse, boolean forGemms) {
    // x may be a q or k projection kept in bf16 (emptyGemmResult): the token kernel reads it so; other layouts take
    // it widened to fp32 (exactly).
    CudaArray a = operandOrBf16Result(x, "rope", "x");
    if (a.rank() < 1 || a.shape(-1) % 2 != 0) {
      throw new IllegalArgumentException("cuda device, rope: x " + Arrays.toString(a.shape())
          + " must have an even last dim (pairs are rotated)");
    }
    CudaArray p = ids(positions, "rope");
    StridedPlan.broadcastStrides(p.shape(), p.strides(), Arrays.copyOf(a.shape(), a.rank() - 1),
        "cuda device, rope: positions");
    CudaTensor fused = forGemms ? ropeByAttention(a, p, theta, inverse) : null;
    return fused != null ? fused : ropeResult(ropeOf(a, p, theta, inverse, forGemms, null), a.shape());
  }

  /**
   * With {@code overwrite} (nothing reads {@code x} after this call, the processor says: attention's dq or dk) where
   * {@code x} is one of attention's gradients interleaved for the projections' one input-gradient GEMM
   * ({@link #attentionGradients}), the bf16 result is written over {@code x}: dq, dk and dv then stay rows of one
   * matrix, and {@link #stackedSum} runs the q, k and v projections' input gradients and their sum as one GEMM for
   * heads that RoPE's own kernels turn (64 and 80, where attention does not turn them itself). Otherwise as
   * {@link #rope(Tensor, Tensor, double, boolean, boolean)}.
   */
  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse, boolean forGemms,
      boolean overwrite) {
    if (!overwrite || !forGemms || !stackGemms || !(x instanceof CudaTensor t)
        || !interleavedGradients.contains(t.array().bufferIdentity())) {
      return rope(x, positions, theta, inverse, forGemms);
    }
    CudaArray a = t.array();
    CudaArray p = ids(positions, "rope");
    if (a.dtype() != DType.BF16 || a.rank() < 1 || a.rank() > 4 || a.shape(-1) % 2 != 0 || a.stride(-1) != 1
        || !gemmOperandsInBf16 || precision != Precision.BF16) {
      return rope(x, positions, theta, inverse, forGemms);
    }
    StridedPlan.broadcastStrides(p.shape(), p.strides(), Arrays.copyOf(a.shape(), a.rank() - 1),
        "cuda device, rope: positions");
    CudaTensor fused = ropeByAttention(a, p, theta, inverse);
    return fused != null ? fused : wrap(ropeOf(a, p, theta, inverse, true, a));
  }

  /**
   * RoPE's kernel on {@code a} at positions {@code p} (checked): into {@code into} where given (bf16, laid out as a
   * new array like {@code a} of rank up to 4: a deferred RoPE, {@link #deferredRopes}; or {@code a} itself, bf16, for
   * a RoPE that may overwrite its input), else into a new result. The
   * result may be {@code a}'s rows flattened (rank over 4), which {@link #ropeResult} shapes back.
   */
  private CudaArray ropeOf(CudaArray a, CudaArray p, double theta, boolean inverse, boolean forGemms,
      CudaArray into) {
    long[] rows = Arrays.copyOf(a.shape(), a.rank() - 1);
    long[] ps = StridedPlan.broadcastStrides(p.shape(), p.strides(), rows, "cuda device, rope: positions");
    if (a.rank() > 4) {
      // More leading dims than the kernel walks: flatten x and the positions to one row dim.
      a = contiguousArray(a);
      CudaArray flat = newArray(p.dtype(), rows);
      copyArray(p, flat);
      p = flat;
      rows = new long[] {NdArray.numel(rows)};
      a = a.strided(new long[] {rows[0], a.shape(-1)}, new long[] {a.shape(-1), 1}, a.offset());
      ps = new long[] {1};
    } else if (a.shape(-1) > 1 && a.stride(-1) != 1) {
      a = contiguousArray(a);
    }
    // In x's layout: x's last dim has stride 1 here, and ties keep dim order, so the result's last dim is contiguous.
    // In mixed precision the result is read next by attention or by GEMMs (through the rearrange back to the
    // projection's layout), which would cast it to bf16: the kernel writes that copy too (out16), laid out as the
    // result, or, forGemms, only that copy. Its 4-byte pair stores need even row offsets: a new array in x's layout
    // has them, as x's last dim (even) is the innermost of its dims longer than 1.
    DType compute = computeDtype(a);
    boolean bf16Only = into != null
        || (forGemms && gemmOperandsInBf16 && precision == Precision.BF16 && compute == DType.F32);
    CudaArray out16 = into != null ? into
        : bf16Only || (precision == Precision.BF16 && !scopes.isEmpty() && compute == DType.F32)
            ? newArrayLike(a, DType.BF16, a.shape()) : null;
    CudaArray out = bf16Only ? null : newArrayLike(a, compute, a.shape());
    CudaArray result = bf16Only ? out16 : out;
    // The leading dims as [n0, n1, n2], padded in front with size-1 dims.
    long[] n = {1, 1, 1};
    long[] xs = {0, 0, 0};
    long[] os = {0, 0, 0};
    long[] pst = {0, 0, 0};
    for (int i = 0; i < rows.length; i++) {
      n[3 - rows.length + i] = rows[i];
      xs[3 - rows.length + i] = a.stride(i);
      os[3 - rows.length + i] = result.stride(i);
      pst[3 - rows.length + i] = ps[i];
    }
    walkInMemoryOrder(n, xs, os, pst);
    long half = a.shape(-1) / 2;
    long rowCount = NdArray.numel(rows);
    if (rowCount > 0 && compute == DType.F32
        && ropeTokens(a, p, out, out16, result, n, xs, os, pst, half, theta, inverse)) {
      return result;
    }
    if (a.dtype() == DType.BF16) {
      // The general kernel reads fp32: widen x (laid out as it is) and start again.
      for (CudaArray unused : new CudaArray[] {out, out16}) {
        if (unused != null && unused != into) {
          unused.close();
        }
      }
      return ropeOf(widened(a), p, theta, inverse, forGemms, into);
    }
    KernelArgs args = new KernelArgs().ptr(a).i64(n[1]).i64(n[2]).i64(xs[0]).i64(xs[1]).i64(xs[2]).ptr(p)
        .i64(pst[0]).i64(pst[1]).i64(pst[2]).ptr(ropeFrequencies(theta, half));
    // fp32 reads cos and sin from the table; float64 computes them in double (the table is float).
    if (a.dtype() == DType.F32) {
      args.ptr(ropeCosSin(theta, half)).i64(ROPE_TABLE_POSITIONS);
    } else {
      args.nullPtr().i64(0);
    }
    args.ptrOrNull(out); // null with forGemms: the bf16 copy only
    // Pairs move as one vector when every row starts on an even element in x and in out (the buffers are aligned).
    boolean paired = Arrays.stream(xs).allMatch(v -> v % 2 == 0) && Arrays.stream(os).allMatch(v -> v % 2 == 0)
        && a.offset() % 2 == 0 && result.offset() % 2 == 0;
    args.ptrOrNull(out16).i64(os[0]).i64(os[1]).i64(os[2]).i64(rowCount).i64(half)
        .f64(inverse ? -1 : 1).i32(paired ? 1 : 0);
    if (rowCount > 0) {
      // A warp per ROPE_ROWS_PER_WARP groups of one row, or of 32 / half rows.
      long rowsPerBlock = BLOCK / 32 * ROPE_ROWS_PER_WARP * (half >= 32 ? 1 : 32 / half);
      // Row indices in 32 bits when they fit (the _32 kernel): 64-bit division is emulated.
      long blocks = (rowCount + rowsPerBlock - 1) / rowsPerBlock;
      String width = blocks * rowsPerBlock < Integer.MAX_VALUE ? "_32" : "";
      op("kiln_rope_" + suffix(a.dtype()) + "_" + suffix(p.dtype()) + width).launch(stream,
          (rowCount + rowsPerBlock - 1) / rowsPerBlock, 1, BLOCK, 0, args);
      launches++;
      mark("rope");
      if (out != null && out16 != null) {
        rememberCast(out, out16);
      }
    }
    return result;
  }

  /** RoPE's result in x's original shape (x of rank over 4 was flattened to rows). */
  private CudaTensor ropeResult(CudaArray result, long[] shape) {
    return wrap(result.rank() == shape.length ? result
        : result.strided(shape, NdArray.contiguousStrides(shape), result.offset()));
  }

  /**
   * RoPE, for attention or GEMMs alone (the processor's forGemms), that attention's kernels can do themselves
   * ({@link #deferredRopes}), or null. The inverse of a deferred RoPE (RoPE's backward of a gradient attention's
   * backward wrote already turned back) is that RoPE's source, with no launch; a forward RoPE of bf16 rows that the
   * whole-head attention kernels read (head dim and length; int64 positions the same across a slab's layout) becomes
   * a result whose kernel waits for its first reader.
   */
  private CudaTensor ropeByAttention(CudaArray a, CudaArray p, double theta, boolean inverse) {
    if (!fuseRope || precision != Precision.BF16 || scopes.isEmpty() || !gemmOperandsInBf16
        || a.dtype() != DType.BF16) {
      return null;
    }
    DeferredRope r = deferredRope(a);
    if (r != null) {
      return inverse && r.theta() == theta && CastKey.of(r.positions()).equals(CastKey.of(p)) ? wrap(r.source())
          : null;
    }
    if (inverse || a.rank() < 2 || !flash.rotatesOnLoad(a.shape(-1), a.shape(-2)) || ropePositions(a, p) == null) {
      return null;
    }
    FlashAttention.Heads h = FlashAttention.Heads.of(a);
    if (h == null || a.offset() % 8 != 0 || !h.stridesMultipleOf(8)) {
      return null; // the kernels load 16-byte row pieces
    }
    return wrap(deferRope(a, p, theta, newArrayLike(a, DType.BF16, a.shape())));
  }

  /** {@code into} (a new bf16 array like {@code a}) as {@code rope(a)}, its kernel deferred to its first reader. */
  private CudaArray deferRope(CudaArray a, CudaArray p, double theta, CudaArray into) {
    deferredRopes.put(into.bufferIdentity(), new DeferredRope(a, p, theta, into));
    into.deferProducer(() -> {
      ropeOf(a, p, theta, false, true, into);
      mark("rope (deferred to its first reader)");
    });
    return into;
  }

  /** The deferred RoPE whose whole result {@code a} is, or null. */
  private DeferredRope deferredRope(CudaArray a) {
    DeferredRope r = deferredRopes.isEmpty() ? null : deferredRopes.get(a.bufferIdentity());
    return r != null && CastKey.of(r.result()).equals(CastKey.of(a)) ? r : null;
  }

  /**
   * Positions {@code p} broadcast over {@code a}'s rows ({@code a} without its last dim) as a {@code [..., n, 1]}
   * view, for the attention kernels' (batch, head, row) walk ({@link FlashAttention.Heads}), or null where the
   * kernels cannot take them (not int64, or batch dims that do not merge).
   */
  private static CudaArray ropePositions(CudaArray a, CudaArray p) {
    if (p.dtype() != DType.I64) {
      return null;
    }
    int r = a.rank();
    long[] shape = a.shape();
    shape[r - 1] = 1;
    long[] strides = Arrays.copyOf(StridedPlan.broadcastStrides(p.shape(), p.strides(), Arrays.copyOf(shape, r - 1),
        "cuda device, rope: positions"), r);
    strides[r - 1] = 1;
    CudaArray view = p.strided(shape, strides, p.offset());
    return FlashAttention.Heads.of(view) != null ? view : null;
  }

  /**
   * The rotation attention's kernels apply to q and k as they load them, where both are deferred RoPEs of one theta
   * and the same positions ({@link #deferredRopes}), or null.
   */
  private FlashAttention.Rope attentionRope(CudaArray q, CudaArray k) {
    DeferredRope rq = deferredRope(q);
    DeferredRope rk = deferredRope(k);
    if (rq == null || rk == null || rq.theta() != rk.theta()
        || !CastKey.of(rq.positions()).equals(CastKey.of(rk.positions()))) {
      return null;
    }
    CudaArray view = ropePositions(rq.source(), rq.positions());
    return new FlashAttention.Rope(view, FlashAttention.Heads.of(view), ropeFrequencies(rq.theta(), q.shape(-1) / 2));
  }

  /**
   * Turns RoPE inside attention's kernels ({@link #deferredRopes}) off or on (on by default, or as
   * {@code KILN_ROPE_FUSION=0} says): off, every RoPE runs its own kernel when called.
   */
  public void fuseRope(boolean on) {
    fuseRope = on;
  }

  /**
   * RoPE over whole tokens (kiln_rope_tokens_f32): when, in memory order, the rows that share a position are one
   * contiguous span (the heads of a {@code [b, s, (h d)]} projection, or single rows at least 128 wide), each warp
   * rotates one such span with float4s, and the row arithmetic is done once per token. Returns false, launching
   * nothing, for the layouts {@link RopeTokens#plan} does not take (odd pair counts, unaligned rows, positions varying
   * inside a span): the general kernel runs.
   */
  private boolean ropeTokens(CudaArray a, CudaArray p, CudaArray out, CudaArray out16, CudaArray result, long[] n,
      long[] xs, long[] os, long[] ps, long half, double theta, boolean inverse) {
    long width = 2 * half;
    RopeTokens t = RopeTokens.plan(n, xs, os, ps, width, a.offset(), result.offset(),
        out16 == null ? 0 : out16.offset());
    if (t == null) {
      return false;
    }
    long[] tn = t.n();
    long[] tx = t.xs();
    long[] to = t.os();
    long[] tp = t.ps();
    long span = t.span();
    long tokens = tn[0] * tn[1];
    KernelArgs args = new KernelArgs().ptr(a).i64(tn[1]).i64(tx[0]).i64(tx[1]).ptr(p).i64(tp[0]).i64(tp[1])
        .ptr(ropeFrequencies(theta, half)).ptr(ropeCosSin(theta, half)).i64(ROPE_TABLE_POSITIONS);
    args.ptrOrNull(out); // null with forGemms: the bf16 copy only
    args.ptrOrNull(out16).i64(to[0]).i64(to[1]).i32((int) tokens).i32((int) span)
        .i32((int) width).f64(inverse ? -1 : 1);
    long warps = BLOCK / 32;
    op("kiln_rope_tokens_" + suffix(a.dtype()) + "_" + suffix(p.dtype())).launch(stream, (tokens + warps - 1) / warps,
        1, BLOCK, 0, args);
    launches++;
    mark("rope");
    if (out != null && out16 != null) {
      rememberCast(out, out16);
    }
    return true;
  }

  /**
   * The token kernel's walk: tokens over dims (n[0], n[1]) with strides xs, os (x, the result) and ps (positions), each
   * token a contiguous span of {@code span} elements that share one position.
   */
  record RopeTokens(long[] n, long[] xs, long[] os, long[] ps, long span) {
    /**
     * The walk for RoPE's leading dims {@code n} (in memory order) with strides {@code xs}, {@code os}, {@code ps},
     * rows {@code width} long (contiguous), or null where the token kernel does not apply: the rows sharing a position
     * are n[2]'s when they lie back to back, else single rows when the outermost dim is 1 and a row fills a warp's 32
     * float4s (narrower rows would leave lanes idle; the general kernel packs 32 / half of them a warp). Every offset
     * and token stride (those of size-1 dims are never used) must be a multiple of 4 elements, for 16-byte accesses;
     * {@code out16Offset} is the bf16 copy's, which shares the result's strides.
     */
    static RopeTokens plan(long[] n, long[] xs, long[] os, long[] ps, long width, long xOffset, long outOffset,
        long out16Offset) {
      RopeTokens t;
      if (n[2] == 1 || (ps[2] == 0 && xs[2] == width && os[2] == width)) {
        t = new RopeTokens(new long[] {n[0], n[1]}, new long[] {xs[0], xs[1]}, new long[] {os[0], os[1]},
            new long[] {ps[0], ps[1]}, n[2] * width);
      } else if (n[0] == 1 && width >= 128) {
        t = new RopeTokens(new long[] {n[1], n[2]}, new long[] {xs[1], xs[2]}, new long[] {os[1], os[2]},
            new long[] {ps[1], ps[2]}, width);
      } else {
        return null;
      }
      boolean aligned = xOffset % 4 == 0 && outOffset % 4 == 0 && out16Offset % 4 == 0
          && IntStream.range(0, 2).allMatch(d -> t.n[d] == 1 || (t.xs[d] % 4 == 0 && t.os[d] % 4 == 0));
      long tokens = t.n[0] * t.n[1];
      return width % 4 == 0 && aligned && tokens < Integer.MAX_VALUE && t.span < Integer.MAX_VALUE ? t : null;
    }
  }

  /**
   * Reorders RoPE's three leading dims (sizes n, strides of x, out and positions, permuted together) so that the
   * kernel's row index walks x in memory order: the innermost dim gets x's smallest stride. Rows are independent, so
   * any order gives the same result; but the head-split view {@code [b, h, s, d]} of a {@code [b, s, (h d)]}
   * projection walked in its logical order puts consecutive rows h·d elements apart, and a warp's rows then sit in
   * different DRAM pages. Walked as {@code [b, s, h]}, a block reads and writes one contiguous span.
   */
  static void walkInMemoryOrder(long[] n, long[] xs, long[] os, long[] ps) {
    // Insertion sort of three dims by x's stride, largest first; size-1 dims go outermost (their stride is
    // meaningless), and ties keep their order.
    for (int i = 1; i < 3; i++) {
      for (int j = i; j > 0 && outer(n[j], xs[j], n[j - 1], xs[j - 1]); j--) {
        swap(n, j);
        swap(xs, j);
        swap(os, j);
        swap(ps, j);
      }
    }
  }

  /** Whether dim (n, stride) should be walked outside dim (m, other). */
  private static boolean outer(long n, long stride, long m, long other) {
    if (n == 1 || m == 1) {
      return n == 1 && m != 1;
    }
    return stride > other;
  }

  private static void swap(long[] a, int j) {
    long t = a[j];
    a[j] = a[j - 1];
    a[j - 1] = t;
  }

  /**
   * Positions the fp32 RoPE kernel looks up instead of computing (a context of up to 8,192 tokens; others fall back to
   * the angle in double). The table is 8 bytes a position and pair: 4 MiB for width 128.
   */
  private static final int ROPE_TABLE_POSITIONS = 8192;
  /** Row groups each warp of the RoPE kernel rotates (KILN_ROPE_ROWS in device_ops.cu). */
  private static final int ROPE_ROWS_PER_WARP = 4;

  /**
   * (cos, sin) of {@code p · theta^(-i / half)} for positions p below {@link #ROPE_TABLE_POSITIONS} and i below half,
   * computed in double on the host and rounded to float; kept for good.
   */
  private CudaArray ropeCosSin(double theta, long half) {
    return ropeTables.computeIfAbsent(List.of(theta, (double) half, 1.0), key -> {
      notCapturing("a RoPE cos/sin table first needed during capture");
      int h = Math.toIntExact(half);
      float[] t = new float[ROPE_TABLE_POSITIONS * h * 2];
      for (int pos = 0; pos < ROPE_TABLE_POSITIONS; pos++) {
        for (int i = 0; i < h; i++) {
          double angle = pos * Math.pow(theta, -2.0 * i / (2 * half));
          t[2 * (pos * h + i)] = (float) Math.cos(angle);
          t[2 * (pos * h + i) + 1] = (float) Math.sin(angle);
        }
      }
      return CudaArray.fromHost(gpu, NdArray.fromFloats(t, t.length));
    });
  }

  /** theta^(-i / half) for i below half, in double, computed on the host as the CPU device does; kept for good. */
  private CudaArray ropeFrequencies(double theta, long half) {
    return ropeTables.computeIfAbsent(List.of(theta, (double) half), key -> {
      notCapturing("a RoPE frequency table first needed during capture");
      double[] f = new double[Math.toIntExact(half)];
      for (int i = 0; i < f.length; i++) {
        f[i] = Math.pow(theta, -2.0 * i / (2 * half));
      }
      return CudaArray.fromHost(gpu, NdArray.fromDoubles(f, half));
    });
  }

  // ================================================================ fused kernels

  @Override
  public void launch(Kernel kernel, Tensor[] tensors, long[] sizes, double[] scalars) {
    String what = "launch " + kernel.name();
    if (tensors.length != kernel.inputs() + kernel.outputs()) {
      throw new IllegalArgumentException("cuda device, " + what + ": the kernel takes " + kernel.inputs()
          + " inputs and " + kernel.outputs() + " outputs, got " + tensors.length + " tensors");
    }
    CudaArray[] arrays = new CudaArray[tensors.length];
    int bf16Inputs = 0;
    int fp32MaybeBf16 = 0;
    for (int i = 0; i < tensors.length; i++) {
      boolean gemmOperand = i >= kernel.inputs() && kernel.isGemmOperand(i - kernel.inputs());
      boolean gemmResult = i < kernel.inputs() && kernel.isBf16Input(i);
      // A plain sum's output that emptyGemmResult made bf16: written by one GEMM, or by the kernel's _f32_bf16 form.
      boolean sumResult = kernel.sumOfInputs() && i == kernel.inputs() && precision == Precision.BF16;
      CudaArray a = arr(tensors[i], what, "tensor " + i);
      if (!(gemmOperand || gemmResult || sumResult) || a.dtype() != DType.BF16) {
        // Only an output that only GEMMs read, or an input that may be a GEMM output kept in bf16, may be bf16.
        a = floating(tensors[i], what, "tensor " + i);
      }
      if (gemmResult) {
        if (a.dtype() == DType.BF16) {
          bf16Inputs++;
        } else {
          fp32MaybeBf16++;
        }
      }
      arrays[i] = a;
    }
    if (kernel.sumOfInputs() && stackedSum(arrays, kernel.inputs())) {
      return;
    }

    List<CudaArray> temps = new ArrayList<>(2);
    if (bf16Inputs > 0 && fp32MaybeBf16 > 0) {
      // The _in16 variants read all such inputs as bf16: with some in fp32 (a caller that wanted one of them in its
      // own precision), the bf16 ones are widened instead, exactly, and the kernel runs in fp32.
      for (int i = 0; i < kernel.inputs(); i++) {
        if (arrays[i].dtype() == DType.BF16) {
          CudaArray wide = temp(DType.F32, arrays[i].shape());
          temps.add(wide);
          copyArray(arrays[i], wide);
          arrays[i] = wide;
        }
      }
      bf16Inputs = 0;
    }
    KernelArgs args = new KernelArgs();
    DType dtype = null;
    int bf16Outputs = 0;
    long ldg = -1; // the GEMM-only outputs' row stride (Kernel.gemmOperandRowStride), one for all of them
    for (int i = 0; i < arrays.length; i++) {
      CudaArray a = arrays[i];
      if (kernel.gemmOperandRowStride() && i >= kernel.inputs() && kernel.isGemmOperand(i - kernel.inputs())) {
        long ld = rowStride(a, sizes[0], sizes[1]);
        if (ld < 0 || ldg >= 0 && ld != ldg) {
          throw new IllegalArgumentException("cuda device, " + what + ": GEMM-only output " + i + " is neither"
              + " contiguous nor rows of one stride shared with the others (emptyGemmOperands makes them so)");
        }
        ldg = ld;
      } else if (!a.isContiguous()) {
        throw new IllegalArgumentException("cuda device, " + what + ": tensor " + i + " is not contiguous");
      }
      if (a.dtype() == DType.BF16) {
        bf16Outputs += i >= kernel.inputs() ? 1 : 0;
      } else if (dtype == null) {
        dtype = a.dtype();
      } else if (a.dtype() != dtype) {
        throw new IllegalArgumentException("cuda device, " + what + ": tensors mix " + dtype + " and " + a.dtype());
      }
      if (i >= kernel.inputs()) {
        written(a);
      }
      args.ptr(a);
    }
    // Outputs only GEMMs read come in bf16 (emptyGemmOperand) all together or not at all: the _f32_bf16 variant
    // writes every one of them as bf16. Inputs that are GEMM outputs kept in bf16 (emptyGemmResult): _in16.
    if (dtype == null) {
      dtype = DType.F32; // every tensor bf16: GEMM results in, GEMM operands out, computed in fp32
    }
    String variant = suffix(dtype);
    if (bf16Outputs > 0) {
      // A plain sum's one output, where its readers take bf16 (emptyGemmResult), has the same variants.
      long gemmOnly = kernel.sumOfInputs() ? 1 : Long.bitCount(kernel.gemmOperands());
      if (bf16Outputs != gemmOnly || dtype != DType.F32) {
        throw new IllegalArgumentException("cuda device, " + what + ": " + bf16Outputs + " of its "
            + Long.bitCount(kernel.gemmOperands()) + " GEMM-only outputs are bf16 with " + dtype
            + " inputs; allocate all of them with emptyGemmOperand, with F32 inputs");
      }
      variant = "f32_bf16";
    }
    if (bf16Inputs > 0) {
      if (dtype != DType.F32) {
        throw new IllegalArgumentException("cuda device, " + what + ": bf16 GEMM outputs with " + dtype + " tensors");
      }
      variant = (bf16Outputs > 0 ? "f32_bf16" : "f32") + "_in16";
    }
    long rows = sizes[0];
    long cols = sizes[1];
    args.i64(rows).i64(cols);
    if (kernel.gemmOperandRowStride()) {
      args.i64(ldg);
    }
    for (double s : scalars) {
      args.f64(s);
    }
    KernelLoader.Module m = gpu.kernels().generated(kernel.cudaResource());
    try {
      if (rows * cols == 0) {
        return;
      }
      if (kernel.kind() == Kernel.Kind.POINTWISE) {
        long perBlock = (long) BLOCK * kernel.elementsPerThread();
        m.kernel(kernel.name() + "_" + variant).launch(stream, (rows * cols + perBlock - 1) / perBlock, 1, BLOCK, 0,
            args);
      } else {
        boolean aligned = true;
        for (CudaArray a : arrays) {
          aligned &= (a.address() & 15) == 0;
        }
        RowLaunch shape = rowLaunch(kernel, rows, cols, dtype, aligned, variant);
        CudaArray twin = twinFor(kernel, arrays, variant);
        if (twin != null) {
          args.ptr(twin); // the _tw variants' last argument
        }
        CudaKernel k = m.kernel(shape.function(kernel, twin != null ? variant + "_tw" : variant));
        if (twin != null) {
          rememberCast(arrays[kernel.inputs() + kernel.twinOutput()], twin);
        } else if (kernel.twinOutput() >= 0 && !scopes.isEmpty()) {
          twinWriters.put(arrays[kernel.inputs() + kernel.twinOutput()].bufferIdentity(), kernel.name());
        }
        if (kernel.columnSums() != 0) {
          // One block per partial row; each sums its run of rows in shared memory where its row groups' slots fit
          // the default 48 KB (a d_model up to 12,288 in fp32 with one group), else in the output itself
          // (kiln_column_sums).
          long partials = columnSumPartials(kernel, arrays, rows, cols, what);
          k.launch(stream, partials, 1, shape.rowThreads(), shape.rowGroups(), shape.sharedBytes(), args);
        } else {
          long blocks = (rows + shape.rowGroups() - 1) / shape.rowGroups();
          k.launch(stream, blocks, 1, shape.rowThreads(), shape.rowGroups(), 0, args);
        }
      }
      launches++;
      mark("generated " + kernel.name());
    } finally {
      temps.forEach(CudaArray::close);
    }
  }

  // ================================================================ attention

  @Override
  public AttentionOut attention(Tensor q, Tensor k, Tensor v, Mask mask, double scale) {
    return attention(q, k, v, mask, scale, false);
  }

  /**
   * Attention; with {@code bf16Out} (every reader of {@code out} takes bf16) and GEMM results kept in bf16 under mixed
   * precision ({@link #storeGemmResultsInBf16}), {@code out} is written in bf16 from the fp32 accumulators, as
   * autocast's flash attention writes it: no fp32 copy, and no cast before the output projection.
   */
  @Override
  public AttentionOut attention(Tensor q, Tensor k, Tensor v, Mask mask, double scale, boolean bf16Out) {
    DType outType = attentionResultType(bf16Out);
    long[] shape = arr(q, "attention", "q").shape();
    if (attentionDirect(shape[shape.length - 1])) {
      return attentionDirect(q, k, v, mask, scale, outType);
    }
    CudaArray[] qkv = attentionInputs(q, k, v, "attention");
    long[] lseShape = Arrays.copyOf(shape, shape.length - 1);
    long[] lseFlat = bhnd(lseShape, false);
    CudaArray lse = newArray(DType.F32, lseShape);
    CudaArray lseView = lse.strided(lseFlat, NdArray.contiguousStrides(lseFlat), lse.offset());
    CudaArray o = newArray(qkv[0].dtype(), qkv[0].shape());
    flash.forwardInto(qkv[0], qkv[1], qkv[2], attentionMask(mask), (float) scale, o, lseView);
    launches++;
    mark("attention forward kernel");
    // Laid out as v, the head-split view of its projection: merging the heads again is then a view.
    CudaArray out = copyOut(o, shape, arr(v, "attention", "v"), outType);
    if (precision == Precision.BF16 && !scopes.isEmpty()) {
      // q, k, v and out as the kernels saw them (bf16, padded), for this attention's backward; out is a scope
      // array, so the entry goes when the scope closes.
      attentionBf16.put(out, new CudaArray[] {qkv[0], qkv[1], qkv[2], o});
    }
    mark("attention forward");
    return new AttentionOut(wrap(out), wrap(lse));
  }

  /**
   * Attention without reshaping copies: the kernels read q, k and v where they lie (in mixed precision, bf16 casts
   * laid out as the inputs, which the backward pass reuses) and write the fp32 output and lse into their final
   * arrays, the output laid out as v. fp32 takes the SIMT kernels at any width; mixed precision the tensor-core
   * kernels at widths 32, 64, 80 and 128.
   */
  private AttentionOut attentionDirect(Tensor q, Tensor k, Tensor v, Mask mask, double scale, DType outType) {
    CudaArray[] qkv = attentionOperands(q, k, v, "attention");
    boolean save = precision == Precision.BF16 && !scopes.isEmpty();
    List<CudaArray> temps = new ArrayList<>();
    try {
      long[] shape = qkv[0].shape();
      CudaArray out = newArrayLike(qkv[2], outType, shape);
      CudaArray lse = newArray(DType.F32, Arrays.copyOf(shape, shape.length - 1));
      // q and k deferred RoPEs: the kernel turns them as it loads them, and they are never written.
      FlashAttention.Rope rope = save ? attentionRope(qkv[0], qkv[1]) : null;
      CudaArray[] in = new CudaArray[3];
      if (rope != null) {
        in[2] = attentionOperand(qkv[2], null);
        if (flash.forwardRotatingInto(deferredRope(qkv[0]).source(), deferredRope(qkv[1]).source(), in[2],
            attentionMask(mask), (float) scale, out, lse, rope)) {
          launches++;
          attentionBf16.put(out, new CudaArray[] {qkv[0], qkv[1], in[2]});
          mark("attention forward (RoPE on load)");
          return new AttentionOut(wrap(out), wrap(lse));
        }
      }
      for (int i = 0; i < 3; i++) {
        in[i] = in[i] != null ? in[i] : attentionOperand(qkv[i], save ? null : temps);
      }
      flash.forwardInto(in[0], in[1], in[2], attentionMask(mask), (float) scale, out, lse);
      launches++;
      if (save) {
        // The bf16 q, k, v for this attention's backward; they and out are scope arrays, so the entry goes when
        // the scope closes.
        attentionBf16.put(out, in);
      }
      mark("attention forward");
      return new AttentionOut(wrap(out), wrap(lse));
    } finally {
      temps.forEach(CudaArray::close);
    }
  }

  private AttentionGrads attentionBackwardDirect(
      Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, Mask mask, double scale, DType gradType) {
    CudaArray[] qkv = attentionOperands(q, k, v, "attentionBackward");
    CudaArray[] saved = attentionBf16.get(arr(out, "attentionBackward", "out"));
    List<CudaArray> temps = new ArrayList<>();
    try {
      CudaArray[] in = saved != null ? saved : new CudaArray[3];
      for (int i = 0; saved == null && i < 3; i++) {
        in[i] = attentionOperand(qkv[i], temps);
      }
      CudaArray o = arr(out, "attentionBackward", "out");
      if (FlashAttention.Heads.of(o) == null) {
        o = contiguousArray(o);
      }
      CudaArray dO = attentionOperand(arr(dOut, "attentionBackward", "dOut"), temps);
      CudaArray l = contiguousArray(arr(lse, "attentionBackward", "lse"));
      long[] shape = qkv[0].shape();
      CudaArray[] grads = attentionGradients(qkv, gradType, shape);
      CudaArray dq = grads[0];
      CudaArray dk = grads[1];
      CudaArray dv = grads[2];
      // q and k deferred RoPEs: the kernel turns them as it loads them, and writes the gradients of their sources
      // (dq and dk turned back), which the gradients it returns are deferred RoPEs of. RoPE's backward then returns
      // them as they are.
      FlashAttention.Rope rope = gradType == DType.BF16 ? attentionRope(in[0], in[1]) : null;
      if (rope != null) {
        DeferredRope rq = deferredRope(in[0]);
        if (flash.backwardRotatingInto(rq.source(), deferredRope(in[1]).source(), in[2], o, l, dO,
            attentionMask(mask), (float) scale, dq, dk, dv, rope)) {
          launches++;
          mark("attention backward (RoPE on load)");
          return new AttentionGrads(
              wrap(deferRope(dq, rq.positions(), rq.theta(), newArrayLike(qkv[0], gradType, shape))),
              wrap(deferRope(dk, rq.positions(), rq.theta(), newArrayLike(qkv[1], gradType, shape))), wrap(dv));
        }
      }
      flash.backwardInto(in[0], in[1], in[2], o, l, dO, attentionMask(mask), (float) scale, dq, dk, dv);
      launches += 3;
      mark("attention backward");
      return new AttentionGrads(wrap(dq), wrap(dk), wrap(dv));
    } finally {
      temps.forEach(CudaArray::close);
    }
  }

  /**
   * dq, dk and dv, each laid out as its input, so the rearranges (and RoPE) that carry it back read it in place. Where
   * all three inputs are head-split views of projections ({@link #headSplit}) and the gradients bf16 (mixed
   * precision), inside a scope, the three are interleaved instead, in one {@code [..., n, 3, h, d]} allocation: the
   * rows of the three projections' input-gradient GEMMs' operands are then one row of {@code 3·h·d}, and
   * {@link #stackedSum} runs those GEMMs and their sum as one GEMM. The strides differ from the inputs' only in the
   * row's, so the rearranges stay views.
   */
  private CudaArray[] attentionGradients(CudaArray[] qkv, DType gradType, long[] shape) {
    int r = shape.length;
    if (stackGemms && fuseGemmAdds && gradType == DType.BF16 && !scopes.isEmpty() && headSplit(qkv[0])
        && headSplit(qkv[1]) && headSplit(qkv[2])) {
      long h = shape[r - 3];
      long n = shape[r - 2];
      long d = shape[r - 1];
      long[] physical = new long[r + 1];
      System.arraycopy(shape, 0, physical, 0, r - 3);
      physical[r - 3] = n;
      physical[r - 2] = 3;
      physical[r - 1] = h;
      physical[r] = d;
      CudaArray all = newArray(gradType, physical);
      interleavedGradients.add(all.bufferIdentity());
      long[] strides = new long[r];
      strides[r - 3] = d;
      strides[r - 2] = 3 * h * d;
      strides[r - 1] = 1;
      long outer = n * 3 * h * d;
      for (int i = r - 4; i >= 0; i--) {
        strides[i] = outer;
        outer *= shape[i];
      }
      return new CudaArray[] {all.strided(shape, strides, 0), all.strided(shape, strides, h * d),
          all.strided(shape, strides, 2 * h * d)};
    }
    return new CudaArray[] {newArrayLike(qkv[0], gradType, shape), newArrayLike(qkv[1], gradType, shape),
        newArrayLike(qkv[2], gradType, shape)};
  }

  /**
   * Whether {@code a} is {@code [..., h, n, d]} over a contiguous {@code [..., n, h·d]}: the head-split view of a
   * projection's output, which a GEMM's gradient reaches through a rearrange.
   */
  private static boolean headSplit(CudaArray a) {
    int r = a.rank();
    if (r < 3) {
      return false;
    }
    long h = a.shape(r - 3);
    long n = a.shape(r - 2);
    long d = a.shape(r - 1);
    if (a.stride(r - 1) != 1 || a.stride(r - 3) != d || a.stride(r - 2) != h * d) {
      return false;
    }
    long outer = n * h * d;
    for (int i = r - 4; i >= 0; i--) {
      if (a.shape(i) != 1 && a.stride(i) != outer) {
        return false;
      }
      outer *= a.shape(i);
    }
    return true;
  }

  /** The dtype attention's results are written in: bf16 where the processor allows it and the policy keeps it. */
  private DType attentionResultType(boolean bf16Allowed) {
    return bf16Allowed && precision == Precision.BF16 && gemmResultsInBf16 ? DType.BF16 : DType.F32;
  }

  /** True when attention at head width {@code d} runs without padding or reshaping copies. */
  private boolean attentionDirect(long d) {
    return precision != Precision.BF16 || FlashAttention.usesTensorCores(DType.BF16, d);
  }

  /**
   * q, k, v as arrays of one shape [..., n, d], checked: F32, or in mixed precision also BF16 (operands stored in
   * bf16 by their producer because only GEMMs and attention read them: RoPE's forGemms, emptyGemmOperand).
   */
  private CudaArray[] attentionOperands(Tensor q, Tensor k, Tensor v, String op) {
    CudaArray a = arr(q, op, "q");
    CudaArray b = arr(k, op, "k");
    CudaArray c = arr(v, op, "v");
    if (!Arrays.equals(a.shape(), b.shape()) || !Arrays.equals(a.shape(), c.shape()) || a.rank() < 2) {
      throw new IllegalArgumentException("cuda device, " + op + ": q, k and v must have one shape [..., n, d] (self"
          + " attention; the CUDA kernels take no other), got q " + Arrays.toString(a.shape()) + ", k "
          + Arrays.toString(b.shape()) + ", v " + Arrays.toString(c.shape()));
    }
    for (CudaArray x : new CudaArray[] {a, b, c}) {
      if (x.dtype() != DType.F32 && !(x.dtype() == DType.BF16 && precision == Precision.BF16)) {
        throw new IllegalArgumentException("cuda device, " + op + ": attention runs on F32 tensors (BF16 ones only in"
            + " mixed precision), got q " + a.dtype() + ", k " + b.dtype() + ", v " + c.dtype());
      }
    }
    return new CudaArray[] {a, b, c};
  }

  /**
   * An F32 attention operand as the kernels read it. Mixed precision: a bf16 cast laid out as {@code a} (one
   * 16-byte cast kernel when {@code a} is a dense permutation, as a head-split view is), a scope array when
   * {@code temps} is null, else a scratch array added to it. fp32: {@code a} itself, or a contiguous copy when its
   * layout is not one the kernels take.
   */
  private CudaArray attentionOperand(CudaArray a, List<CudaArray> temps) {
    if (precision != Precision.BF16) {
      return FlashAttention.Heads.of(a) != null ? a : contiguousArray(a);
    }
    if (a.dtype() == DType.BF16 && FlashAttention.Heads.of(a) != null) {
      return a; // stored in bf16 by its producer, in a layout the kernels read
    }
    CudaArray cached = temps == null ? rememberedCast(a) : null;
    if (cached != null && FlashAttention.Heads.of(cached) != null) {
      return cached; // written by the kernel that made a (RoPE), laid out as a
    }
    CudaArray b = temps == null ? newArrayLike(a, DType.BF16, a.shape()) : allocLike(a, a.shape(), physical -> {
      CudaArray t = temp(DType.BF16, physical);
      temps.add(t);
      return t;
    });
    copyArray(a, b);
    return b;
  }

  @Override
  public AttentionGrads attentionBackward(
      Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, Mask mask, double scale) {
    return attentionBackward(q, k, v, out, lse, dOut, mask, scale, false, false, false);
  }

  /**
   * Attention's backward; where all three gradients may be bf16 ({@code dqBf16}, {@code dkBf16}, {@code dvBf16}:
   * RoPE's backward and the projections' GEMMs read them) and GEMM results are kept in bf16 under mixed precision,
   * the kernels write them in bf16 from their fp32 accumulators. They write the three in one dtype, so a single
   * gradient that must stay fp32 keeps all three fp32.
   */
  @Override
  public AttentionGrads attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut,
      Mask mask, double scale, boolean dqBf16, boolean dkBf16, boolean dvBf16) {
    DType gradType = attentionResultType(dqBf16 && dkBf16 && dvBf16);
    long[] shape = arr(q, "attentionBackward", "q").shape();
    if (attentionDirect(shape[shape.length - 1])) {
      return attentionBackwardDirect(q, k, v, out, lse, dOut, mask, scale, gradType);
    }
    CudaArray outArr = arr(out, "attentionBackward", "out");
    CudaArray[] saved = attentionBf16.get(outArr);
    List<CudaArray> temps = new ArrayList<>();
    try {
      CudaArray[] qkvo;
      if (saved != null) {
        qkvo = saved;
      } else {
        CudaArray[] qkv = attentionInputs(q, k, v, "attentionBackward");
        temps.addAll(Arrays.asList(qkv));
        qkvo = new CudaArray[] {qkv[0], qkv[1], qkv[2], toAttention(outArr, qkv[0].shape(), temps)};
      }
      long[] flat = qkvo[0].shape();
      CudaArray dO = toAttention(arr(dOut, "attentionBackward", "dOut"), flat, temps);
      long[] lseFlat = bhnd(Arrays.copyOf(shape, shape.length - 1), false);
      CudaArray l = contiguousArray(arr(lse, "attentionBackward", "lse"));
      l = l.strided(lseFlat, NdArray.contiguousStrides(lseFlat), l.offset());
      // Scratch at the padded width, copied out at the true width below.
      CudaArray dq = temp(DType.BF16, flat);
      CudaArray dk = temp(DType.BF16, flat);
      CudaArray dv = temp(DType.BF16, flat);
      temps.addAll(List.of(dq, dk, dv));
      flash.backwardInto(qkvo[0], qkvo[1], qkvo[2], qkvo[3], l, dO, attentionMask(mask), (float) scale, dq, dk, dv);
      launches += 3;
      mark("attention backward kernels");
      // Each gradient laid out as its input, so the rearranges (and RoPE) that carry it back read it in place.
      AttentionGrads g = new AttentionGrads(wrap(copyOut(dq, shape, arr(q, "attentionBackward", "q"), gradType)),
          wrap(copyOut(dk, shape, arr(k, "attentionBackward", "k"), gradType)),
          wrap(copyOut(dv, shape, arr(v, "attentionBackward", "v"), gradType)));
      mark("attention backward");
      return g;
    } finally {
      // Scratch only: results were copied out; q, k, v, out saved by forward belong to its scope.
      temps.forEach(CudaArray::close);
    }
  }

  /**
   * Head width the padded path's kernels run at (mixed precision, widths the tensor-core kernels lack): widths up to
   * 128 are zero-padded to the next tensor-core width (32, 64, 80, 128); zero columns add nothing to q·k and produce
   * zero output columns, which are dropped. Wider heads run at their width on the bf16 SIMT kernels.
   */
  private static long attentionWidth(long d) {
    for (long w : new long[] {32, 64, 80, 128}) {
      if (d <= w) {
        return w;
      }
    }
    return d;
  }

  /** q, k, v as contiguous [batch·heads, 1, n, width] bf16 arrays (the padded path of mixed precision). */
  private CudaArray[] attentionInputs(Tensor q, Tensor k, Tensor v, String op) {
    CudaArray[] qkv = attentionOperands(q, k, v, op);
    long[] flat = bhnd(qkv[0].shape(), true);
    flat[3] = attentionWidth(flat[3]);
    return new CudaArray[] {toAttention(qkv[0], flat, null), toAttention(qkv[1], flat, null),
        toAttention(qkv[2], flat, null)};
  }

  /** [..., n, d] as [prod(...), 1, n, d] (or [..., n] as [prod(...), 1, n] when {@code !withD}). */
  private static long[] bhnd(long[] shape, boolean withD) {
    int tail = withD ? 2 : 1;
    long lead = 1;
    for (int i = 0; i < shape.length - tail; i++) {
      lead *= shape[i];
    }
    return withD ? new long[] {lead, 1, shape[shape.length - 2], shape[shape.length - 1]}
        : new long[] {lead, 1, shape[shape.length - 1]};
  }

  /**
   * {@code a} ([..., n, d], F32) as the kernels want it: {@code flat} ([lead, 1, n, width]) in the attention dtype,
   * zero-padded to the width. A view when nothing changes; else a new array, tracked by the scope ({@code temps}
   * null) or added to {@code temps}. One strided copy reads {@code a} where it lies (a head-split view is not made
   * contiguous first), and only the pad columns are zeroed.
   */
  private CudaArray toAttention(CudaArray a, long[] flat, List<CudaArray> temps) {
    DType dt = DType.BF16; // only mixed precision pads (fp32 attention always runs direct)
    long d = a.shape(-1);
    if (a.dtype() == dt && a.isContiguous() && flat[3] == d) {
      return a.strided(flat, NdArray.contiguousStrides(flat), a.offset());
    }
    CudaArray out = temps == null ? newArray(dt, flat) : temp(dt, flat);
    if (temps != null) {
      temps.add(out);
    }
    long[] padded = a.shape();
    padded[padded.length - 1] = flat[3];
    CudaArray wide = out.strided(padded, NdArray.contiguousStrides(padded), out.offset());
    if (flat[3] != d) {
      fill(wrap(wide.narrow(-1, d, flat[3] - d)), 0);
    }
    copyArray(a, wide.narrow(-1, 0, d));
    return out;
  }

  /**
   * The first {@code shape[-1]} columns of a kernel result [lead, 1, n, width] as a new {@code dtype} array of
   * {@code shape}, laid out as {@code like} (null: contiguous; see {@link #newArrayLike}). Always a copy, never a view
   * of {@code g}: g is scratch that backward closes, or the copy forward saves for backward.
   */
  private CudaArray copyOut(CudaArray g, long[] shape, CudaArray like, DType dtype) {
    long d = shape[shape.length - 1];
    CudaArray out = like == null ? newArray(dtype, shape) : newArrayLike(like, dtype, shape);
    long[] padded = shape.clone();
    padded[padded.length - 1] = g.shape(3);
    copyArray(g.strided(padded, NdArray.contiguousStrides(padded), g.offset()).narrow(-1, 0, d), out);
    return out;
  }

  private static AttentionMask attentionMask(Mask m) {
    return switch (m) {
      case NONE -> AttentionMask.NONE;
      case CAUSAL -> AttentionMask.CAUSAL;
    };
  }
}
