package dev.kiln.cli;

import dev.kiln.runtime.cpu.Blas;
import java.io.PrintStream;

/** The OpenBLAS lines of {@code kiln doctor}. */
final class OpenBlasInfo {
  private OpenBlasInfo() {}

  static void print(PrintStream out) {
    try {
      out.println("  core           " + Blas.corename());
      out.println("  threads        " + Blas.threads());
      out.println("  build          " + Blas.config());
      out.println("  library        " + Blas.libraryPath());
    } catch (LinkageError | IllegalStateException e) {
      // Doctor reports; it does not fail. The message says which platform jar is missing.
      Throwable cause = e instanceof ExceptionInInitializerError && e.getCause() != null ? e.getCause() : e;
      out.println("  unavailable    " + cause.getMessage());
    }
  }
}
