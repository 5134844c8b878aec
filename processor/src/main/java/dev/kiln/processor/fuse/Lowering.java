package dev.kiln.processor.fuse;

import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.grad.Differentiator;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Pass 4, after grad: cleans both graphs (common subexpressions, dead nodes), fuses pointwise chains and last-dim
 * reductions into kernels, plans each einsum as a GEMM, and decides what forward keeps for backward.
 *
 * <p>The saving policy: backward never re-runs a GEMM, a gather or a sub-module; it reads their results from the
 * context. A value computed inside a forward kernel is not written out for backward when it is one value per element
 * (a pointwise chain): backward recomputes it from the kernel's inputs, inside its own kernel, also inside a branch
 * decided at init time when only the mirroring backward branch reads it ({@link Recompute}). A per-row value inside
 * a kernel (a row max, a row sum, an inverse RMS) is written out and saved: it is small, and recomputing it would
 * re-read a whole row.
 */
public final class Lowering {
  /** How backward reads a forward value. */
  public enum Save {
    /** Its contents. */
    TENSOR,
    /** Only its shape (the gradient of broadcasting, a zeros-like, a size in a constant). */
    SHAPE
  }

  /** The plan of one graph and its backward. */
  public static final class Result {
    public final Graph graph;
    public final Differentiator.Backward backward;
    public final Map<Node.Prim, FusedKernel> kernelOf = new IdentityHashMap<>();
    public final List<FusedKernel> forwardKernels = new ArrayList<>();
    public final List<FusedKernel> backwardKernels = new ArrayList<>();
    public final Map<Node.Prim, GemmPlan> gemms = new IdentityHashMap<>();
    /** Forward values backward reads (values a node of the forward graph defines, or inputs), and how. */
    public final Map<Value, Save> saved = new LinkedHashMap<>();
    /** Forward values whose {@code ATTENTION} node must also save its row log-sum-exp. */
    public final Set<Value> attentionLse = new HashSet<>();
    /**
     * GEMM einsums whose output may be stored in bf16 ({@code Device.emptyGemmResult}), and when
     * ({@link GemmOperands}).
     */
    public final Map<Node.Prim, GemmOperands.Bf16When> bf16GemmResults = new IdentityHashMap<>();
    /**
     * GEMM einsums whose output is a parameter's gradient and nothing else: allocated with {@code
     * Device.emptyParamGradient} ({@link GemmOperands}). The value is the parameter's component where the gradient is
     * one parameter's alone (the device is then told which), else null.
     */
    public final Map<Node.Prim, String> paramGradientGemms = new IdentityHashMap<>();
    /**
     * Cross-entropy gradients and adds whose every reader takes bf16, and when: the generated call says so, and a
     * mixed-precision device may return them in bf16 ({@link GemmOperands}).
     */
    public final Map<Node.Prim, GemmOperands.Bf16When> bf16Prims = new IdentityHashMap<>();
    /** Sub-module calls whose result this module takes in bf16, and when ({@link GemmOperands}). */
    public final Map<Node.Call, GemmOperands.Bf16When> bf16CallResults = new IdentityHashMap<>();
    /**
     * Sub-module calls (by their result: a gradient node refers to its call by value, not by identity), with the
     * arguments whose gradients this module takes in bf16 and the hyper-parameter condition under which it does.
     */
    public final Map<Value, java.util.SortedMap<Integer, dev.kiln.processor.ir.Cond>> bf16CallGradients =
        new HashMap<>();
    /** Per graph input: whether only GEMMs read it, in forward and backward ({@link GemmOperands}). */
    public boolean[] gemmOperandInputs = new boolean[0];
    /** Whether backward reads the result's gradient only in GEMMs ({@link GemmOperands}). */
    public boolean gemmOperandGradient;
    /**
     * Whether backward takes the result's gradient in bf16 as it is ({@link GemmOperands}): every read of it a GEMM,
     * attention's, or a fused kernel's (which reads such an input through its {@code _in16} variants), whatever the
     * hyper-parameters. A caller may then hand it a gradient stored in bf16 (a norm's, from the projections after it).
     */
    public boolean bf16Gradient;
    /** Results of sub-module calls that only GEMMs read: their context says so ({@code Context.resultForGemms}). */
    public final Set<Value> gemmOperandCallResults = new HashSet<>();
    /**
     * Device primitives (RoPE) whose result only GEMMs and attention read: the generated call passes
     * {@code forGemms}, and a mixed-precision device may keep the result in bf16 only.
     */
    public final Set<Node.Prim> gemmOperandPrims = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
    /**
     * RoPE nodes (in backward: the inverse rotation of attention's dq or dk) whose input nothing else reads: the
     * generated call passes {@code overwrite}, and a device may write the result over the input ({@link GemmOperands}).
     */
    public final Set<Node.Prim> ropeOverwrites = java.util.Collections.newSetFromMap(new IdentityHashMap<>());

