package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class BenchGenerateCommandTest {
  /** A tiny model with the device engine on the CPU device: checks the plumbing and the report, not the speed. */
  @Test
  void reportsBothEnginesAndTheRatio() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "generate", "--device", "cpu", "--vocab", "64",
        "--context", "16", "--d-model", "32", "--layers", "1", "--heads", "2", "--d-ff", "64", "--prompt", "4",
        "--tokens", "6");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().matches("(?s).*cpu KV-cache engine \\(peer\\)\\s+prefill\\s+[0-9.]+ ms\\s+decode\\s+[0-9.]+"
        + " tokens/s.*"), r.out());
    assertTrue(r.out().matches("(?s).*device engine on cpu\\s+prefill.*decode speed-up against the cpu engine:"
        + " [0-9.]+x.*"), r.out());
  }

  @Test
  void rejectsAGenerationLongerThanTheContext() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "generate", "--device", "cpu", "--context", "16",
        "--prompt", "8", "--tokens", "9");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("--prompt 8 plus --tokens 9 pass --context 16"), r.err());
  }
}
