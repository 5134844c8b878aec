package dev.kiln.processor.check;

import dev.kiln.processor.analyze.ModuleReader;
import dev.kiln.processor.diag.Id;
import dev.kiln.processor.diag.Pos;
import dev.kiln.processor.diag.Report;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.RuntimeCheck;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.ShapeContext;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.BiFunction;
import java.util.function.Function;
import javax.lang.model.element.TypeElement;
import javax.lang.model.util.Elements;

/**
 * Pass 2: infers the shape of every value of a {@link Graph}, symbolically, and reports each disagreement once, at
 * the narrowest position. Dims fixed by the config (the module's dims) must agree at compile time; a disagreement
 * involving a dim bound only by an input becomes a {@link RuntimeCheck} and a warning.
 *
 * <p>Sub-module calls instantiate the callee's signature: its dims bound by {@code @Bind} take the bound dims, its
 * other config dims keep their names, and the names bound by its inputs (and its {@code ...}) become unification
 * variables, fresh for each call.
 */
public final class ShapeChecker implements ShapeContext {
  private final ModuleIr module;
  private final Graph graph;
  private final Report report;
  private final ModuleReader reader;
  private final Elements elements;
  private final Set<String> configDims;
  private final Set<String> signatureNames = new LinkedHashSet<>();
  private final Map<String, Dim> dimVars = new HashMap<>();
  private final Map<String, Shape> restVars = new HashMap<>();
  private int fresh;

  // The site being checked.
  private Pos sitePos;
  private List<Pos> siteArgs = List.of();
  private Pos siteSpec;
  private String siteComposite;
  private String siteSpecText;

  public ShapeChecker(ModuleIr module, Graph graph, Report report, ModuleReader reader, Elements elements) {
    this.module = module;
    this.graph = graph;
    this.report = report;
    this.reader = reader;
    this.elements = elements;
    this.configDims = module.dims();
  }

  /** Checks the graph, setting every value's shape (null where an error upstream made it unknowable). */
  public void check() {
    for (Graph.Input in : graph.inputs()) {
      for (Dim d : in.declared().dims()) {
        signatureNames.addAll(d.symbols());
      }
      in.value().setShape(in.declared());
    }
    block(graph.body());
  }

  private void block(Block b) {
    for (Node n : b.nodes()) {
      node(n);
    }
    if (b.exit() == Block.Exit.RETURN && !b.results().isEmpty()) {
      Value v = b.results().get(0);
      if (v.shape() != null) {
        site(b.resultPos().get(0), List.of(b.resultPos().get(0)), null, null, null);
        Shape declared = graph.result();
        shapeEquals(declared, v.shape(), 0, (e, a) -> "'" + graph.method() + "' returns '" + resolve(v.shape())
            + "' but its @Shape declares '" + declared + "'");
      }
    }
  }

  private void node(Node n) {
    switch (n) {
      case Node.Prim p -> prim(p);
      case Node.ParamRead r -> r.out().setShape(((ModuleIr.ParamTensor) module.components().get(r.component())).shape());
      case Node.Call c -> call(c);
      case Node.Loop l -> loop(l);
      case Node.Branch br -> branch(br);
      case Node.CallGrad g -> throw new IllegalStateException("the shape checker runs before the grad pass");
      case Node.LoopGrad g -> throw new IllegalStateException("the shape checker runs before the grad pass");
      case Node.ParamGrad g -> throw new IllegalStateException("the shape checker runs before the grad pass");
    }
  }

  private void prim(Node.Prim p) {
    List<Shape> in = new ArrayList<>();
    for (Value v : p.inputs()) {
      if (v.shape() == null) {
        return;
      }
      in.add(resolve(v.shape()));
    }
    Primitive.Rules rules = p.op().rules();
    if (rules.arity() >= 0 && rules.arity() != in.size()) {
      throw new IllegalStateException(p.op() + " takes " + rules.arity() + " inputs, got " + in.size());
    }
    String spec = switch (p.attr()) {
      case dev.kiln.processor.ir.Attr.Einsum e -> e.spec().source();
      case dev.kiln.processor.ir.Attr.Pattern pt -> pt.pattern().source();
      default -> null;
    };
    site(p.pos(), p.argPos(), p.specPos(), p.composite(), spec);
    p.out().setShape(rules.shape().infer(this, p, in));
  }