    Result(Graph graph, Differentiator.Backward backward) {
      this.graph = graph;
      this.backward = backward;
    }
  }

  private Lowering() {}

  public static Result run(String kernelPrefix, Graph g, Differentiator.Backward b) {
    Result r = new Result(g, b);
    Cse.run(g.body());
    Cse.run(b.block());
    Set<Value> live = new HashSet<>(g.body().results());
    collectUses(b.block(), live);
    Dce.run(g.body(), live);
    Dce.run(b.block(), new HashSet<>(b.block().results()));

    Schedule.hoist(g.body());
    Fusion fwd = new Fusion(kernelPrefix + "_fwd_");
    fuseAll(fwd, g.body());

    Set<Value> forwardDefined = new HashSet<>();
    for (Graph.Input in : g.inputs()) {
      forwardDefined.add(in.value());
    }
    Differentiator.defined(g.body(), forwardDefined);
    Map<Value, Node.Prim> forwardDef = new HashMap<>();
    definitions(g.body(), forwardDef);
    Set<Value> topLevel = new HashSet<>();
    for (Node n : g.body().nodes()) {
      topLevel.addAll(n.outputs());
    }

    // Which forward values backward reads, and where.
    Map<Value, Save> refs = new LinkedHashMap<>();
    Set<Value> refsOutsideTop = new HashSet<>();
    references(b.block(), forwardDefined, refs, refsOutsideTop, true, r);

    // Recompute per-element kernel values at the top of backward (or of the backward branch that mirrors the
    // forward branch computing them); expose per-row ones as outputs.
    Recompute re = new Recompute(fwd, forwardDef, topLevel, refsOutsideTop, g.body(), b.block());
    for (var e : refs.entrySet()) {
      if (e.getValue() == Save.TENSOR) {
        re.plan(e.getKey());
      }
    }
    re.insert();

    refs.clear();
    Set<Value> definedInBackward = new HashSet<>();
    Differentiator.defined(b.block(), definedInBackward);
    Set<Value> stillForward = new HashSet<>(forwardDefined);
    stillForward.removeAll(definedInBackward);
    references(b.block(), stillForward, refs, new HashSet<>(), true, r);
    for (var e : refs.entrySet()) {
      Node.Prim def = forwardDef.get(e.getKey());
      if (e.getValue() == Save.TENSOR && def != null) {
        fwd.exposeOutput(e.getKey(), def);
      }
    }
    r.saved.putAll(refs);

    Schedule.hoist(b.block());
    Fusion bwd = new Fusion(kernelPrefix + "_bwd_");
    fuseAll(bwd, b.block());
    r.kernelOf.putAll(fwd.kernelOf());
    r.kernelOf.putAll(bwd.kernelOf());
    r.forwardKernels.addAll(fwd.kernels());
    r.backwardKernels.addAll(bwd.kernels());
    planGemms(g.body(), r);
    planGemms(b.block(), r);
    return r;
  }

