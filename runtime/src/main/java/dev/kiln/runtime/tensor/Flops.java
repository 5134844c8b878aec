package dev.kiln.runtime.tensor;

import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Floating-point operation counts, for MFU (model FLOP utilisation): useful work divided by the hardware's peak.
 *
 * <p>A multiply-add counts as two flops, as in every MFU figure (PaLM, Chinchilla, CS336): a GEMM of {@code m×k} by
 * {@code k×n} is {@code 2·m·n·k}.
 *
 * <p>{@link #einsum} counts what {@link Einops#einsum} does: operands are contracted pairwise, left to right; a
 * dim found in one operand only and needed neither later nor in the output is first summed away
 * ({@code numel(in) - numel(out)} additions); each pairwise contraction is a (batched) GEMM and costs
 * {@code 2 ×} the product of the sizes of every distinct dim of the two operands (batch·m·n·k). So a two-operand
 * einsum without such lone dims is {@code 2 ×} the product of all its distinct dim sizes; a one-operand einsum is
 * a pure reduction ({@code numel(in) - numel(out)}) or, when it only permutes or takes a diagonal, zero.
 */
public final class Flops {
  private Flops() {}

  /** {@code 2·m·n·k}: one {@code m×k} by {@code k×n} product. */
  public static long gemm(long m, long n, long k) {
    return gemm(1, m, n, k);
  }

  /** {@code 2·batch·m·n·k}: {@code batch} independent products. */
  public static long gemm(long batch, long m, long n, long k) {
    if (batch < 0 || m < 0 || n < 0 || k < 0) {
      throw new IllegalArgumentException(
          "gemm sizes must be non-negative: batch " + batch + ", m " + m + ", n " + n + ", k " + k);
    }
    return Math.multiplyExact(2, Math.multiplyExact(Math.multiplyExact(batch, m), Math.multiplyExact(n, k)));
  }

  /**
   * The flops of {@code einsum(spec, operands)} for operands of the given shapes (see the class comment for the
   * rule); checks the shapes against the spec as {@link Einops#einsum} does.
   */
  public static long einsum(String spec, long[]... shapes) {
    EinsumSpec s = ShapeParser.parseEinsum(spec);
    String where = "einsum \"" + spec + "\": ";
    if (shapes.length != s.inputs().size()) {
      throw new IllegalArgumentException(
          where + "the spec has " + s.inputs().size() + " operands but " + shapes.length + " shapes were given");
    }
    int ellipsisRank = 0;
    List<List<String>> labels = new ArrayList<>();
    Map<String, Long> size = new HashMap<>();
    for (int i = 0; i < shapes.length; i++) {
      ShapeSpec in = s.inputs().get(i);
      int named = in.axes().size() - (in.hasEllipsis() ? 1 : 0);
      int er = shapes[i].length - named;
      if (er < 0 || (!in.hasEllipsis() && er != 0)) {
        throw new IllegalArgumentException(
            where + "operand " + i + " has shape " + Arrays.toString(shapes[i]) + " but the spec names " + named
                + " dims \"" + in + "\"");
      }
      ellipsisRank = Math.max(ellipsisRank, er);
      List<String> ls = new ArrayList<>();
      for (Axis a : in.axes()) {
        if (a instanceof Axis.Name n) {
          ls.add(n.name());
        } else {
          for (int j = er - 1; j >= 0; j--) {
            ls.add("..." + j);
          }
        }
      }
      for (int d = 0; d < ls.size(); d++) {
        String l = ls.get(d);
        long n = shapes[i][d];
        Long prev = size.get(l);
        if (prev != null && prev != n && !(l.startsWith("...") && (prev == 1 || n == 1))) {
          throw new IllegalArgumentException(
              where + "operand " + i + " dim " + l + " has size " + n + " but an earlier operand says " + prev);
        }
        size.put(l, prev == null ? n : Math.max(prev, n));
      }
      labels.add(new ArrayList<>(new LinkedHashSet<>(ls))); // a repeated dim is a diagonal: one dim
    }
    Set<String> output = new LinkedHashSet<>();
    for (Axis a : s.output().axes()) {
      if (a instanceof Axis.Name n) {
        output.add(n.name());
      } else {
        for (int j = ellipsisRank - 1; j >= 0; j--) {
          output.add("..." + j);
        }
      }
    }
    long flops = 0;
    List<String> cur = labels.get(0);
    for (int i = 1; i < labels.size(); i++) {
      Set<String> later = new LinkedHashSet<>(output);
      for (int j = i + 1; j < labels.size(); j++) {
        later.addAll(labels.get(j));
      }
      List<String> next = labels.get(i);
      List<String> curKept = kept(cur, next, later);
      List<String> nextKept = kept(next, cur, later);
      flops += reduction(cur, curKept, size) + reduction(next, nextKept, size);
      Set<String> pair = new LinkedHashSet<>(curKept);
      pair.addAll(nextKept);
      flops = Math.addExact(flops, Math.multiplyExact(2, product(pair, size)));
      List<String> result = new ArrayList<>();
      for (String l : pair) {
        if (later.contains(l)) {
          result.add(l);
        }
      }
      cur = result;
    }
    return flops + reduction(cur, kept(cur, List.of(), output), size);
  }

  private static List<String> kept(List<String> t, List<String> other, Set<String> later) {
    List<String> out = new ArrayList<>();
    for (String l : t) {
      if (other.contains(l) || later.contains(l)) {
        out.add(l);
      }
    }
    return out;
  }

  /** Additions to sum {@code from} down to {@code to}: numel(from) - numel(to), zero when nothing is summed. */
  private static long reduction(List<String> from, List<String> to, Map<String, Long> size) {
    return from.size() == to.size() ? 0 : product(from, size) - product(to, size);
  }

  private static long product(Iterable<String> labels, Map<String, Long> size) {
    long p = 1;
    for (String l : labels) {
      p = Math.multiplyExact(p, size.get(l));
    }
    return p;
  }
}
