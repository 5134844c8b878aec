package dev.kiln.runtime.tensor;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Reduce;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * einops at run time: {@link #rearrange}, {@link #repeat}, {@link #reduce} and {@link #einsum} on {@link NdArray}s,
 * with patterns in the grammar of {@link ShapeParser}.
 *
 * <p>Every operation first splits the input into its elementary axes (one per name: {@code (h d)} becomes two dims
 * — always a view), permutes them (a view), and finally merges them into the output's groups, which is a view when
 * the strides allow it and a copy otherwise ({@link NdArray#reshape}). {@link #layoutCopies()} counts those copies.
 *
 * <p>Dim arithmetic ({@code d_model/heads}) belongs to {@code @Shape} declarations; in a pattern, name the axis
 * and pass its size.
 */
public final class Einops {
  private static final AtomicLong LAYOUT_COPIES = new AtomicLong();

  private Einops() {}

  /** Arrays copied so far because a merge or an einsum operand could not be expressed as a view. */
  public static long layoutCopies() {
    return LAYOUT_COPIES.get();
  }

  // ================================================================ rearrange / repeat / reduce

  /**
   * Reorders, splits and merges axes: {@code rearrange(x, "b s (h d) -> b h s d", Map.of("h", 8))}. {@code sizes}
   * gives the sizes a split cannot infer (all but one member of a group) and checks any others. Returns a view of
   * {@code x} when the strides allow it, a copy otherwise.
   */
  public static NdArray rearrange(NdArray x, String pattern, Map<String, ? extends Number> sizes) {
    EinopsPattern p = parse("rearrange", pattern);
    Ctx c = new Ctx("rearrange", pattern, sizes);
    Set<String> left = names(p.left());
    Set<String> right = names(p.right());
    for (String n : left) {
      if (!right.contains(n)) {
        throw c.error("dim '" + n + "' is on the left side only; rearrange keeps every dim (use reduce to drop it)");
      }
    }
    for (String n : right) {
      if (!left.contains(n)) {
        throw c.error("dim '" + n + "' is on the right side only; rearrange adds no dims (use repeat to add it)");
      }
    }
    Elementary e = c.decompose(x, p.left(), false);
    return c.compose(e, p.right(), false);
  }

  /** {@link #rearrange} with no sizes. */
  public static NdArray rearrange(NdArray x, String pattern) {
    return rearrange(x, pattern, Map.of());
  }

  /**
   * Adds and tiles axes: {@code repeat(x, "h w -> h w c", Map.of("c", 3))}, {@code repeat(x, "b d -> b (r d)", ...)}.
   * New axes (names only on the right, whose sizes must be given, or sizes such as {@code 3}) start as broadcast
   * dims of stride 0. When they stay separate axes of the result, the result is that broadcast view: it aliases
   * {@code x} and must not be written to ({@code copy()} it first). When a new axis merges with another in a
   * group, the merge materialises a contiguous copy, as einops does.
   */
  public static NdArray repeat(NdArray x, String pattern, Map<String, ? extends Number> sizes) {
    EinopsPattern p = parse("repeat", pattern);
    Ctx c = new Ctx("repeat", pattern, sizes);
    Set<String> right = names(p.right());
    for (String n : names(p.left())) {
      if (!right.contains(n)) {
        throw c.error("dim '" + n + "' is on the left side only; repeat keeps every input dim (use reduce)");
      }
    }
    Elementary e = c.decompose(x, p.left(), false);
    return c.compose(e, p.right(), true);
  }

  /**
   * Reduces the axes that are on the left side only: {@code reduce(x, "b s d -> b d", Reduce.Op.MEAN, Map.of())},
   * {@code "b (s 2) d -> b s d"} for pooling pairs, {@code "... d -> d"} over every leading dim. The remaining axes
   * are then arranged as in {@link #rearrange}. The reduction is {@link Reduce#reduce}.
   */
  public static NdArray reduce(NdArray x, String pattern, Reduce.Op op, Map<String, ? extends Number> sizes) {
    EinopsPattern p = parse("reduce", pattern);
    Ctx c = new Ctx("reduce", pattern, sizes);
    Set<String> left = names(p.left());
    for (String n : names(p.right())) {
      if (!left.contains(n)) {
        throw c.error("dim '" + n + "' is on the right side only; reduce adds no dims (use repeat)");
      }
    }
    Elementary e = c.decompose(x, p.left(), true);
    Set<String> keep = new LinkedHashSet<>(names(p.right()));
    if (p.right().hasEllipsis()) {
      for (String l : e.labels) {
        if (l.startsWith(ELLIPSIS)) {
          keep.add(l);
        }
      }
    }
    List<Integer> dims = new ArrayList<>();
    List<String> kept = new ArrayList<>();
    List<Long> keptSizes = new ArrayList<>();
    for (int i = 0; i < e.labels.size(); i++) {
      if (keep.contains(e.labels.get(i))) {
        kept.add(e.labels.get(i));
        keptSizes.add(e.array.shape(i));
      } else {
        dims.add(i);
      }
    }
    NdArray reduced =
        dims.isEmpty()
            ? e.array
            : Reduce.reduce(e.array, op, dims.stream().mapToInt(Integer::intValue).toArray(), false);
    return c.compose(new Elementary(reduced, kept, e.ellipsisRank), p.right(), false);
  }

  /** A prefix no dim name can have: the elementary dims that {@code ...} stands for are {@code "...0"}, ... */
  private static final String ELLIPSIS = "...";

  /** An input split into one dim per label. */
  private record Elementary(NdArray array, List<String> labels, int ellipsisRank) {}

  /** Parses a pattern and rejects dim arithmetic before anything else looks at it. */
  private static EinopsPattern parse(String op, String pattern) {
    EinopsPattern p = ShapeParser.parsePattern(pattern);
    for (ShapeSpec side : List.of(p.left(), p.right())) {
      for (Axis a : side.axes()) {
        for (Axis m : a instanceof Axis.Group g ? g.members() : List.of(a)) {
          if (m instanceof Axis.BinOp b) {
            throw new IllegalArgumentException(
                op + " \"" + pattern + "\": dim arithmetic '" + b + "' is for @Shape declarations; in a pattern,"
                    + " name the axis and pass its size");
          }
        }
      }
    }
    return p;
  }

  /** Names that stand as axes on one side (arithmetic rejected separately). */
  private static Set<String> names(ShapeSpec s) {
    Set<String> out = new LinkedHashSet<>();
    for (Axis.Name n : s.axisNames()) {
      out.add(n.name());
    }
    return out;
  }

  /** One call's pattern, sizes and error reporting. */
  private static final class Ctx {
    final String op;
    final String pattern;
    final Map<String, Long> given = new HashMap<>();
    /** Every elementary size bound so far (given or read from the input). */
    final Map<String, Long> bound = new HashMap<>();

    Ctx(String op, String pattern, Map<String, ? extends Number> sizes) {
      this.op = op;
      this.pattern = pattern;
      for (Map.Entry<String, ? extends Number> s : sizes.entrySet()) {
        long v = s.getValue().longValue();
        if (v < 0) {
          throw error("size of '" + s.getKey() + "' is negative: " + v);
        }
        given.put(s.getKey(), v);
      }
    }

    IllegalArgumentException error(String problem) {
      return new IllegalArgumentException(op + " \"" + pattern + "\": " + problem);
    }

    /** Binds the left side to {@code x}'s shape and views {@code x} with one dim per label. */
    Elementary decompose(NdArray x, ShapeSpec left, boolean anonymousReduced) {
      List<Axis> axes = left.axes();
      int named = axes.size() - (left.hasEllipsis() ? 1 : 0);
      long[] shape = x.shape();
      int ellipsisRank = shape.length - named;
      if (ellipsisRank < 0 || (!left.hasEllipsis() && ellipsisRank != 0)) {
        throw error(
            "the input has shape " + Arrays.toString(shape) + " (rank " + shape.length + ") but the left side \""
                + left + "\" has " + named + " axes" + (left.hasEllipsis() ? " besides '...'" : ""));
      }
      List<String> labels = new ArrayList<>();
      List<Long> sizes = new ArrayList<>();
      int dim = 0;
      int anonymous = 0;
      for (Axis a : axes) {
        switch (a) {
          case Axis.Ellipsis e -> {
            for (int j = 0; j < ellipsisRank; j++) {
              labels.add(ELLIPSIS + j);
              sizes.add(shape[dim++]);
            }
          }
          case Axis.Name n -> {
            bind(n.name(), shape[dim], "axis " + dim + " of the input " + Arrays.toString(shape));
            labels.add(n.name());
            sizes.add(shape[dim++]);
          }
          case Axis.Literal l -> {
            if (shape[dim] != l.value()) {
              throw error(
                  "the anonymous axis '" + l.value() + "' meets axis " + dim + " of size " + shape[dim]
                      + " in the input " + Arrays.toString(shape));
            }
            if (l.value() != 1) {
              if (!anonymousReduced) {
                throw error("an anonymous axis of size " + l.value() + " on the left side only makes sense in reduce");
              }
              labels.add("#" + anonymous++);
              sizes.add(l.value());
            }
            dim++;
          }
          case Axis.Group g -> {
            long total = shape[dim];
            String unknown = null;
            long known = 1;
            for (Axis m : g.members()) {
              switch (m) {
                case Axis.Name n -> {
                  Long v = given.get(n.name());
                  if (v == null) {
                    if (unknown != null) {
                      throw error(
                          "cannot split axis " + dim + " of size " + total + " into " + g + ": both '" + unknown
                              + "' and '" + n.name() + "' are unknown; pass one of their sizes");
                    }
                    unknown = n.name();
                  } else {
                    known *= v;
                  }
                }
                case Axis.Literal l -> known *= l.value();
                default -> throw arithmetic(m);
              }
            }
            if (unknown != null) {
              if (known == 0 || total % known != 0) {
                throw error(
                    "cannot split axis " + dim + " of size " + total + " into " + g + ": " + total
                        + " is not divisible by " + known);
              }
              given.put(unknown, total / known);
            } else if (known != total) {
              throw error(
                  "axis " + dim + " has size " + total + " but " + g + " multiplies to " + known + " with the given sizes");
            }
            for (Axis m : g.members()) {
              if (m instanceof Axis.Name n) {
                long v = given.get(n.name());
                bind(n.name(), v, "the group " + g);
                labels.add(n.name());
                sizes.add(v);
              } else if (m instanceof Axis.Literal l && l.value() != 1) {
                if (!anonymousReduced) {
                  throw error("an anonymous axis of size " + l.value() + " on the left side only makes sense in reduce");
                }
                labels.add("#" + anonymous++);
                sizes.add(l.value());
              }
            }
            dim++;
          }
          case Axis.BinOp b -> throw arithmetic(b);
        }
      }
      long[] elem = sizes.stream().mapToLong(Long::longValue).toArray();
      // Splitting dims and dropping unit dims is always a view.
      return new Elementary(x.view(elem), labels, ellipsisRank);
    }

    private void bind(String name, long size, String where) {
      Long want = given.get(name);
      if (want != null && want != size) {
        throw error("dim '" + name + "' has size " + size + " in " + where + " but the sizes say " + want);
      }
      bound.put(name, size);
    }

    private IllegalArgumentException arithmetic(Axis a) {
      return error(
          "dim arithmetic '" + a + "' is for @Shape declarations; in a pattern, name the axis and pass its size");
    }

    /** Permutes the elementary dims into the right side's order (adding new axes for repeat) and merges groups. */
    NdArray compose(Elementary e, ShapeSpec right, boolean newAxesAllowed) {
      List<String> target = new ArrayList<>();
      List<Long> targetSizes = new ArrayList<>();
      List<Long> finalSizes = new ArrayList<>();
      int anonymous = 0;
      for (Axis a : right.axes()) {
        boolean topEllipsis = a instanceof Axis.Ellipsis;
        List<Axis> members = a instanceof Axis.Group g ? g.members() : List.of(a);
        long product = 1;
        for (Axis m : members) {
          switch (m) {
            case Axis.Ellipsis x -> {
              for (int j = 0; j < e.ellipsisRank; j++) {
                String l = ELLIPSIS + j;
                long s = e.array.shape(e.labels.indexOf(l));
                target.add(l);
                targetSizes.add(s);
                product *= s;
                if (topEllipsis) {
                  finalSizes.add(s); // a bare '...' stays as its dims; only '(...)' merges them
                }
              }
            }
            case Axis.Name n -> {
              int at = e.labels.indexOf(n.name());
              long s;
              if (at >= 0) {
                s = e.array.shape(at);
              } else if (newAxesAllowed) {
                Long v = given.get(n.name());
                if (v == null) {
                  throw error(
                      "new dim '" + n.name() + "' needs a size: pass it, e.g. Map.of(\"" + n.name() + "\", 3)");
                }
                s = v;
              } else {
                throw error("dim '" + n.name() + "' is not on the left side");
              }
              target.add(n.name());
              targetSizes.add(s);
              product *= s;
            }
            case Axis.Literal l -> {
              if (l.value() != 1) {
                if (!newAxesAllowed) {
                  throw error("an anonymous axis of size " + l.value() + " on the right side needs repeat");
                }
                target.add("#new" + anonymous++);
                targetSizes.add(l.value());
              }
              product *= l.value();
            }
            default -> throw arithmetic(m);
          }
        }
        if (!topEllipsis) {
          finalSizes.add(product);
        }
      }
      long[] finalShape = finalSizes.stream().mapToLong(Long::longValue).toArray();
      // Permute the existing dims into target order, then insert the new ones as broadcast dims.
      int[] order = new int[e.labels.size()];
      int k = 0;
      for (String l : target) {
        int at = e.labels.indexOf(l);
        if (at >= 0) {
          order[k++] = at;
        }
      }
      if (k != e.labels.size()) {
        throw new IllegalStateException(op + " \"" + pattern + "\": internal error, lost a dim in " + e.labels);
      }
      NdArray y = e.array.permute(order);
      boolean added = false;
      for (int i = 0; i < target.size(); i++) {
        if (!e.labels.contains(target.get(i))) {
          y = y.unsqueeze(i);
          added = true;
        }
      }
      if (added) {
        y = y.expand(targetSizes.stream().mapToLong(Long::longValue).toArray());
      }
      if (!y.canView(finalShape)) {
        LAYOUT_COPIES.incrementAndGet();
      }
      return y.reshape(finalShape);
    }
  }

  // ================================================================ einsum

  /**
   * Einstein summation in einops style: {@code einsum("... d_in, d_out d_in -> ... d_out", x, w)}.
   *
   * <p><b>Semantics.</b> Any number of operands; a name in several operands must have one size there; {@code ...}
   * stands for the same dims in every operand, right-aligned, broadcasting size 1 against n (numpy rules); names
   * not in the output are summed. A name repeated within one operand ({@code "i i -> i"}) takes its diagonal (a
   * view). Operands must share one floating dtype; the result has it.
   *
   * <p><b>Lowering.</b> Operands are contracted pairwise, left to right (no search for the cheapest order: for
   * three or more operands, order them yourself). For each pair, every dim is batch (in both, needed later),
   * contracted (in both, not needed later), left-free or right-free (in one, needed later), or summed-alone (in
   * one, not needed later: reduced by {@link Reduce} before the product). The operands are then permuted into
   * {@code [batch.., m, k]} and {@code [batch.., k, n]} — views; merging several free or contracted dims into one is
   * a view when their strides allow it, and dims are ordered by stride so that it usually does — and multiplied by
   * one (batched) {@link Gemm#matmul}, which takes transposed layouts through BLAS's transpose flag. The product is
   * viewed back as {@code [batch.., left-free.., right-free..]} and finally permuted to the output order, so the
   * result may be a non-contiguous view of a fresh array. A spec with a single operand returns a fresh array too
   * (never a view of the operand).
   */
  public static NdArray einsum(String spec, NdArray... operands) {
    EinsumSpec s = ShapeParser.parseEinsum(spec);
    String where = "einsum \"" + spec + "\": ";
    if (operands.length != s.inputs().size()) {
      throw new IllegalArgumentException(
          where + "the spec has " + s.inputs().size() + " operands but " + operands.length + " were given");
    }
    DType dtype = operands[0].dtype();
    for (int i = 0; i < operands.length; i++) {
      if (!operands[i].dtype().isFloating() || operands[i].dtype() != dtype) {
        throw new IllegalArgumentException(
            where + "operands must share one floating dtype; operand 0 is " + dtype + ", operand " + i + " is "
                + operands[i].dtype());
      }
    }
    // Label every dim of every operand; ellipsis dims are "...j", j counted from the right so they align.
    int ellipsisRank = 0;
    List<Term> terms = new ArrayList<>();
    for (int i = 0; i < operands.length; i++) {
      ShapeSpec in = s.inputs().get(i);
      NdArray x = operands[i];
      int named = in.axes().size() - (in.hasEllipsis() ? 1 : 0);
      int er = x.rank() - named;
      if (er < 0 || (!in.hasEllipsis() && er != 0)) {
        throw new IllegalArgumentException(
            where + "operand " + i + " has shape " + Arrays.toString(x.shape()) + " but the spec names " + named
                + " dims \"" + in + "\"" + (in.hasEllipsis() ? " besides '...'" : ""));
      }
      ellipsisRank = Math.max(ellipsisRank, er);
      List<String> labels = new ArrayList<>();
      for (Axis a : in.axes()) {
        if (a instanceof Axis.Name n) {
          labels.add(n.name());
        } else {
          for (int j = er - 1; j >= 0; j--) {
            labels.add(ELLIPSIS + j);
          }
        }
      }
      terms.add(diagonal(new Term(x, labels), where, i));
    }
    // One size per label; ellipsis dims broadcast 1 against n.
    Map<String, Long> size = new LinkedHashMap<>();
    Map<String, Integer> sizeFrom = new HashMap<>();
    for (int i = 0; i < terms.size(); i++) {
      Term t = terms.get(i);
      for (int d = 0; d < t.labels.size(); d++) {
        String l = t.labels.get(d);
        long n = t.array.shape(d);
        Long prev = size.get(l);
        boolean broadcast = l.startsWith(ELLIPSIS) && (prev != null && (prev == 1 || n == 1));
        if (prev == null || (broadcast && prev == 1)) {
          size.put(l, n);
          sizeFrom.put(l, i);
        } else if (prev != n && !broadcast) {
          String name = l.startsWith(ELLIPSIS) ? "'...' dim " + l.substring(3) + " (counted from the right)" : "dim " + l;
          throw new IllegalArgumentException(
              where + "operand " + i + " " + name + " has size " + n + " but operand " + sizeFrom.get(l) + " says "
                  + prev);
        }
      }
    }
    List<String> output = new ArrayList<>();
    for (Axis a : s.output().axes()) {
      if (a instanceof Axis.Name n) {
        output.add(n.name());
      } else {
        for (int j = ellipsisRank - 1; j >= 0; j--) {
          output.add(ELLIPSIS + j);
        }
      }
    }
    Term cur = terms.get(0);
    for (int i = 1; i < terms.size(); i++) {
      Set<String> later = new LinkedHashSet<>(output);
      for (int j = i + 1; j < terms.size(); j++) {
        later.addAll(terms.get(j).labels);
      }
      Term next = terms.get(i);
      cur = sumAlone(cur, next.labels, later);
      next = sumAlone(next, cur.labels, later);
      cur = contract(cur, next, later);
    }
    cur = sumAlone(cur, List.of(), new LinkedHashSet<>(output));
    // Ellipsis dims that no operand of the last contraction had (only broadcast ones): add as unit/expanded dims.
    NdArray y = cur.array;
    List<String> labels = new ArrayList<>(cur.labels);
    for (String l : output) {
      if (!labels.contains(l)) {
        y = y.unsqueeze(y.rank());
        labels.add(l);
      }
    }
    int[] order = new int[output.size()];
    long[] outShape = new long[output.size()];
    for (int i = 0; i < output.size(); i++) {
      order[i] = labels.indexOf(output.get(i));
      outShape[i] = size.get(output.get(i));
    }
    y = y.permute(order);
    if (!Arrays.equals(y.shape(), outShape)) {
      y = y.expand(outShape).copy();
    }
    if (terms.size() == 1 && y.sharesStorageWith(operands[0])) {
      y = y.copy();
    }
    return y;
  }

  /** An operand with one label per dim. */
  private record Term(NdArray array, List<String> labels) {}

  /** Folds repeated labels into one dim whose stride is the sum of theirs: the diagonal, as a view. */
  private static Term diagonal(Term t, String where, int operand) {
    List<String> labels = new ArrayList<>();
    List<Long> shape = new ArrayList<>();
    List<Long> strides = new ArrayList<>();
    for (int d = 0; d < t.labels.size(); d++) {
      String l = t.labels.get(d);
      int at = labels.indexOf(l);
      if (at < 0) {
        labels.add(l);
        shape.add(t.array.shape(d));
        strides.add(t.array.stride(d));
      } else {
        if (shape.get(at) != t.array.shape(d)) {
          throw new IllegalArgumentException(
              where + "operand " + operand + " repeats dim " + l + " with sizes " + shape.get(at) + " and "
                  + t.array.shape(d) + "; a diagonal needs equal sizes");
        }
        strides.set(at, strides.get(at) + t.array.stride(d));
      }
    }
    if (labels.size() == t.labels.size()) {
      return t;
    }
    NdArray v =
        NdArray.of(
            t.array.storage(), t.array.dtype(), shape.stream().mapToLong(Long::longValue).toArray(),
            strides.stream().mapToLong(Long::longValue).toArray(), t.array.offset());
    return new Term(v, labels);
  }

  /** Sums the dims of {@code t} that are neither in {@code other} nor needed later. */
  private static Term sumAlone(Term t, List<String> other, Set<String> later) {
    List<Integer> dims = new ArrayList<>();
    List<String> kept = new ArrayList<>();
    for (int d = 0; d < t.labels.size(); d++) {
      String l = t.labels.get(d);
      if (!other.contains(l) && !later.contains(l)) {
        dims.add(d);
      } else {
        kept.add(l);
      }
    }
    if (dims.isEmpty()) {
      return t;
    }
    NdArray r = Reduce.reduce(t.array, Reduce.Op.SUM, dims.stream().mapToInt(Integer::intValue).toArray(), false);
    return new Term(r, kept);
  }

  /** One pairwise contraction as one (batched) GEMM. */
  private static Term contract(Term a, Term b, Set<String> later) {
    List<String> batch = new ArrayList<>();
    List<String> contracted = new ArrayList<>();
    List<String> leftFree = new ArrayList<>();
    List<String> rightFree = new ArrayList<>();
    for (String l : a.labels) {
      if (b.labels.contains(l)) {
        (later.contains(l) ? batch : contracted).add(l);
      } else {
        leftFree.add(l);
      }
    }
    for (String l : b.labels) {
      if (!a.labels.contains(l)) {
        rightFree.add(l);
      }
    }
    // Order free and contracted dims by decreasing stride so that merging them is a view when memory allows.
    // The contracted order must be one for both operands: take the bigger operand's, so a copy, if any, is small.
    byStride(leftFree, a);
    byStride(rightFree, b);
    byStride(contracted, a.array.numel() >= b.array.numel() ? a : b);
    // Sizes from the operands themselves: a '...' dim may be 1 here and broadcast only in a later operand.
    Map<String, Long> size = new HashMap<>();
    for (Term t : List.of(b, a)) {
      for (int d = 0; d < t.labels.size(); d++) {
        size.merge(t.labels.get(d), t.array.shape(d), Math::max);
      }
    }
    long m = product(leftFree, size);
    long n = product(rightFree, size);
    long k = product(contracted, size);
    long[] batchShape = new long[batch.size()];
    for (int i = 0; i < batch.size(); i++) {
      batchShape[i] = size.get(batch.get(i));
    }
    NdArray a3 = arrange(a, batch, leftFree, contracted, batchShape, m, k);
    NdArray b3 = arrange(b, batch, contracted, rightFree, batchShape, k, n);
    NdArray c = Gemm.matmul(a3, b3);
    List<String> labels = new ArrayList<>(batch);
    labels.addAll(leftFree);
    labels.addAll(rightFree);
    long[] shape = new long[labels.size()];
    for (int i = 0; i < shape.length; i++) {
      shape[i] = size.get(labels.get(i));
    }
    return new Term(c.view(shape), labels);
  }

  /** Views {@code t} as {@code [batch.., rows, cols]}: a permute, an expand of broadcast batch dims, a merge. */
  private static NdArray arrange(
      Term t, List<String> batch, List<String> rowLabels, List<String> colLabels, long[] batchShape, long rows,
      long cols) {
    int[] order = new int[t.labels.size()];
    int k = 0;
    for (List<String> group : List.of(batch, rowLabels, colLabels)) {
      for (String l : group) {
        order[k++] = t.labels.indexOf(l);
      }
    }
    NdArray p = t.array.permute(order);
    long[] merged = Arrays.copyOf(batchShape, batchShape.length + 2);
    merged[batchShape.length] = rows;
    merged[batchShape.length + 1] = cols;
    long[] withBatch = p.shape();
    System.arraycopy(batchShape, 0, withBatch, 0, batchShape.length);
    if (!Arrays.equals(withBatch, p.shape())) {
      p = p.expand(withBatch); // broadcast '...' dims of size 1: stride 0, no copy
    }
    if (!p.canView(merged)) {
      LAYOUT_COPIES.incrementAndGet();
    }
    return p.reshape(merged);
  }

  private static void byStride(List<String> labels, Term t) {
    labels.sort(Comparator.comparingLong((String l) -> -Math.abs(t.array.stride(t.labels.indexOf(l)))));
  }

  private static long product(List<String> labels, Map<String, Long> size) {
    long p = 1;
    for (String l : labels) {
      p = Math.multiplyExact(p, size.get(l));
    }
    return p;
  }
}
