package dev.kiln.processor.fuse;

/** A construct the lower pass cannot map to device calls; the step reports it as {@code [UnsupportedConstruct]}. */
public final class LoweringException extends RuntimeException {
  public LoweringException(String message) {
    super(message);
  }
}
