package dev.kiln.processor.ir;

import dev.kiln.processor.diag.Pos;
import java.util.ArrayList;
import java.util.List;

/** A straight-line list of nodes with parameters and results (a method body, a loop body, a branch). */
public final class Block {
  private final List<Value> params;
  private final List<Node> nodes = new ArrayList<>();
  private final List<Value> results = new ArrayList<>();
  private final List<Pos> resultPos = new ArrayList<>();
  private Exit exit = Exit.VALUE;

  /** How a block ends, which says what its results must agree with. */
  public enum Exit {
    /** A {@code return}: the result must have the method's declared shape. */
    RETURN,
    /** The end of a loop body: the results are the loop-carried values, which keep their shapes. */
    CARRY,
    /** A branch of a conditional expression. */
    VALUE,
    /** The block ends in a {@link Node.Branch} and yields its outputs, which were checked inside. */
    BRANCH
  }

  public Block(List<Value> params) {
    this.params = List.copyOf(params);
  }

  public List<Value> params() {
    return params;
  }

  public List<Node> nodes() {
    return nodes;
  }

  /** What the block yields: the returned value of a method body, the carried values of a loop body. */
  public List<Value> results() {
    return results;
  }

  /** Where each result was written (the return statement, the assignment). */
  public List<Pos> resultPos() {
    return resultPos;
  }

  public void add(Node n) {
    nodes.add(n);
  }

  public Exit exit() {
    return exit;
  }

  /**
   * A copy whose node lists (this block's and its nested blocks') are its own, sharing the values and the other
   * nodes: a pass that rewrites node lists may then run on the copy and leave this block as it was.
   */
  public Block copy() {
    Block b = new Block(params);
    for (Node n : nodes) {
      b.nodes.add(switch (n) {
        case Node.Loop l -> new Node.Loop(l.listComponent(), l.init(), l.body().copy(), l.out(), l.names(), l.pos());
        case Node.Branch br -> new Node.Branch(br.cond(), br.then().copy(), br.otherwise().copy(), br.out(),
            br.pos());
        case Node.LoopGrad l -> new Node.LoopGrad(l.loop(), l.externals(), l.init(), l.body().copy(), l.out());
        default -> n;
      });
    }
    b.yield(results, resultPos, exit);
    return b;
  }

  public void yield(List<Value> values, List<Pos> where, Exit how) {
    exit = how;
    results.clear();
    results.addAll(values);
    resultPos.clear();
    resultPos.addAll(where);
  }
}
