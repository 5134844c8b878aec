package dev.kiln.processor.fuse;

import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Groups the pointwise primitives and last-dim reductions of one straight-line block into {@link FusedKernel}s,
 * greedily in program order: a node joins the kernel of one of its producers when its result and inputs sit at a
 * level of that kernel's domain ({@link Level}) and no node outside the kernel has used a kernel value in between
 * (which would need the kernel finished before it). A kernel of one node is not kept: the device's own op serves.
 */
final class Fusion {
  private final String prefix;
  private final Map<Node.Prim, FusedKernel> kernelOf = new IdentityHashMap<>();
  private final List<FusedKernel> kernels = new ArrayList<>();

  Fusion(String prefix) {
    this.prefix = prefix;
  }

  static boolean isRowReduction(Node.Prim p) {
    return (p.op() == Primitive.SUM || p.op() == Primitive.MAX) && p.attr() instanceof Attr.Axes a && !a.all()
        && a.keep();
  }

  private static boolean fusible(Node.Prim p) {
    if (p.out().shape() == null) {
      return false;
    }
    if (isRowReduction(p)) {
      return true;
    }
    return (p.op().isPointwise() || p.op() == Primitive.EXPAND) && p.op() != Primitive.CONST
        && p.op() != Primitive.CAST_FLOAT;
  }

  /** The level of {@code s} relative to {@code domain}, or null when it is none of them. */
  static Level level(Shape s, Shape domain) {
    if (s == null) {
      return null;
    }
    if (s.equals(domain)) {
      return Level.FULL;
    }
    if (!s.hasRest() && s.dims().stream().allMatch(Dim::isOne)) {
      return Level.SCALAR;
    }
    if (domain.tailSize() >= 1) {
      Dim last = domain.dims().get(domain.dims().size() - 1);
      if (s.equals(domain.withTail(1, List.of(Dim.of(1))))) {
        return Level.ROW;
      }
      if (!s.hasRest() && !s.dims().isEmpty() && s.dims().get(s.dims().size() - 1).equals(last)
          && s.dims().subList(0, s.dims().size() - 1).stream().allMatch(Dim::isOne)) {
        return Level.COL;
      }
    }
    return null;
  }

  /**
   * Groups {@code block}'s nodes. {@code usedLater} says which values are used after the block or by nested blocks
   * (they must be outputs); a kernel's outputs are the member values used outside it.
   */
  void run(Block block, Set<Value> usedOutside) {
    List<Node> nodes = block.nodes();
    currentNodes = nodes;
    kernels.clear();
    Map<Value, Node.Prim> producer = new HashMap<>();
    Map<Value, Integer> position = new HashMap<>();
    // For each value, the positions of the nodes using it.
    Map<Value, List<Integer>> uses = new HashMap<>();
    for (int i = 0; i < nodes.size(); i++) {
      for (Value v : contentUses(nodes.get(i))) {
        uses.computeIfAbsent(v, k -> new ArrayList<>()).add(i);
      }
      for (Value v : nodes.get(i).outputs()) {
        position.put(v, i);
        if (nodes.get(i) instanceof Node.Prim p) {
          producer.put(v, p);
        }
      }
    }
    Map<FusedKernel, Integer> first = new IdentityHashMap<>();
    for (int i = 0; i < nodes.size(); i++) {
      if (!(nodes.get(i) instanceof Node.Prim p) || !fusible(p)) {
        continue;
      }
      FusedKernel joined = null;
      // Among the producers' kernels, one whose rows p's result is one value of comes first: per-row arithmetic on
      // a row reduction's result then joins the row kernel (as a per-row step between its passes) rather than a
      // small kernel of per-row values hoisted before it, so what follows over the full rows joins too (RMSNorm's
      // backward: the row sum, the per-row factor, then the input gradient, in one kernel).
      for (boolean rowsFirst : new boolean[] {true, false}) {
        for (int k = p.inputs().size() - 1; k >= 0 && joined == null; k--) {
          Node.Prim prod = producer.get(p.inputs().get(k));
          FusedKernel g = prod == null ? null : kernelOf.get(prod);
          if (g != null && (level(p.out().shape(), g.domain) == Level.ROW) == rowsFirst && accepts(g, p, producer)
              && !usedInBetween(g, first.get(g), i, uses)) {
            joined = g;
          }
        }
      }
      if (joined == null) {
        // An independent node at a level of an open kernel's domain joins it too (the two halves of a product's
        // gradient; per-row arithmetic next to the row reduction it feeds).
        for (int k = kernels.size() - 1; k >= 0 && joined == null; k--) {
          FusedKernel g = kernels.get(k);
          if (accepts(g, p, producer) && !usedInBetween(g, first.get(g), i, uses)) {
            joined = g;
          }
        }
      }
      if (joined == null) {
        Shape domain = isRowReduction(p) ? p.inputs().get(0).shape() : p.out().shape();
        if (domain == null || domain.tailSize() < 1) {
          continue;
        }
        FusedKernel g = new FusedKernel(prefix + (all.size() + kernels.size()), domain);
        // A broadcast of a per-row value may open a kernel: the nodes that read it bring the full-size inputs
        // (the norms' backward: expand(per-row term) times x), and it is not materialised. A kernel that ends
        // without any is dropped below. (A broadcast scalar stays the device's: a zero, z-loss's gradient when
        // z-loss is off, is then added for free.)
        boolean rowBroadcast = p.op() == Primitive.EXPAND && level(p.inputs().get(0).shape(), domain) == Level.ROW;
        if (!accepts(g, p, producer) || (!hasFullInput(g, p) && !rowBroadcast)) {
          continue;
        }
        kernels.add(g);
        first.put(g, i);
        joined = g;
      }
      add(joined, p, producer);
    }
    foldRowKernels(uses, producer);
    // Kernels of one node are left to the device's own op.
    List<FusedKernel> kept = new ArrayList<>();
    for (FusedKernel g : kernels) {
      if (g.members.size() < 2 || g.members.stream().noneMatch(m -> hasFullInput(g, m))) {
        for (Node.Prim p : g.members) {
          kernelOf.remove(p);
        }
      } else {
        kept.add(g);
      }
    }
    for (FusedKernel g : kept) {
      g.name = prefix + all.size();
      finish(g, nodes, usedOutside, uses, position);
      all.add(g);
    }
  }

