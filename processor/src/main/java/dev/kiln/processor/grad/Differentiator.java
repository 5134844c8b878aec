package dev.kiln.processor.grad;

import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.GradBuilder;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.Value;
import dev.kiln.processor.ir.Values;
import dev.kiln.processor.diag.Pos;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * Pass 3: reverse-mode automatic differentiation of one forward or loss {@link Graph}. Walks each block backwards,
 * asks every primitive's {@link dev.kiln.processor.ir.Vjp} for its inputs' adjoint contributions and adds them up;
 * sub-module calls become {@link Node.CallGrad} (the callee's own backward), loops over module lists become a
 * {@link Node.LoopGrad} iterating in reverse, branches on hyper-parameters become the same branch of adjoints.
 *
 * <p>The backward block refers to forward values directly; which of them are saved and which recomputed is the
 * lower pass's decision. Only values that can carry a gradient (derived from a parameter, a float input or a
 * sub-module call) get adjoints, so constants and index paths cost nothing.
 */
public final class Differentiator {
  /**
   * The backward of one graph: {@code block} takes the output adjoint {@code dOut} as its parameter;
   * {@code inputGrads} has one entry per graph input, null where the input gets no gradient (integer ids, positions).
   */
  public record Backward(Graph forward, Block block, Value dOut, List<Value> inputGrads, List<Value> seeds) {
    public Backward(Graph forward, Block block, Value dOut, List<Value> inputGrads) {
      this(forward, block, dOut, inputGrads, Collections.nCopies(inputGrads.size(), null));
    }
  }

  private final Values values;
  private final Function<Node.Call, boolean[]> differentiableArgs;
  private final Set<Value> requiresGrad = new HashSet<>();
  /** Seeds ({@link #run(Graph, boolean[])}) not yet added: by input value. */
  private final Map<Value, Value> pendingSeeds = new LinkedHashMap<>();
  private Block current;
  private Pos site;

  /**
   * @param values the graph's value factory
   * @param differentiableArgs for a sub-module call, which of its arguments the callee's backward returns a gradient
   *     for
   */
  public Differentiator(Values values, Function<Node.Call, boolean[]> differentiableArgs) {
    this.values = values;
    this.differentiableArgs = differentiableArgs;
  }

  public Backward run(Graph g) {
    return run(g, new boolean[g.inputs().size()]);
  }

  /**
   * The backward of {@code g}, where each input {@code i} with {@code seed[i]} gets a further block parameter (after
   * {@code dOut}, in input order): the backward then returns {@code plus + gradient}. The add goes at the end of
   * the branch arm that makes contributions to the gradient, if one does (where it fuses into the kernel that computes
   * them), else at the end. A caller that would add the returned gradient to a gradient of its own passes that
   * instead ({@link Node.CallGrad#plus}); where the arm makes the last contribution, the sum is the caller's to the
   * bit, else it may differ in rounding.
   */
  public Backward run(Graph g, boolean[] seed) {
    for (Graph.Input in : g.inputs()) {
      if (in.value().elem() == Value.Elem.FLOAT) {
        requiresGrad.add(in.value());
      }
    }
    forwardSweep(g.body());
    Value result = g.body().results().get(0);
    Value dOut = values.make("d(" + g.method() + ")", Value.Elem.FLOAT);
    dOut.setShape(result.shape());
    List<Value> params = new ArrayList<>(List.of(dOut));
    List<Value> seeds = new ArrayList<>();
    Map<Value, Value> adj = new HashMap<>();
    for (int i = 0; i < g.inputs().size(); i++) {
      Value in = g.inputs().get(i).value();
      if (seed[i] && needs(in)) {
        Value plus = fresh(g.inputs().get(i).name() + "Plus", in.shape());
        params.add(plus);
        seeds.add(plus);
        pendingSeeds.put(in, plus);
      } else {
        seeds.add(null);
      }
    }
    Block bwd = new Block(params);
    adj.put(result, dOut);
    site = g.resultPos();
    walk(g.body(), adj, bwd);
    current = bwd;
    for (Map.Entry<Value, Value> e : pendingSeeds.entrySet()) {
      Value d = adj.get(e.getKey());
      adj.put(e.getKey(), d == null ? e.getValue() : builder.prim(Primitive.ADD, e.getKey().shape(), e.getValue(), d));
    }
    current = null;
    List<Value> inputGrads = new ArrayList<>();
    for (Graph.Input in : g.inputs()) {
      inputGrads.add(adj.get(in.value()));
    }
    bwd.yield(inputGrads.stream().filter(v -> v != null).toList(), Collections.nCopies(
        (int) inputGrads.stream().filter(v -> v != null).count(), g.resultPos()), Block.Exit.RETURN);
    return new Backward(g, bwd, dOut, inputGrads, seeds);
  }

