package dev.kiln.processor.ir;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

/**
 * A symbolic shape: dims, with at most one {@code ...} (named {@code rest}, standing for any number of dims) at
 * index {@code restAt} among them. Each method has one rest name; unification variables of a callee have their own.
 */
public record Shape(List<Dim> dims, int restAt, String rest) {
  public Shape {
    dims = List.copyOf(dims);
    if ((rest == null) != (restAt < 0) || restAt > dims.size()) {
      throw new IllegalArgumentException("bad rest position " + restAt + " for " + dims);
    }
  }

  /** A shape without {@code ...}. */
  public static Shape of(List<Dim> dims) {
    return new Shape(dims, -1, null);
  }

  /** The scalar shape. */
  public static Shape scalar() {
    return of(List.of());
  }

  public boolean hasRest() {
    return rest != null;
  }

  /** Dims before the rest (all dims when there is none). */
  public List<Dim> before() {
    return hasRest() ? dims.subList(0, restAt) : dims;
  }

  /** Dims after the rest (none when there is no rest). */
  public List<Dim> after() {
    return hasRest() ? dims.subList(restAt, dims.size()) : List.of();
  }

  /** The shape with the last {@code n} dims replaced by {@code tail}; requires {@code after()} or dims to hold n. */
  public Shape withTail(int n, List<Dim> tail) {
    List<Dim> d = new ArrayList<>(dims.subList(0, dims.size() - n));
    d.addAll(tail);
    return new Shape(d, restAt, rest);
  }

  /** How many explicit dims sit at the end, after any rest. */
  public int tailSize() {
    return hasRest() ? dims.size() - restAt : dims.size();
  }

  /** Replaces names in every dim. */
  public Shape substDims(Function<String, Dim> f) {
    List<Dim> d = new ArrayList<>();
    for (Dim x : dims) {
      d.add(x.subst(f));
    }
    return new Shape(d, restAt, rest);
  }

  /** Splices {@code replacement} in place of the rest. */
  public Shape spliceRest(Shape replacement) {
    if (!hasRest()) {
      return this;
    }
    List<Dim> d = new ArrayList<>(before());
    d.addAll(replacement.dims);
    int at = replacement.hasRest() ? restAt + replacement.restAt : -1;
    d.addAll(after());
    return new Shape(d, at, replacement.rest);
  }

  /** In the grammar, with {@code ...} for the rest and {@code ''} for a scalar. */
  @Override
  public String toString() {
    List<String> parts = new ArrayList<>();
    for (int i = 0; i <= dims.size(); i++) {
      if (i == restAt) {
        parts.add("...");
      }
      if (i < dims.size()) {
        Dim d = dims.get(i);
        String s = d.toString();
        parts.add(d.symbols().isEmpty() || d.asSymbol() != null ? s : "(" + s + ")");
      }
    }
    return String.join(" ", parts);
  }
}
