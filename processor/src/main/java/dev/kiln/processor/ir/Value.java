package dev.kiln.processor.ir;

/**
 * An SSA value: defined once, by one node, a block parameter or a method input. Its shape is filled in by the
 * {@code check} pass (null until then, and null after a shape error upstream so that one mistake is reported once).
 */
public final class Value {
  private final int id;
  private final String label;
  private final Elem elem;
  private Shape shape;

  /** What the elements are; integer values index (gather, cross-entropy targets), booleans select (where). */
  public enum Elem {
    FLOAT,
    INT,
    BOOL
  }

  Value(int id, String label, Elem elem) {
    this.id = id;
    this.label = label;
    this.elem = elem;
  }

  public int id() {
    return id;
  }

  /** The source text that computed this value ({@code w1.apply(x)}), for messages and generated comments. */
  public String label() {
    return label;
  }

  public Elem elem() {
    return elem;
  }

  public Shape shape() {
    return shape;
  }

  public void setShape(Shape shape) {
    this.shape = shape;
  }

  @Override
  public String toString() {
    return "%" + id + (shape == null ? "" : ": '" + shape + "'");
  }
}
