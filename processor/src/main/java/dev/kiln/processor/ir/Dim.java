package dev.kiln.processor.ir;

import dev.kiln.dsl.shape.Axis;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.function.Function;

/**
 * The size of one axis as a symbolic expression: a sum of terms {@code c * a^i * b^j ...} with rational {@code c}
 * and integer (possibly negative) powers of dim names. The normal form makes {@code (heads d_model/heads)} equal
 * to {@code d_model} and {@code 2*d/2} equal to {@code d}, so shapes compare with {@code equals}.
 *
 * <p>Names are dim symbols: config dims, input dims, or unification variables (which contain a {@code '}).
 */
public final class Dim {
  private record Frac(long num, long den) {
    static Frac of(long num, long den) {
      if (den < 0) {
        num = -num;
        den = -den;
      }
      long g = gcd(Math.abs(num), den);
      return g == 0 ? new Frac(0, 1) : new Frac(num / g, den / g);
    }

    Frac plus(Frac o) {
      return of(Math.addExact(Math.multiplyExact(num, o.den), Math.multiplyExact(o.num, den)),
          Math.multiplyExact(den, o.den));
    }

    Frac times(Frac o) {
      return of(Math.multiplyExact(num, o.num), Math.multiplyExact(den, o.den));
    }

    private static long gcd(long a, long b) {
      return b == 0 ? a : gcd(b, a % b);
    }
  }

  /** Monomial key: name → power, sorted by name; the empty map is the constant term. */
  private final SortedMap<SortedMap<String, Integer>, Frac> terms;

  private Dim(SortedMap<SortedMap<String, Integer>, Frac> terms) {
    this.terms = terms;
  }

  private static SortedMap<SortedMap<String, Integer>, Frac> newTerms() {
    return new TreeMap<>((a, b) -> a.toString().compareTo(b.toString()));
  }

  /** A literal size. */
  public static Dim of(long size) {
    SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
    if (size != 0) {
      t.put(new TreeMap<>(), Frac.of(size, 1));
    }
    return new Dim(t);
  }

  /** A named dim. */
  public static Dim sym(String name) {
    SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
    TreeMap<String, Integer> m = new TreeMap<>();
    m.put(name, 1);
    t.put(m, Frac.of(1, 1));
    return new Dim(t);
  }

  /** The dim a grammar expression denotes, naming each symbol through {@code rename}. */
  public static Dim of(Axis.DimExpr e, Function<String, Dim> rename) {
    return switch (e) {
      case Axis.Name n -> rename.apply(n.name());
      case Axis.Literal l -> of(l.value());
      case Axis.BinOp b -> {
        Dim l = of(b.left(), rename);
        Dim r = of(b.right(), rename);
        yield switch (b.op()) {
          case ADD -> l.plus(r);
          case SUB -> l.minus(r);
          case MUL -> l.times(r);
          case DIV -> l.div(r);
        };
      }
    };
  }

  /** Product of several dims (a group). */
  public static Dim product(List<Dim> dims) {
    Dim p = of(1);
    for (Dim d : dims) {
      p = p.times(d);
    }
    return p;
  }

  public Dim plus(Dim o) {
    SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
    t.putAll(terms);
    o.terms.forEach((k, v) -> t.merge(k, v, Frac::plus));
    t.values().removeIf(f -> f.num == 0);
    return new Dim(t);
  }

  public Dim minus(Dim o) {
    return plus(o.times(of(-1)));
  }

  public Dim times(Dim o) {
    SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
    for (var a : terms.entrySet()) {
      for (var b : o.terms.entrySet()) {
        TreeMap<String, Integer> m = new TreeMap<>(a.getKey());
        b.getKey().forEach((k, v) -> m.merge(k, v, Integer::sum));
        m.values().removeIf(p -> p == 0);
        t.merge(m, a.getValue().times(b.getValue()), Frac::plus);
      }
    }
    t.values().removeIf(f -> f.num == 0);
    return new Dim(t);
  }

  /**
   * {@code this / o}. Exact when {@code o} is a single term; otherwise the quotient is kept as an opaque symbol
   * named by its text, which still compares equal to itself.
   */
  public Dim div(Dim o) {
    if (o.terms.size() == 1) {
      var e = o.terms.entrySet().iterator().next();
      TreeMap<String, Integer> inv = new TreeMap<>();
      e.getKey().forEach((k, v) -> inv.put(k, -v));
      SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
      t.put(inv, Frac.of(e.getValue().den, e.getValue().num));
      return times(new Dim(t));
    }
    return sym("(" + this + ")/(" + o + ")");
  }

  /** Whether this is a literal size. */
  public boolean isLiteral() {
    return terms.isEmpty() || (terms.size() == 1 && terms.firstKey().isEmpty() && terms.get(terms.firstKey()).den == 1);
  }

  /** The literal size; only when {@link #isLiteral()}. */
  public long literal() {
    return terms.isEmpty() ? 0 : terms.get(terms.firstKey()).num;
  }

  /** Whether this is the literal 1 (the broadcastable size). */
  public boolean isOne() {
    return isLiteral() && literal() == 1;
  }

  /** The single name this dim is, or null when it is not exactly one name. */
  public String asSymbol() {
    if (terms.size() != 1) {
      return null;
    }
    var e = terms.entrySet().iterator().next();
    if (e.getKey().size() == 1 && e.getValue().equals(new Frac(1, 1))) {
      var p = e.getKey().entrySet().iterator().next();
      return p.getValue() == 1 ? p.getKey() : null;
    }
    return null;
  }

