package dev.kiln.processor.fuse;

import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.processor.ir.Attr;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Function;

/**
 * An einsum as one (batched) GEMM {@code C[batch, m, n] = A[batch, m, k] · B[batch, k, n]}: every name is a batch
 * name (in both operands and the output), an m name (first operand and output), an n name (second operand and
 * output) or a k name (both operands, summed). An operand whose dims are already grouped as {@code batch m k} or
 * {@code batch k m} is passed as a reshaped view with a transpose flag; only an operand whose groups interleave is
 * copied (rearranged) first; an output laid out {@code batch n m} is computed as {@code Cᵀ = Bᵀ Aᵀ}.
 *
 * <p>A one-operand einsum is a rearrange or a sum (an einops plan).
 */
public final class GemmPlan {
  private final EinsumSpec spec;
  private final List<String> a;
  private final List<String> b;
  private final List<String> c;
  private final List<String> batch = new ArrayList<>();
  private final List<String> m = new ArrayList<>();
  private final List<String> n = new ArrayList<>();
  private final List<String> k = new ArrayList<>();

  private GemmPlan(EinsumSpec spec) {
    this.spec = spec;
    this.c = names(spec.output());
    this.a = names(spec.inputs().get(0));
    this.b = spec.inputs().size() > 1 ? names(spec.inputs().get(1)) : List.of();
  }

  /**
   * Plans an einsum.
   *
   * @throws LoweringException for three or more operands, a repeated name (a diagonal), or a name summed in one
   *     operand only
   */
  public static GemmPlan of(Attr.Einsum e) {
    EinsumSpec spec = e.spec();
    GemmPlan p = new GemmPlan(spec);
    if (spec.inputs().size() > 2) {
      throw new LoweringException("einsum '" + spec.source() + "' with " + spec.inputs().size()
          + " operands: write it as a chain of two-operand einsums");
    }
    for (List<String> side : List.of(p.a, p.b, p.c)) {
      if (new HashSet<>(side).size() != side.size()) {
        throw new LoweringException("einsum '" + spec.source() + "' repeats a name within one operand (a diagonal)");
      }
    }
    if (spec.inputs().size() == 1) {
      return p;
    }
    Set<String> as = new HashSet<>(p.a);
    Set<String> bs = new HashSet<>(p.b);
    Set<String> cs = new HashSet<>(p.c);
    for (String x : p.c) {
      if (as.contains(x) && bs.contains(x)) {
        p.batch.add(x);
      }
    }
    for (String x : p.a) {
      if (cs.contains(x) && !bs.contains(x)) {
        p.m.add(x);
      } else if (bs.contains(x) && !cs.contains(x)) {
        p.k.add(x);
      } else if (!bs.contains(x) && !cs.contains(x)) {
        throw new LoweringException("einsum '" + spec.source() + "' sums '" + x + "' of the first operand alone;"
            + " reduce it first");
      }
    }
    for (String x : p.b) {
      if (cs.contains(x) && !as.contains(x)) {
        p.n.add(x);
      } else if (!as.contains(x) && !cs.contains(x)) {
        throw new LoweringException("einsum '" + spec.source() + "' sums '" + x + "' of the second operand alone;"
            + " reduce it first");
      }
    }
    return p;
  }

  private static List<String> names(ShapeSpec s) {
    List<String> out = new ArrayList<>();
    for (Axis x : s.axes()) {
      out.add(x instanceof Axis.Name nm ? nm.name() : "...");
    }
    return out;
  }

  private static List<String> cat(List<String> x, List<String> y, List<String> z) {
    List<String> out = new ArrayList<>(x);
    out.addAll(y);
    out.addAll(z);
    return out;
  }

  /** Whether the operands are used in place (no copy). */
  public boolean copiesNone() {
    return spec.inputs().size() == 1 || (layout(a, m, k) != null && layout(b, k, n) != null
        && (c.equals(cat(batch, m, n)) || c.equals(cat(batch, n, m))));
  }

  /** Null when the groups interleave; else whether {@code side} is {@code batch y x} (transposed). */
  private Boolean layout(List<String> side, List<String> x, List<String> y) {
    if (side.equals(cat(batch, x, y))) {
      return false;
    }
    if (side.equals(cat(batch, y, x))) {
      return true;
    }
    return null;
  }