  /**
   * Where backward recomputes forward kernel values instead of saving them. A value of the top-level body is
   * recomputed at the top of backward when only top-level backward code reads it. A value computed inside a
   * forward branch ({@code if (kind == SWIGLU)}, decided at init time) is recomputed at the top of the backward
   * block under the same conditions when every read of it is in that block: backward runs that block exactly when
   * forward ran the branch, so the values it reads to recompute were saved. Otherwise (or inside loops) the value is
   * written out by its kernel and saved.
   */
  private static final class Recompute {
    /** One step of a block's path from the graph's top: a branch's condition and which side. */
    private record Side(dev.kiln.processor.ir.Cond cond, boolean then) {}

    private final Fusion fwd;
    private final Map<Value, Node.Prim> def;
    private final Set<Value> topLevel;
    private final Set<Value> refsOutsideTop;
    private final Block top;
    /** Forward values defined at the top level of a branch block (not in a loop), by their block's path. */
    private final Map<Value, List<Side>> home = new HashMap<>();
    /** Backward blocks reached through branches only: their path and their parent block. */
    private final Map<Block, List<Side>> path = new IdentityHashMap<>();
    private final Map<Block, Block> parent = new IdentityHashMap<>();
    /** The innermost backward blocks where each value is read (a loop body counts as unreachable: null). */
    private final Map<Value, List<Block>> readIn = new HashMap<>();
    private final Map<Block, List<Node.Prim>> nodes = new IdentityHashMap<>();
    private final Set<Value> planned = new HashSet<>();

    Recompute(Fusion fwd, Map<Value, Node.Prim> def, Set<Value> topLevel, Set<Value> refsOutsideTop, Block forward,
        Block backward) {
      this.fwd = fwd;
      this.def = def;
      this.topLevel = topLevel;
      this.refsOutsideTop = refsOutsideTop;
      this.top = backward;
      homes(forward, List.of());
      path.put(backward, List.of());
      reads(backward, backward);
    }

    private void homes(Block b, List<Side> at) {
      for (Node n : b.nodes()) {
        if (!at.isEmpty()) {
          n.outputs().forEach(v -> home.put(v, at));
        }
        if (n instanceof Node.Branch br) {
          homes(br.then(), append(at, new Side(br.cond(), true)));
          homes(br.otherwise(), append(at, new Side(br.cond(), false)));
        }
      }
    }

    private static List<Side> append(List<Side> at, Side s) {
      List<Side> out = new ArrayList<>(at);
      out.add(s);
      return List.copyOf(out);
    }

    /**
     * Records where {@code b}'s nodes read values, contents or shape (a value recomputed in a block is a local of
     * that block: a shape read elsewhere could not see it); {@code in} is null inside a loop body.
     */
    private void reads(Block b, Block in) {
      for (Node n : b.nodes()) {
        List<Value> read = new ArrayList<>();
        switch (n) {
          case Node.Prim p -> {
            read.addAll(p.inputs());
            if (p.attr() instanceof Attr.Const c) {
              scalarValues(c.value(), read);
            }
          }
          case Node.CallGrad g -> read.addAll(g.reads());
          case Node.ParamGrad g -> read.add(g.grad());
          case Node.LoopGrad l -> read.addAll(l.init());
          default -> {}
        }
        for (Value v : read) {
          readIn.computeIfAbsent(v, x -> new ArrayList<>()).add(in);
        }
        switch (n) {
          case Node.LoopGrad l -> reads(l.body(), null);
          case Node.Loop l -> reads(l.body(), null);
          case Node.Branch br -> {
            for (boolean side : new boolean[] {true, false}) {
              Block child = side ? br.then() : br.otherwise();
              if (in != null) {
                path.put(child, append(path.get(in), new Side(br.cond(), side)));
                parent.put(child, in);
              }
              reads(child, in == null ? null : child);
            }
          }
          default -> {}
        }
      }
      for (Value v : b.results()) {
        readIn.computeIfAbsent(v, x -> new ArrayList<>()).add(in);
      }
    }

