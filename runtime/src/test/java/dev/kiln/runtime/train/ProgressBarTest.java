package dev.kiln.runtime.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class ProgressBarTest {
  @Test
  void terminalRedrawsInPlaceAndMessagesClearTheLine() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    ProgressBar bar = new ProgressBar(new PrintStream(bytes, true, StandardCharsets.UTF_8), true, 100);
    bar.update(1, 4, 3.5, 1e-3, 12_345, 90);
    bar.update(2, 4, 3.25, 1e-3, 999, 4000);
    bar.message("step 2: validation loss 3.1");
    bar.update(4, 4, 3.0, 1e-4, Double.NaN, 0);
    bar.finish();
    String s = bytes.toString(StandardCharsets.UTF_8);
    assertTrue(s.startsWith("\rstep 1/4 [######------------------] loss 3.5000  lr 1.00e-03  12.3k tok/s  eta 1m30s"), s);
    assertTrue(s.contains("\rstep 2/4 [############------------] loss 3.2500  lr 1.00e-03  999 tok/s  eta 1h06m"), s);
    assertTrue(s.contains(" \rstep 2: validation loss 3.1\n"), s); // the bar is blanked, then the message
    assertTrue(s.endsWith("- tok/s  eta 0s\n"), s);
    assertEquals(0, s.chars().filter(c -> c == '\n').count() - 2); // only the message and the final newline
  }

  @Test
  void logModePrintsEveryNthStepAndTheLast() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    ProgressBar bar = new ProgressBar(new PrintStream(bytes, true, StandardCharsets.UTF_8), false, 3);
    for (int s = 1; s <= 7; s++) {
      bar.update(s, 7, 1, 1, 1, 1);
    }
    bar.finish();
    assertEquals(3, bytes.toString(StandardCharsets.UTF_8).lines().count()); // steps 3, 6, 7
    assertEquals("12s", ProgressBar.duration(12.4));
    assertEquals("-", ProgressBar.duration(Double.NaN));
  }
}
