package dev.kiln.runtime.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.shape.ShapeSyntaxException;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Reduce;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.Test;

class EinopsTest {
  private final Random rnd = new Random(42);

  private NdArray random(DType t, long... shape) {
    double[] v = new double[(int) NdArray.numel(shape)];
    for (int i = 0; i < v.length; i++) {
      v[i] = rnd.nextDouble() * 2 - 1;
    }
    NdArray d = shape.length == 0 ? NdArray.scalar(DType.F64, v[0]) : NdArray.fromDoubles(v, shape);
    return t == DType.F64 ? d : d.to(t);
  }

  private static NdArray iota(long... shape) {
    return NdArray.arange(DType.F64, NdArray.numel(shape)).view(shape);
  }

  // ================================================================ rearrange

  @Test
  void splitHeadsIsAView() {
    NdArray x = iota(2, 3, 8);
    NdArray y = Einops.rearrange(x, "b s (h d) -> b h s d", Map.of("h", 2));
    assertArrayEquals(new long[] {2, 2, 3, 4}, y.shape());
    assertTrue(y.sharesStorageWith(x), "split + permute is a view");
    for (long b = 0; b < 2; b++) {
      for (long h = 0; h < 2; h++) {
        for (long s = 0; s < 3; s++) {
          for (long d = 0; d < 4; d++) {
            assertEquals(x.getDouble(b, s, h * 4 + d), y.getDouble(b, h, s, d));
          }
        }
      }
    }
  }

  @Test
  void mergeHeadsCopiesOnlyWhenTheStridesRequire() {
    NdArray x = iota(2, 2, 3, 4); // b h s d
    long before = Einops.layoutCopies();
    NdArray y = Einops.rearrange(x, "b h s d -> b s (h d)");
    assertEquals(before + 1, Einops.layoutCopies(), "h and d are not adjacent after the permute: one copy");
    assertFalse(y.sharesStorageWith(x));
    for (long b = 0; b < 2; b++) {
      for (long h = 0; h < 2; h++) {
        for (long s = 0; s < 3; s++) {
          for (long d = 0; d < 4; d++) {
            assertEquals(x.getDouble(b, h, s, d), y.getDouble(b, s, h * 4 + d));
          }
        }
      }
    }
    NdArray flat = Einops.rearrange(x, "b h s d -> b (h s d)");
    assertTrue(flat.sharesStorageWith(x));
    assertEquals(before + 1, Einops.layoutCopies());
    assertArrayEquals(x.toDoubleArray(), flat.toDoubleArray(), 0.0);
  }

  @Test
  void ellipsisUnitsAndGroupsOfEllipsis() {
    NdArray x = iota(2, 3, 4, 5);
    NdArray y = Einops.rearrange(x, "... d -> (...) d");
    assertArrayEquals(new long[] {24, 5}, y.shape());
    assertTrue(y.sharesStorageWith(x));
    assertArrayEquals(x.toDoubleArray(), y.toDoubleArray(), 0.0);
    NdArray z = Einops.rearrange(x, "b ... -> b (...)");
    assertArrayEquals(new long[] {2, 60}, z.shape());
    NdArray t = Einops.rearrange(x, "a ... d -> d ... a");
    assertArrayEquals(new long[] {5, 3, 4, 2}, t.shape());
    assertEquals(x.getDouble(1, 2, 3, 4), t.getDouble(4, 2, 3, 1));
    NdArray u = Einops.rearrange(iota(2, 1, 3), "b 1 s -> b s () 1");
    assertArrayEquals(new long[] {2, 3, 1, 1}, u.shape());
    assertArrayEquals(iota(6).toDoubleArray(), u.toDoubleArray(), 0.0);
    NdArray img = iota(6, 4); // (h 2) (w 2) -> pixel shuffle
    NdArray ps = Einops.rearrange(img, "(h p) (w q) -> h w (p q)", Map.of("p", 2, "q", 2));
    assertArrayEquals(new long[] {3, 2, 4}, ps.shape());
    assertEquals(img.getDouble(2 * 2 + 1, 2 * 1 + 0), ps.getDouble(2, 1, 1 * 2 + 0));
  }

