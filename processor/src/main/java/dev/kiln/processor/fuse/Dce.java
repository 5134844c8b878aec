package dev.kiln.processor.fuse;

import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Dead-code elimination: drops primitive nodes whose result nothing uses. Calls, loops, branches and gradient
 * accumulations stay (they have effects: saving for backward, adding to gradients).
 */
final class Dce {
  private Dce() {}

  static void run(Block b, Set<Value> live) {
    Set<Value> l = new HashSet<>(live);
    l.addAll(b.results());
    List<Node> kept = new ArrayList<>();
    List<Node> nodes = b.nodes();
    for (int i = nodes.size() - 1; i >= 0; i--) {
      Node n = nodes.get(i);
      if (n instanceof Node.Prim p && !l.contains(p.out())) {
        continue;
      }
      switch (n) {
        case Node.Loop lp -> run(lp.body(), l);
        case Node.LoopGrad lp -> run(lp.body(), l);
        case Node.Branch br -> {
          run(br.then(), l);
          run(br.otherwise(), l);
        }
        default -> {}
      }
      l.addAll(Fusion.inputsOf(n));
      kept.add(n);
    }
    Collections.reverse(kept);
    nodes.clear();
    nodes.addAll(kept);
  }
}
