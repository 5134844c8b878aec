package dev.kiln.processor.fuse;

import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * Lets a sub-module's backward add to its arguments' gradients itself. In a backward block, {@code add(a, d)} where
 * {@code d} is the gradient a callee's backward returns for an argument, nothing else reads {@code d}, and {@code a}
 * exists before the call, becomes the callee's backward called with {@code a} as that argument's addend
 * ({@link Node.CallGrad#plus}; the callee's {@code backward(ctx, params, dOut, plus...)}), and the add's result
 * becomes the gradient the call returns. The callee adds inside the kernel that computes the gradient, so the sum
 * costs one more read there instead of a kernel of its own that reads both and writes the sum: in a pre-norm
 * Transformer block, the residual stream's gradient plus the norm's input gradient.
 *
 * <p>Only for a callee whose backward has that form ({@code addends}: which arguments its form takes an addend for,
 * null where it has none), and only where each of those arguments has a gradient here with such an add. The sum is the same number ({@code a + d} is
 * commutative in IEEE arithmetic), so results do not change by a bit.
 */
public final class CallGradAddends {
  private CallGradAddends() {}

  public static void run(Block top, Function<Node.Call, boolean[]> addends) {
    Map<Value, Integer> uses = new HashMap<>();
    count(top, uses);
    rewrite(top, new HashSet<>(top.params()), addends, uses);
  }

  private static void rewrite(Block b, Set<Value> outer, Function<Node.Call, boolean[]> addends,
      Map<Value, Integer> uses) {
    Set<Value> available = new HashSet<>(outer);
    available.addAll(b.params());
    List<Node> nodes = b.nodes();
    for (int i = 0; i < nodes.size(); i++) {
      Node n = nodes.get(i);
      boolean[] takes = n instanceof Node.CallGrad g && !g.adds() && g.call().component() != null
          ? addends.apply(g.call()) : null;
      if (takes != null) {
        Node.CallGrad fused = fuse((Node.CallGrad) n, takes, nodes, i, available, uses);
        if (fused != null) {
          nodes.set(i, fused);
          n = fused;
        }
      }
      switch (n) {
        case Node.Branch br -> {
          rewrite(br.then(), available, addends, uses);
          rewrite(br.otherwise(), available, addends, uses);
        }
        case Node.LoopGrad l -> rewrite(l.body(), available, addends, uses);
        case Node.Loop l -> rewrite(l.body(), available, addends, uses);
        default -> {}
      }
      available.addAll(n.outputs());
    }
  }

  /** The call with its addends, the adds removed from {@code nodes}; null where some gradient has no such add. */
  private static Node.CallGrad fuse(Node.CallGrad g, boolean[] takes, List<Node> nodes, int at,
      Set<Value> available, Map<Value, Integer> uses) {
    List<Value> dArgs = new ArrayList<>(g.dArgs());
    List<Value> plus = new ArrayList<>(g.plus());
    List<Node.Prim> adds = new ArrayList<>();
    boolean any = false;
    for (int k = 0; k < dArgs.size(); k++) {
      Value d = dArgs.get(k);
      boolean taken = k < takes.length && takes[k];
      if (taken != (d != null)) {
        return null; // the form takes exactly the addends of the gradients the callee returns
      }
      if (d == null) {
        continue;
      }
      Node.Prim add = uses.getOrDefault(d, 0) == 1 ? addReading(d, nodes, at) : null;
      if (add == null) {
        return null;
      }
      Value a = add.inputs().get(0) == d ? add.inputs().get(1) : add.inputs().get(0);
      if (a == d || !available.contains(a) || a.shape() == null || !a.shape().equals(d.shape())
          || a.elem() != d.elem()) {
        return null;
      }
      dArgs.set(k, add.out());
      plus.set(k, a);
      adds.add(add);
      any = true;
    }
    if (!any) {
      return null;
    }
    nodes.removeIf(n -> adds.stream().anyMatch(x -> x == n));
    return new Node.CallGrad(g.call(), g.dOut(), dArgs, plus);
  }

  /** The plain two-operand add after {@code at} in {@code nodes} that reads {@code d}, or null. */
  private static Node.Prim addReading(Value d, List<Node> nodes, int at) {
    for (int j = at + 1; j < nodes.size(); j++) {
      if (nodes.get(j) instanceof Node.Prim p && p.op() == Primitive.ADD && p.inputs().size() == 2
          && p.inputs().contains(d) && !(p.attr() instanceof Attr.Const) && p.out().shape() != null
          && p.out().shape().equals(d.shape())) {
        return p;
      }
    }
    return null;
  }

  /** How often each value is read, in nested blocks too (a block's results count as reads). */
  private static void count(Block b, Map<Value, Integer> uses) {
    for (Node n : b.nodes()) {
      Fusion.inputsOf(n).forEach(v -> uses.merge(v, 1, Integer::sum));
    }
    b.results().forEach(v -> uses.merge(v, 1, Integer::sum));
  }
}