  /** A one-line description for the generated comment. */
  public String describe() {
    if (spec.inputs().size() == 1) {
      return "einsum '" + spec.source() + "' as an einops " + (c.size() < a.size() ? "sum" : "rearrange");
    }
    return "einsum '" + spec.source() + "' as GEMM: batch [" + String.join(" ", batch) + "], m [" + String.join(" ", m)
        + "], n [" + String.join(" ", n) + "], k [" + String.join(" ", k) + "]" + (copiesNone() ? ", no copies" : "");
  }

  /**
   * Whether the GEMM writes the einsum's result itself (two operands, the output's dims in GEMM order, no copy after):
   * then the tensor {@link #code} allocates is the result, and may be allocated another way.
   */
  public boolean writesInPlace() {
    return spec.inputs().size() == 2 && (c.equals(cat(batch, m, n)) || c.equals(cat(batch, n, m)));
  }

  /**
   * Java statements computing the einsum of {@code operands} into a new local {@code out}. {@code plan} returns the
   * name of a static {@code EinopsPlan} constant for a pattern; {@code id} makes the locals unique.
   */
  public List<String> code(List<String> operands, String out, String id, Function<String, String> plan) {
    return code(operands, out, id, plan, null);
  }

  /**
   * {@link #code}, where a GEMM that {@link #writesInPlace} allocates its output with {@code
   * dev.emptyGemmResult} when the Java condition {@code bf16When} holds (null: never).
   */
  public List<String> code(List<String> operands, String out, String id, Function<String, String> plan,
      String bf16When) {
    return code(operands, out, id, plan, bf16When, null);
  }

