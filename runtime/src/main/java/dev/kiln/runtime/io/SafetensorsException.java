package dev.kiln.runtime.io;

import java.io.IOException;

/**
 * A safetensors file (or sharded index) that Kiln refuses to read or write. The message names the file, the tensor
 * when there is one, and the problem; readers never let an index, cast or null-pointer error escape instead.
 */
public final class SafetensorsException extends IOException {
  public SafetensorsException(String message) {
    super(message);
  }

  public SafetensorsException(String message, Throwable cause) {
    super(message, cause);
  }
}