    /** The block where backward can recompute {@code v}, or null. */
    private Block target(Value v) {
      if (topLevel.contains(v)) {
        return refsOutsideTop.contains(v) ? null : top;
      }
      List<Side> at = home.get(v);
      List<Block> in = readIn.getOrDefault(v, List.of());
      if (at == null || in.isEmpty()) {
        return null;
      }
      Block b = ancestorAt(in.get(0), at.size());
      return b != null && at.equals(path.get(b)) && in.stream().allMatch(x -> within(x, b)) ? b : null;
    }

    /** The ancestor-or-self of {@code b} whose path has {@code depth} steps. */
    private Block ancestorAt(Block b, int depth) {
      while (b != null && path.containsKey(b) && path.get(b).size() > depth) {
        b = parent.get(b);
      }
      return b != null && path.containsKey(b) && path.get(b).size() == depth ? b : null;
    }

    private boolean within(Block b, Block ancestor) {
      for (Block x = b; x != null; x = parent.get(x)) {
        if (x == ancestor) {
          return true;
        }
      }
      return false;
    }

    void plan(Value v) {
      plan(v, null);
    }

    /** {@code into}: the block a recomputed consumer of {@code v} is placed in, or null for a value backward reads. */
    private void plan(Value v, Block into) {
      if (!planned.add(v)) {
        return;
      }
      Node.Prim p = def.get(v);
      if (p != null && p.op() == Primitive.CONST) {
        // A constant is cheaper to make again than to save: at the top, or in the block mirroring the branch that
        // defines it (a norm's 1/d inside its kind switch), where backward's kernels then take it as a scalar
        // argument and forward, if only its kernels read it, never materialises it.
        Block at = target(v);
        if (at != null) {
          add(at, p);
          return;
        }
      }
      FusedKernel k = p == null ? null : fwd.kernelOf().get(p);
      if (k == null || k.outputs().containsKey(v)) {
        return; // materialised: saved as it is
      }
      Block at = k.levels().get(v) == Level.FULL ? target(v) : null;
      if (at == null && into != null && k.levels().get(v) == Level.FULL && !readIn.containsKey(v)
          && home.containsKey(v) && home.get(v).equals(path.get(into))) {
        at = into; // read only by what is recomputed in that block (a per-row value stays saved)
      }
      if (at == null || (into != null && at != into && at != top)) {
        fwd.exposeOutput(v, p);
        return;
      }
      add(at, p);
      for (Value in : p.inputs()) {
        Node.Prim ip = def.get(in);
        if (ip != null && ip.op() == Primitive.CONST) {
          if (planned.add(in)) {
            // Where the constant is visible: the top, or the block mirroring the branch that defines it.
            add(topLevel.contains(in) ? top : ancestorAt(at, home.get(in).size()), ip);
          }
        } else {
          plan(in, at);
        }
      }
    }

    private void add(Block b, Node.Prim p) {
      nodes.computeIfAbsent(b, x -> new ArrayList<>()).add(copy(p));
    }

    /** Puts each block's recomputed nodes first in it, in forward order. */
    void insert() {
      for (var e : nodes.entrySet()) {
        List<Node.Prim> list = e.getValue();
        list.sort((x, y) -> Integer.compare(x.out().id(), y.out().id()));
        e.getKey().nodes().addAll(0, list);
      }
    }
  }

  /** The same node as a distinct object: a recomputed node belongs to a backward kernel, its original to a forward one. */
  private static Node.Prim copy(Node.Prim p) {
    return new Node.Prim(p.op(), p.inputs(), p.attr(), p.out(), p.pos(), p.argPos(), p.specPos(), p.composite(),
        p.group());
  }

