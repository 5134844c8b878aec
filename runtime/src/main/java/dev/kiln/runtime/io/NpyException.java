package dev.kiln.runtime.io;

import java.io.IOException;

/** A {@code .npy} or {@code .npz} file that Kiln cannot read or an array it cannot write; the message names both. */
public final class NpyException extends IOException {
  public NpyException(String message) {
    super(message);
  }

  public NpyException(String message, Throwable cause) {
    super(message, cause);
  }
}
