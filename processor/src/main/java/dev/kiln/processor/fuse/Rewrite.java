package dev.kiln.processor.fuse;

import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Replaces values in nodes (records, so a changed node is a new one; nested blocks are rewritten in place). */
final class Rewrite {
  private Rewrite() {}

  static Value v(Value v, Map<Value, Value> s) {
    if (v == null) {
      return null;
    }
    Value r = s.get(v);
    return r == null ? v : v(r, s);
  }

  static List<Value> vs(List<Value> in, Map<Value, Value> s) {
    List<Value> out = new ArrayList<>();
    for (Value v : in) {
      out.add(v(v, s));
    }
    return out;
  }

  static Node node(Node n, Map<Value, Value> s) {
    if (s.isEmpty()) {
      return n;
    }
    return switch (n) {
      case Node.Prim p -> new Node.Prim(p.op(), vs(p.inputs(), s), p.attr(), p.out(), p.pos(), p.argPos(),
          p.specPos(), p.composite(), p.group());
      case Node.ParamRead r -> r;
      case Node.Call c -> new Node.Call(c.component(), c.calleeType(), c.display(), vs(c.args(), s), c.out(), c.pos(),
          c.argPos());
      case Node.Loop l -> new Node.Loop(l.listComponent(), vs(l.init(), s), l.body(), l.out(), l.names(), l.pos());
      case Node.Branch br -> br;
      case Node.CallGrad g -> new Node.CallGrad(g.call(), v(g.dOut(), s), g.dArgs(),
          g.plus().stream().map(x -> x == null ? null : v(x, s)).toList());
      case Node.LoopGrad l -> new Node.LoopGrad(l.loop(), l.externals(), vs(l.init(), s), l.body(), l.out());
      case Node.ParamGrad g -> new Node.ParamGrad(g.component(), v(g.grad(), s), g.read());
    };
  }

  static void results(Block b, Map<Value, Value> s) {
    if (s.isEmpty()) {
      return;
    }
    List<Value> r = new ArrayList<>();
    for (Value v : b.results()) {
      r.add(v(v, s));
    }
    b.results().clear();
    b.results().addAll(r);
  }
}