  private void call(Node.Call c) {
    for (Value v : c.args()) {
      if (v.shape() == null) {
        return;
      }
    }
    TypeElement te = elements.getTypeElement(c.calleeType());
    ModuleIr callee = te == null ? null : reader.callee(te);
    ModuleIr.Signature sig = callee == null ? null : callee.forward();
    if (sig == null) {
      return; // the callee reports its own declaration errors
    }
    if (sig.params().size() != c.args().size()) {
      return; // javac reports the arity
    }
    Map<String, Dim> bindings = Map.of();
    if (c.component() != null) {
      ModuleIr.Component comp = module.components().get(c.component());
      bindings = switch (comp) {
        case ModuleIr.SubModule s -> s.bindings();
        case ModuleIr.ModuleList l -> l.bindings();
        default -> Map.of();
      };
    }
    // Instantiate: bound dims, then pass-through config dims, then fresh variables for the callee's input dims.
    Map<String, Dim> inst = new HashMap<>();
    int call = ++fresh;
    for (String name : sig.names()) {
      Dim b = bindings.get(name);
      if (b != null) {
        inst.put(name, b);
      } else if (callee.dims().contains(name)) {
        inst.put(name, Dim.sym(name));
      } else {
        inst.put(name, Dim.sym(name + "'" + call));
      }
    }
    String restVar = ModuleIr.REST + "'" + call;
    Function<Shape, Shape> instantiate = s -> {
      Shape t = s.substDims(inst::get);
      return t.hasRest() ? new Shape(t.dims(), t.restAt(), restVar) : t;
    };
    site(c.pos(), c.argPos(), null, null, null);
    Map<String, Dim> fb = bindings;
    for (int i = 0; i < sig.params().size(); i++) {
      Shape declared = sig.params().get(i);
      Shape expected = instantiate.apply(declared);
      Shape actual = resolve(c.args().get(i).shape());
      String param = sig.paramNames().get(i);
      BiFunction<Dim, Dim, String> msg = (e, a) -> c.display() + " expects " + param + " '" + describe(expected)
          + "'" + boundNote(callee, declared, fb) + " but got '" + actual + "'";
      if (!shapeEquals(expected, actual, i, msg)) {
        return;
      }
    }
    Shape result = resolve(instantiate.apply(sig.result()));
    // A callee result dim that no argument determined is known only when the callee runs.
    result = result.substDims(s -> s.contains("'") ? Dim.sym(s.replace('\'', '?')) : null);
    c.out().setShape(result);
  }

  private String describe(Shape s) {
    return resolve(s).toString();
  }

  private static String boundNote(ModuleIr callee, Shape declared, Map<String, Dim> bindings) {
    List<String> notes = new ArrayList<>();
    for (Dim d : declared.dims()) {
      for (String s : d.symbols()) {
        Dim b = bindings.get(s);
        if (b != null) {
          notes.add(callee.simpleName() + "." + s + " bound to " + b);
        }
      }
    }
    return notes.isEmpty() ? "" : " (" + String.join(", ", notes) + ")";
  }

  private void loop(Node.Loop l) {
    for (int i = 0; i < l.init().size(); i++) {
      if (l.init().get(i).shape() == null) {
        return;
      }
      l.body().params().get(i).setShape(resolve(l.init().get(i).shape()));
    }
    block(l.body());
    for (int i = 0; i < l.init().size(); i++) {
      Value r = l.body().results().get(i);
      Shape before = resolve(l.init().get(i).shape());
      l.out().get(i).setShape(before);
      if (r.shape() == null) {
        continue;
      }
      Shape after = resolve(r.shape());
      site(l.body().resultPos().get(i), List.of(l.body().resultPos().get(i)), null, null, null);
      String name = l.names().get(i);
      shapeEquals(before, after, 0, (e, a) -> "the loop over " + l.listComponent() + " changes " + name + " from '"
          + before + "' to '" + after + "'; each layer of a @Repeat list must keep the shape of what it carries");
    }
  }

