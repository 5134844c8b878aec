package dev.kiln.processor.ir;

import dev.kiln.processor.diag.Id;
import java.util.List;
import java.util.function.BiFunction;

/**
 * What a {@link ShapeRule} may ask of the shape checker: unify dims, broadcast shapes, look up names, report. The
 * checker implements it (package {@code check}); rules stay declarative.
 *
 * <p>{@code operand} says where a problem goes: an input index, {@link #CALL} for the whole call, {@link #SPEC} for
 * the spec or pattern literal; {@code specOffset} is a character offset into the spec, or -1.
 */
public interface ShapeContext {
  int CALL = -1;
  int SPEC = -2;

  /** Reports an error; the rule then returns null. */
  void error(Id id, int operand, int specOffset, String message);

  /**
   * Makes {@code expected} and {@code actual} equal, binding unification variables. When they differ and both are
   * fixed by the config, reports {@code id} with {@code message(expected, actual)} and returns false; when the
   * difference involves a dim known only at run time, records a run-time check, warns and returns true.
   */
  boolean unify(Dim expected, Dim actual, int operand, int specOffset, Id id, BiFunction<Dim, Dim, String> message);

  /** Applies the variable bindings made so far. */
  Dim resolve(Dim d);

  Shape resolve(Shape s);

  /** Numpy broadcasting of the inputs' shapes; null after reporting a conflict. */
  Shape broadcast(List<Shape> shapes, List<Integer> operands);

  /**
   * The dim a name in a user-written pattern stands for when the pattern does not bind it itself: a config dim of
   * the module, or a dim named in the method's signature. Null for a pattern-local name.
   */
  Dim named(String name);

  /**
   * Records a fact to check at run time. With {@code warn} it is also a compile-time warning; without, it warns only
   * when a dim known only at run time is involved (a split of config dims is checked at init, silently).
   */
  void runtime(RuntimeCheck.Kind kind, Dim left, Dim right, int operand, String message, boolean warn);

  /** A dim known only at run time (e.g. a dim that a {@code ...} of unknown length hides). */
  Dim fresh(String hint);
}