  /** Every name this dim mentions. */
  public Set<String> symbols() {
    Set<String> out = new LinkedHashSet<>();
    for (var k : terms.keySet()) {
      out.addAll(k.keySet());
    }
    return out;
  }

  /** Replaces names: {@code f} returns the replacement, or null to keep the name. */
  public Dim subst(Function<String, Dim> f) {
    Dim out = of(0);
    for (var e : terms.entrySet()) {
      SortedMap<SortedMap<String, Integer>, Frac> c = newTerms();
      c.put(new TreeMap<>(), e.getValue());
      Dim term = new Dim(c);
      for (var p : e.getKey().entrySet()) {
        Dim r = f.apply(p.getKey());
        Dim base = r == null ? sym(p.getKey()) : r;
        for (int i = 0; i < Math.abs(p.getValue()); i++) {
          term = p.getValue() > 0 ? term.times(base) : term.div(base);
        }
      }
      out = out.plus(term);
    }
    return out;
  }

  /**
   * Solves {@code this == target} for the one name {@code var} when this is a single term with {@code var} to the
   * power ±1; null otherwise.
   */
  public Dim solveFor(String var, Dim target) {
    if (terms.size() != 1) {
      return null;
    }
    var e = terms.entrySet().iterator().next();
    Integer p = e.getKey().get(var);
    if (p == null || Math.abs(p) != 1) {
      return null;
    }
    TreeMap<String, Integer> rest = new TreeMap<>(e.getKey());
    rest.remove(var);
    SortedMap<SortedMap<String, Integer>, Frac> t = newTerms();
    t.put(rest, e.getValue());
    Dim coefficient = new Dim(t);
    Dim x = target.div(coefficient);
    return p == 1 ? x : of(1).div(x);
  }

  /**
   * Java code computing this dim as a {@code long}, with {@code name} giving the code of each symbol; every division
   * goes through {@code Sizes.exact} ({@code dev.kiln.dsl.spi}, which every generated file imports; the qualified name
   * would not compile there, where the field {@code dev} hides the package), which rejects a size that does not
   * divide.
   */
  public String toJava(Function<String, String> name) {
    if (terms.isEmpty()) {
      return "0L";
    }
    List<String> parts = new ArrayList<>();
    for (var e : terms.entrySet()) {
      List<String> up = new ArrayList<>();
      List<String> down = new ArrayList<>();
      if (e.getValue().num != 1 || e.getKey().isEmpty() || e.getKey().values().stream().allMatch(p -> p < 0)) {
        up.add(e.getValue().num + "L");
      }
      if (e.getValue().den != 1) {
        down.add(e.getValue().den + "L");
      }
      for (var p : e.getKey().entrySet()) {
        String code = name.apply(p.getKey());
        (p.getValue() > 0 ? up : down).addAll(Collections.nCopies(Math.abs(p.getValue()), code));
      }
      String num = String.join(" * ", up);
      parts.add(down.isEmpty() ? num : "Sizes.exact(" + num + ", " + String.join(" * ", down) + ")");
    }
    return parts.size() == 1 ? parts.get(0) : "(" + String.join(" + ", parts) + ")";
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof Dim d && terms.equals(d.terms);
  }

  @Override
  public int hashCode() {
    return terms.toString().hashCode();
  }

  /** Readable text in the grammar's arithmetic ({@code d_model/heads}, {@code 2*d}, {@code d+1}). */
  @Override
  public String toString() {
    if (terms.isEmpty()) {
      return "0";
    }
    List<String> parts = new ArrayList<>();
    List<Map.Entry<SortedMap<String, Integer>, Frac>> es = new ArrayList<>(terms.entrySet());
    // Symbolic terms first, the constant last: d+1 rather than 1+d.
    es.sort((a, b) -> Boolean.compare(a.getKey().isEmpty(), b.getKey().isEmpty()));
    for (var e : es) {
      parts.add(termText(e.getKey(), e.getValue()));
    }
    StringBuilder b = new StringBuilder(parts.get(0));
    for (String p : parts.subList(1, parts.size())) {
      b.append(p.startsWith("-") ? p : "+" + p);
    }
    return b.toString();
  }

  private static String termText(SortedMap<String, Integer> m, Frac c) {
    List<String> up = new ArrayList<>();
    List<String> down = new ArrayList<>();
    if (Math.abs(c.num) != 1 || m.isEmpty()) {
      up.add(Long.toString(Math.abs(c.num)));
    }
    for (var p : m.entrySet()) {
      (p.getValue() > 0 ? up : down).addAll(Collections.nCopies(Math.abs(p.getValue()), clean(p.getKey())));
    }
    if (c.den != 1) {
      down.add(0, Long.toString(c.den));
    }
    String s = (c.num < 0 ? "-" : "") + (up.isEmpty() ? "1" : String.join("*", up));
    for (String d : down) {
      s += "/" + d;
    }
    return s;
  }

  /** Unification variables print as the name the user wrote. */
  private static String clean(String name) {
    int q = name.indexOf('\'');
    int r = name.indexOf('?');
    int cut = q < 0 ? r : r < 0 ? q : Math.min(q, r);
    return cut < 0 ? name : name.substring(0, cut);
  }
}