  private final List<FusedKernel> all = new ArrayList<>();

  /**
   * Folds a kernel over per-row values into the later kernel that alone reads them, as that kernel's per-row steps.
   * A norm's backward starts with arithmetic on the forward's saved per-row statistic (RMSNorm: {@code -0.5 · r³}
   * from the saved {@code r}) before any full-size node; the greedy pass gives those nodes a kernel of their own over
   * {@code '... 1'}, launched before the row kernel that reads its result per row. Folded, the row kernel computes
   * the factor from {@code r}, which it reads anyway: one launch less per norm, and no per-row array written and
   * read back. A kernel {@code r} folds into {@code k} when {@code r}'s domain is {@code k}'s rows, every use of
   * {@code r}'s values is in {@code r} or {@code k}, and {@code k} accepts each of {@code r}'s nodes (a per-row
   * value from per-row inputs and constants).
   */
  private void foldRowKernels(Map<Value, List<Integer>> uses, Map<Value, Node.Prim> producer) {
    for (int i = 0; i < kernels.size(); i++) {
      FusedKernel r = kernels.get(i);
      for (int j = i + 1; j < kernels.size(); j++) {
        FusedKernel k = kernels.get(j);
        if (level(r.domain, k.domain) == Level.ROW && onlyReadBy(r, k, uses) && acceptsAll(k, r, producer)) {
          List<Node.Prim> moved = new ArrayList<>(r.members);
          r.members.clear();
          k.members.addAll(0, moved);
          for (Node.Prim m : moved) {
            kernelOf.put(m, k);
            k.levels.put(m.out(), Level.ROW);
            r.levels.remove(m.out());
          }
          break;
        }
      }
    }
  }

  /** Whether every node that reads a value of {@code r} is a member of {@code r} or of {@code k}. */
  private boolean onlyReadBy(FusedKernel r, FusedKernel k, Map<Value, List<Integer>> uses) {
    if (r.members.isEmpty()) {
      return false;
    }
    for (Node.Prim m : r.members) {
      for (int at : uses.getOrDefault(m.out(), List.of())) {
        Node n = nodesAt(at);
        if (!(n instanceof Node.Prim c) || (!r.members.contains(c) && !k.members.contains(c))) {
          return false;
        }
      }
    }
    return true;
  }

  /**
   * Whether {@code k} takes each of {@code r}'s nodes as a per-row step ({@link #accepts}: a per-row value from per-row
   * inputs and constants) that reads nothing {@code k} computes: r's nodes go first in k.
   */
  private boolean acceptsAll(FusedKernel k, FusedKernel r, Map<Value, Node.Prim> producer) {
    for (Node.Prim m : r.members) {
      if (level(m.out().shape(), k.domain) != Level.ROW || !accepts(k, m, producer)) {
        return false;
      }
      for (Value v : contentUses(m)) {
        Node.Prim prod = producer.get(v);
        if (prod != null && kernelOf.get(prod) == k) {
          return false;
        }
      }
    }
    return true;
  }

  /** Whether {@code p} reads a full-size value made outside {@code g} (a kernel's shape at launch comes from one). */
  private boolean hasFullInput(FusedKernel g, Node.Prim p) {
    for (Value v : contentUses(p)) {
      boolean inside = false;
      for (Node.Prim m : g.members) {
        inside |= m.out() == v;
      }
      if (!inside && level(v.shape(), g.domain) == Level.FULL) {
        return true;
      }
    }
    return false;
  }

