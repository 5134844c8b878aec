package dev.kiln.processor.ir;

import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.processor.diag.Id;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** The shape rules of the primitives. */
final class ShapeRules {
  private ShapeRules() {}

  static Shape broadcast(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    List<Integer> idx = new ArrayList<>();
    for (int i = 0; i < in.size(); i++) {
      idx.add(i);
    }
    return ctx.broadcast(in, idx);
  }

  static Shape reduceAxes(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Attr.Axes a = (Attr.Axes) node.attr();
    Shape x = in.get(0);
    if (a.all()) {
      return Shape.scalar();
    }
    if (x.tailSize() == 0) {
      if (!x.hasRest()) {
        ctx.error(Id.ShapeMismatch, 0, -1, "cannot reduce the last dim of the scalar " + label(node, 0));
        return null;
      }
      // '...' alone: the last dim is one of the rest's, unknown here.
      ctx.runtime(RuntimeCheck.Kind.RANK, Dim.of(1), Dim.of(0), 0, label(node, 0) + " must have at least one dim", true);
      return x;
    }
    return a.keep() ? x.withTail(1, List.of(Dim.of(1))) : x.withTail(1, List.of());
  }

  static Shape gather(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Shape table = in.get(0);
    if (table.hasRest() || table.dims().size() != 2) {
      ctx.error(Id.ShapeMismatch, 0, -1,
          "gather's table " + label(node, 0) + " must have two dims 'n d' but has '" + table + "'");
      return null;
    }
    Shape ids = in.get(1);
    List<Dim> d = new ArrayList<>(ids.dims());
    d.add(table.dims().get(1));
    return new Shape(d, ids.restAt(), ids.rest());
  }

  static Shape pick(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Shape x = in.get(0);
    Shape idx = in.get(1);
    if (x.tailSize() == 0) {
      ctx.error(Id.ShapeMismatch, 0, -1, label(node, 0) + " needs a last dim (the classes) but has shape '" + x + "'");
      return null;
    }
    Shape rows = x.withTail(1, List.of());
    if (!sameShape(ctx, rows, idx, 1, Id.ShapeMismatch, (e, a) -> "the targets " + label(node, 1) + " must have shape '"
        + rows + "' (the logits '" + x + "' without their last dim) but have '" + idx + "'")) {
      return null;
    }
    return rows;
  }

  static Shape topk(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Shape x = in.get(0);
    if (x.tailSize() == 0) {
      ctx.error(Id.ShapeMismatch, 0, -1, "topk needs a last dim but " + label(node, 0) + " has shape '" + x + "'");
      return null;
    }
    return x.withTail(1, List.of(((Attr.TopK) node.attr()).k()));
  }

  static Shape iota(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Shape x = in.get(0);
    int k = -((Attr.Axis) node.attr()).fromEnd();
    if (x.tailSize() < k) {
      ctx.runtime(RuntimeCheck.Kind.RANK, Dim.of(k), Dim.of(x.tailSize()), 0,
          label(node, 0) + " must have at least " + k + " dims", true);
      return Shape.of(List.of(ctx.fresh("n")));
    }
    return Shape.of(List.of(x.dims().get(x.dims().size() - k)));
  }


  // ---- einsum and einops patterns -----------------------------------------------------------------------------

  /** Names a pattern side has bound so far, and what {@code ...} stands for. */
  private static final class Binding {
    final Map<String, Dim> names = new LinkedHashMap<>();
    final Map<String, Integer> firstOperand = new LinkedHashMap<>();
    Shape rest;
  }

  static Shape einsum(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    EinsumSpec spec = ((Attr.Einsum) node.attr()).spec();
    if (spec.inputs().size() != in.size()) {
      ctx.error(Id.EinsumMismatch, ShapeContext.CALL, -1, "the spec '" + spec.source() + "' names " + spec.inputs().size()
          + " operand(s) but the call passes " + in.size());
      return null;
    }
    Binding b = new Binding();
    boolean ok = true;
    for (int i = 0; i < in.size(); i++) {
      ok &= bindSide(ctx, node, spec.inputs().get(i), in.get(i), b, i, Map.of(), Id.EinsumMismatch,
          "einsum operand " + (i + 1) + " " + label(node, i));
    }
    if (!ok) {
      return null;
    }
    return build(ctx, node, spec.output(), b, Map.of());
  }

