package dev.kiln.runtime.eager;

import java.util.Arrays;

/**
 * A shape (or dtype) problem found by the eager interpreter at run time. The message has the form of the
 * processor's compile-time diagnostics: a stable ID in brackets ({@code [EinsumMismatch]}, {@code [BroadcastConflict]},
 * ...; the same IDs as {@code docs/diagnostics/}), both shapes, the dim that disagrees and what it is bound to, and
 * a hint on its own line.
 */
public final class EagerShapeException extends IllegalArgumentException {
  private final String id;

  EagerShapeException(String id, String problem, String hint) {
    super("[" + id + "] " + problem + (hint == null ? "" : "\n  hint: " + hint));
    this.id = id;
  }

  /** The diagnostic ID without brackets, e.g. {@code EinsumMismatch}. */
  public String id() {
    return id;
  }

  static EagerShapeException broadcast(String op, long[] a, long[] b) {
    int r = Math.max(a.length, b.length);
    for (int i = 1; i <= r; i++) {
      long x = i <= a.length ? a[a.length - i] : 1;
      long y = i <= b.length ? b[b.length - i] : 1;
      if (x != y && x != 1 && y != 1) {
        String which = i == 1 ? "the last dim" : "dim -" + i + " (counted from the right)";
        return new EagerShapeException(
            "BroadcastConflict",
            op + ": cannot broadcast " + Arrays.toString(a) + " with " + Arrays.toString(b) + ": " + which + " is "
                + x + " on one side and " + y + " on the other, and neither is 1",
            "pointwise operands broadcast numpy-style from the right; rearrange one of them (e.g. \"... d -> ... 1 d\")"
                + " to line the dims up");
      }
    }
    throw new IllegalStateException(Arrays.toString(a) + " and " + Arrays.toString(b) + " do broadcast");
  }
}
