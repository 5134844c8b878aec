package dev.kiln.runtime.train;

import java.io.PrintStream;
import java.util.Locale;

/**
 * The training progress line on stderr: step/total, a bar, loss, learning rate, tokens/s and time left. On a
 * terminal it redraws in place ({@code \r}); otherwise (a log file, CI) it prints a plain line every
 * {@code every} steps and at the last step.
 */
public final class ProgressBar {
  private static final int BAR = 24;

  private final PrintStream out;
  private final boolean terminal;
  private final long every;
  private int lastWidth;

  public ProgressBar(PrintStream out, boolean terminal, long every) {
    this.out = out;
    this.terminal = terminal;
    this.every = Math.max(1, every);
  }

  /** Whether stdout/stderr is an interactive terminal (so the line can be redrawn). */
  public static boolean isTerminal() {
    java.io.Console c = System.console();
    return c != null && c.isTerminal();
  }

  /** Shows step {@code step} of {@code total}; {@code etaSeconds} NaN while unknown. */
  public void update(long step, long total, double loss, double lr, double tokensPerSecond, double etaSeconds) {
    String line = format(step, total, loss, lr, tokensPerSecond, etaSeconds);
    if (terminal) {
      int pad = Math.max(0, lastWidth - line.length());
      out.print("\r" + line + " ".repeat(pad));
      lastWidth = line.length();
      out.flush();
    } else if (step % every == 0 || step == total) {
      out.println(line);
    }
  }

  /** A message on its own line (validation loss, checkpoint written), without breaking the bar. */
  public void message(String text) {
    if (terminal && lastWidth > 0) {
      out.print("\r" + " ".repeat(lastWidth) + "\r");
      lastWidth = 0;
    }
    out.println(text);
  }

  /** Ends the redrawn line. */
  public void finish() {
    if (terminal && lastWidth > 0) {
      out.println();
      lastWidth = 0;
    }
  }

  static String format(long step, long total, double loss, double lr, double tokensPerSecond, double etaSeconds) {
    int filled = total > 0 ? (int) (BAR * step / total) : 0;
    String bar = "#".repeat(filled) + "-".repeat(BAR - filled);
    int w = Long.toString(total).length();
    return String.format(Locale.ROOT, "step %" + w + "d/%d [%s] loss %.4f  lr %.2e  %s tok/s  eta %s", step, total,
        bar, loss, lr, tokens(tokensPerSecond), duration(etaSeconds));
  }

  private static String tokens(double t) {
    if (!(t >= 0) || Double.isInfinite(t)) {
      return "-";
    }
    return t >= 10_000 ? String.format(Locale.ROOT, "%.1fk", t / 1000) : String.format(Locale.ROOT, "%.0f", t);
  }

  /** {@code 1h02m}, {@code 3m07s}, {@code 12s}; {@code -} while unknown. */
  static String duration(double seconds) {
    if (!(seconds >= 0) || Double.isInfinite(seconds)) {
      return "-";
    }
    long s = Math.round(seconds);
    if (s >= 3600) {
      return String.format(Locale.ROOT, "%dh%02dm", s / 3600, (s % 3600) / 60);
    }
    if (s >= 60) {
      return String.format(Locale.ROOT, "%dm%02ds", s / 60, s % 60);
    }
    return s + "s";
  }
}