  @Test
  void rearrangeErrors() {
    NdArray x = iota(2, 3, 8);
    assertError(
        () -> Einops.rearrange(x, "b s (h d) -> b h s d"),
        "rearrange \"b s (h d) -> b h s d\": cannot split axis 2 of size 8 into (h d): both 'h' and 'd' are"
            + " unknown; pass one of their sizes");
    assertError(
        () -> Einops.rearrange(x, "b s (h d) -> b h s d", Map.of("h", 3)),
        "rearrange \"b s (h d) -> b h s d\": cannot split axis 2 of size 8 into (h d): 8 is not divisible by 3");
    assertError(
        () -> Einops.rearrange(x, "b s d -> b d", Map.of()),
        "rearrange \"b s d -> b d\": dim 's' is on the left side only; rearrange keeps every dim (use reduce to"
            + " drop it)");
    assertError(
        () -> Einops.rearrange(x, "b s d -> b s d", Map.of("s", 4)),
        "rearrange \"b s d -> b s d\": dim 's' has size 3 in axis 1 of the input [2, 3, 8] but the sizes say 4");
    assertError(
        () -> Einops.rearrange(x, "b s -> s b"),
        "rearrange \"b s -> s b\": the input has shape [2, 3, 8] (rank 3) but the left side \"b s\" has 2 axes");
    assertError(
        () -> Einops.rearrange(x, "b s d -> b s d/2"),
        "rearrange \"b s d -> b s d/2\": dim arithmetic 'd/2' is for @Shape declarations; in a pattern, name the"
            + " axis and pass its size");
    assertThrows(ShapeSyntaxException.class, () -> Einops.rearrange(x, "b s (h d -> b h s d"));
  }