  static Shape pattern(ShapeContext ctx, Node.Prim node, List<Shape> in) {
    Attr.Pattern a = (Attr.Pattern) node.attr();
    EinopsPattern p = a.pattern();
    String op = switch (node.op()) {
      case REPEAT -> "repeat";
      case REDUCE_PATTERN -> "reduce";
      default -> "rearrange";
    };
    Set<String> left = names(p.left());
    Set<String> right = names(p.right());
    for (Axis.Name n : allNames(p.left())) {
      if (!right.contains(n.name()) && node.op() != Primitive.REDUCE_PATTERN) {
        ctx.error(Id.RearrangeMismatch, ShapeContext.SPEC, n.start(), op + " pattern '" + p.source() + "': '" + n.name()
            + "' is on the left but not on the right; " + op + " cannot drop a dim (reduce does)");
        return null;
      }
    }
    for (Axis.Name n : allNames(p.right())) {
      if (!left.contains(n.name()) && node.op() != Primitive.REPEAT) {
        ctx.error(Id.RearrangeMismatch, ShapeContext.SPEC, n.start(), op + " pattern '" + p.source() + "': '" + n.name()
            + "' is on the right but not on the left; " + op + " cannot add a dim (repeat does)");
        return null;
      }
    }
    Binding b = new Binding();
    if (!bindSide(ctx, node, p.left(), in.get(0), b, 0, a.sizes(), Id.RearrangeMismatch,
        op + " input " + label(node, 0))) {
      return null;
    }
    return build(ctx, node, p.right(), b, a.sizes());
  }

  private static Set<String> names(ShapeSpec side) {
    Set<String> out = new LinkedHashSet<>();
    for (Axis.Name n : allNames(side)) {
      out.add(n.name());
    }
    return out;
  }

  private static List<Axis.Name> allNames(ShapeSpec side) {
    return side.axisNames();
  }

  /** The dim a name stands for before this side binds it: a size argument, or a name of the module/method. */
  private static Dim preBound(ShapeContext ctx, Node.Prim node, String name, Binding b, Map<String, Dim> sizes) {
    Dim d = b.names.get(name);
    if (d != null) {
      return d;
    }
    d = sizes.get(name);
    if (d != null) {
      return d;
    }
    // Composite ops spell patterns with their own local names; only user-written patterns see the module's dims.
    return node.composite() == null ? ctx.named(name) : null;
  }

  /** Binds one side (an einsum operand, a pattern's left side) to a shape. False after an error was reported. */
  private static boolean bindSide(ShapeContext ctx, Node.Prim node, ShapeSpec side, Shape actual, Binding b,
      int operand, Map<String, Dim> sizes, Id id, String what) {
    List<Axis> axes = side.axes();
    int e = -1;
    for (int i = 0; i < axes.size(); i++) {
      if (axes.get(i) instanceof Axis.Ellipsis) {
        e = i;
      }
    }
    List<Axis> pre = e < 0 ? axes : axes.subList(0, e);
    List<Axis> post = e < 0 ? List.of() : axes.subList(e + 1, axes.size());
    List<Dim> ad = actual.dims();
    String sideText = side.source().substring(side.start(), side.end()).strip();
    List<Dim> matched = new ArrayList<>();
    if (e < 0) {
      if (!actual.hasRest()) {
        if (ad.size() != axes.size()) {
          ctx.error(id, operand, side.start(), what + " has " + ad.size() + " dim(s) '" + actual + "' but the spec names "
              + axes.size() + ": '" + sideText + "'");
          return false;
        }
        matched.addAll(ad);
      } else {
        int k = actual.before().size();
        int m = actual.after().size();
        if (k + m > axes.size()) {
          ctx.error(id, operand, side.start(), what + " has at least " + (k + m) + " dims '" + actual
              + "' but the spec names " + axes.size() + ": '" + sideText + "'");
          return false;
        }
        ctx.runtime(RuntimeCheck.Kind.RANK, Dim.of(axes.size() - k - m), Dim.sym("rank(...)"), operand,
            what + " '" + actual + "' must have exactly " + axes.size() + " dims to match '" + sideText + "'", true);
        matched.addAll(actual.before());
        for (int i = 0; i < axes.size() - k - m; i++) {
          matched.add(ctx.fresh("n"));
        }
        matched.addAll(actual.after());
      }
      for (int i = 0; i < axes.size(); i++) {
        if (!matchAxis(ctx, node, axes.get(i), matched.get(i), b, operand, sizes, id, what, actual)) {
          return false;
        }
      }
      return true;
    }
    Shape restPart;
    if (!actual.hasRest()) {
      if (ad.size() < pre.size() + post.size()) {
        ctx.error(id, operand, side.start(), what + " has " + ad.size() + " dim(s) '" + actual
            + "' but the spec needs at least " + (pre.size() + post.size()) + ": '" + sideText + "'");
        return false;
      }
      restPart = Shape.of(ad.subList(pre.size(), ad.size() - post.size()));
    } else if (pre.size() <= actual.before().size() && post.size() <= actual.after().size()) {
      restPart = new Shape(ad.subList(pre.size(), ad.size() - post.size()), actual.restAt() - pre.size(), actual.rest());
    } else {
      ctx.runtime(RuntimeCheck.Kind.RANK, Dim.of(pre.size() + post.size()), Dim.sym("rank(...)"), operand,
          what + " '" + actual + "' must have at least " + (pre.size() + post.size()) + " dims to match '" + sideText
              + "'", true);
      return false;
    }
    for (int i = 0; i < pre.size(); i++) {
      if (!matchAxis(ctx, node, pre.get(i), ad.get(i), b, operand, sizes, id, what, actual)) {
        return false;
      }
    }
    for (int i = 0; i < post.size(); i++) {
      if (!matchAxis(ctx, node, post.get(i), ad.get(ad.size() - post.size() + i), b, operand, sizes, id, what, actual)) {
        return false;
      }
    }
    if (b.rest == null) {
      b.rest = restPart;
    } else {
      Shape br = ctx.broadcast(List.of(b.rest, restPart), List.of(operand, operand));
      if (br == null) {
        return false;
      }
      b.rest = br;
    }
    return true;
  }

