package dev.kiln.processor.analyze;

/** Thrown when a module refers to a type that a later round may still generate; the step retries it by name. */
public final class Deferred extends RuntimeException {
  public Deferred(String what) {
    super(what, null, false, false);
  }
}