  private static void assertError(Runnable r, String message) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, r::run);
    assertEquals(message, e.getMessage());
  }

  // ================================================================ repeat

  @Test
  void repeatAddsBroadcastViewsAndMaterialisesMerges() {
    NdArray x = iota(2, 3);
    NdArray y = Einops.repeat(x, "h w -> h w c", Map.of("c", 4));
    assertArrayEquals(new long[] {2, 3, 4}, y.shape());
    assertTrue(y.sharesStorageWith(x), "a separate new axis stays a stride-0 view");
    assertEquals(0, y.stride(2));
    NdArray tiled = Einops.repeat(x, "h w -> h (r w)", Map.of("r", 2));
    assertFalse(tiled.sharesStorageWith(x));
    NdArray up = Einops.repeat(x, "h w -> (h 2) w", Map.of());
    NdArray lead = Einops.repeat(x, "... w -> b ... w", Map.of("b", 2));
    for (long h = 0; h < 2; h++) {
      for (long w = 0; w < 3; w++) {
        for (long c = 0; c < 4; c++) {
          assertEquals(x.getDouble(h, w), y.getDouble(h, w, c));
        }
        for (long r = 0; r < 2; r++) {
          assertEquals(x.getDouble(h, w), tiled.getDouble(h, r * 3 + w));
          assertEquals(x.getDouble(h, w), up.getDouble(h * 2 + r, w));
          assertEquals(x.getDouble(h, w), lead.getDouble(r, h, w));
        }
      }
    }
    assertError(
        () -> Einops.repeat(x, "h w -> h w c", Map.of()),
        "repeat \"h w -> h w c\": new dim 'c' needs a size: pass it, e.g. Map.of(\"c\", 3)");
    assertError(
        () -> Einops.repeat(x, "h w -> h c", Map.of("c", 2)),
        "repeat \"h w -> h c\": dim 'w' is on the left side only; repeat keeps every input dim (use reduce)");
  }

  // ================================================================ reduce

  @Test
  void reduceAgainstLoops() {
    NdArray x = random(DType.F64, 2, 6, 3);
    NdArray mean = Einops.reduce(x, "b s d -> b d", Reduce.Op.MEAN, Map.of());
    NdArray pooled = Einops.reduce(x, "b (s 2) d -> b s d", Reduce.Op.MAX, Map.of());
    NdArray total = Einops.reduce(x, "... d -> d", Reduce.Op.SUM, Map.of());
    NdArray kept = Einops.reduce(x, "b s d -> b 1 d", Reduce.Op.MIN, Map.of());
    NdArray grouped = Einops.reduce(x, "b (s t) d -> (b t) d", Reduce.Op.SUM, Map.of("t", 3));
    assertArrayEquals(new long[] {2, 3}, mean.shape());
    assertArrayEquals(new long[] {2, 3, 3}, pooled.shape());
    assertArrayEquals(new long[] {3}, total.shape());
    assertArrayEquals(new long[] {2, 1, 3}, kept.shape());
    assertArrayEquals(new long[] {6, 3}, grouped.shape());
    // Sums of at most 12 doubles in [-1, 1]: any summation order agrees to 1e-14.
    double tol = 1e-14;
    for (long b = 0; b < 2; b++) {
      for (long d = 0; d < 3; d++) {
        double s = 0;
        double mn = Double.POSITIVE_INFINITY;
        for (long i = 0; i < 6; i++) {
          s += x.getDouble(b, i, d);
          mn = Math.min(mn, x.getDouble(b, i, d));
        }
        assertEquals(s / 6, mean.getDouble(b, d), tol);
        assertEquals(mn, kept.getDouble(b, 0, d));
        for (long i = 0; i < 3; i++) {
          assertEquals(Math.max(x.getDouble(b, 2 * i, d), x.getDouble(b, 2 * i + 1, d)), pooled.getDouble(b, i, d));
        }
        for (long t = 0; t < 3; t++) {
          assertEquals(x.getDouble(b, t, d) + x.getDouble(b, 3 + t, d), grouped.getDouble(b * 3 + t, d), tol);
        }
      }
    }
    for (long d = 0; d < 3; d++) {
      double s = 0;
      for (long b = 0; b < 2; b++) {
        for (long i = 0; i < 6; i++) {
          s += x.getDouble(b, i, d);
        }
      }
      assertEquals(s, total.getDouble(d), tol);
    }
    assertError(
        () -> Einops.reduce(x, "b s d -> b e", Reduce.Op.SUM, Map.of()),
        "reduce \"b s d -> b e\": dim 'e' is on the right side only; reduce adds no dims (use repeat)");
  }

  // ================================================================ einsum

  /** A spec with explicit labels, and the arrays for it. */
  private record Case(String spec, List<List<Character>> inputs, List<Character> output, Map<Character, Integer> size) {}

  private Case randomCase() {
    int nLabels = 1 + rnd.nextInt(6);
    Map<Character, Integer> size = new HashMap<>();
    List<Character> all = new ArrayList<>();
    for (int i = 0; i < nLabels; i++) {
      char c = (char) ('a' + i);
      all.add(c);
      size.put(c, 1 + rnd.nextInt(4));
    }
    int nOps = 2 + rnd.nextInt(2);
    List<List<Character>> inputs = new ArrayList<>();
    Set<Character> used = new LinkedHashSet<>();
    for (int o = 0; o < nOps; o++) {
      List<Character> shuffled = new ArrayList<>(all);
      Collections.shuffle(shuffled, rnd);
      List<Character> in = new ArrayList<>(shuffled.subList(0, rnd.nextInt(Math.min(4, nLabels) + 1)));
      if (!in.isEmpty() && rnd.nextInt(10) == 0) {
        in.add(rnd.nextInt(in.size() + 1), in.get(rnd.nextInt(in.size()))); // a diagonal
      }
      used.addAll(in);
      inputs.add(in);
    }
    List<Character> output = new ArrayList<>();
    for (char c : used) {
      if (rnd.nextBoolean()) {
        output.add(c);
      }
    }
    Collections.shuffle(output, rnd);
    StringBuilder spec = new StringBuilder();
    for (int o = 0; o < nOps; o++) {
      spec.append(o == 0 ? "" : ", ").append(join(inputs.get(o)));
    }
    spec.append(" -> ").append(join(output));
    return new Case(spec.toString(), inputs, output, size);
  }

  private static String join(List<Character> labels) {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < labels.size(); i++) {
      b.append(i == 0 ? "" : " ").append(labels.get(i));
    }
    return b.toString();
  }

  /** An array of this shape with random values, as a contiguous array or as a permuted or narrowed view. */
  private NdArray operand(DType t, long[] shape) {
    int r = shape.length;
    switch (rnd.nextInt(3)) {
      case 0 -> {
        return random(t, shape);
      }
      case 1 -> {
        List<Integer> perm = new ArrayList<>();
        for (int i = 0; i < r; i++) {
          perm.add(i);
        }
        Collections.shuffle(perm, rnd);
        long[] stored = new long[r];
        for (int i = 0; i < r; i++) {
          stored[i] = shape[perm.get(i)];
        }
        int[] back = new int[r];
        for (int i = 0; i < r; i++) {
          back[perm.get(i)] = i;
        }
        return random(t, stored).permute(back);
      }
      default -> {
        long[] bigger = shape.clone();
        for (int i = 0; i < r; i++) {
          bigger[i] += 2;
        }
        NdArray x = random(t, bigger);
        for (int i = 0; i < r; i++) {
          x = x.narrow(i, 1, shape[i]);
        }
        return x;
      }
    }
  }

  /**
   * The oracle: loops over every assignment of every label and accumulates the product of the operands'
   * elements, in float64; also returns sum |product| per output element, the scale of the rounding error.
   */
  private static double[][] naiveEinsum(Case c, NdArray[] ops) {
    List<Character> labels = new ArrayList<>(new LinkedHashSet<>(c.inputs.stream().flatMap(List::stream).toList()));
    long[] outShape = c.output.stream().mapToLong(l -> c.size.get(l)).toArray();
    int outN = (int) NdArray.numel(outShape);
    double[] out = new double[outN];
    double[] scale = new double[outN];
    int[] idx = new int[labels.size()];
    long total = 1;
    for (char l : labels) {
      total *= c.size.get(l);
    }
    for (long it = 0; it < total; it++) {
      long rem = it;
      for (int i = labels.size() - 1; i >= 0; i--) {
        idx[i] = (int) (rem % c.size.get(labels.get(i)));
        rem /= c.size.get(labels.get(i));
      }
      double p = 1;
      for (int o = 0; o < ops.length; o++) {
        List<Character> in = c.inputs.get(o);
        long[] at = new long[in.size()];
        for (int d = 0; d < at.length; d++) {
          at[d] = idx[labels.indexOf(in.get(d))];
        }
        p *= ops[o].getDouble(at);
      }
      int flat = 0;
      for (char l : c.output) {
        flat = flat * c.size.get(l) + idx[labels.indexOf(l)];
      }
      out[flat] += p;
      scale[flat] += Math.abs(p);
    }
    return new double[][] {out, scale};
  }

  @Test
  void randomSpecsAgainstNaiveLoops() {
    for (DType t : new DType[] {DType.F32, DType.F64}) {
      for (int trial = 0; trial < 150; trial++) {
        Case c = randomCase();
        NdArray[] ops = new NdArray[c.inputs.size()];
        for (int o = 0; o < ops.length; o++) {
          ops[o] = operand(t, c.inputs.get(o).stream().mapToLong(l -> c.size.get(l)).toArray());
        }
        NdArray got = Einops.einsum(c.spec, ops);
        double[][] ref = naiveEinsum(c, ops);
        long[] outShape = c.output.stream().mapToLong(l -> c.size.get(l)).toArray();
        assertArrayEquals(outShape, got.shape(), c.spec);
        assertEquals(t, got.dtype(), c.spec);
        // At most 4^6 products per element; the rounding error of a sum is below sqrt(n)·eps·sum|terms| for
        // random data. 1e-5 (F32) and 1e-13 (F64) per sqrt(term) leave ~100x margin over eps for the operation
        // order, which differs from the oracle's.
        double[] g = got.toDoubleArray();
        double perTerm = t == DType.F32 ? 1e-5 : 1e-13;
        for (int i = 0; i < g.length; i++) {
          double tol = perTerm * Math.sqrt(4096) * ref[1][i] + 1e-300;
          if (!(Math.abs(g[i] - ref[0][i]) <= tol)) {
            throw new AssertionError(
                t + " \"" + c.spec + "\" sizes " + c.size + ": element " + i + " expected " + ref[0][i] + " got "
                    + g[i]);
          }
        }
      }
    }
  }

  @Test
  void ellipsisAlignsFromTheRightAndBroadcasts() {
    NdArray x = random(DType.F64, 2, 3, 4);
    NdArray w = random(DType.F64, 5, 4);
    NdArray y = Einops.einsum("... d_in, d_out d_in -> ... d_out", x, w);
    assertArrayEquals(new long[] {2, 3, 5}, y.shape());
    for (long a = 0; a < 2; a++) {
      for (long b = 0; b < 3; b++) {
        for (long o = 0; o < 5; o++) {
          double s = 0;
          for (long i = 0; i < 4; i++) {
            s += x.getDouble(a, b, i) * w.getDouble(o, i);
          }
          assertEquals(s, y.getDouble(a, b, o), 1e-14); // 4 terms in [-1, 1] in double
        }
      }
    }
    // '...' of rank 2 against rank 1, with a broadcast size-1 dim.
    NdArray p = random(DType.F64, 2, 1, 3);
    NdArray q = random(DType.F64, 4, 3);
    NdArray r = Einops.einsum("... i, ... i -> ...", p, q);
    assertArrayEquals(new long[] {2, 4}, r.shape());
    for (long a = 0; a < 2; a++) {
      for (long b = 0; b < 4; b++) {
        double s = 0;
        for (long i = 0; i < 3; i++) {
          s += p.getDouble(a, 0, i) * q.getDouble(b, i);
        }
        assertEquals(s, r.getDouble(a, b), 1e-14);
      }
    }
  }

  @Test
  void singleOperandSpecs() {
    NdArray x = random(DType.F64, 3, 3);
    NdArray diag = Einops.einsum("i i -> i", x);
    NdArray trace = Einops.einsum("i i ->", x);
    NdArray t = Einops.einsum("i j -> j i", x);
    assertFalse(t.sharesStorageWith(x), "a single-operand einsum returns a fresh array");
    double tr = 0;
    for (long i = 0; i < 3; i++) {
      assertEquals(x.getDouble(i, i), diag.getDouble(i));
      tr += x.getDouble(i, i);
      for (long j = 0; j < 3; j++) {
        assertEquals(x.getDouble(i, j), t.getDouble(j, i));
      }
    }
    assertEquals(tr, trace.item(), 1e-15);
  }

  @Test
  void commonSpecsMakeNoCopies() {
    long gemmBefore = Gemm.operandCopies();
    long layoutBefore = Einops.layoutCopies();
    NdArray x = random(DType.F32, 2, 5, 8);
    NdArray w = random(DType.F32, 8, 6);
    NdArray y = Einops.einsum("b s d, d e -> b s e", x, w);
    NdArray q = random(DType.F32, 2, 3, 5, 4);
    NdArray k = random(DType.F32, 2, 3, 7, 4);
    NdArray scores = Einops.einsum("b h i d, b h j d -> b h i j", q, k);
    NdArray lin = random(DType.F32, 6, 8);
    NdArray z = Einops.einsum("... d_in, d_out d_in -> ... d_out", x, lin);
    NdArray v = random(DType.F32, 2, 3, 7, 4);
    NdArray att = Einops.einsum("b h i j, b h j d -> b h i d", scores, v);
    assertEquals(gemmBefore, Gemm.operandCopies(), "GEMM operand copies");
    assertEquals(layoutBefore, Einops.layoutCopies(), "einsum layout copies");
    assertArrayEquals(new long[] {2, 5, 6}, y.shape());
    assertArrayEquals(new long[] {2, 3, 5, 7}, scores.shape());
    assertArrayEquals(new long[] {2, 5, 6}, z.shape());
    assertArrayEquals(new long[] {2, 3, 5, 4}, att.shape());
    // Spot check one element of each against a dot product in double (8 or 4 terms in float32: 1e-5 absolute).
    double s = 0;
    for (long d = 0; d < 8; d++) {
      s += x.getDouble(1, 4, d) * w.getDouble(d, 5);
    }
    assertEquals(s, y.getDouble(1, 4, 5), 1e-5);
    s = 0;
    for (long d = 0; d < 4; d++) {
      s += q.getDouble(1, 2, 3, d) * k.getDouble(1, 2, 6, d);
    }
    assertEquals(s, scores.getDouble(1, 2, 3, 6), 1e-5);
  }

  @Test
  void einsumErrors() {
    NdArray a = random(DType.F32, 4, 2);
    NdArray b = random(DType.F32, 3, 5);
    assertError(
        () -> Einops.einsum("b i, b j -> b", a, b),
        "einsum \"b i, b j -> b\": operand 1 dim b has size 3 but operand 0 says 4");
    assertError(
        () -> Einops.einsum("b i, b j -> b", a),
        "einsum \"b i, b j -> b\": the spec has 2 operands but 1 were given");
    assertError(
        () -> Einops.einsum("b i j, j k -> b k", a, b),
        "einsum \"b i j, j k -> b k\": operand 0 has shape [4, 2] but the spec names 3 dims \"b i j\"");
    assertError(
        () -> Einops.einsum("i j, j k -> i k", a, NdArray.zeros(DType.F64, 2, 3)),
        "einsum \"i j, j k -> i k\": operands must share one floating dtype; operand 0 is F32, operand 1 is F64");
    assertError(
        () -> Einops.einsum("i i -> i", a),
        "einsum \"i i -> i\": operand 0 repeats dim i with sizes 4 and 2; a diagonal needs equal sizes");
    assertThrows(ShapeSyntaxException.class, () -> Einops.einsum("i j -> k", a));
  }
}