  private static boolean matchAxis(ShapeContext ctx, Node.Prim node, Axis axis, Dim actual, Binding b, int operand,
      Map<String, Dim> sizes, Id id, String what, Shape whole) {
    switch (axis) {
      case Axis.Name n -> {
        Dim known = preBound(ctx, node, n.name(), b, sizes);
        if (known == null) {
          b.names.put(n.name(), actual);
          b.firstOperand.put(n.name(), operand);
          return true;
        }
        Integer first = b.firstOperand.get(n.name());
        String where = first == null ? (sizes.containsKey(n.name()) ? "its size argument" : "this module")
            : first == operand ? "an earlier position" : "operand " + (first + 1);
        boolean ok = ctx.unify(known, actual, operand, n.start(), id, (x, y) -> what + " '" + whole + "': '" + n.name()
            + "' is " + y + " here but " + x + " in " + where);
        b.names.putIfAbsent(n.name(), known);
        b.firstOperand.putIfAbsent(n.name(), operand);
        return ok;
      }
      case Axis.Literal l -> {
        return ctx.unify(Dim.of(l.value()), actual, operand, l.start(), id,
            (x, y) -> what + " '" + whole + "': the spec says size " + x + " but the dim is " + y);
      }
      case Axis.BinOp op -> {
        return solveExpr(ctx, node, List.of(op), op, actual, b, operand, sizes, id, what, whole);
      }
      case Axis.Group g -> {
        List<Axis.DimExpr> members = new ArrayList<>();
        for (Axis m : g.members()) {
          members.add((Axis.DimExpr) m);
        }
        return solveExpr(ctx, node, members, g, actual, b, operand, sizes, id, what, whole);
      }
      case Axis.Ellipsis el -> throw new IllegalStateException("'...' is matched by bindSide");
    }
  }

