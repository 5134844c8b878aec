package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class BenchTrainCommandTest {
  /** A tiny config, Kiln side only: checks the plumbing and the table, not the speed. */
  @Test
  void reportsTokensPerSecondAndMfu() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "train", "--vocab", "64", "--context", "16", "--d-model",
        "32", "--layers", "1", "--heads", "2", "--d-ff", "64", "--batch", "2", "--steps", "1", "--warmup", "0",
        "--python", "none");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().contains("(32 tokens/step)"), r.out());
    assertTrue(r.out().matches("(?s).*Kiln \\(compiled DSL model, CPU\\)\\s+[0-9.]+\\s+[0-9]+\\s+[0-9.]+%.*"), r.out());
  }

  @Test
  void rejectsNonPositiveSizes() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "train", "--layers", "0", "--python", "none");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("must be positive"), r.err());
  }
}