  private void branch(Node.Branch br) {
    block(br.then());
    block(br.otherwise());
    for (int i = 0; i < br.out().size(); i++) {
      Value a = br.then().results().get(i);
      Value b = br.otherwise().results().get(i);
      if (a.shape() == null || b.shape() == null) {
        continue;
      }
      Shape sa = resolve(a.shape());
      Shape sb = resolve(b.shape());
      site(br.pos(), List.of(br.pos()), null, null, null);
      if (br.then().exit() != Block.Exit.RETURN && br.then().exit() != Block.Exit.BRANCH
          && !shapeEquals(sa, sb, 0, (x, y) -> "the branches give different shapes: '" + sa + "' when the condition"
              + " holds, '" + sb + "' otherwise")) {
        continue;
      }
      br.out().get(i).setShape(sa);
    }
  }

  // ---- shape equality and unification ------------------------------------------------------------------------

  /** {@code expected} (which may hold variables) equals {@code actual}; false after an error. */
  private boolean shapeEquals(Shape expected, Shape actual, int operand, BiFunction<Dim, Dim, String> message) {
    Shape e = resolve(expected);
    Shape a = resolve(actual);
    if (e.hasRest() && isVar(e.rest()) && !restVars.containsKey(e.rest())) {
      int pre = e.before().size();
      int post = e.after().size();
      if (!a.hasRest()) {
        if (a.dims().size() < pre + post) {
          error(Id.ShapeMismatch, operand, -1, message.apply(null, null));
          return false;
        }
        restVars.put(e.rest(), Shape.of(a.dims().subList(pre, a.dims().size() - post)));
      } else if (pre <= a.before().size() && post <= a.after().size()) {
        restVars.put(e.rest(), new Shape(a.dims().subList(pre, a.dims().size() - post), a.restAt() - pre, a.rest()));
      } else {
        runtime(RuntimeCheck.Kind.RANK, Dim.of(pre + post), Dim.sym("rank(...)"), operand,
            message.apply(null, null) + " (the number of dims '...' stands for is known only at run time)", true);
        return true;
      }
      e = resolve(expected);
    }
    boolean sameRest = e.hasRest() == a.hasRest() && (!e.hasRest() || e.rest().equals(a.rest()) && e.restAt() == a.restAt());
    if (!sameRest || e.dims().size() != a.dims().size()) {
      boolean oneRest = e.hasRest() && a.hasRest() && e.rest().equals(a.rest());
      if ((e.hasRest() || a.hasRest()) && !oneRest) {
        Shape longer = e.hasRest() ? a : e;
        Shape withRest = e.hasRest() ? e : a;
        if (!longer.hasRest() && longer.dims().size() < withRest.dims().size()) {
          error(Id.ShapeMismatch, operand, -1, message.apply(null, null));
          return false;
        }
        runtime(RuntimeCheck.Kind.RANK, Dim.of(e.dims().size()), Dim.of(a.dims().size()), operand,
            message.apply(null, null) + " (the number of dims '...' stands for is known only at run time)", true);
        return true;
      }
      error(Id.ShapeMismatch, operand, -1, message.apply(null, null));
      return false;
    }
    for (int i = 0; i < e.dims().size(); i++) {
      if (!unify(e.dims().get(i), a.dims().get(i), operand, -1, Id.ShapeMismatch, message)) {
        return false;
      }
    }
    return true;
  }

  private static boolean isVar(String name) {
    return name.contains("'");
  }

  private boolean isStatic(Dim d) {
    for (String s : d.symbols()) {
      if (!configDims.contains(s)) {
        return false;
      }
    }
    return true;
  }

