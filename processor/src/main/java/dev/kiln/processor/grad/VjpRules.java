package dev.kiln.processor.grad;

import static dev.kiln.processor.ir.Primitive.ADD;
import static dev.kiln.processor.ir.Primitive.COS;
import static dev.kiln.processor.ir.Primitive.DIV;
import static dev.kiln.processor.ir.Primitive.EXPAND;
import static dev.kiln.processor.ir.Primitive.GREATER;
import static dev.kiln.processor.ir.Primitive.LESS;
import static dev.kiln.processor.ir.Primitive.MUL;
import static dev.kiln.processor.ir.Primitive.NEG;
import static dev.kiln.processor.ir.Primitive.SIN;
import static dev.kiln.processor.ir.Primitive.SUB;
import static dev.kiln.processor.ir.Primitive.WHERE;

import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.GradBuilder;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The vector-Jacobian product of every primitive. Each rule is the textbook derivative written in primitives, so
 * the backward graph is IR like the forward one and goes through the same lowering and fusion. Where an input was
 * broadcast, its contribution is summed back to its own shape ({@link GradBuilder#sumTo}).
 */
public final class VjpRules {
  private VjpRules() {}

  private static List<Value> list(Value... v) {
    return Arrays.asList(v);
  }

  private static Value in(Node.Prim n, int i) {
    return n.inputs().get(i);
  }

  private static Shape yShape(Node.Prim n) {
    return n.out().shape();
  }

  // ---- unary: dx = g * f'(x), written with y = f(x) where that is cheaper

  public static List<Value> neg(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(b.prim(NEG, yShape(n), g));
  }

  public static List<Value> exp(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(b.prim(MUL, yShape(n), g, n.out()));
  }

  public static List<Value> log(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(b.prim(DIV, yShape(n), g, in(n, 0)));
  }

  /** d sqrt(x) = 1 / (2 sqrt(x)). */
  public static List<Value> sqrt(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(b.prim(DIV, yShape(n), b.prim(MUL, yShape(n), g, b.constant(0.5)), n.out()));
  }

  /** d x^(-1/2) = -x^(-3/2) / 2 = -y^3 / 2. */
  public static List<Value> rsqrt(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    Value y = n.out();
    Value y3 = b.prim(MUL, s, b.prim(MUL, s, y, y), y);
    return list(b.prim(MUL, s, g, b.prim(MUL, s, y3, b.constant(-0.5))));
  }

  public static List<Value> tanh(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    Value y = n.out();
    return list(b.prim(MUL, s, g, b.prim(SUB, s, b.constant(1), b.prim(MUL, s, y, y))));
  }

  public static List<Value> sigmoid(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    Value y = n.out();
    return list(b.prim(MUL, s, g, b.prim(MUL, s, y, b.prim(SUB, s, b.constant(1), y))));
  }

  public static List<Value> cos(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    return list(b.prim(NEG, s, b.prim(MUL, s, g, b.prim(SIN, s, in(n, 0)))));
  }

  public static List<Value> sin(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    return list(b.prim(MUL, s, g, b.prim(COS, s, in(n, 0))));
  }

  // ---- binary, with broadcasting summed away

  public static List<Value> add(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(need[0] ? b.sumTo(g, in(n, 0)) : null, need[1] ? b.sumTo(g, in(n, 1)) : null);
  }

  public static List<Value> sub(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    return list(need[0] ? b.sumTo(g, in(n, 0)) : null,
        need[1] ? b.sumTo(b.prim(NEG, yShape(n), g), in(n, 1)) : null);
  }

  public static List<Value> mul(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    return list(need[0] ? b.sumTo(b.prim(MUL, s, g, in(n, 1)), in(n, 0)) : null,
        need[1] ? b.sumTo(b.prim(MUL, s, g, in(n, 0)), in(n, 1)) : null);
  }

  /** d(a/b)/db = -a/b² = -y/b. */
  public static List<Value> div(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    return list(need[0] ? b.sumTo(b.prim(DIV, s, g, in(n, 1)), in(n, 0)) : null,
        need[1] ? b.sumTo(b.prim(NEG, s, b.prim(DIV, s, b.prim(MUL, s, g, n.out()), in(n, 1))), in(n, 1)) : null);
  }

  /** The larger input takes the gradient; on a tie the first one does (as {@code torch.maximum}'s subgradient). */
  public static List<Value> maximum(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    Value secondWins = b.prim(LESS, new Attr.None(), Value.Elem.BOOL, s, in(n, 0), in(n, 1));
    return list(need[0] ? b.sumTo(b.prim(WHERE, s, secondWins, b.constant(0), g), in(n, 0)) : null,
        need[1] ? b.sumTo(b.prim(WHERE, s, secondWins, g, b.constant(0)), in(n, 1)) : null);
  }

  public static List<Value> where(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Shape s = yShape(n);
    Value c = in(n, 0);
    return list(null,
        need[1] ? b.sumTo(b.prim(WHERE, s, c, g, b.constant(0)), in(n, 1)) : null,
        need[2] ? b.sumTo(b.prim(WHERE, s, c, b.constant(0), g), in(n, 2)) : null);
  }

  // ---- reductions over the last axis or all axes

  /** The adjoint of a reduction's output, shaped so it broadcasts against the input. */
  private static Value keepShaped(GradBuilder b, Node.Prim n, Value v) {
    Attr.Axes a = (Attr.Axes) n.attr();
    if (a.all() || a.keep()) {
      return v;
    }
    Shape s = v.shape().withTail(0, List.of(Dim.of(1)));
    return b.prim(Primitive.REARRANGE, pattern("... -> ... 1"), Value.Elem.FLOAT, s, v);
  }

  public static List<Value> sum(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    return list(b.prim(EXPAND, x.shape(), keepShaped(b, n, g), x));
  }

  /** The gradient goes to every maximal element (where {@code x == max}); ties share it, each getting all of it. */
  public static List<Value> max(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    Value below = b.prim(LESS, new Attr.None(), Value.Elem.BOOL, x.shape(), x, keepShaped(b, n, n.out()));
    return list(b.prim(WHERE, x.shape(), below, b.constant(0), keepShaped(b, n, g)));
  }

  // ---- einsum: the adjoint of operand i is the einsum of the output adjoint with the other operands

  public static List<Value> einsum(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    EinsumSpec spec = ((Attr.Einsum) n.attr()).spec();
    List<Value> out = new ArrayList<>();
    for (int i = 0; i < n.inputs().size(); i++) {
      if (!need[i]) {
        out.add(null);
        continue;
      }
      ShapeSpec target = spec.inputs().get(i);
      List<ShapeSpec> sides = new ArrayList<>();
      List<Value> operands = new ArrayList<>();
      sides.add(spec.output());
      operands.add(g);
      Set<String> available = new HashSet<>(names(spec.output()));
      for (int j = 0; j < n.inputs().size(); j++) {
        if (j != i) {
          sides.add(spec.inputs().get(j));
          operands.add(in(n, j));
          available.addAll(names(spec.inputs().get(j)));
        }
      }
      List<String> targetNames = names(target);
      if (new HashSet<>(targetNames).size() != targetNames.size()) {
        throw new GradException("the gradient of einsum '" + spec.source() + "' with a repeated name in operand "
            + (i + 1) + " (a diagonal)");
      }
      for (String t : targetNames) {
        if (!available.contains(t)) {
          throw new GradException("the gradient of einsum '" + spec.source() + "': '" + t + "' of operand " + (i + 1)
              + " is summed away without appearing in another operand (sum it with reduce first)");
        }
      }
      StringBuilder text = new StringBuilder();
      List<ShapeSpec> parsed = new ArrayList<>();
      for (ShapeSpec side : sides) {
        text.append(text.isEmpty() ? "" : ", ").append(side);
        parsed.add(ShapeParser.parseShape(side.toString()));
      }
      text.append(" -> ").append(target);
      // Built side by side: the parser would refuse an output without the '...' the inputs sum over.
      EinsumSpec back = new EinsumSpec(text.toString(), parsed, ShapeParser.parseShape(target.toString()));
      Value operand = in(n, i);
      Value d = b.prim(Primitive.EINSUM, new Attr.Einsum(back), Value.Elem.FLOAT, operand.shape(),
          operands.toArray(Value[]::new));
      out.add(d);
    }
    return out;
  }

  private static List<String> names(ShapeSpec s) {
    List<String> out = new ArrayList<>();
    for (Axis a : s.axes()) {
      out.add(a instanceof Axis.Name nm ? nm.name() : a.toString());
    }
    return out;
  }

  // ---- einops patterns: undo the op

  private static final Map<String, EinopsPattern> PATTERNS = new java.util.concurrent.ConcurrentHashMap<>();

  private static Attr.Pattern pattern(String p) {
    return new Attr.Pattern(PATTERNS.computeIfAbsent(p, ShapeParser::parsePattern), Map.of(), Reduction.SUM);
  }

  private static Attr.Inverse inverse(Node.Prim n) {
    Attr.Pattern p = (Attr.Pattern) n.attr();
    EinopsPattern inv = ShapeParser.parsePattern(p.pattern().right() + " -> " + p.pattern().left());
    return new Attr.Inverse(p.pattern(), p.sizes(), inv);
  }

  public static List<Value> rearrange(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    return list(b.prim(Primitive.REARRANGE, inverse(n), Value.Elem.FLOAT, x.shape(), g, x));
  }

  /** The adjoint of a repeat sums over the repeated dims. */
  public static List<Value> repeat(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    return list(b.prim(Primitive.REDUCE_PATTERN, inverse(n), Value.Elem.FLOAT, x.shape(), g, x));
  }

  public static List<Value> reducePattern(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    Attr.Pattern p = (Attr.Pattern) n.attr();
    Value gx = b.prim(Primitive.REPEAT, inverse(n), Value.Elem.FLOAT, x.shape(), g, x);
    if (p.how() == Reduction.SUM) {
      return list(gx);
    }
    Value yx = b.prim(Primitive.REPEAT, inverse(n), Value.Elem.FLOAT, x.shape(), n.out(), x);
    Primitive loser = p.how() == Reduction.MAX ? LESS : GREATER;
    Value notExtreme = b.prim(loser, new Attr.None(), Value.Elem.BOOL, x.shape(), x, yx);
    return list(b.prim(WHERE, x.shape(), notExtreme, b.constant(0), gx));
  }

  // ---- indexing

  public static List<Value> gather(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value table = in(n, 0);
    return list(b.prim(Primitive.SCATTER_ROWS, table.shape(), in(n, 1), g, table), null);
  }

  // ---- cross-entropy: softmax minus the one-hot target, scaled by the loss's gradient, in one device call

  public static List<Value> crossEntropy(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value logits = in(n, 0);
    return list(b.prim(Primitive.CROSS_ENTROPY_GRAD, logits.shape(), logits, in(n, 1), g), null);
  }

  public static List<Value> topkValues(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value x = in(n, 0);
    Value idx = b.prim(Primitive.TOPK_INDICES, n.attr(), Value.Elem.INT, n.out().shape(), x);
    return list(b.prim(Primitive.SCATTER_LAST, x.shape(), idx, g, x));
  }

  // ---- RoPE: a rotation; its transpose is the rotation by minus the angle

  public static List<Value> rope(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Attr.Rope r = (Attr.Rope) n.attr();
    return list(b.prim(Primitive.ROPE, new Attr.Rope(r.theta(), !r.inverse()), Value.Elem.FLOAT, in(n, 0).shape(), g,
        in(n, 1)), null);
  }

  // ---- attention: one device call computes all three

  public static List<Value> attention(GradBuilder b, Node.Prim n, Value g, boolean[] need) {
    Value[] args = {in(n, 0), in(n, 1), in(n, 2), n.out(), g};
    return list(
        need[0] ? b.prim(Primitive.ATTENTION_DQ, n.attr(), Value.Elem.FLOAT, in(n, 0).shape(), args) : null,
        need[1] ? b.prim(Primitive.ATTENTION_DK, n.attr(), Value.Elem.FLOAT, in(n, 1).shape(), args) : null,
        need[2] ? b.prim(Primitive.ATTENTION_DV, n.attr(), Value.Elem.FLOAT, in(n, 2).shape(), args) : null);
  }
}
