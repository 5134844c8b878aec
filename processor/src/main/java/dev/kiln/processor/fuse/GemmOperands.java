package dev.kiln.processor.fuse;

import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Cond;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Pass 5, after {@link Lowering}: finds the values that only GEMMs read, in the forward graph and its backward.
 *
 * <p>A mixed-precision device rounds both operands of every GEMM to bf16. A value that nothing but GEMMs reads can
 * therefore be stored in bf16 by the kernel that makes it, with the same results: the write is half the size, and
 * the cast kernel that read the fp32 copy to round it disappears (the SwiGLU product {@code silu(x·W1)·(x·W3)} in
 * forward, the gradients of {@code x·W1} and {@code x·W3} in backward). Such fused-kernel outputs are marked in
 * {@link FusedKernel#gemmOperands()}; the generated code allocates them with {@code Device.emptyGemmOperand}.
 *
 * <p>What counts as a GEMM read: an operand of an einsum planned as a GEMM; attention's q, k and v (forward and
 * backward: the mixed-precision device runs attention on bf16 operands, rounded as a GEMM rounds them); an argument of
 * a sub-module whose forward and backward read that input only in GEMMs (a {@code Linear}'s {@code x}); the result
 * gradient handed to such a sub-module's backward. A rearrange outside any kernel (a view, or a copy in the value's
 * own dtype) passes its reads on to its input. Reading only a value's shape is no read. Anything else (another
 * kernel, a primitive, returning the value, a loop or branch result) is a read in the value's own precision.
 *
 * <p>Besides kernel outputs, RoPE results that only such reads follow are marked ({@link
 * Lowering.Result#gemmOperandPrims}): the device call says {@code forGemms}, and the mixed-precision device writes
 * the rotated q and k (forward) or their gradients (backward) in bf16 only. The same facts about this
 * module's inputs and result gradient are {@link Lowering.Result#gemmOperandInputs} and
 * {@link Lowering.Result#gemmOperandGradient}, exported for the modules that call this one.
 */
public final class GemmOperands {
  /** What the modules this one calls let a GEMM-only value be passed as. */
  public interface Callees {
    /** Per argument of {@code call}: whether the callee reads it only in GEMMs (forward and backward). */
    boolean[] arguments(Node.Call call);

    /** Whether the callee's backward reads the gradient of its result only in GEMMs. */
    boolean resultGradient(Node.Call call);

    /** Whether the callee's backward takes the gradient of its result in bf16 ({@code Result.bf16Gradient}). */
    boolean bf16Gradient(Node.Call call);
  }

  /** How a value is read, from the most to the least permissive. */
  private enum Read {
    /** As a GEMM operand. */
    GEMM,
    /** As the forward's result: a GEMM read when the caller's own reads of it are ({@code Context.resultForGemms}). */
    RESULT,
    /** Anything else, in the value's own precision. */
    OTHER
  }

  private final Lowering.Result plan;
  private final Callees callees;
  /** Every read of each value. */
  private final Map<Value, List<Read>> reads = new HashMap<>();
  /** Every read of each value, as {@link Low} says (in step with {@link #reads}). */
  private final Map<Value, List<Low>> lowReads = new HashMap<>();
  /** The kernel that writes each fused-kernel output. */
  private final Map<Value, FusedKernel> writer = new IdentityHashMap<>();

  private GemmOperands(Lowering.Result plan, Callees callees) {
    this.plan = plan;
    this.callees = callees;
  }

  /** Marks the GEMM-only kernel outputs of {@code plan} and records the facts about its inputs and gradient. */
  public static void run(Lowering.Result plan, Callees callees) {
    GemmOperands g = new GemmOperands(plan, callees);
    List<FusedKernel> kernels = new ArrayList<>(plan.forwardKernels);
    kernels.addAll(plan.backwardKernels);
    for (FusedKernel k : kernels) {
      for (Value v : k.outputs().keySet()) {
        g.writer.put(v, k);
      }
    }
    boolean forward = plan.graph.kind() == dev.kiln.processor.ir.Graph.Kind.FORWARD;
    g.scan(plan.graph.body(), null, forward ? Read.RESULT : Read.OTHER);
    g.scan(plan.backward.block(), null, Read.OTHER);
    for (FusedKernel k : kernels) {
      int index = 0;
      for (var e : k.outputs().entrySet()) {
        // Kernel.gemmOperands is a 64-bit mask over the outputs: those past the 64th stay in the compute dtype.
        boolean inMask = index++ < 64;
        if (inMask && e.getValue() == Level.FULL && g.onlyGemms(e.getKey())) {
          k.gemmOperands.add(e.getKey());
          String reader = g.gradientReader(e.getKey(), new java.util.HashSet<>());
          if (reader != null) {
            k.gemmOperandReaders.put(e.getKey(), reader);
          }
        }
      }
      // An output that is the forward's result and otherwise read only by GEMMs (a norm's output) is a GEMM operand
      // when the caller says its own reads are. Only in kernels without other GEMM operands: the device stores a
      // kernel's GEMM operands in bf16 all together or not at all.
      if (k.gemmOperands.isEmpty()) {
        index = 0;
        for (var e : k.outputs().entrySet()) {
          boolean inMask = index++ < 64;
          if (inMask && e.getValue() == Level.FULL && g.worst(e.getKey()) == Read.RESULT) {
            k.gemmOperands.add(e.getKey());
            k.resultGemmOperands.add(e.getKey());
          }
        }
      }
    }
    g.callResults(plan.graph.body(), plan.gemmOperandCallResults);
    for (Node.Prim p : g.ropes) {
      if (g.onlyGemms(p.out())) {
        plan.gemmOperandPrims.add(p);
      }
      if (g.overwritable(p)) {
        plan.ropeOverwrites.add(p);
      }
    }
    int n = plan.graph.inputs().size();
    plan.gemmOperandInputs = new boolean[n];
    for (int i = 0; i < n; i++) {
      plan.gemmOperandInputs[i] = g.onlyGemms(plan.graph.inputs().get(i).value());
    }
    plan.gemmOperandGradient = plan.backward.dOut() != null && g.onlyGemms(plan.backward.dOut());
    Bf16When gradient = plan.backward.dOut() == null ? null : g.low(plan.backward.dOut());
    plan.bf16Gradient = gradient != null && gradient.consent() == LowKind.YES && gradient.guard().equals(ALWAYS);
    g.bf16Results(kernels);
    for (FusedKernel k : kernels) {
      // A plain sum of GEMM outputs (the q, k and v projections' input gradients) whose readers take bf16, or whose
      // caller takes it so as an input gradient: a device that sums by one GEMM may write it in bf16.
      Value out = k.sumOfInputs() ? k.outputs().keySet().iterator().next() : null;
      Bf16When w = out == null || k.gemmOperands.contains(out) ? null : g.low(out);
      if (w != null && (w.consent() == LowKind.YES || w.consent() == LowKind.GRADIENT)) {
        k.bf16SumOutput = w;
      }
    }
    g.paramGradients();
  }

  /**
   * Fills {@link Lowering.Result#paramGradientGemms}: GEMM einsums whose output only parameter-gradient nodes read
   * (not viewed, not yielded by a branch), written where it is allocated.
   */
  private void paramGradients() {
    for (Node.Prim p : einsums) {
      List<Read> r = reads.get(p.out());
      if (r != null && !r.isEmpty() && r.size() == paramGradReads.getOrDefault(p.out(), 0)
          && !yieldedAs.containsKey(p.out()) && plan.gemms.get(p).writesInPlace()) {
        String component = paramGradComponents.get(p.out());
        plan.paramGradientGemms.put(p, component == null || component.isEmpty() ? null : component);
      }
    }
  }

  /**
   * Fills {@link Lowering.Result#bf16GemmResults}, {@code bf16CallResults}, {@code bf16CallGradients} and each
   * kernel's {@link FusedKernel#bf16Inputs()}.
   */
  private void bf16Results(List<FusedKernel> kernels) {
    java.util.Set<Value> maybe = new java.util.HashSet<>();
    if (plan.bf16Gradient) {
      maybe.add(plan.backward.dOut()); // a caller may hand it over in bf16: its kernels read it through _in16
    }
    for (Node.Prim p : einsums) {
      Bf16When when = low(p.out());
      if (when != null && plan.gemms.get(p).writesInPlace()) {
        plan.bf16GemmResults.put(p, when);
        maybe.add(p.out());
      }
    }
    for (Node.Call c : calls) {
      Bf16When when = low(c.out());
      if (when != null && when.consent() != LowKind.GRADIENT) {
        plan.bf16CallResults.put(c, when);
        maybe.add(c.out());
      }
    }
    for (Node.CallGrad g : callGrads) {
      for (int i = 0; i < g.dArgs().size() && i < 64; i++) {
        Value d = g.dArgs().get(i);
        Bf16When when = d == null ? null : low(d);
        if (when != null && when.consent() == LowKind.YES) {
          plan.bf16CallGradients.computeIfAbsent(g.call().out(), x -> new java.util.TreeMap<>()).merge(i, when.guard(),
              (x, y) -> new Cond.And(x, y));
          maybe.add(d);
        }
      }
    }
    // Views and branch results of such values may be bf16 too; so may the cross-entropy's gradient, attention's
    // output and gradients, and an add of
    // such a value, where every reader of the result takes bf16 (a device returns the bf16 operand of an add of a
    // zero: the logits' gradient when z-loss is off).
    for (boolean grew = true; grew; ) {
      grew = false;
      for (var e : yieldedAs.entrySet()) {
        if (maybe.contains(e.getKey())) {
          for (Value out : e.getValue()) {
            grew |= maybe.add(out);
          }
        }
      }
      for (Node.Prim p : bf16Producers) {
        boolean source = alwaysBf16Source(p) || p.inputs().stream().anyMatch(maybe::contains);
        Bf16When when = source && !plan.bf16Prims.containsKey(p) ? low(p.out()) : null;
        // Or the module's input gradient, where the caller takes it in bf16 (the FFN's, a sum of two GEMMs, which a
        // norm's backward reads next): not the forward's result, which is the residual stream in a block.
        if (when != null && (when.consent() == LowKind.YES || when.consent() == LowKind.GRADIENT)) {
          plan.bf16Prims.put(p, when);
          grew |= maybe.add(p.out());
        }
      }
    }
    for (FusedKernel k : kernels) {
      for (Value v : k.inputs().keySet()) {
        if (maybe.contains(v)) {
          k.bf16Inputs.add(v);
        }
      }
    }
  }

  /**
   * When a value may be stored in bf16: while {@code guard} holds (the branches whose reads need it in its own
   * precision are not taken; hyper-parameters, decided at init time) and the caller consents as {@code consent} says
   * ({@code YES}: no consent needed; {@code RESULT}; {@code GRADIENT} of input {@code input}).
   */
  public record Bf16When(Cond guard, LowKind consent, int input) {}

  /** A read: how it takes bf16, and the branch conditions under which it happens ({@code Cond.Const(true)}: always). */
  private record Low(LowKind kind, int input, Cond guard) {}

  /** How a read takes a GEMM output stored in bf16. */
  public enum LowKind {
    /** As it is (GEMMs, attention, cross-entropy, fused kernels). */
    YES,
    /** As the forward's result: when the caller takes it in bf16. */
    RESULT,
    /** As backward's gradient of an input: when the caller takes that in bf16. */
    GRADIENT,
    /** Only in its own precision. */
    NO
  }

  private static final Cond ALWAYS = new Cond.Const(true);

  /** The conditions of the branch arms being scanned, innermost last. */
  private final java.util.ArrayDeque<Cond> guards = new java.util.ArrayDeque<>();

  private Cond guard() {
    Cond g = ALWAYS;
    for (Cond c : guards) {
      g = g == ALWAYS ? c : new Cond.And(g, c);
    }
    return g;
  }

  private final Map<Value, Optional<Bf16When>> lowOf = new HashMap<>();

  /**
   * When {@code v} may be stored in bf16, following branch results and views; null for never: nothing reads it, a
   * read in its own precision happens whatever the hyper-parameters, or its reads need two different consents.
   */
  private Bf16When low(Value v) {
    Optional<Bf16When> known = lowOf.get(v);
    if (known == null) {
      lowOf.put(v, Optional.empty()); // a cycle through branch results: never
      known = Optional.ofNullable(computeLow(v));
      lowOf.put(v, known);
    }
    return known.orElse(null);
  }

  private Bf16When computeLow(Value v) {
    List<Low> own = lowReads.getOrDefault(v, List.of());
    List<Value> outs = yieldedAs.getOrDefault(v, List.of());
    if (own.isEmpty() && outs.isEmpty()) {
      return null;
    }
    Cond guard = ALWAYS;
    LowKind consent = LowKind.YES;
    int input = -1;
    List<Bf16When> all = new ArrayList<>();
    for (Low r : own) {
      all.add(r.kind() == LowKind.NO ? new Bf16When(not(r.guard()), LowKind.YES, -1)
          : new Bf16When(ALWAYS, r.kind(), r.input()));
    }
    for (Value out : outs) {
      Bf16When w = low(out);
      if (w == null) {
        return null;
      }
      all.add(w);
    }
    for (Bf16When w : all) {
      if (w.guard() instanceof Cond.Const c && !c.value()) {
        return null;
      }
      if (w.guard() != ALWAYS) {
        guard = guard == ALWAYS ? w.guard() : new Cond.And(guard, w.guard());
      }
      if (w.consent() != LowKind.YES) {
        if (consent != LowKind.YES && (consent != w.consent() || input != w.input())) {
          return null;
        }
        consent = w.consent();
        input = w.input();
      }
    }
    return new Bf16When(guard, consent, input);
  }

  private static Cond not(Cond c) {
    return c instanceof Cond.Const k ? new Cond.Const(!k.value()) : new Cond.Not(c);
  }

  /**
   * Whether RoPE node {@code p} may write its result over its input: the input is attention's dq or dk (a device
   * primitive's fresh result, outside any kernel), and this node is its one reader (no view, branch result or other
   * node reads it). Attention's gradients are then rotated back where they lie, and a device that interleaves dq, dk
   * and dv for one GEMM over the projections' stacked weights keeps them interleaved.
   */
  private boolean overwritable(Node.Prim p) {
    Value x = p.inputs().get(0);
    Node.Prim from = producer.get(x);
    return from != null && (from.op() == Primitive.ATTENTION_DQ || from.op() == Primitive.ATTENTION_DK)
        && reads.getOrDefault(x, List.of()).size() == 1 && !yieldedAs.containsKey(x);
  }

  /** True when {@code v} is read, and only by GEMMs (also where a branch hands it on as its result). */
  private boolean onlyGemms(Value v) {
    return worst(v) == Read.GEMM;
  }

  /**
   * {@link #worst} of the values asked so far (only after the scan): a chain of rearranges and branch results is
   * followed once, not once per path.
   */
  private final Map<Value, Optional<Read>> worstOf = new HashMap<>();

  /** The least permissive read of {@code v}, following branch results; null when nothing reads it. */
  private Read worst(Value v) {
    Optional<Read> known = worstOf.get(v);
    if (known == null) {
      known = Optional.ofNullable(computeWorst(v));
      worstOf.put(v, known);
    }
    return known.orElse(null);
  }

  private Read computeWorst(Value v) {
    Read w = null;
    for (Read r : reads.getOrDefault(v, List.of())) {
      w = w == null || r.compareTo(w) > 0 ? r : w;
    }
    for (Value out : yieldedAs.getOrDefault(v, List.of())) {
      Read r = worst(out);
      if (r == null) {
        return Read.OTHER; // a branch output nothing reads: keep the value as it is
      }
      w = w == null || r.compareTo(w) > 0 ? r : w;
    }
    return w;
  }

  private void read(Value v, boolean gemm) {
    read(v, gemm ? Read.GEMM : Read.OTHER, gemm ? LowKind.YES : LowKind.NO, -1);
  }

  private void read(Value v, Read how, LowKind low, int input) {
    if (v != null) {
      reads.computeIfAbsent(v, x -> new ArrayList<>()).add(how);
      lowReads.computeIfAbsent(v, x -> new ArrayList<>()).add(new Low(low, input, guard()));
    }
  }

  /** The sub-module calls in {@code b} (loops and branches included) whose result only GEMMs read. */
  private void callResults(Block b, java.util.Set<Value> out) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Call c when c.component() != null && onlyGemms(c.out()) -> out.add(c.out());
        case Node.Loop l -> callResults(l.body(), out);
        case Node.Branch br -> {
          callResults(br.then(), out);
          callResults(br.otherwise(), out);
        }
        default -> {}
      }
    }
  }

  /**
   * Values read wherever other values are: a branch arm's result, where the branch's output is read; a standalone
   * rearrange's input, where its result is.
   */
  private final Map<Value, List<Value>> yieldedAs = new HashMap<>();

  /**
   * Reads in {@code b}; its results become {@code branchOut}'s values, or are read as {@code results} says (the
   * forward graph's result, anything else).
   */
  private void scan(Block b, List<Value> branchOut, Read results) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p -> prim(p);
        case Node.ParamRead r -> {}
        case Node.Call c -> {
          calls.add(c);
          boolean[] gemm = c.component() == null ? new boolean[c.args().size()] : callees.arguments(c);
          for (int i = 0; i < c.args().size(); i++) {
            read(c.args().get(i), i < gemm.length && gemm[i]);
          }
        }
        case Node.CallGrad g -> {
          callGrads.add(g);
          if (g.call().component() != null && g.dOut() != null) {
            resultGradientOf.merge(g.dOut(), g.call().component(), (x, y) -> x.equals(y) ? x : "");
          }
          // A call of this module's own forward (the loss's) has its facts too: the forward graph is analysed first.
          // A callee whose backward takes its result's gradient in bf16 (a norm's fused kernels) lets it be stored so.
          boolean callee = g.call().component() != null || g.call().calleeType() != null;
          boolean gemm = callee && callees.resultGradient(g.call());
          read(g.dOut(), gemm ? Read.GEMM : Read.OTHER,
              gemm || callee && callees.bf16Gradient(g.call()) ? LowKind.YES : LowKind.NO, -1);
          // An addend goes into the callee's kernel that computes the argument's gradient: a full-precision read.
          g.plus().stream().filter(java.util.Objects::nonNull).forEach(v -> read(v, false));
        }
        case Node.ParamGrad g -> {
          read(g.grad(), false);
          paramGradReads.merge(g.grad(), 1, Integer::sum);
          paramGradComponents.merge(g.grad(), g.component(), (x, y) -> x.equals(y) ? x : "");
        }
        case Node.Loop l -> {
          l.init().forEach(v -> read(v, false));
          scan(l.body(), null, Read.OTHER);
        }
        case Node.LoopGrad l -> {
          l.init().forEach(v -> read(v, false));
          scan(l.body(), null, Read.OTHER);
        }
        case Node.Branch br -> {
          guards.addLast(br.cond());
          scan(br.then(), br.out(), Read.OTHER);
          guards.removeLast();
          guards.addLast(not(br.cond()));
          scan(br.otherwise(), br.out(), Read.OTHER);
          guards.removeLast();
        }
      }
    }
    for (int i = 0; i < b.results().size(); i++) {
      Value v = b.results().get(i);
      if (branchOut != null && i < branchOut.size() && v != null) {
        yieldedAs.computeIfAbsent(v, x -> new ArrayList<>()).add(branchOut.get(i));
      } else {
        int gradient = gradientIndex(b, v);
        read(v, results, results == Read.RESULT ? LowKind.RESULT : gradient >= 0 ? LowKind.GRADIENT : LowKind.NO,
            gradient);
      }
    }
  }

  /** Which input's gradient a result of backward's top block is, or -1 (not such a result, or past 64). */
  private int gradientIndex(Block b, Value v) {
    if (b != plan.backward.block() || v == null) {
      return -1;
    }
    int i = plan.backward.inputGrads().indexOf(v);
    return i < 64 ? i : -1;
  }

  /**
   * The sub-module component whose backward takes each value as its result's gradient ({@code w3} for SwiGLU's
   * gradient of {@code x·W3}), or "" where several do.
   */
  private final Map<Value, String> resultGradientOf = new HashMap<>();

  /**
   * The one component whose backward reads {@code v} (directly, or as a branch result it is yielded as) as its
   * result's gradient, or null: none, or several.
   */
  private String gradientReader(Value v, java.util.Set<Value> seen) {
    if (!seen.add(v)) {
      return null;
    }
    String found = resultGradientOf.get(v);
    for (Value out : yieldedAs.getOrDefault(v, List.of())) {
      String r = gradientReader(out, seen);
      if (r != null) {
        if (found != null && !found.equals(r)) {
          return null;
        }
        found = r;
      }
    }
    return found == null || found.isEmpty() ? null : found;
  }

  /** How many times a parameter-gradient node reads each value. */
  private final Map<Value, Integer> paramGradReads = new HashMap<>();
  /** The parameter component whose gradient each value is, or "" where it feeds the gradients of several. */
  private final Map<Value, String> paramGradComponents = new HashMap<>();

  /** The sub-module calls, their gradients, and the GEMM einsums met in forward and backward. */
  private final List<Node.Call> calls = new ArrayList<>();
  private final List<Node.CallGrad> callGrads = new ArrayList<>();
  private final List<Node.Prim> einsums = new ArrayList<>();
  /** Cross-entropy gradients and adds outside kernels: they may return bf16 where their readers take it. */
  private final List<Node.Prim> bf16Producers = new ArrayList<>();

  /** The RoPE nodes met, in forward and backward. */
  private final List<Node.Prim> ropes = new ArrayList<>();

  /** The node outside any kernel that computes each value. */
  private final Map<Value, Node.Prim> producer = new HashMap<>();

  private void prim(Node.Prim p) {
    FusedKernel k = plan.kernelOf.get(p);
    if (k == null) {
      producer.put(p.out(), p);
    }
    if (p.op() == Primitive.ROPE && k == null) {
      ropes.add(p);
    }
    if (p.op() == Primitive.REARRANGE && k == null) {
      // A view (or a same-dtype copy): its input is read wherever its result is.
      yieldedAs.computeIfAbsent(p.inputs().get(0), x -> new ArrayList<>()).add(p.out());
      return;
    }
    boolean gemm = p.op() == Primitive.EINSUM && p.inputs().size() == 2 && plan.gemms.containsKey(p);
    if (gemm && k == null) {
      einsums.add(p);
    }
    if (k == null && (alwaysBf16Source(p) || p.op() == Primitive.ADD || p.op() == Primitive.SUB)) {
      bf16Producers.add(p);
    }
    // Attention's q, k, v (its other backward inputs, out and dOut, are read in their own precision).
    int attentionOperands = switch (p.op()) {
      case ATTENTION, ATTENTION_DQ, ATTENTION_DK, ATTENTION_DV -> 3;
      default -> 0;
    };
    for (int i = 0; i < p.inputs().size(); i++) {
      Value v = p.inputs().get(i);
      if (Lowering.shapeOnly(p, i) || (k != null && writer.get(v) == k)) {
        continue; // its shape only, or a kernel reading what it computed itself (a register, not memory)
      }
      boolean asGemm = gemm || i < attentionOperands;
      read(v, asGemm ? Read.GEMM : Read.OTHER, asGemm || k != null || takesBf16(p, i) ? LowKind.YES : LowKind.NO,
          -1);
    }
    // Sizes a constant is computed from (Attr.Const) are shape reads: no entry.
  }

  /**
   * Device primitives whose result may be bf16 whatever their inputs are, where every reader takes it so: the
   * cross-entropy's gradient and attention's output and gradients (each written from fp32 accumulators, so storing
   * it in bf16 rounds it once, as autocast does).
   */
  private static boolean alwaysBf16Source(Node.Prim p) {
    return switch (p.op()) {
      case CROSS_ENTROPY_GRAD, ATTENTION, ATTENTION_DQ, ATTENTION_DK, ATTENTION_DV -> true;
      default -> false;
    };
  }

  /**
   * Device primitives that take input {@code i} in bf16 as it is: attention backward's {@code out} and {@code dOut}
   * (the kernels round dOut to bf16 anyway; out only enters the row sums of dOut · out, as in autocast's flash
   * attention, which keeps out in bf16), cross-entropy's logits, RoPE's x (the q and k projections), and an add or subtract
   * outside any kernel (the residual add of
   * a projection's output, the sum of two projections' input gradients: same-shaped operands, which the device reads
   * in bf16 directly; other shapes it widens first), and a sum to a smaller shape outside any kernel (LayerNorm's
   * bias gradient, which the device sums in fp32 from the bf16 values). A fused kernel's inputs are handled by the
   * caller.
   */
  private static boolean takesBf16(Node.Prim p, int i) {
    return switch (p.op()) {
      case ATTENTION_DQ, ATTENTION_DK, ATTENTION_DV -> i == 3 || i == 4;
      case CROSS_ENTROPY, CROSS_ENTROPY_GRAD -> i == 0;
      case ROPE -> i == 0;
      case SUM_TO -> i == 0; // a bias gradient's sum over the rows: the device reads bf16 and sums in fp32
      case ADD, SUB -> true;
      default -> false;
    };
  }
}
