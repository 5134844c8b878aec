package dev.kiln.dsl.shape;

import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Function;

/**
 * One axis of a shape string, with its character span {@code [start, end)} in the source.
 *
 * <p>An axis is a dim expression (a {@link Name}, a {@link Literal} size, or {@link BinOp} arithmetic on those), the
 * {@link Ellipsis} {@code ...}, or a {@link Group} {@code (h d)} whose members are dim expressions or {@code ...}.
 * {@code toString()} gives the canonical text, which parses back to the same tree.
 */
public sealed interface Axis permits Axis.DimExpr, Axis.Ellipsis, Axis.Group {

  /** Offset of the first character in the source. */
  int start();

  /** Offset one past the last character in the source. */
  int end();

  /** A dim expression: a name, a literal size, or arithmetic on them. */
  sealed interface DimExpr extends Axis permits Name, Literal, BinOp {

    /**
     * The value, looking names up in {@code sizes}; {@code null} when some name is unknown (returns null).
     *
     * @throws IllegalArgumentException when a division is not exact or a result is negative
     */
    Long evaluate(Function<String, Long> sizes);

    /** The names this expression mentions, in order of appearance. */
    default Set<String> names() {
      Set<String> out = new LinkedHashSet<>();
      collectNames(this, out);
      return out;
    }

    private static void collectNames(DimExpr e, Set<String> out) {
      switch (e) {
        case Name n -> out.add(n.name());
        case Literal l -> {}
        case BinOp b -> {
          collectNames(b.left(), out);
          collectNames(b.right(), out);
        }
      }
    }
  }

  /** A named dim: {@code d_model}. */
  record Name(String name, int start, int end) implements DimExpr {
    public Name {
      if (!ShapeParser.isName(name)) {
        throw new IllegalArgumentException("not a dim name: '" + name + "'");
      }
    }

    @Override
    public Long evaluate(Function<String, Long> sizes) {
      return sizes.apply(name);
    }

    @Override
    public String toString() {
      return name;
    }
  }

  /** A literal size: {@code 3}; {@code 1} is einops' anonymous unit axis. */
  record Literal(long value, int start, int end) implements DimExpr {
    public Literal {
      if (value < 0) {
        throw new IllegalArgumentException("negative size " + value);
      }
    }

    @Override
    public Long evaluate(Function<String, Long> sizes) {
      return value;
    }

    @Override
    public String toString() {
      return Long.toString(value);
    }
  }

  /** The operators of dim arithmetic; {@code *} and {@code /} bind tighter than {@code +} and {@code -}. */
  enum Op {
    ADD('+', 1),
    SUB('-', 1),
    MUL('*', 2),
    DIV('/', 2);

    private final char symbol;
    private final int precedence;

    Op(char symbol, int precedence) {
      this.symbol = symbol;
      this.precedence = precedence;
    }

    public char symbol() {
      return symbol;
    }

    public int precedence() {
      return precedence;
    }
  }

  /**
   * Arithmetic on dims, written without spaces ({@code d_model/heads}, {@code 2*d}, {@code d+1}). Operators are
   * left-associative with the usual precedence. Parentheses always mean a group, so the grammar has no way to
   * write {@code a-(b-c)}: the constructor rejects trees that would need parentheses, which keeps
   * {@code toString()} a faithful round trip.
   */
  record BinOp(Op op, DimExpr left, DimExpr right, int start, int end) implements DimExpr {
    public BinOp {
      if (left instanceof BinOp l && l.op.precedence < op.precedence) {
        throw new IllegalArgumentException("'" + left + "' would need parentheses as the left operand of " + op.symbol);
      }
      if (right instanceof BinOp r && r.op.precedence <= op.precedence) {
        throw new IllegalArgumentException(
            "'" + right + "' would need parentheses as the right operand of " + op.symbol);
      }
    }

    @Override
    public Long evaluate(Function<String, Long> sizes) {
      Long a = left.evaluate(sizes);
      Long b = right.evaluate(sizes);
      if (a == null || b == null) {
        return null;
      }
      long v =
          switch (op) {
            case ADD -> Math.addExact(a, b);
            case SUB -> a - b;
            case MUL -> Math.multiplyExact(a, b);
            case DIV -> {
              if (b == 0 || a % b != 0) {
                throw new IllegalArgumentException(
                    "'" + this + "': " + a + " is not divisible by " + b + " (dim arithmetic must be exact)");
              }
              yield a / b;
            }
          };
      if (v < 0) {
        throw new IllegalArgumentException("'" + this + "' is negative: " + a + " " + op.symbol + " " + b + " = " + v);
      }
      return v;
    }

    @Override
    public String toString() {
      return left.toString() + op.symbol + right;
    }
  }

  /** {@code ...}: any number of dims, at most once per shape. */
  record Ellipsis(int start, int end) implements Axis {
    @Override
    public String toString() {
      return "...";
    }
  }

  /**
   * {@code (h d)}: several dims merged into one axis of their product, one level deep (as einops). Members are dim
   * expressions or {@code ...}; an empty group {@code ()} is an axis of size 1.
   */
  record Group(List<Axis> members, int start, int end) implements Axis {
    public Group {
      members = List.copyOf(members);
      for (Axis m : members) {
        if (m instanceof Group) {
          throw new IllegalArgumentException("groups do not nest: " + m);
        }
      }
    }

    @Override
    public String toString() {
      StringBuilder b = new StringBuilder("(");
      for (int i = 0; i < members.size(); i++) {
        b.append(i == 0 ? "" : " ").append(members.get(i));
      }
      return b.append(')').toString();
    }
  }
}