  private static void fuseAll(Fusion f, Block b) {
    f.run(b, new HashSet<>(b.results()));
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Loop l -> fuseAll(f, l.body());
        case Node.LoopGrad l -> fuseAll(f, l.body());
        case Node.Branch br -> {
          fuseAll(f, br.then());
          fuseAll(f, br.otherwise());
        }
        default -> {}
      }
    }
  }

  private static void definitions(Block b, Map<Value, Node.Prim> out) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p -> out.put(p.out(), p);
        case Node.Loop l -> definitions(l.body(), out);
        case Node.Branch br -> {
          definitions(br.then(), out);
          definitions(br.otherwise(), out);
        }
        default -> {}
      }
    }
  }

  /** Whether input {@code i} of {@code p} is read for its shape only. */
  public static boolean shapeOnly(Node.Prim p, int i) {
    return switch (p.op()) {
      case SUM_TO, EXPAND -> i == 1;
      case SCATTER_ROWS, SCATTER_LAST -> i == 2;
      case REARRANGE, REPEAT, REDUCE_PATTERN -> i == 1 && p.attr() instanceof Attr.Inverse;
      default -> false;
    };
  }

  private static void references(Block b, Set<Value> forward, Map<Value, Save> refs, Set<Value> outsideTop,
      boolean top, Result r) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p -> {
          for (int i = 0; i < p.inputs().size(); i++) {
            ref(p.inputs().get(i), shapeOnly(p, i) ? Save.SHAPE : Save.TENSOR, forward, refs, outsideTop, top);
          }
          if (p.attr() instanceof Attr.Const c) {
            List<Value> vs = new ArrayList<>();
            scalarValues(c.value(), vs);
            for (Value v : vs) {
              ref(v, Save.SHAPE, forward, refs, outsideTop, top);
            }
          }
          if (p.op() == Primitive.ATTENTION_DQ || p.op() == Primitive.ATTENTION_DK || p.op() == Primitive.ATTENTION_DV) {
            r.attentionLse.add(p.inputs().get(3));
          }
        }
        case Node.CallGrad g -> {
          for (Value v : g.reads()) {
            ref(v, Save.TENSOR, forward, refs, outsideTop, top);
          }
        }
        case Node.ParamGrad g -> ref(g.grad(), Save.TENSOR, forward, refs, outsideTop, top);
        case Node.LoopGrad l -> {
          for (Value v : l.init()) {
            ref(v, Save.TENSOR, forward, refs, outsideTop, top);
          }
          references(l.body(), forward, refs, outsideTop, false, r);
        }
        case Node.Branch br -> {
          references(br.then(), forward, refs, outsideTop, false, r);
          references(br.otherwise(), forward, refs, outsideTop, false, r);
        }
        default -> throw new IllegalStateException("a backward graph holds no " + n);
      }
    }
    for (Value v : b.results()) {
      ref(v, Save.TENSOR, forward, refs, outsideTop, top);
    }
  }

  private static void ref(Value v, Save how, Set<Value> forward, Map<Value, Save> refs, Set<Value> outsideTop,
      boolean top) {
    if (v == null || !forward.contains(v)) {
      return;
    }
    refs.merge(v, how, (a, b) -> a == Save.TENSOR || b == Save.TENSOR ? Save.TENSOR : Save.SHAPE);
    if (!top) {
      outsideTop.add(v);
    }
  }

  /** The values a scalar's sizes are taken from. */
  public static void scalarValues(Scalar s, List<Value> out) {
    switch (s) {
      case Scalar.AxisSize a -> out.add(a.value());
      case Scalar.Count c -> out.add(c.value());
      case Scalar.Op o -> {
        scalarValues(o.left(), out);
        if (o.right() != null) {
          scalarValues(o.right(), out);
        }
      }
      default -> {}
    }
  }

  private static void collectUses(Block b, Set<Value> out) {
    for (Node n : b.nodes()) {
      out.addAll(Fusion.inputsOf(n));
    }
    out.addAll(b.results());
  }

  private static void planGemms(Block b, Result r) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p when p.op() == Primitive.EINSUM -> r.gemms.put(p, GemmPlan.of((Attr.Einsum) p.attr()));
        case Node.Loop l -> planGemms(l.body(), r);
        case Node.LoopGrad l -> planGemms(l.body(), r);
        case Node.Branch br -> {
          planGemms(br.then(), r);
          planGemms(br.otherwise(), r);
        }
        default -> {}
      }
    }
  }
}
