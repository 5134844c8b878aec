package dev.kiln.processor.ir;

/** Numbers values of one graph. */
public final class Values {
  private int next;

  public Value make(String label, Value.Elem elem) {
    return new Value(next++, label, elem);
  }

  /** The first number not yet used. */
  public int next() {
    return next;
  }
}
