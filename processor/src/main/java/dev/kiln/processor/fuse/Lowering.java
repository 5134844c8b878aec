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
 * (a pointwise chain): backward recomputes it from the kernel's inputs, inside its own kernel. A per-row value inside
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
    /** Per graph input: whether only GEMMs read it, in forward and backward ({@link GemmOperands}). */
    public boolean[] gemmOperandInputs = new boolean[0];
    /** Whether backward reads the result's gradient only in GEMMs ({@link GemmOperands}). */
    public boolean gemmOperandGradient;

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

    // Recompute per-element kernel values at the top of backward; expose per-row ones as outputs.
    List<Node.Prim> recompute = new ArrayList<>();
    Set<Value> planned = new HashSet<>();
    for (var e : refs.entrySet()) {
      if (e.getValue() == Save.TENSOR) {
        plan(e.getKey(), fwd, forwardDef, topLevel, refsOutsideTop, recompute, planned);
      }
    }
    recompute.sort((x, y) -> Integer.compare(x.out().id(), y.out().id()));
    b.block().nodes().addAll(0, recompute);

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

  private static void plan(Value v, Fusion fwd, Map<Value, Node.Prim> def, Set<Value> topLevel,
      Set<Value> refsOutsideTop, List<Node.Prim> recompute, Set<Value> planned) {
    if (!planned.add(v)) {
      return;
    }
    Node.Prim p = def.get(v);
    if (p != null && p.op() == Primitive.CONST && topLevel.contains(v) && !refsOutsideTop.contains(v)) {
      recompute.add(copy(p)); // a constant is cheaper to make again than to save
      return;
    }
    FusedKernel k = p == null ? null : fwd.kernelOf().get(p);
    if (k == null || k.outputs().containsKey(v)) {
      return; // materialised: saved as it is
    }
    if (k.levels().get(v) != Level.FULL || !topLevel.contains(v) || refsOutsideTop.contains(v)) {
      fwd.exposeOutput(v, p);
      return;
    }
    recompute.add(copy(p));
    for (Value in : p.inputs()) {
      Node.Prim ip = def.get(in);
      if (ip != null && ip.op() == Primitive.CONST) {
        if (planned.add(in)) {
          recompute.add(copy(ip));
        }
      } else {
        plan(in, fwd, def, topLevel, refsOutsideTop, recompute, planned);
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
        case Node.CallGrad g -> ref(g.dOut(), Save.TENSOR, forward, refs, outsideTop, top);
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
