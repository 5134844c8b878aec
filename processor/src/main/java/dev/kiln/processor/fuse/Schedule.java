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
 * Moves every primitive node as early as its inputs allow (calls, loops and gradient accumulations keep their
 * order). A VJP emits the contribution for one input, then the sub-module backward that consumes it, then the
 * contribution for the next input; hoisting brings the pointwise halves together so fusion sees one chain (SwiGLU's
 * {@code silu(a) * b} backward becomes one kernel instead of three).
 */
final class Schedule {
  private Schedule() {}

  static void hoist(Block b) {
    List<Node> out = new ArrayList<>();
    Map<Value, Integer> definedAt = new HashMap<>();
    for (Value p : b.params()) {
      definedAt.put(p, -1);
    }
    // Constants that read nothing made in this block (a recomputed 1/d) stay at the top, ahead of every other node:
    // otherwise each node hoisted above one pushes it down, and its users, which may not precede it, sink with it
    // (RMSNorm's backward then split around a column sum).
    int constants = 0;
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Loop l -> hoist(l.body());
        case Node.LoopGrad l -> hoist(l.body());
        case Node.Branch br -> {
          hoist(br.then());
          hoist(br.otherwise());
        }
        default -> {}
      }
      int at = out.size();
      if (n instanceof Node.Prim p) {
        int earliest = -1;
        for (Value v : Fusion.inputsOf(p)) {
          Integer d = definedAt.get(v);
          if (d != null) {
            earliest = Math.max(earliest, d + 1);
          }
        }
        if (p.op() == Primitive.CONST && earliest < 0) {
          at = constants++;
        } else {
          at = Math.max(earliest, constants);
        }
      }
      out.add(at, n);
      // Positions after the insertion point moved by one.
      for (var e : definedAt.entrySet()) {
        if (e.getValue() >= at) {
          e.setValue(e.getValue() + 1);
        }
      }
      for (Value v : n.outputs()) {
        definedAt.put(v, at);
      }
    }
    b.nodes().clear();
    b.nodes().addAll(out);
  }
}
