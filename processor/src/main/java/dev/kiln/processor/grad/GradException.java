package dev.kiln.processor.grad;

/** A construct the grad pass cannot differentiate; the step reports it as {@code [UnsupportedConstruct]}. */
public final class GradException extends RuntimeException {
  public GradException(String message) {
    super(message);
  }
}
