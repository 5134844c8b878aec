package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class QuickstartCommandTest {
  @TempDir Path tmp;

  /**
   * The whole pipeline on the bundled stories with a toy model and two steps: data split, tokenizer, token files,
   * the config written for {@code kiln train}, a checkpoint that {@code kiln generate} can load, and a story that
   * starts with the prompt. (Quality is the real run's business; this checks that every stage is wired.)
   */
  @Test
  void runsEveryStageEndToEnd() {
    Path out = tmp.resolve("qs");
    CliTestSupport.Result r = CliTestSupport.run("quickstart", "--data", Path.of("..", "data", "tinystories").toString(),
        "--out", out.toString(), "--steps", "2", "--vocab-size", "300", "--max-tokens", "5", "--prompt", "Once",
        "--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.d_ff=32",
        "--set", "model.num_layers=1", "--set", "model.context_length=32", "--set", "training.batch_size=2");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().startsWith("Once"), r.out());
    assertTrue(r.err().contains("3,989 training and 209 validation stories"), r.err());
    assertTrue(r.err().contains("validation loss"), r.err());
    assertTrue(Files.isRegularFile(out.resolve("train-config.json")));
    assertTrue(Files.isRegularFile(out.resolve("data/train.bin.json")));
    assertTrue(Files.isDirectory(out.resolve("run/checkpoints")));
    CliTestSupport.Result g = CliTestSupport.run("generate", "--model", out.resolve("run").toString(), "--prompt",
        "Once", "--max-tokens", "3", "--seed", "1");
    assertEquals(0, g.exitCode(), g.err());

    // A second quickstart into the same folder refuses before touching the finished run.
    CliTestSupport.Result again = CliTestSupport.run("quickstart", "--out", out.toString(), "--steps", "2");
    assertEquals(1, again.exitCode());
    assertTrue(again.err().contains("already holds a quickstart run"), again.err());
  }

  @Test
  void missingDataFolderIsOneClearLine() {
    CliTestSupport.Result r = CliTestSupport.run("quickstart", "--data", tmp.resolve("nope").toString(), "--out",
        tmp.resolve("o").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("no such folder; pass --data DIR"), r.err());
  }
}
