package dev.kiln.cli.tokenizer;

import java.io.PrintWriter;

/**
 * A one-line progress bar on stderr: bytes done of total, MB/s and ETA, redrawn at most five times a second with a
 * carriage return. Only for terminals (or when asked): in a log file the redraws would be noise.
 */
final class ProgressBar {
  private static final int WIDTH = 30;
  private final PrintWriter err;
  private final long t0 = System.nanoTime();
  private long lastDraw;
  private boolean drawn;

  ProgressBar(PrintWriter err) {
    this.err = err;
  }

  /** True when stderr should get a live bar: the process talks to a terminal. */
  static boolean terminalAttached() {
    java.io.Console c = System.console();
    return c != null && c.isTerminal();
  }

  void update(long done, long total) {
    long now = System.nanoTime();
    if (now - lastDraw < 200_000_000L && done < total) {
      return;
    }
    lastDraw = now;
    double secs = (now - t0) / 1e9;
    double mbps = done / 1e6 / Math.max(secs, 1e-9);
    double frac = total <= 0 ? 1 : Math.min(1, (double) done / total);
    int filled = (int) Math.round(frac * WIDTH);
    long eta = mbps > 0 ? Math.round((total - done) / 1e6 / mbps) : 0;
    err.printf(
        "\r[%s%s] %5.1f%% %,.1f / %,.1f MB  %,.1f MB/s  ETA %d:%02d ",
        "#".repeat(filled), ".".repeat(WIDTH - filled), 100 * frac, done / 1e6, total / 1e6, mbps, eta / 60,
        eta % 60);
    err.flush();
    drawn = true;
  }

  /** Ends the bar's line so the summary starts on a fresh one. */
  void finish() {
    if (drawn) {
      err.println();
      err.flush();
    }
  }
}
