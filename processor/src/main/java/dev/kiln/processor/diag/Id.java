package dev.kiln.processor.diag;

import javax.tools.Diagnostic;

/**
 * The catalogue of Kiln's compile-time messages. Each has a stable ID printed in brackets at the start of the
 * message ({@code [ShapeMismatch] ...}), a severity and a hint that tells the user what to change. Every ID has a
 * page {@code docs/diagnostics/<Id>.md} with a wrong and a fixed example.
 */
public enum Id {
  MalformedShape(
      Diagnostic.Kind.ERROR,
      "Shape strings use the einops grammar: names, '...' once, '(h d)' groups, 1, sizes, and arithmetic without"
          + " spaces (d_model/heads)."),
  ShapeMismatch(
      Diagnostic.Kind.ERROR,
      "Make the shapes agree: bind the sub-module's dims with @Bind, rearrange the value, or fix the @Shape."),
  EinsumMismatch(
      Diagnostic.Kind.ERROR,
      "Each einsum operand must have the dims its part of the spec names, and a name must mean the same size in"
          + " every operand."),
  RearrangeMismatch(
      Diagnostic.Kind.ERROR,
      "A rearrange must keep every element: the same dims on both sides, and each group the product of its"
          + " members."),
  BroadcastConflict(
      Diagnostic.Kind.ERROR,
      "Pointwise operands broadcast from the right: each pair of dims must be equal or one of them 1;"
          + " rearrange one side (e.g. '... d -> ... 1 d') to line them up."),
  UnboundDim(
      Diagnostic.Kind.ERROR,
      "A dim must get its size from somewhere: a parameter shape, an input shape, a @Bind, or size(\"name\","
          + " hyper) in the call."),
  UnknownDim(
      Diagnostic.Kind.ERROR, "@Bind can only bind dims that the sub-module's parameter or forward shapes name."),
  BadModule(
      Diagnostic.Kind.ERROR,
      "A @Module is a record of @Param tensors, sub-modules, @Repeat lists and hyper-parameters, with one"
          + " @Forward method."),
  MissingShape(
      Diagnostic.Kind.ERROR, "Annotate every Tensor parameter and the result of @Forward/@Loss with @Shape(\"...\")."),
  UnsupportedConstruct(
      Diagnostic.Kind.ERROR,
      "Forward bodies use locals, Ops calls, Tensor arithmetic, sub-module calls, for-each over a @Repeat list,"
          + " if/switch on hyper-parameters and return."),
  RuntimeCheck(
      Diagnostic.Kind.WARNING,
      "This holds only for some inputs; the generated code checks it at run time. Name the dims alike to prove it"
          + " at compile time."),
  InternalError(
      Diagnostic.Kind.ERROR, "This is a bug in Kiln's processor; please report it with the stack trace.");

  private final Diagnostic.Kind kind;
  private final String hint;

  Id(Diagnostic.Kind kind, String hint) {
    this.kind = kind;
    this.hint = hint;
  }

  /** Error or warning. */
  public Diagnostic.Kind kind() {
    return kind;
  }

  /** What to change, printed after the message. */
  public String hint() {
    return hint;
  }

  /** The bracketed tag that starts every message with this ID. */
  public String tag() {
    return "[" + name() + "]";
  }
}
