package dev.kiln.processor.ir;

import dev.kiln.processor.diag.Pos;
import java.util.ArrayList;
import java.util.List;

/**
 * The IR of one {@code @Forward} or {@code @Loss} method: inputs with their declared shapes, the body, the declared
 * result shape, and the run-time checks that {@code check} could not prove.
 */
public final class Graph {
  /** A method parameter. */
  public record Input(String name, Value value, Shape declared, Pos pos) {}

  public enum Kind {
    FORWARD,
    LOSS
  }

  private final String method;
  private final Kind kind;
  private final List<Input> inputs;
  private final Shape result;
  private final Pos resultPos;
  private final Block body;
  private final List<RuntimeCheck> checks = new ArrayList<>();
  private final Values values;

  public Graph(String method, Kind kind, List<Input> inputs, Shape result, Pos resultPos, Block body, Values values) {
    this.method = method;
    this.kind = kind;
    this.inputs = List.copyOf(inputs);
    this.result = result;
    this.resultPos = resultPos;
    this.body = body;
    this.values = values;
  }

  public String method() {
    return method;
  }

  public Kind kind() {
    return kind;
  }

  public List<Input> inputs() {
    return inputs;
  }

  /** The declared result shape (in this method's names). */
  public Shape result() {
    return result;
  }

  public Pos resultPos() {
    return resultPos;
  }

  public Block body() {
    return body;
  }

  public List<RuntimeCheck> checks() {
    return checks;
  }

  /**
   * A copy whose blocks are its own ({@link Block#copy}), sharing values and the value factory: lowering rewrites a
   * graph's blocks, and a second lowering of the same forward (for another form of its backward) needs a fresh one.
   */
  public Graph copy() {
    Graph g = new Graph(method, kind, inputs, result, resultPos, body.copy(), values);
    g.checks.addAll(checks);
    return g;
  }

  /** Makes new values of this graph, for passes that add nodes (grad, lower). */
  public Values values() {
    return values;
  }
}
