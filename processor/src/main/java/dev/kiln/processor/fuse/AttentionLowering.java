package dev.kiln.processor.fuse;

import dev.kiln.dsl.Mask;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import java.util.ArrayList;
import java.util.List;

/**
 * Lowering, first step (before grad): each expansion of the {@code attention} composite becomes one
 * {@link Primitive#ATTENTION} node, so forward and backward are one device call each (a flash-attention kernel on
 * CUDA) and the {@code s × t} score matrix is never part of the graph.
 */
public final class AttentionLowering {
  private AttentionLowering() {}

  public static void run(Graph g) {
    block(g.body());
  }

  private static void block(Block b) {
    List<Node> out = new ArrayList<>();
    List<Node> nodes = b.nodes();
    for (int i = 0; i < nodes.size(); i++) {
      Node n = nodes.get(i);
      if (n instanceof Node.Prim p && "attention".equals(p.composite())) {
        int j = i;
        List<Node.Prim> group = new ArrayList<>();
        while (j < nodes.size() && nodes.get(j) instanceof Node.Prim q && "attention".equals(q.composite())
            && q.group() == p.group()) {
          group.add(q);
          j++;
        }
        out.add(collapse(group));
        i = j - 1;
        continue;
      }
      switch (n) {
        case Node.Loop l -> block(l.body());
        case Node.Branch br -> {
          block(br.then());
          block(br.otherwise());
        }
        default -> {}
      }
      out.add(n);
    }
    nodes.clear();
    nodes.addAll(out);
  }

  /** The composite is {@code einsum(q, k) * scale [masked] → softmax → einsum(·, v)} (see Composites.attention). */
  private static Node.Prim collapse(List<Node.Prim> group) {
    Node.Prim scores = group.get(0);
    Node.Prim last = group.get(group.size() - 1);
    if (scores.op() != Primitive.EINSUM || last.op() != Primitive.EINSUM) {
      throw new IllegalStateException("the attention composite changed shape; update AttentionLowering");
    }
    Mask mask = Mask.NONE;
    Scalar scale = null;
    for (Node.Prim p : group) {
      if (p.op() == Primitive.WHERE) {
        mask = Mask.CAUSAL;
      }
      if (p.op() == Primitive.CONST && scale == null) {
        scale = ((Attr.Const) p.attr()).value();
      }
    }
    return new Node.Prim(Primitive.ATTENTION,
        List.of(scores.inputs().get(0), scores.inputs().get(1), last.inputs().get(1)), new Attr.Attention(mask, scale),
        last.out(), scores.pos(), List.of(scores.argPos().get(0), scores.argPos().get(1), last.argPos().get(1)),
        null, null, 0);
  }
}
