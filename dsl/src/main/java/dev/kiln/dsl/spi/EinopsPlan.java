package dev.kiln.dsl.spi;

import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.ShapeParser;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * An einops pattern turned into device calls: {@code rearrange} is reshape, permute, reshape (views where the
 * strides allow, as einops does); {@code reduce} adds one {@link Device#reduce}; {@code repeat} one
 * {@link Device#expand}. Generated code holds one plan per pattern, parsed once; the processor has checked the
 * pattern against the operand's symbolic shape, so what remains here is arithmetic on the actual sizes.
 */
public final class EinopsPlan {
  private final EinopsPattern pattern;

  private EinopsPlan(EinopsPattern pattern) {
    this.pattern = pattern;
  }

  /**
   * Parses {@code pattern} ({@code "b s (h d) -> b h s d"}).
   *
   * @throws dev.kiln.dsl.shape.ShapeSyntaxException when it is malformed
   */
  public static EinopsPlan of(String pattern) {
    return new EinopsPlan(ShapeParser.parsePattern(pattern));
  }

  /** The pattern's text. */
  @Override
  public String toString() {
    return pattern.source();
  }

  /** {@code rearrange(x, pattern, sizes)}. */
  public Tensor rearrange(Device dev, Tensor x, Map<String, Long> sizes) {
    Bound b = bind(x.shape(), sizes);
    Tensor t = dev.reshape(x, b.split);
    int[] perm = new int[b.rightNames.size()];
    for (int i = 0; i < perm.length; i++) {
      perm[i] = indexIn(b.leftNames, b.rightNames.get(i), "rearrange");
    }
    if (perm.length != b.leftNames.size()) {
      throw new IllegalArgumentException("rearrange '" + pattern.source() + "': the sides name different dims");
    }
    if (!isIdentity(perm)) {
      t = dev.permute(t, perm);
    }
    return dev.reshape(t, b.out);
  }

  /** {@code reduce(x, pattern, how, sizes)} for {@link Reduction#SUM}, {@link Reduction#MAX} and {@link Reduction#MIN}. */
  public Tensor reduce(Device dev, Tensor x, Reduction how, Map<String, Long> sizes) {
    Bound b = bind(x.shape(), sizes);
    Tensor t = dev.reshape(x, b.split);
    List<Integer> reduced = new ArrayList<>();
    List<String> kept = new ArrayList<>();
    for (int i = 0; i < b.leftNames.size(); i++) {
      if (b.rightNames.contains(b.leftNames.get(i))) {
        kept.add(b.leftNames.get(i));
      } else {
        reduced.add(i);
      }
    }
    t = dev.reduce(how, t, reduced.stream().mapToInt(Integer::intValue).toArray(), false);
    int[] perm = new int[b.rightNames.size()];
    for (int i = 0; i < perm.length; i++) {
      perm[i] = indexIn(kept, b.rightNames.get(i), "reduce");
    }
    if (!isIdentity(perm)) {
      t = dev.permute(t, perm);
    }
    return dev.reshape(t, b.out);
  }

  /** {@code repeat(x, pattern, sizes)}: the dims only on the right are broadcast, then laid out contiguously. */
  public Tensor repeat(Device dev, Tensor x, Map<String, Long> sizes) {
    Bound b = bind(x.shape(), sizes);
    Tensor t = dev.reshape(x, b.split);
    List<String> keptInRightOrder = new ArrayList<>();
    for (String n : b.rightNames) {
      if (b.leftNames.contains(n)) {
        keptInRightOrder.add(n);
      }
    }
    int[] perm = new int[keptInRightOrder.size()];
    for (int i = 0; i < perm.length; i++) {
      perm[i] = indexIn(b.leftNames, keptInRightOrder.get(i), "repeat");
    }
    if (!isIdentity(perm)) {
      t = dev.permute(t, perm);
    }
    long[] withOnes = new long[b.rightNames.size()];
    for (int i = 0; i < withOnes.length; i++) {
      withOnes[i] = b.leftNames.contains(b.rightNames.get(i)) ? b.rightSizes[i] : 1;
    }
    t = dev.expand(dev.reshape(t, withOnes), b.rightSizes);
    return dev.reshape(dev.contiguous(t), b.out);
  }

  /** The elementary dims of both sides under actual sizes. */
  private static final class Bound {
    long[] split;
    final List<String> leftNames = new ArrayList<>();
    final List<String> rightNames = new ArrayList<>();
    long[] rightSizes;
    long[] out;
  }

  private Bound bind(long[] shape, Map<String, Long> given) {
    Map<String, Long> sizes = new HashMap<>(given);
    List<Axis> left = pattern.left().axes();
    int explicit = 0;
    boolean ellipsis = false;
    for (Axis a : left) {
      if (a instanceof Axis.Ellipsis) {
        ellipsis = true;
      } else {
        explicit++;
      }
    }
    if (ellipsis ? shape.length < explicit : shape.length != explicit) {
      throw new IllegalArgumentException("'" + pattern.source() + "': the input has shape " + Arrays.toString(shape)
          + " but the left side '" + pattern.left() + "' needs " + (ellipsis ? "at least " : "") + explicit + " dims");
    }
    int restLen = shape.length - explicit;
    Bound b = new Bound();
    List<Long> split = new ArrayList<>();
    int at = 0;
    for (Axis a : left) {
      switch (a) {
        case Axis.Ellipsis e -> {
          for (int i = 0; i < restLen; i++) {
            b.leftNames.add("..." + i);
            split.add(shape[at++]);
          }
        }
        case Axis.Name n -> {
          check(sizes, n.name(), shape[at]);
          sizes.put(n.name(), shape[at]);
          b.leftNames.add(n.name());
          split.add(shape[at++]);
        }
        case Axis.Literal l -> {
          if (shape[at] != l.value()) {
            throw new IllegalArgumentException("'" + pattern.source() + "': dim " + at + " of " + Arrays.toString(shape)
                + " is " + shape[at] + " but the pattern says " + l.value());
          }
          if (l.value() != 1) {
            throw new IllegalArgumentException("'" + pattern.source() + "': a literal size other than 1 cannot be"
                + " matched by name across the arrow");
          }
          at++; // an anonymous 1 is dropped
        }
        case Axis.BinOp op -> throw new IllegalArgumentException("'" + pattern.source() + "': arithmetic '" + op
            + "' must be inside a group");
        case Axis.Group g -> {
          long total = shape[at++];
          long known = 1;
          String unknown = null;
          for (Axis m : g.members()) {
            Axis.DimExpr e = (Axis.DimExpr) m;
            Long v = e.evaluate(sizes::get);
            if (v == null) {
              if (!(e instanceof Axis.Name n) || unknown != null) {
                throw new IllegalArgumentException("'" + pattern.source() + "': group " + g + " has more than one dim"
                    + " without a size; give them with size(...)");
              }
              unknown = n.name();
            } else {
              known *= v;
            }
          }
          if (unknown != null) {
            if (known == 0 || total % known != 0) {
              throw new IllegalArgumentException("'" + pattern.source() + "': " + total + " is not divisible by "
                  + known + " to split it into " + g);
            }
            sizes.put(unknown, total / known);
          } else if (known != total) {
            throw new IllegalArgumentException("'" + pattern.source() + "': group " + g + " is " + known
                + " but the dim is " + total);
          }
          for (Axis m : g.members()) {
            Axis.DimExpr e = (Axis.DimExpr) m;
            if (!(e instanceof Axis.Name n)) {
              throw new IllegalArgumentException("'" + pattern.source() + "': group members on the left must be names");
            }
            b.leftNames.add(n.name());
            split.add(sizes.get(n.name()));
          }
        }
      }
    }
    b.split = split.stream().mapToLong(Long::longValue).toArray();
    List<Long> rightSizes = new ArrayList<>();
    List<Long> out = new ArrayList<>();
    int anon = 0;
    for (Axis a : pattern.right().axes()) {
      long product = 1;
      List<Axis> members = a instanceof Axis.Group g ? g.members() : List.of(a);
      for (Axis m : members) {
        switch (m) {
          case Axis.Ellipsis e -> {
            for (int i = 0; i < restLen; i++) {
              b.rightNames.add("..." + i);
              long s = b.split[b.leftNames.indexOf("..." + i)];
              rightSizes.add(s);
              product *= s;
              if (a instanceof Axis.Ellipsis) {
                out.add(s);
              }
            }
          }
          case Axis.Name n -> {
            Long s = sizes.get(n.name());
            if (s == null) {
              throw new IllegalArgumentException("'" + pattern.source() + "': '" + n.name() + "' has no size; give it"
                  + " with size(\"" + n.name() + "\", ...)");
            }
            b.rightNames.add(n.name());
            rightSizes.add(s);
            product *= s;
          }
          case Axis.Literal l when l.value() == 1 -> {
            b.rightNames.add("1#" + anon++);
            rightSizes.add(1L);
          }
          default -> throw new IllegalArgumentException("'" + pattern.source() + "': '" + m + "' on the right must be"
              + " a name, 1 or ...");
        }
      }
      if (!(a instanceof Axis.Ellipsis)) {
        out.add(product);
      }
    }
    // Anonymous 1s on the right are new size-1 dims: they take part as dims the left does not have.
    b.rightSizes = rightSizes.stream().mapToLong(Long::longValue).toArray();
    b.out = out.stream().mapToLong(Long::longValue).toArray();
    if (b.rightNames.stream().anyMatch(n -> n.startsWith("1#"))) {
      // rearrange/reduce: drop them for the permutation, the final reshape puts them back.
      List<String> names = new ArrayList<>();
      List<Long> sz = new ArrayList<>();
      for (int i = 0; i < b.rightNames.size(); i++) {
        if (!b.rightNames.get(i).startsWith("1#")) {
          names.add(b.rightNames.get(i));
          sz.add(b.rightSizes[i]);
        }
      }
      b.rightNames.clear();
      b.rightNames.addAll(names);
      b.rightSizes = sz.stream().mapToLong(Long::longValue).toArray();
    }
    return b;
  }

  private void check(Map<String, Long> sizes, String name, long actual) {
    Long s = sizes.get(name);
    if (s != null && s != actual) {
      throw new IllegalArgumentException("'" + pattern.source() + "': '" + name + "' is " + actual
          + " in the input but was given as " + s);
    }
  }

  private int indexIn(List<String> names, String name, String op) {
    int i = names.indexOf(name);
    if (i < 0) {
      throw new IllegalArgumentException(op + " '" + pattern.source() + "': '" + name + "' is not on the left side");
    }
    return i;
  }

  private static boolean isIdentity(int[] perm) {
    for (int i = 0; i < perm.length; i++) {
      if (perm[i] != i) {
        return false;
      }
    }
    return true;
  }
}