  /**
   * {@link #code}, where a GEMM that {@link #writesInPlace} and computes a parameter's gradient alone ({@code
   * paramGradient} not null) allocates its output with {@code dev.emptyParamGradient}, naming the parameter
   * ({@code paramGradient}, the code that reads it) where it is one parameter's gradient, else ({@code ""}) not.
   */
  public List<String> code(List<String> operands, String out, String id, Function<String, String> plan,
      String bf16When, String paramGradient) {
    List<String> lines = new ArrayList<>();
    if (spec.inputs().size() == 1) {
      String pattern = String.join(" ", a) + " -> " + String.join(" ", c);
      lines.add("Tensor " + out + " = " + plan.apply(pattern) + (c.size() < a.size()
          ? ".reduce(dev, " + operands.get(0) + ", Reduction.SUM, Map.of());"
          : ".rearrange(dev, " + operands.get(0) + ", Map.of());"));
      return lines;
    }
    String opA = operands.get(0);
    String opB = operands.get(1);
    List<String> la = a;
    List<String> lb = b;
    Boolean transA = layout(a, m, k);
    if (transA == null) {
      la = cat(batch, m, k);
      String t = "a" + id + "$";
      lines.add("Tensor " + t + " = " + plan.apply(String.join(" ", a) + " -> " + String.join(" ", la))
          + ".rearrange(dev, " + opA + ", Map.of()); // interleaved groups: one copy");
      opA = t;
      transA = false;
    }
    Boolean transB = layout(b, k, n);
    if (transB == null) {
      lb = cat(batch, k, n);
      String t = "b" + id + "$";
      lines.add("Tensor " + t + " = " + plan.apply(String.join(" ", b) + " -> " + String.join(" ", lb))
          + ".rearrange(dev, " + opB + ", Map.of()); // interleaved groups: one copy");
      opB = t;
      transB = false;
    }
    String sa = "sa" + id + "$";
    String sb = "sb" + id + "$";
    lines.add("long[] " + sa + " = " + opA + ".shape();");
    lines.add("long[] " + sb + " = " + opB + ".shape();");
    String ra = "ra" + id + "$";
    String rb = "rb" + id + "$";
    if (la.contains("...")) {
      lines.add("int " + ra + " = " + sa + ".length - " + (la.size() - 1) + ";");
    }
    if (lb.contains("...")) {
      lines.add("int " + rb + " = " + sb + ".length - " + (lb.size() - 1) + ";");
    }
    String bs = "batch" + id + "$";
    String ms = "m" + id + "$";
    String ns = "n" + id + "$";
    String ks = "k" + id + "$";
    lines.add("long " + bs + " = " + product(batch, la, sa, ra) + ", " + ms + " = " + product(m, la, sa, ra) + ", "
        + ns + " = " + product(n, lb, sb, rb) + ", " + ks + " = " + product(k, la, sa, ra) + ";");
    List<String> outParts = new ArrayList<>();
    boolean direct = c.equals(cat(batch, m, n)) || c.equals(cat(batch, n, m));
    List<String> lc = direct ? c : cat(batch, m, n);
    for (String x : lc) {
      boolean fromA = la.contains(x);
      outParts.add(slice(x, fromA ? la : lb, fromA ? sa : sb, fromA ? ra : rb));
    }
    String target = direct ? out : "c" + id + "$";
    String shape = "Sizes.cat(" + String.join(", ", outParts) + ")";
    String alloc = "dev.empty(dtype, " + shape + ")";
    if (paramGradient != null && direct) {
      alloc = "dev.emptyParamGradient(" + (paramGradient.isEmpty() ? "" : paramGradient + ", ") + "dtype, " + shape
          + ")";
    } else if (bf16When != null && direct) {
      String bf16 = "dev.emptyGemmResult(dtype, " + shape + ")";
      alloc = bf16When.equals("true") ? bf16 : bf16When + " ? " + bf16 + " : " + alloc;
    }
    lines.add("Tensor " + target + " = " + alloc + ";" + (paramGradient != null && direct
        ? " // a parameter's gradient alone: a mixed-precision device may store it in bf16, as autocast rounds it"
        : bf16When != null && direct ? " // its readers take bf16: a mixed-precision device may store it so" : ""));
    boolean swap = direct && !c.equals(cat(batch, m, n));
    String viewA = view(opA, bs, transA ? ks : ms, transA ? ms : ks);
    String viewB = view(opB, bs, transB ? ns : ks, transB ? ks : ns);
    String viewC = swap ? view(target, bs, ns, ms) : view(target, bs, ms, ns);
    if (swap) {
      lines.add("dev.gemm(" + viewB + ", " + !transB + ", " + viewA + ", " + !transA + ", " + viewC
          + ", 1.0, 0.0); // the output is laid out n-major: Cᵀ = Bᵀ·Aᵀ");
    } else {
      lines.add("dev.gemm(" + viewA + ", " + transA + ", " + viewB + ", " + transB + ", " + viewC + ", 1.0, 0.0);");
    }
    if (!direct) {
      lines.add("Tensor " + out + " = " + plan.apply(String.join(" ", lc) + " -> " + String.join(" ", c))
          + ".rearrange(dev, " + target + ", Map.of()); // the output's groups interleave: one copy");
    }
    return lines;
  }

  private String view(String t, String bs, String rows, String cols) {
    return batch.isEmpty() ? "dev.reshape(" + t + ", " + rows + ", " + cols + ")"
        : "dev.reshape(" + t + ", " + bs + ", " + rows + ", " + cols + ")";
  }

  private static String index(List<String> side, String name, String rest) {
    int j = side.indexOf(name);
    int e = side.indexOf("...");
    return e < 0 || j < e ? Integer.toString(j) : j - 1 == 0 ? rest : rest + " + " + (j - 1);
  }

  private static String product(List<String> group, List<String> side, String shape, String rest) {
    if (group.isEmpty()) {
      return "1L";
    }
    List<String> f = new ArrayList<>();
    for (String x : group) {
      if (x.equals("...")) {
        int e = side.indexOf("...");
        f.add("Sizes.prod(" + shape + ", " + e + ", " + (e == 0 ? rest : e + " + " + rest) + ")");
      } else {
        f.add(shape + "[" + index(side, x, rest) + "]");
      }
    }
    return String.join(" * ", f);
  }

  private static String slice(String x, List<String> side, String shape, String rest) {
    if (x.equals("...")) {
      int e = side.indexOf("...");
      return "Sizes.range(" + shape + ", " + e + ", " + (e == 0 ? rest : e + " + " + rest) + ")";
    }
    return "new long[] {" + shape + "[" + index(side, x, rest) + "]}";
  }
}
