package dev.kiln.processor.ir;

import dev.kiln.processor.diag.Pos;

/**
 * A shape fact the compiler could not prove, to be checked by generated code when the inputs arrive (part B emits
 * it); the same text is the compile-time warning. {@code left} and {@code right} must be equal at run time; for a
 * {@link Kind#RANK} check they are the expected and actual ranks.
 */
public record RuntimeCheck(Kind kind, Dim left, Dim right, String message, Pos pos) {
  public enum Kind {
    /** Two dims must be equal. */
    EQUAL,
    /** {@code left} must divide {@code right} exactly (a split group). */
    DIVIDES,
    /** The dims matched by {@code ...} must number exactly {@code left}. */
    RANK
  }
}
