package dev.kiln.processor.ir;

/** A condition on hyper-parameters, decided once at init time (so both branches are shape checked). */
public sealed interface Cond {
  /** A boolean hyper-parameter. */
  record Flag(String component, String configKey) implements Cond {}

  /** An enum hyper-parameter equal to one constant. */
  record Is(String component, String configKey, String constant) implements Cond {}

  /** A comparison of scalars: {@code < <= > >= == !=}. */
  record Compare(String op, Scalar left, Scalar right) implements Cond {}

  record Not(Cond c) implements Cond {}

  record And(Cond a, Cond b) implements Cond {}

  record Or(Cond a, Cond b) implements Cond {}

  record Const(boolean value) implements Cond {}
}