  /** The product of {@code members} equals {@code actual}; at most one name in them may be unknown. */
  private static boolean solveExpr(ShapeContext ctx, Node.Prim node, List<Axis.DimExpr> members, Axis at, Dim actual,
      Binding b, int operand, Map<String, Dim> sizes, Id id, String what, Shape whole) {
    Set<String> unknown = new LinkedHashSet<>();
    for (Axis.DimExpr m : members) {
      for (String s : m.names()) {
        if (preBound(ctx, node, s, b, sizes) == null) {
          unknown.add(s);
        }
      }
    }
    String text = at.toString();
    if (unknown.size() > 1) {
      ctx.error(Id.UnboundDim, operand, at.start(), what + ": cannot split " + actual + " into " + text + ": "
          + String.join(" and ", unknown) + " have no size; give all but one with size(\"" + unknown.iterator().next()
          + "\", ...)");
      return false;
    }
    String var = unknown.isEmpty() ? null : unknown.iterator().next();
    List<Dim> dims = new ArrayList<>();
    for (Axis.DimExpr m : members) {
      dims.add(Dim.of(m, s -> s.equals(var) ? Dim.sym("'" + var) : preBound(ctx, node, s, b, sizes)));
    }
    Dim product = Dim.product(dims);
    if (var == null) {
      return ctx.unify(product, actual, operand, at.start(), id,
          (x, y) -> what + " '" + whole + "': " + text + " is " + x + " but the dim there is " + y);
    }
    Dim solved = product.solveFor("'" + var, actual);
    if (solved == null) {
      ctx.error(Id.UnboundDim, operand, at.start(), what + ": cannot solve " + text + " = " + actual + " for " + var
          + "; give its size with size(\"" + var + "\", ...)");
      return false;
    }
    b.names.put(var, solved);
    b.firstOperand.put(var, operand);
    Dim known = product.subst(s -> s.equals("'" + var) ? Dim.of(1) : null);
    if (!known.isOne()) {
      ctx.runtime(RuntimeCheck.Kind.DIVIDES, known, actual, operand, what + ": " + actual + " must be divisible by "
          + known + " to split it into " + text, false);
    }
    return true;
  }

  /** The shape an output side (einsum output, pattern right side) describes. */
  private static Shape build(ShapeContext ctx, Node.Prim node, ShapeSpec side, Binding b, Map<String, Dim> sizes) {
    List<Dim> dims = new ArrayList<>();
    int restAt = -1;
    String rest = null;
    for (Axis a : side.axes()) {
      switch (a) {
        case Axis.Ellipsis el -> {
          Shape r = b.rest == null ? Shape.scalar() : b.rest;
          if (r.hasRest()) {
            restAt = dims.size() + r.restAt();
            rest = r.rest();
          }
          dims.addAll(r.dims());
        }
        case Axis.Group g -> {
          List<Dim> ms = new ArrayList<>();
          for (Axis m : g.members()) {
            if (m instanceof Axis.Ellipsis) {
              Shape r = b.rest == null ? Shape.scalar() : b.rest;
              ms.addAll(r.dims());
              if (r.hasRest()) {
                ms.add(Dim.sym("prod(...)"));
              }
            } else {
              Dim d = outDim(ctx, node, (Axis.DimExpr) m, b, sizes);
              if (d == null) {
                return null;
              }
              ms.add(d);
            }
          }
          dims.add(Dim.product(ms));
        }
        case Axis.DimExpr e -> {
          Dim d = outDim(ctx, node, e, b, sizes);
          if (d == null) {
            return null;
          }
          dims.add(d);
        }
      }
    }
    return new Shape(dims, restAt, rest);
  }

  private static Dim outDim(ShapeContext ctx, Node.Prim node, Axis.DimExpr e, Binding b, Map<String, Dim> sizes) {
    for (String s : e.names()) {
      if (preBound(ctx, node, s, b, sizes) == null) {
        ctx.error(Id.UnboundDim, ShapeContext.SPEC, e.start(), "'" + s + "' on the output side has no size: it is not"
            + " on the input side, not a dim of this module or method, and not given with size(\"" + s + "\", ...)");
        return null;
      }
    }
    return Dim.of(e, s -> preBound(ctx, node, s, b, sizes));
  }

  private static boolean sameShape(ShapeContext ctx, Shape expected, Shape actual, int operand, Id id,
      java.util.function.BiFunction<Dim, Dim, String> message) {
    if (expected.hasRest() != actual.hasRest() || expected.dims().size() != actual.dims().size()
        || (expected.hasRest() && (expected.restAt() != actual.restAt() || !expected.rest().equals(actual.rest())))) {
      ctx.error(id, operand, -1, message.apply(null, null));
      return false;
    }
    for (int i = 0; i < expected.dims().size(); i++) {
      if (!ctx.unify(expected.dims().get(i), actual.dims().get(i), operand, -1, id, message)) {
        return false;
      }
    }
    return true;
  }

  private static String label(Node.Prim node, int i) {
    return "'" + node.inputs().get(i).label() + "'";
  }
}