  @Override
  public boolean unify(Dim expected, Dim actual, int operand, int specOffset, Id id,
      BiFunction<Dim, Dim, String> message) {
    Dim e = resolve(expected);
    Dim a = resolve(actual);
    if (e.equals(a)) {
      return true;
    }
    String ve = e.asSymbol();
    if (ve != null && isVar(ve)) {
      dimVars.put(ve, a);
      return true;
    }
    String va = a.asSymbol();
    if (va != null && isVar(va)) {
      dimVars.put(va, e);
      return true;
    }
    for (String s : e.symbols()) {
      if (isVar(s)) {
        Dim sol = e.solveFor(s, a);
        if (sol != null) {
          dimVars.put(s, sol);
          return true;
        }
      }
    }
    if (isStatic(e) && isStatic(a)) {
      error(id, operand, specOffset, message.apply(e, a));
      return false;
    }
    runtime(RuntimeCheck.Kind.EQUAL, e, a, operand, message.apply(e, a) + "; " + e + " = " + a
        + " is known only at run time", true);
    return true;
  }

  @Override
  public Dim resolve(Dim d) {
    Dim cur = d;
    for (int i = 0; i < 64; i++) {
      Dim next = cur.subst(s -> dimVars.get(s));
      if (next.equals(cur)) {
        return cur;
      }
      cur = next;
    }
    return cur;
  }

  @Override
  public Shape resolve(Shape s) {
    Shape cur = s;
    while (cur.hasRest() && restVars.containsKey(cur.rest())) {
      cur = cur.spliceRest(restVars.get(cur.rest()));
    }
    List<Dim> dims = new ArrayList<>();
    for (Dim d : cur.dims()) {
      dims.add(resolve(d));
    }
    return new Shape(dims, cur.restAt(), cur.rest());
  }

  @Override
  public Shape broadcast(List<Shape> shapes, List<Integer> operands) {
    Shape acc = resolve(shapes.get(0));
    for (int i = 1; i < shapes.size(); i++) {
      acc = broadcast2(acc, resolve(shapes.get(i)), operands.get(i));
      if (acc == null) {
        return null;
      }
    }
    return acc;
  }

  private Shape broadcast2(Shape a, Shape b, int operand) {
    if (a.hasRest() && b.hasRest() && !a.rest().equals(b.rest())) {
      runtime(RuntimeCheck.Kind.EQUAL, Dim.sym("rank(" + a + ")"), Dim.sym("rank(" + b + ")"), operand,
          "'" + a + "' and '" + b + "' must broadcast; their '...' are different", true);
      return a;
    }
    if (a.hasRest() && b.hasRest() && a.before().size() != b.before().size()) {
      runtime(RuntimeCheck.Kind.EQUAL, Dim.of(a.before().size()), Dim.of(b.before().size()), operand,
          "'" + a + "' and '" + b + "' must broadcast", true);
      return a;
    }
    // Right-aligned over the explicit tails; a shorter side with a rest hides dims we cannot see.
    Shape longer = a.tailSize() >= b.tailSize() ? a : b;
    Shape shorter = longer == a ? b : a;
    int n = shorter.tailSize();
    List<Dim> tail = new ArrayList<>();
    for (int k = 0; k < n; k++) {
      Dim x = a.dims().get(a.dims().size() - n + k);
      Dim y = b.dims().get(b.dims().size() - n + k);
      int fromEnd = n - k;
      Dim r = broadcastDim(x, y, a, b, fromEnd, operand);
      if (r == null) {
        return null;
      }
      tail.add(r);
    }
    if (shorter.hasRest() && longer.tailSize() > n) {
      if (longer.hasRest()) {
        runtime(RuntimeCheck.Kind.EQUAL, Dim.sym("rank(" + a + ")"), Dim.sym("rank(" + b + ")"), operand,
            "'" + a + "' and '" + b + "' must broadcast", true);
        return longer.withTail(n, tail);
      }
      runtime(RuntimeCheck.Kind.RANK, Dim.of(longer.tailSize() - n), Dim.sym("rank(...)"), operand,
          "'" + shorter + "' must broadcast against '" + longer + "'", true);
      return longer.withTail(n, tail);
    }
    Shape base = longer;
    if (a.hasRest() && b.hasRest()) {
      List<Dim> pre = new ArrayList<>();
      for (int k = 0; k < a.before().size(); k++) {
        Dim r = broadcastDim(a.before().get(k), b.before().get(k), a, b, -1, operand);
        if (r == null) {
          return null;
        }
        pre.add(r);
      }
      List<Dim> d = new ArrayList<>(pre);
      d.addAll(longer.dims().subList(longer.restAt(), longer.dims().size() - n));
      d.addAll(tail);
      return new Shape(d, pre.size(), longer.rest());
    }
    if (shorter.hasRest()) {
      base = shorter;
    }
    return base == longer ? longer.withTail(n, tail) : shorter.withTail(n, tail);
  }

