package dev.kiln.runtime.train;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.CudaStream;
import dev.kiln.runtime.cuda.FusedAdamW;
import dev.kiln.runtime.cuda.PinnedBuffer;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.cuda.device.CudaTensor;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.GradClip;
import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Training on a GPU: a compiled module's generated {@code loss}/{@code lossBackward} on a {@link CudaModelDevice},
 * parameters, gradients and AdamW moments in device memory, one fused AdamW launch per step
 * ({@link FusedAdamW}, CS336's or PyTorch's form as configured), gradient clipping folded into that launch's
 * gradient scale. The host sees the parameters and optimizer state only in {@link #syncToHost}/{@link #syncFromHost},
 * around checkpoints.
 *
 * <p><b>Mixed precision</b> ({@link CudaModelDevice.Precision#BF16}): every parameter gets a bf16 twin that AdamW
 * rewrites after each update, so GEMMs read bf16 weights with no cast; master weights and moments are fp32. A linear
 * layer's weight gradient is bf16, as autocast rounds it ({@code CudaModelDevice.emptyParamGradient}); the other
 * gradients (norms, embeddings) are fp32, and sums over micro-batches are fp32. From the first update on, the
 * parameters whose gradient came in bf16 (only GEMMs read them) keep their fp32 master weight as two 16-bit planes,
 * the twin being the upper one ({@link dev.kiln.runtime.cuda.MasterPlanes}): AdamW writes 2 bytes a parameter less,
 * and the fp32 arrays are joined from the planes only when something reads them (a checkpoint's host copy).
 *
 * <p><b>Memory per step.</b> Everything a step allocates (inputs, activations, gradients) lives in one device scope,
 * closed when the step ends; the caching allocator hands the same blocks to the next step. With gradient
 * accumulation each micro-batch has its own scope, and only the running gradient sums outlive it.
 *
 * <p><b>Determinism.</b> GPU steps are not bit-for-bit reproducible: embedding gradients are summed with atomics in
 * arrival order. Resume restores the exact state, but the losses after it agree with an uninterrupted run only to
 * rounding.
 *
 * @param <P> the compiled module's parameter record
 */
public final class CudaEngine<P> implements TrainingEngine {
  private record Route(String moduleKey, String name) {}

  private final CudaModelDevice dev;
  private final CompiledModel.Program<P> program;
  private final P params;
  private final ParameterSet hostParams;
  private final TrainConfig.OptimizerConfig optConfig;
  private final List<Route> routes = new ArrayList<>();
  private final Map<String, CudaTensor> byName = new LinkedHashMap<>();
  private final Map<String, CudaArray> m = new LinkedHashMap<>();
  private final Map<String, CudaArray> v = new LinkedHashMap<>();
  private final Map<String, CudaArray> twins = new LinkedHashMap<>();
  /**
   * The lower planes of the master weights kept in two planes ({@link CudaModelDevice#keepMasterInPlanes}), by name:
   * the parameters whose gradient the first step's backward wrote in bf16, which only GEMMs read.
   */
  private final Map<String, CudaArray> lowerPlanes = new LinkedHashMap<>();
  /** The parameters whose first gradient came in bf16 (null until the first backward). */
  private java.util.Set<String> bf16Gradients;
  private boolean planesChosen;
  private final FusedAdamW adamw;
  private Optimizer hostOptimizer;
  private long steps;

  private CudaModelDevice.Scope stepScope;
  private Map<String, Tensor> grads;
  private double gradScale = 1;
  private double pendingLr;

  /** CUDA-graph mode ({@link #enableGraphs}): null when off. */
  private GraphState graph;

  /** {@code KILN_GRADS_IN_PLACE=0}: a captured step copies every gradient into its fixed buffer (for comparisons). */
  private static final boolean GRADIENTS_IN_PLACE = !"0".equals(System.getenv("KILN_GRADS_IN_PLACE"));

  /**
   * What a captured step keeps: its fixed inputs, the gradients AdamW reads (fixed buffers, or where the captured
   * backward writes them), the AdamW and norm tables over them, the scalars the graph reads from device memory, the
   * memory the recorded step allocated, and the graph itself.
   */
  private static final class GraphState {
    final double maxNorm;
    final CudaArray hyper;
    final CudaArray sumsq;
    final CudaArray norm;
    /**
     * Each parameter's gradient as the step leaves it for the norm and AdamW: a fixed buffer the step copies it into,
     * or, once the graph is captured, where the captured backward writes it ({@code gradientsInPlace}).
     */
    final Map<String, CudaTensor> grads = new LinkedHashMap<>();
    /** Fixed buffers that gradients written in place replaced, released once the capture is done. */
    final List<CudaTensor> replacedGrads = new ArrayList<>();
    /** How many gradients the captured step copies into their fixed buffers (gradientsCopiedByGraph). */
    int copied;
    FusedAdamW.Prepared table;
    /** The gradient buffers' table for one launch of squared norms (null: a launch each). */
    CudaModelDevice.SquaresTable squares;
    CudaTensor inputs;
    CudaTensor targets;
    CudaTensor loss;
    dev.kiln.runtime.cuda.CudaGraph graph;
    final List<CudaArray> memory = new ArrayList<>();
    int eagerSteps;
    boolean replayed;
    double lastNorm;
    boolean lastSkipped;
    /**
     * {@link #queueStep}'s two host slots, used in turn: the batch and the step's scalars go up from one while the
     * other's step may still be running, and the step's loss, norm and skip flag come down into it.
     */
    final PinnedBuffer[] slots = new PinnedBuffer[2];
    /** The queued step whose results each slot holds (null: none pending). */
    final Queued[] inSlot = new Queued[2];
    int nextSlot;

    GraphState(double maxNorm, CudaArray hyper, CudaArray sumsq, CudaArray norm) {
      this.maxNorm = maxNorm;
      this.hyper = hyper;
      this.sumsq = sumsq;
      this.norm = norm;
    }
  }

  /**
   * An engine over {@code params} (a record whose tensors are the device's, e.g. the generated {@code init} run on
   * {@code dev}), named for the trainer by {@code names} (module state-dict key → trainer name, as
   * {@link CompiledModel}), with {@code hostParams} the host arrays of the same names that checkpoints read and
   * write.
   *
   * @throws IllegalArgumentException when the optimizer is not AdamW, or names and tensors do not line up
   */
  public CudaEngine(CudaModelDevice dev, CompiledModel.Program<P> program, P params, Map<String, String> names,
      ParameterSet hostParams, TrainConfig.OptimizerConfig optimizer) {
    if (optimizer.name() != TrainConfig.OptimizerName.ADAMW) {
      throw new IllegalArgumentException("the GPU trainer runs AdamW only (the fused optimizer), not "
          + optimizer.name());
    }
    this.dev = dev;
    this.program = program;
    this.params = params;
    this.hostParams = hostParams;
    this.optConfig = optimizer;
    this.adamw = new FusedAdamW(dev.gpu());
    Map<String, Tensor> sd = program.stateDict(params);
    for (Map.Entry<String, String> e : names.entrySet()) {
      Tensor t = sd.get(e.getKey());
      if (!(t instanceof CudaTensor c)) {
        throw new IllegalArgumentException("parameter '" + e.getKey() + "' is " + (t == null ? "missing" : "a "
            + t.getClass().getSimpleName() + ", not a tensor of " + dev.name()));
      }
      CudaTensor earlier = byName.putIfAbsent(e.getValue(), c);
      if (earlier != null && earlier != c) {
        throw new IllegalArgumentException("'" + e.getKey() + "' and another key both map to '" + e.getValue()
            + "' but are different tensors");
      }
      routes.add(new Route(e.getKey(), e.getValue()));
    }
    if (!hostParams.names().equals(new ArrayList<>(byName.keySet()))) {
      throw new IllegalArgumentException("host parameters " + hostParams.names() + " and device parameters "
          + byName.keySet() + " differ");
    }
    for (Map.Entry<String, CudaTensor> e : byName.entrySet()) {
      CudaArray p = e.getValue().array();
      if (!Arrays.equals(p.shape(), hostParams.get(e.getKey()).shape())) {
        throw new IllegalArgumentException("parameter '" + e.getKey() + "' is " + Arrays.toString(p.shape())
            + " on the device but " + Arrays.toString(hostParams.get(e.getKey()).shape()) + " on the host");
      }
      if (p.dtype() != DType.F32 || !p.isContiguous()) {
        throw new IllegalArgumentException("GPU training keeps fp32 contiguous master weights; '" + e.getKey()
            + "' is " + p);
      }
      m.put(e.getKey(), CudaArray.zeros(dev.gpu(), DType.F32, p.shape()));
      v.put(e.getKey(), CudaArray.zeros(dev.gpu(), DType.F32, p.shape()));
    }
    if (dev.precision() == CudaModelDevice.Precision.BF16) {
      // One allocation, laid out so that projections declared together (q, k, v) or of one shape in one module (an
      // FFN's w1 and w3) have their bf16 weights as rows of one matrix, which the device's stacked GEMMs read in place.
      twins.putAll(dev.withBf16Twins(byName));
    }
  }

  /** The module's parameter record, on the device. */
  public P params() {
    return params;
  }

  public CudaModelDevice device() {
    return dev;
  }

  /** The module's parameters on the device, by state-dict key. */
  public Map<String, Tensor> stateDict() {
    return program.stateDict(params);
  }

  @Override
  public ParameterSet hostParameters() {
    return hostParams;
  }

  @Override
  public Optimizer hostOptimizer() {
    if (hostOptimizer == null) {
      hostOptimizer = optConfig.create(hostParams);
    }
    return hostOptimizer;
  }

  @Override
  public void beginStep(double lr) {
    abandonStep();
    pendingLr = lr;
    stepScope = dev.scope();
    grads = null;
    if (graph != null) {
      graph.replayed = false;
    }
  }

  /**
   * Runs every step after the first as one CUDA-graph launch: forward, backward, clipping to {@code maxGradNorm} and
   * AdamW recorded once (the first step runs eagerly and warms up every kernel and cache), then replayed with the
   * new batch copied into fixed input buffers and the learning rate and bias corrections written to device memory.
   * For one micro-batch per step (the trainer checks), and batches of one shape. A step whose gradient norm is not
   * finite skips the update on the device, as the eager path does on the host.
   */
  @Override
  public void enableGraphs(double maxGradNorm) {
    if (graph != null) {
      return;
    }
    dev.enableGraphs();
    GraphState g = new GraphState(maxGradNorm, CudaArray.zeros(dev.gpu(), DType.F32, 10),
        CudaArray.zeros(dev.gpu(), DType.F64, Math.max(1, byName.size())), CudaArray.zeros(dev.gpu(), DType.F64, 1));
    for (Map.Entry<String, CudaTensor> e : byName.entrySet()) {
      g.grads.put(e.getKey(), (CudaTensor) dev.zeros(DType.F32, e.getValue().shape()));
    }
    g.table = adamw.prepare(adamwParams(n -> g.grads.get(n).array()));
    g.squares = dev.squaresTable(new ArrayList<>(g.grads.values()));
    graph = g;
  }

  @Override
  public double accumulate(NdArray inputs, NdArray targets) {
    if (stepScope == null) {
      throw new IllegalStateException("accumulate outside a step: call beginStep first");
    }
    if (graph != null && graph.eagerSteps > 0) {
      return graphStep(inputs, targets);
    }
    try (CudaModelDevice.Scope micro = dev.scope()) {
      Context ctx = new Context();
      Tensor loss = program.loss(ctx, params, dev.fromHost(inputs), dev.fromHost(targets));
      Map<String, Tensor> g = program.stateDict(program.lossBackward(ctx, params, dev.full(DType.F32, 1.0)));
      ctx.clear();
      boolean first = grads == null;
      if (first) {
        grads = new LinkedHashMap<>();
      }
      if (bf16Gradients == null) {
        bf16Gradients = bf16Gradients(g);
      }
      for (Route r : routes) {
        Tensor gi = g.get(r.moduleKey());
        Tensor sum = grads.get(r.name());
        if (sum == null) {
          // The first micro-batch's gradient becomes the running sum: moved out of the micro-batch's scope.
          grads.put(r.name(), micro.keep(dev.contiguous(gi)));
        } else {
          if (sum.dtype() != DType.F32) {
            // A bf16 weight gradient (CudaModelDevice.emptyParamGradient) is summed over micro-batches in fp32, as
            // autocast's fp32 .grad sums its bf16 gradients: the first one widened, exactly.
            sum = micro.keep(dev.cast(sum, DType.F32));
            grads.put(r.name(), sum);
          }
          dev.addInto(sum, gi);
        }
      }
      double value = dev.download(loss)[0];
      dev.mark("loss download");
      return value;
    }
  }

  /** One step through the captured graph (capturing it first if needed); returns the loss. */
  private double graphStep(NdArray inputs, NdArray targets) {
    GraphState g = graph;
    if (g.replayed) {
      throw new IllegalStateException("CUDA-graph steps take one micro-batch (training.grad_accum_steps 1)");
    }
    if (g.inputs == null) {
      g.inputs = (CudaTensor) stepScope.keep(dev.fromHost(inputs));
      g.targets = (CudaTensor) stepScope.keep(dev.fromHost(targets));
      g.memory.add(g.inputs.array());
      g.memory.add(g.targets.array());
    } else {
      requireCapturedShapes(g, inputs, targets);
      dev.copyFromHost(inputs.contiguous(), g.inputs);
      dev.copyFromHost(targets.contiguous(), g.targets);
    }
    g.hyper.copyFromHost(NdArray.fromFloats(hyper(pendingLr, steps + 1), 10));
    if (g.graph == null) {
      Map<String, CudaTensor> inPlace = new LinkedHashMap<>();
      g.graph = dev.capture(() -> {
        Context ctx = new Context();
        g.loss = (CudaTensor) program.loss(ctx, params, g.inputs, g.targets);
        Map<String, Tensor> gr = program.stateDict(program.lossBackward(ctx, params, dev.full(DType.F32, 1.0)));
        ctx.clear();
        inPlace.putAll(gradientsInPlace(gr));
        java.util.Set<String> written = new java.util.HashSet<>();
        for (Route r : routes) {
          if (inPlace.containsKey(r.name())) {
            continue;
          }
          if (written.add(r.name())) {
            dev.copy(gr.get(r.moduleKey()), g.grads.get(r.name()));
          } else {
            dev.addInto(g.grads.get(r.name()), gr.get(r.moduleKey()));
          }
        }
        g.grads.replaceAll((n, buffer) -> inPlace.getOrDefault(n, buffer));
        g.copied = g.grads.size() - inPlace.size();
        if (g.squares != null) {
          dev.sumsOfSquaresInto(g.squares, g.sumsq);
        } else {
          dev.sumsOfSquaresInto(new ArrayList<>(g.grads.values()), g.sumsq);
        }
        dev.gpu().kernels().module("adamw").kernel("kiln_clip_scale").launch(dev.gpu().defaultStream(), 1, 1, 32, 0,
            new dev.kiln.runtime.cuda.KernelArgs().ptr(g.sumsq).i32(g.grads.size()).f32((float) g.maxNorm).f32(1f)
                .ptr(g.hyper).ptr(g.norm));
        adamw.step(g.table, g.hyper);
      });
      // The recorded step's memory belongs to the graph now: every replay writes the same addresses.
      g.memory.addAll(stepScope.detach());
      stepScope = dev.scope();
      // The captured norm and AdamW launches read their tables at fixed addresses: point those at the gradients the
      // graph writes itself, and at the planes of the master weights the first update put in planes (after the
      // table was first filled).
      adamw.refill(g.table, adamwParams(n -> g.grads.get(n).array()));
      if (!inPlace.isEmpty()) {
        // The norms' table reads the in-place gradients too; the buffers they replace go back.
        if (g.squares != null) {
          dev.refillSquaresTable(g.squares, new ArrayList<>(g.grads.values()));
        }
        g.replacedGrads.forEach(dev::release);
        g.replacedGrads.clear();
      }
    }
    g.graph.launch(dev.gpu().defaultStream());
    mastersChanged();
    double loss = dev.download(g.loss)[0];
    g.lastNorm = g.norm.toHost().toDoubleArray()[0];
    g.lastSkipped = g.hyper.toHost().toDoubleArray()[HYPER_SKIPPED] != 0;
    g.replayed = true;
    return loss;
  }

  /**
   * AdamW's table: every parameter with its gradient ({@code gradOf} by name), moments and bf16 twin, and for a master
   * weight in planes its lower plane.
   */
  private List<FusedAdamW.Param> adamwParams(java.util.function.Function<String, CudaArray> gradOf) {
    List<FusedAdamW.Param> table = new ArrayList<>();
    for (Map.Entry<String, CudaTensor> e : byName.entrySet()) {
      String n = e.getKey();
      table.add(new FusedAdamW.Param(e.getValue().array(), gradOf.apply(n), m.get(n), v.get(n), twins.get(n),
          lowerPlanes.get(n)));
    }
    return table;
  }

  /**
   * The trainer names of the parameters whose gradient in {@code g} (one micro-batch's, by module key) is bf16: a
   * linear layer's weight, which only GEMMs read ({@code CudaModelDevice.emptyParamGradient}). A name that two keys
   * share (a tied weight) is left out: its other use may read the fp32 weight.
   */
  private java.util.Set<String> bf16Gradients(Map<String, Tensor> g) {
    Map<String, Integer> routesOf = routesPerName();
    java.util.Set<String> out = new java.util.LinkedHashSet<>();
    for (Route r : routes) {
      Tensor gi = g.get(r.moduleKey());
      if (routesOf.get(r.name()) == 1 && gi != null && gi.dtype() == DType.BF16) {
        out.add(r.name());
      }
    }
    return out;
  }

  /** How many state-dict keys route to each trainer name: two for a tied weight. */
  private Map<String, Integer> routesPerName() {
    Map<String, Integer> routesOf = new java.util.HashMap<>();
    routes.forEach(r -> routesOf.merge(r.name(), 1, Integer::sum));
    return routesOf;
  }

  /**
   * Before the first update: keeps the master weights of the parameters only GEMMs read in two planes, where the
   * device does so ({@link CudaModelDevice#storesMastersInPlanes}). Their twins become the upper planes.
   */
  private void choosePlanes() {
    if (planesChosen || bf16Gradients == null) {
      return;
    }
    planesChosen = true;
    if (!dev.storesMastersInPlanes()) {
      return;
    }
    for (String n : bf16Gradients) {
      CudaTensor p = byName.get(n);
      if (twins.get(n) != null && p.array().coversBuffer()) {
        lowerPlanes.put(n, dev.keepMasterInPlanes(p));
      }
    }
  }

  /** After an update (eager or replayed): the fp32 arrays of masters in planes are stale until read. */
  private void mastersChanged() {
    for (String n : lowerPlanes.keySet()) {
      dev.masterChangedInPlanes(byName.get(n));
    }
  }

  /** How many parameters keep their master weight in two planes (0 before the first update). */
  public int mastersInPlanes() {
    return lowerPlanes.size();
  }

  /**
   * The gradients of the step being captured that need no copy into their fixed buffers ({@code GraphState.grads}),
   * by trainer name, each with the tensor AdamW is to read: for a parameter's one gradient (not the sum of a tied
   * weight's two),
   * <ul>
   *   <li>a gradient known to be zero (a parameter the config leaves unused): the fixed buffer, zero since
   *       {@link #enableGraphs} and written by nothing now, so neither the zeros' fill nor the copy is recorded;
   *   <li>an fp32 or bf16 ({@code CudaModelDevice.emptyParamGradient}), contiguous gradient of the parameter's
   *       shape in the step's memory (which the graph keeps and
   *       rewrites at every replay), in memory no other such gradient shares: that gradient itself, where the
   *       backward wrote it. Its fixed buffer is recorded for release once the capture is done.
   * </ul>
   * Each spares the graph a launch and two passes over the gradient.
   */
  private Map<String, CudaTensor> gradientsInPlace(Map<String, Tensor> gr) {
    if (!GRADIENTS_IN_PLACE) {
      return Map.of();
    }
    Map<String, Integer> routesOf = routesPerName();
    Map<String, CudaTensor> out = new LinkedHashMap<>();
    List<CudaArray> taken = new ArrayList<>();
    for (Route r : routes) {
      if (routesOf.get(r.name()) != 1 || !(gr.get(r.moduleKey()) instanceof CudaTensor t)) {
        continue;
      }
      CudaArray a = t.array();
      CudaTensor buffer = graph.grads.get(r.name());
      if (!Arrays.equals(a.shape(), buffer.shape())) {
        continue;
      }
      if (dev.isKnownZero(t)) {
        out.put(r.name(), buffer);
      } else if ((a.dtype() == DType.F32 || a.dtype() == DType.BF16) && a.isContiguous() && stepScope.owns(t)
          // Not where another gradient taken lies: the device lays weight gradients end to end in one allocation
          // (CudaModelDevice.emptyParamGradient), so sharing a buffer is not enough to refuse.
          && taken.stream().noneMatch(a::overlaps)) {
        a.produce(); // recorded now: work deferred on it would otherwise be dropped with the step's scope
        taken.add(a);
        out.put(r.name(), t);
        graph.replacedGrads.add(buffer);
      }
    }
    return out;
  }

  /**
   * How many parameters' gradients the captured step copies into fixed buffers (a tied weight's two gradients, summed
   * there, or one AdamW cannot read where the backward left it); the others it leaves in place
   * ({@link #gradientsInPlace}). -1 before the graph is captured or without graphs.
   */
  public int gradientsCopiedByGraph() {
    return graph == null || graph.graph == null ? -1 : graph.copied;
  }

  @Override
  public boolean canQueueSteps() {
    return graph != null;
  }

  /**
   * Graph mode's queued step: until the graph is captured (the first, eager step and the capturing one) it runs the
   * step at once; after that, it copies the batch and the step's scalars through a pinned slot, launches the graph,
   * queues the copy of the loss, norm and skip flag back, and returns without waiting.
   */
  @Override
  public QueuedStep queueStep(double lr, NdArray inputs, NdArray targets) {
    GraphState g = graph;
    if (g == null) {
      return TrainingEngine.super.queueStep(lr, inputs, targets);
    }
    if (g.graph == null) {
      beginStep(lr);
      double loss = accumulate(inputs, targets);
      double norm = clipGradients(1, g.maxNorm);
      boolean skipped;
      if (g.replayed) {
        skipped = g.lastSkipped;
        update(lr);
      } else if (Double.isFinite(loss) && Double.isFinite(norm)) {
        skipped = false;
        update(lr);
      } else {
        skipped = true;
        abandonStep();
      }
      StepResult done = new StepResult(loss, norm, skipped);
      return () -> done;
    }
    abandonStep();
    requireCapturedShapes(g, inputs, targets);
    int s = g.nextSlot;
    g.nextSlot ^= 1;
    if (g.inSlot[s] != null) {
      g.inSlot[s].collect(); // the step two back: its results leave the slot before the slot is reused
    }
    long inBytes = g.inputs.array().byteSize();
    long tgtBytes = g.targets.array().byteSize();
    long hyperAt = align8(inBytes + tgtBytes);
    long lossAt = hyperAt + align8(g.hyper.byteSize());
    long normAt = lossAt + 8;
    long flagsAt = normAt + 8;
    if (g.slots[s] == null) {
      g.slots[s] = new PinnedBuffer(dev.gpu(), flagsAt + g.hyper.byteSize());
    }
    PinnedBuffer slot = g.slots[s];
    slot.await();
    MemorySegment host = slot.segment();
    NdArray in = inputs.contiguous();
    NdArray tg = targets.contiguous();
    if (in.dtype() != g.inputs.array().dtype() || tg.dtype() != g.targets.array().dtype()) {
      throw new IllegalArgumentException("CUDA-graph steps need batches of one dtype: captured "
          + g.inputs.array().dtype() + "/" + g.targets.array().dtype() + ", got " + in.dtype() + "/" + tg.dtype());
    }
    MemorySegment.copy(in.segment(), in.offset() * in.dtype().byteSize(), host, 0, inBytes);
    MemorySegment.copy(tg.segment(), tg.offset() * tg.dtype().byteSize(), host, inBytes, tgtBytes);
    float[] hyper = hyper(lr, steps + 1);
    for (int i = 0; i < hyper.length; i++) {
      host.set(ValueLayout.JAVA_FLOAT_UNALIGNED, hyperAt + 4L * i, hyper[i]);
    }
    CudaStream stream = dev.gpu().defaultStream();
    slot.upload(0, g.inputs.array(), stream);
    slot.upload(inBytes, g.targets.array(), stream);
    slot.upload(hyperAt, g.hyper, stream);
    g.graph.launch(stream);
    mastersChanged();
    slot.download(g.loss.array(), lossAt, stream);
    slot.download(g.norm, normAt, stream);
    slot.download(g.hyper, flagsAt, stream);
    slot.fence(stream);
    steps++; // counted now, so the next queued step's bias correction follows; undone if the device skipped it
    Queued q = new Queued(this, slot, lossAt, normAt, flagsAt + 4L * HYPER_SKIPPED, g.loss.array().dtype());
    g.inSlot[s] = q;
    return q;
  }

  /** A replayed step's batch must have the shapes the graph was captured with. */
  private static void requireCapturedShapes(GraphState g, NdArray inputs, NdArray targets) {
    if (!Arrays.equals(inputs.shape(), g.inputs.shape()) || !Arrays.equals(targets.shape(), g.targets.shape())) {
      throw new IllegalArgumentException("CUDA-graph steps need batches of one shape: captured "
          + Arrays.toString(g.inputs.shape()) + ", got " + Arrays.toString(inputs.shape()) + " and "
          + Arrays.toString(targets.shape()));
    }
  }

  private static long align8(long bytes) {
    return (bytes + 7) & ~7L;
  }

  /** Where {@code kiln_clip_scale} leaves its skip flag in the hyper-parameter block (non-zero: update skipped). */
  private static final int HYPER_SKIPPED = 8;

  /** The graph's hyper-parameter block for a step at {@code lr} that is update number {@code t}. */
  private float[] hyper(double lr, long t) {
    float bc1 = (float) (1 - Math.pow(optConfig.beta1(), t));
    float bc2 = (float) (1 - Math.pow(optConfig.beta2(), t));
    return new float[] {(float) lr, (float) optConfig.beta1(), (float) optConfig.beta2(), (float) optConfig.eps(),
        (float) optConfig.weightDecay(), bc1, bc2, 1f, 0f, optConfig.formula() == AdamW.Formula.CS336 ? 1f : 0f};
  }

  /** A replayed step in flight: its results sit in a pinned slot until {@link #collect} copies them out. */
  private static final class Queued implements QueuedStep {
    private final CudaEngine<?> engine;
    private final PinnedBuffer slot;
    private final long lossAt;
    private final long normAt;
    private final long skippedAt;
    private final DType lossType;
    private StepResult result;

    Queued(CudaEngine<?> engine, PinnedBuffer slot, long lossAt, long normAt, long skippedAt, DType lossType) {
      this.engine = engine;
      this.slot = slot;
      this.lossAt = lossAt;
      this.normAt = normAt;
      this.skippedAt = skippedAt;
      this.lossType = lossType;
    }

    void collect() {
      if (result != null) {
        return;
      }
      slot.await();
      MemorySegment host = slot.segment();
      double loss = lossType == DType.F64 ? host.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, lossAt)
          : host.get(ValueLayout.JAVA_FLOAT_UNALIGNED, lossAt);
      double norm = host.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, normAt);
      boolean skipped = host.get(ValueLayout.JAVA_FLOAT_UNALIGNED, skippedAt) != 0;
      if (skipped) {
        engine.steps--;
      }
      result = new StepResult(loss, norm, skipped);
    }

    @Override
    public StepResult await() {
      collect();
      return result;
    }
  }

  @Override
  public double clipGradients(int microBatches, double maxNorm) {
    if (graph != null && graph.replayed) {
      return graph.lastNorm;
    }
    List<Tensor> list = new ArrayList<>();
    for (String n : byName.keySet()) {
      list.add(grads.get(n));
    }
    double sum = 0;
    for (double s : dev.sumsOfSquares(list)) {
      sum += s;
    }
    dev.mark("gradient norms");
    double norm = Math.sqrt(sum) / microBatches;
    double clip = maxNorm > 0 && norm > maxNorm && !Double.isInfinite(norm) ? maxNorm / (norm + GradClip.EPS) : 1;
    gradScale = clip / microBatches;
    return norm;
  }

  @Override
  public void update(double lr) {
    if (graph != null && graph.replayed) {
      // The graph applied the update already (or skipped it on a non-finite norm, which the trainer reports).
      if (!graph.lastSkipped) {
        steps++;
      }
      abandonStep();
      return;
    }
    if (graph != null) {
      graph.eagerSteps++;
    }
    choosePlanes();
    steps++;
    adamw.step(adamwParams(n -> ((CudaTensor) grads.get(n)).array()), new FusedAdamW.Hyper((float) lr,
        (float) optConfig.beta1(), (float) optConfig.beta2(), (float) optConfig.eps(), (float) optConfig.weightDecay(),
        steps, (float) gradScale, optConfig.formula() == AdamW.Formula.CS336));
    mastersChanged();
    dev.mark("fused AdamW");
    abandonStep();
    dev.mark("end of step (scope close)");
  }

  @Override
  public void abandonStep() {
    if (stepScope != null) {
      stepScope.close();
      stepScope = null;
    }
    grads = null;
  }

  @Override
  public double loss(NdArray inputs, NdArray targets) {
    try (CudaModelDevice.Scope s = dev.scope()) {
      Tensor loss = program.loss(new Context(), params, dev.fromHost(inputs), dev.fromHost(targets));
      return dev.download(loss)[0];
    }
  }

  @Override
  public void syncToHost() {
    Map<String, NdArray> state = hostOptimizer().stateTensors();
    for (Map.Entry<String, CudaTensor> e : byName.entrySet()) {
      String n = e.getKey();
      hostParams.get(n).copyFrom(dev.toHost(e.getValue()));
      state.get(n + ".exp_avg").copyFrom(m.get(n).toHost());
      state.get(n + ".exp_avg_sq").copyFrom(v.get(n).toHost());
    }
    hostOptimizer().restoreStepCount(steps);
  }

  @Override
  public void syncFromHost() {
    Map<String, NdArray> state = hostOptimizer().stateTensors();
    for (Map.Entry<String, CudaTensor> e : byName.entrySet()) {
      String n = e.getKey();
      dev.copyFromHost(hostParams.get(n), e.getValue());
      m.get(n).copyFromHost(state.get(n + ".exp_avg"));
      v.get(n).copyFromHost(state.get(n + ".exp_avg_sq"));
      dev.refreshBf16Twin(e.getValue());
    }
    steps = hostOptimizer().stepCount();
  }

  /** Frees the device memory of the run: optimizer state, and the parameters (the model is unusable afterwards). */
  @Override
  public void close() {
    abandonStep();
    if (graph != null) {
      for (PinnedBuffer slot : graph.slots) {
        if (slot != null) {
          slot.close();
        }
      }
      if (graph.graph != null) {
        graph.graph.close();
      }
      graph.memory.forEach(CudaArray::close);
      graph.grads.values().forEach(dev::release);
      graph.table.close();
      if (graph.squares != null) {
        graph.squares.close();
      }
      graph.hyper.close();
      graph.sumsq.close();
      graph.norm.close();
      graph = null;
    }
    m.values().forEach(CudaArray::close);
    v.values().forEach(CudaArray::close);
    m.clear();
    v.clear();
    byName.values().forEach(dev::release);
    byName.clear();
  }
}