  private boolean accepts(FusedKernel g, Node.Prim p, Map<Value, Node.Prim> producer) {
    Level out = level(p.out().shape(), g.domain);
    if (isRowReduction(p)) {
      return level(p.inputs().get(0).shape(), g.domain) == Level.FULL && out == Level.ROW;
    }
    if (out != Level.FULL && out != Level.ROW) {
      return false;
    }
    for (int i = 0; i < p.inputs().size(); i++) {
      if (Lowering.shapeOnly(p, i)) {
        continue;
      }
      Value v = p.inputs().get(i);
      Level l = level(v.shape(), g.domain);
      if (l == null) {
        return false;
      }
      Node.Prim prod = producer.get(v);
      boolean inside = prod != null && kernelOf.get(prod) == g;
      boolean constant = prod != null && prod.op() == Primitive.CONST;
      // Kernels compute in floats: a boolean or integer tensor can only be made inside.
      if (!inside && !constant && v.elem() != Value.Elem.FLOAT) {
        return false;
      }
      if (out == Level.ROW && (l == Level.FULL || l == Level.COL)) {
        return false; // a per-row value may depend on a full one only through a reduction
      }
    }
    return true;
  }

  private boolean usedInBetween(FusedKernel g, int from, int to, Map<Value, List<Integer>> uses) {
    for (Node.Prim m : g.members) {
      for (int at : uses.getOrDefault(m.out(), List.of())) {
        if (at > from && at < to && !(g.members.contains(nodesAt(at)))) {
          return true;
        }
      }
    }
    return false;
  }

  private List<Node> currentNodes;

  private Node nodesAt(int i) {
    return currentNodes.get(i);
  }

  private void add(FusedKernel g, Node.Prim p, Map<Value, Node.Prim> producer) {
    g.members.add(p);
    kernelOf.put(p, g);
    g.levels.put(p.out(), level(p.out().shape(), g.domain));
  }

  private void finish(FusedKernel g, List<Node> nodes, Set<Value> usedOutside, Map<Value, List<Integer>> uses,
      Map<Value, Integer> position) {
    Set<Value> memberValues = new HashSet<>();
    for (Node.Prim m : g.members) {
      memberValues.add(m.out());
    }
    for (Node.Prim m : g.members) {
      for (Value v : contentUses(m)) {
        if (memberValues.contains(v)) {
          continue;
        }
        Node def = position.containsKey(v) ? nodes.get(position.get(v)) : null;
        if (def instanceof Node.Prim c && c.op() == Primitive.CONST) {
          if (!g.scalars.contains(v)) {
            g.scalars.add(v);
          }
        } else {
          g.inputs.putIfAbsent(v, level(v.shape(), g.domain));
        }
      }
    }
    for (Node.Prim m : g.members) {
      Value v = m.out();
      boolean outside = usedOutside.contains(v);
      for (int at : uses.getOrDefault(v, List.of())) {
        if (!(nodes.get(at) instanceof Node.Prim c) || kernelOf.get(c) != g) {
          outside = true;
        }
      }
      if (outside) {
        g.outputs.put(v, g.levels.get(v));
      }
    }
  }

  /** Makes a value an output of its kernel (backward reads it); false when it is not in a kernel. */
  boolean exposeOutput(Value v, Node.Prim def) {
    FusedKernel g = kernelOf.get(def);
    if (g == null) {
      return false;
    }
    g.outputs.putIfAbsent(v, g.levels.get(v));
    return true;
  }

  /**
   * The values whose contents a node reads: its inputs without those it reads only the shape of (a size in a
   * constant, the target of a broadcast gradient). A value used only for its shape may stay inside a kernel; its
   * shape is the kernel's domain's.
   */
  static List<Value> contentUses(Node n) {
    if (n instanceof Node.Prim p) {
      List<Value> out = new ArrayList<>();
      for (int i = 0; i < p.inputs().size(); i++) {
        if (!Lowering.shapeOnly(p, i)) {
          out.add(p.inputs().get(i));
        }
      }
      return out;
    }
    return inputsOf(n);
  }

  /** The values a node reads, nested blocks included (they are uses at the node's position). */
  static List<Value> inputsOf(Node n) {
    List<Value> out = new ArrayList<>();
    switch (n) {
      case Node.Prim p -> {
        out.addAll(p.inputs());
        if (p.attr() instanceof Attr.Const c) {
          Lowering.scalarValues(c.value(), out);
        }
      }
      case Node.ParamRead r -> {}
      case Node.Call c -> out.addAll(c.args());
      case Node.Loop l -> {
        out.addAll(l.init());
        blockUses(l.body(), out);
      }
      case Node.Branch br -> {
        blockUses(br.then(), out);
        blockUses(br.otherwise(), out);
      }
      case Node.CallGrad g -> {
        out.addAll(g.reads());
        out.addAll(g.call().args());
      }
      case Node.LoopGrad l -> {
        out.addAll(l.init());
        blockUses(l.body(), out);
      }
      case Node.ParamGrad g -> out.add(g.grad());
    }
    return out;
  }

  private static void blockUses(Block b, List<Value> out) {
    for (Node n : b.nodes()) {
      out.addAll(inputsOf(n));
    }
    out.addAll(b.results());
  }

  Map<Node.Prim, FusedKernel> kernelOf() {
    return kernelOf;
  }

  /** Every kernel kept so far, over all blocks run. */
  List<FusedKernel> kernels() {
    return all;
  }
}