  private Dim broadcastDim(Dim x, Dim y, Shape a, Shape b, int fromEnd, int operand) {
    Dim rx = resolve(x);
    Dim ry = resolve(y);
    if (rx.equals(ry) || ry.isOne()) {
      return rx;
    }
    if (rx.isOne()) {
      return ry;
    }
    String where = fromEnd > 0 ? (fromEnd == 1 ? "the last dim" : "dim " + fromEnd + " from the end") : "a leading dim";
    if (isStatic(rx) && isStatic(ry)) {
      error(Id.BroadcastConflict, operand, -1, "cannot broadcast '" + a + "' with '" + b + "': " + where + " is " + rx
          + " on one side and " + ry + " on the other, and neither is 1");
      return null;
    }
    runtime(RuntimeCheck.Kind.EQUAL, rx, ry, operand, "'" + a + "' and '" + b + "' broadcast only if " + rx + " = "
        + ry + " or one of them is 1 (" + where + "), which is known only at run time", true);
    return isStatic(rx) ? ry : rx;
  }

  @Override
  public Dim named(String name) {
    return configDims.contains(name) || signatureNames.contains(name) ? Dim.sym(name) : null;
  }

  @Override
  public void runtime(RuntimeCheck.Kind kind, Dim left, Dim right, int operand, String message, boolean warn) {
    Pos p = pos(operand);
    graph.checks().add(new RuntimeCheck(kind, left, right, message, p));
    // A composite's own preconditions (rope needs an even last dim) are op contracts the user cannot restate in a
    // shape string; they are checked at run time without a warning at every use.
    boolean inputDependent = !isStatic(resolve(left)) || !isStatic(resolve(right));
    if (warn || (inputDependent && siteComposite == null)) {
      report.add(Id.RuntimeCheck, p, prefix() + message);
    }
  }

  @Override
  public Dim fresh(String hint) {
    return Dim.sym(hint + "?" + (++fresh));
  }

  @Override
  public void error(Id id, int operand, int specOffset, String message) {
    String text = prefix() + message;
    if (specOffset >= 0 && siteSpecText != null && siteComposite == null) {
      text += " (column " + (specOffset + 1) + " of the spec)\n  " + siteSpecText + "\n  " + " ".repeat(specOffset)
          + "^";
    }
    report.add(id, operand == SPEC && siteSpec != null ? siteSpec : pos(operand), text);
  }

  private String prefix() {
    return siteComposite == null ? "" : "in " + siteComposite + ": ";
  }

  private Pos pos(int operand) {
    if (operand >= 0 && operand < siteArgs.size()) {
      return siteArgs.get(operand);
    }
    if (operand == SPEC && siteSpec != null) {
      return siteSpec;
    }
    return sitePos;
  }

  private void site(Pos pos, List<Pos> args, Pos spec, String composite, String specText) {
    sitePos = pos;
    siteArgs = args;
    siteSpec = spec;
    siteComposite = composite;
    siteSpecText = specText;
  }
}