  // ---- which values can carry a gradient

  private void forwardSweep(Block b) {
    requiresGrad.addAll(b.params());
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p -> {
          boolean any = false;
          for (Value v : p.inputs()) {
            any |= requiresGrad.contains(v);
          }
          if (any && p.out().elem() == Value.Elem.FLOAT && p.op().rules().vjp() != dev.kiln.processor.ir.Vjp.NONE) {
            requiresGrad.add(p.out());
          }
        }
        case Node.ParamRead r -> requiresGrad.add(r.out());
        case Node.Call c -> requiresGrad.add(c.out());
        case Node.Loop l -> {
          forwardSweep(l.body());
          requiresGrad.addAll(l.out());
        }
        case Node.Branch br -> {
          forwardSweep(br.then());
          forwardSweep(br.otherwise());
          for (int i = 0; i < br.out().size(); i++) {
            if (requiresGrad.contains(br.then().results().get(i))
                || requiresGrad.contains(br.otherwise().results().get(i))) {
              requiresGrad.add(br.out().get(i));
            }
          }
        }
        default -> throw new IllegalStateException("a forward graph holds no " + n.getClass().getSimpleName());
      }
    }
  }

  // ---- the reverse walk

  private final GradBuilder builder = new GradBuilder() {
    @Override
    public Value prim(Primitive op, Attr attr, Value.Elem elem, Shape shape, Value... in) {
      StringBuilder label = new StringBuilder(op.name().toLowerCase()).append('(');
      for (int i = 0; i < in.length; i++) {
        label.append(i == 0 ? "" : ", ").append('%').append(in[i].id());
      }
      Value out = values.make(label.append(')').toString(), elem);
      out.setShape(shape);
      current.add(new Node.Prim(op, List.of(in), attr, out, site, Collections.nCopies(in.length, site), null, null, 0));
      return out;
    }

    @Override
    public Value constant(Scalar s) {
      return prim(Primitive.CONST, new Attr.Const(s), Value.Elem.FLOAT, Shape.scalar());
    }

    @Override
    public Value sumTo(Value g, Value like) {
      if (g.shape() != null && g.shape().equals(like.shape())) {
        return g;
      }
      // Summing a broadcast '... 1' back is a last-dim row sum, which fuses into a row kernel.
      if (g.shape() != null && g.shape().tailSize() >= 1
          && like.shape().equals(g.shape().withTail(1, List.of(dev.kiln.processor.ir.Dim.of(1))))) {
        return prim(Primitive.SUM, new Attr.Axes(false, true), Value.Elem.FLOAT, like.shape(), g);
      }
      return prim(Primitive.SUM_TO, like.shape(), g, like);
    }
  };

  private boolean needs(Value v) {
    return v.elem() == Value.Elem.FLOAT && requiresGrad.contains(v);
  }

  private void accumulate(Map<Value, Value> adj, Value v, Value contribution) {
    Value old = adj.get(v);
    adj.put(v, old == null ? contribution : builder.prim(Primitive.ADD, v.shape(), old, contribution));
  }

  private void walk(Block fwd, Map<Value, Value> adj, Block bwd) {
    Block saved = current;
    current = bwd;
    try {
      List<Node> nodes = fwd.nodes();
      for (int k = nodes.size() - 1; k >= 0; k--) {
        switch (nodes.get(k)) {
          case Node.Prim p -> prim(p, adj);
          case Node.ParamRead r -> {
            Value g = adj.get(r.out());
            if (g != null) {
              current.add(new Node.ParamGrad(r.component(), g, r));
            }
          }
          case Node.Call c -> call(c, adj);
          case Node.Loop l -> loop(l, adj);
          case Node.Branch br -> branch(br, adj);
          default -> throw new IllegalStateException("a forward graph holds no " + nodes.get(k));
        }
      }
    } finally {
      current = saved;
    }
  }

  private void prim(Node.Prim p, Map<Value, Value> adj) {
    Value g = adj.get(p.out());
    if (g == null) {
      return;
    }
    boolean[] need = new boolean[p.inputs().size()];
    boolean any = false;
    for (int i = 0; i < need.length; i++) {
      need[i] = needs(p.inputs().get(i));
      any |= need[i];
    }
    if (!any) {
      return;
    }
    Pos outer = site;
    site = p.pos();
    try {
      List<Value> contributions = p.op().rules().vjp().apply(builder, p, g, need);
      for (int i = 0; i < need.length; i++) {
        if (need[i] && contributions.get(i) != null) {
          accumulate(adj, p.inputs().get(i), contributions.get(i));
        }
      }
    } finally {
      site = outer;
    }
  }

  private void call(Node.Call c, Map<Value, Value> adj) {
    Value g = adj.get(c.out());
    if (g == null) {
      return;
    }
    boolean[] diff = differentiableArgs.apply(c);
    List<Value> dArgs = new ArrayList<>();
    for (int i = 0; i < c.args().size(); i++) {
      Value a = c.args().get(i);
      if (diff[i] && needs(a)) {
        Value d = values.make("d(" + a.label() + ")", Value.Elem.FLOAT);
        d.setShape(a.shape());
        dArgs.add(d);
      } else {
        dArgs.add(null);
      }
    }
    current.add(new Node.CallGrad(c, g, dArgs));
    for (int i = 0; i < dArgs.size(); i++) {
      if (dArgs.get(i) != null) {
        accumulate(adj, c.args().get(i), dArgs.get(i));
      }
    }
  }

  private void loop(Node.Loop l, Map<Value, Value> adj) {
    boolean any = false;
    for (Value v : l.out()) {
      any |= adj.get(v) != null;
    }
    if (!any) {
      return;
    }
    Block fb = l.body();
    List<Value> dCarried = new ArrayList<>();
    Map<Value, Value> bodyAdj = new HashMap<>();
    for (int i = 0; i < fb.params().size(); i++) {
      Value d = fresh("d(" + l.names().get(i) + ")", fb.params().get(i).shape());
      dCarried.add(d);
      bodyAdj.merge(fb.results().get(i), d, (a, b) -> {
        throw new IllegalStateException("a loop carries one value twice");
      });
    }
    Block scratch = new Block(List.of());
    walk(fb, bodyAdj, scratch);
    List<Value> externals = externals(fb, bodyAdj);
    List<Value> dExternal = new ArrayList<>();
    for (Value e : externals) {
      dExternal.add(fresh("d(" + e.label() + ")", e.shape()));
    }
    List<Value> params = new ArrayList<>(dCarried);
    params.addAll(dExternal);
    Block body = new Block(params);
    body.nodes().addAll(scratch.nodes());
    Block outer = current;
    current = body;
    List<Value> results = new ArrayList<>();
    for (Value p : fb.params()) {
      Value d = bodyAdj.get(p);
      results.add(d != null ? d : builder.zerosLike(p));
    }
    for (int j = 0; j < externals.size(); j++) {
      results.add(builder.prim(Primitive.ADD, externals.get(j).shape(), dExternal.get(j), bodyAdj.get(externals.get(j))));
    }
    current = outer;
    body.yield(results, Collections.nCopies(results.size(), l.pos()), Block.Exit.CARRY);
    List<Value> init = new ArrayList<>();
    List<Value> out = new ArrayList<>();
    for (int i = 0; i < l.out().size(); i++) {
      Value g = adj.get(l.out().get(i));
      init.add(g != null ? g : builder.zerosLike(l.out().get(i)));
      out.add(fresh("d(" + l.names().get(i) + ")", l.init().get(i).shape()));
    }
    for (Value e : externals) {
      init.add(builder.zerosLike(e));
      out.add(fresh("d(" + e.label() + ")", e.shape()));
    }
    current.add(new Node.LoopGrad(l, externals, init, body, out));
    for (int i = 0; i < l.init().size(); i++) {
      if (needs(l.init().get(i))) {
        accumulate(adj, l.init().get(i), out.get(i));
      }
    }
    for (int j = 0; j < externals.size(); j++) {
      accumulate(adj, externals.get(j), out.get(l.init().size() + j));
    }
  }

  private void branch(Node.Branch br, Map<Value, Value> adj) {
    boolean any = false;
    for (Value v : br.out()) {
      any |= adj.get(v) != null;
    }
    if (!any) {
      return;
    }
    List<Map<Value, Value>> adjs = new ArrayList<>();
    List<Block> scratch = new ArrayList<>();
    LinkedHashMap<Integer, Value> externalsById = new LinkedHashMap<>();
    for (Block fb : List.of(br.then(), br.otherwise())) {
      Map<Value, Value> a = new HashMap<>();
      for (int i = 0; i < br.out().size(); i++) {
        Value g = adj.get(br.out().get(i));
        if (g != null) {
          a.put(fb.results().get(i), g);
        }
      }
      Block s = new Block(List.of());
      walk(fb, a, s);
      for (Value e : externals(fb, a)) {
        externalsById.put(e.id(), e);
      }
      adjs.add(a);
      scratch.add(s);
    }
    List<Value> externals = new ArrayList<>(externalsById.values());
    externals.sort(Comparator.comparingInt(Value::id));
    // A value from outside that already has an adjoint (a gradient from later code, or a seed) gets it added at the
    // end of each arm, to that arm's contributions: the add then sits next to the kernel that computes them and
    // fuses with it, rather than in a kernel of its own after the branch. The same two operands are added as after
    // the branch, so the result is the same to the bit. An arm without contributions passes the adjoint through.
    // A seed not yet added is added after that, in the arm too.
    Set<Value> seeded = new HashSet<>();
    for (Value e : externals) {
      if (adj.get(e) != null || pendingSeeds.containsKey(e)) {
        seeded.add(e);
      }
    }
    Block outer = current;
    for (int k = 0; k < 2; k++) {
      current = scratch.get(k);
      List<Value> results = new ArrayList<>();
      for (Value e : externals) {
        Value d = adjs.get(k).get(e);
        if (seeded.contains(e)) {
          Value old = adj.get(e);
          Value sum = old == null ? d : d == null ? old : builder.prim(Primitive.ADD, e.shape(), old, d);
          Value seed = pendingSeeds.get(e);
          results.add(seed == null ? sum : sum == null ? seed : builder.prim(Primitive.ADD, e.shape(), seed, sum));
        } else {
          results.add(d != null ? d : builder.zerosLike(e));
        }
      }
      scratch.get(k).yield(results, Collections.nCopies(results.size(), br.pos()), Block.Exit.VALUE);
    }
    current = outer;
    List<Value> out = new ArrayList<>();
    for (Value e : externals) {
      out.add(fresh("d(" + e.label() + ")", e.shape()));
    }
    current.add(new Node.Branch(br.cond(), scratch.get(0), scratch.get(1), out, br.pos()));
    for (int j = 0; j < externals.size(); j++) {
      if (seeded.contains(externals.get(j))) {
        adj.put(externals.get(j), out.get(j)); // the arms added to the adjoint it had, and the seed
        pendingSeeds.remove(externals.get(j));
      } else {
        accumulate(adj, externals.get(j), out.get(j));
      }
    }
  }

  private Value fresh(String label, Shape shape) {
    Value v = values.make(label, Value.Elem.FLOAT);
    v.setShape(shape);
    return v;
  }

  /** Values with an adjoint in {@code adj} that {@code b} does not define: they flow out of the block. */
  private static List<Value> externals(Block b, Map<Value, Value> adj) {
    Set<Value> inside = new HashSet<>();
    defined(b, inside);
    List<Value> out = new ArrayList<>();
    for (Value v : adj.keySet()) {
      if (!inside.contains(v)) {
        out.add(v);
      }
    }
    out.sort(Comparator.comparingInt(Value::id));
    return out;
  }

  /** Every value a block defines, nested blocks included. */
  public static void defined(Block b, Set<Value> out) {
    out.addAll(b.params());
    for (Node n : b.nodes()) {
      out.addAll(n.outputs());
      switch (n) {
        case Node.Loop l -> defined(l.body(), out);
        case Node.LoopGrad l -> defined(l.body(), out);
        case Node.Branch br -> {
          defined(br.then(), out);
          defined(br.otherwise(), out);
        }
        default -> {}
      }
    }
  }
}
