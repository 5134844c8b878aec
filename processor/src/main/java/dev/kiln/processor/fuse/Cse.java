package dev.kiln.processor.fuse;

import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Common-subexpression elimination within each block: a primitive node equal to an earlier one (same op, same
 * attribute, same input values) is dropped and its result replaced by the earlier one's. VJP rules make many equal
 * constants and, in backward, equal products; composites used twice make equal forward chains.
 */
final class Cse {
  private Cse() {}

  private record Key(Primitive op, Object attr, List<Value> inputs) {}

  static void run(Block b) {
    run(b, new HashMap<>());
  }

  private static void run(Block b, Map<Value, Value> subst) {
    Map<Key, Value> seen = new HashMap<>();
    List<Node> out = new ArrayList<>();
    for (Node n0 : b.nodes()) {
      Node n = Rewrite.node(n0, subst);
      if (n instanceof Node.Prim p) {
        Key k = new Key(p.op(), p.attr(), p.inputs());
        Value earlier = seen.get(k);
        if (earlier != null && earlier.elem() == p.out().elem()) {
          subst.put(p.out(), earlier);
          continue;
        }
        seen.put(k, p.out());
      }
      switch (n) {
        case Node.Loop l -> run(l.body(), subst);
        case Node.LoopGrad l -> run(l.body(), subst);
        case Node.Branch br -> {
          run(br.then(), subst);
          run(br.otherwise(), subst);
        }
        default -> {}
      }
      out.add(n);
    }
    b.nodes().clear();
    b.nodes().addAll(out);
    Rewrite.results(b, subst);
  }
}
