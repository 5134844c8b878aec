package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code kiln train} end to end on a tiny model and synthetic token files: the loss falls, checkpoints and the run's
 * files are written, {@code --resume} continues with the losses of an uninterrupted run bit for bit, and bad configs
 * fail at start naming the key.
 */
class TrainCommandTest {
  static final int VOCAB = 24;

  @TempDir Path tmp;
  Path train;
  Path validation;

  /**
   * Token files of a learnable "language": runs of an arithmetic progression mod VOCAB with a random step per run,
   * so the next token is predictable from the two before it.
   */
  @BeforeEach
  void tokens() throws Exception {
    train = tmp.resolve("train.bin");
    validation = tmp.resolve("val.bin");
    write(train, 6000, 1);
    write(validation, 800, 2);
  }

  static void write(Path path, int n, long seed) throws Exception {
    Random r = new Random(seed);
    try (TokenFile.Writer w = TokenFile.writer(path, VOCAB)) {
      int x = 0;
      int step = 1;
      for (int i = 0; i < n; i++) {
        if (i % 16 == 0) {
          step = 1 + r.nextInt(5);
          x = r.nextInt(VOCAB);
        }
        w.append(x);
        x = (x + step) % VOCAB;
      }
    }
  }

  Path config(String name, String runDir, int steps) throws Exception {
    Map<String, Object> model = new LinkedHashMap<>();
    model.put("vocab_size", VOCAB);
    model.put("context_length", 16);
    model.put("d_model", 32);
    model.put("num_layers", 2);
    model.put("num_heads", 4);
    model.put("d_ff", 64);
    Map<String, Object> c = new LinkedHashMap<>();
    c.put("model", model);
    // A constant learning rate, so a run of 4 steps then 4 more takes the same updates as a run of 8.
    c.put("schedule", Map.of("type", "constant", "max_lr", 1e-2));
    c.put("data", Map.of("train", train.toString(), "validation", validation.toString()));
    c.put("training", Map.of("steps", steps, "batch_size", 8, "seed", 3, "run_dir", tmp.resolve(runDir).toString()));
    c.put("eval", Map.of("every", 4, "max_batches", 2));
    c.put("checkpoint", Map.of("every", 4, "keep", 5));
    Path f = tmp.resolve(name);
    Files.writeString(f, Json.writePretty(c));
    return f;
  }

  static List<Double> trainLosses(Path runDir) throws Exception {
    List<Double> out = new ArrayList<>();
    for (String line : Files.readAllLines(runDir.resolve("metrics.jsonl"))) {
      out.add(((Number) Json.parseObject(line).get("train_loss")).doubleValue());
    }
    return out;
  }

  @Test
  void trainsWritesCheckpointsAndResumesExactly() throws Exception {
    var straight = CliTestSupport.run("train", "--config", config("a.json", "straight", 8).toString(), "--set",
        "training.steps=24");
    assertEquals(0, straight.exitCode(), straight.err());
    Path run = tmp.resolve("straight");
    List<Double> losses = trainLosses(run);
    assertEquals(24, losses.size());
    // ln(24) = 3.18 at the start; the progressions are learnable, so 24 Adam steps at lr 1e-2 must cut it clearly.
    assertTrue(losses.get(23) < losses.get(0) - 0.5, "loss did not fall: " + losses);
    assertTrue(Files.isRegularFile(run.resolve("config.json")));
    assertTrue(Files.isRegularFile(run.resolve("loss.png")));
    Path last = run.resolve("checkpoints").resolve(Files.readString(run.resolve("checkpoints/latest")).strip());
    for (String f : List.of("config.json", "model.safetensors", "optimizer.safetensors", "trainer.json")) {
      assertTrue(Files.isRegularFile(last.resolve(f)), f);
    }
    assertTrue(straight.err().contains("validation loss"), straight.err());
    // The checkpoint is a model folder for kiln forward and kiln generate: the state-dict names of the variant.
    try (var st = dev.kiln.runtime.io.Safetensors.open(last.resolve("model.safetensors"))) {
      assertTrue(st.names().contains("layers.1.ffn.w3.weight") && st.names().contains("lm_head.weight")
          && !st.names().contains("layers.0.ln1.bias"), st.names().toString());
    }

    // The same run in two halves: 12 steps, then --resume to 24.
    var first = CliTestSupport.run("train", "--config", config("b.json", "halves", 12).toString());
    assertEquals(0, first.exitCode(), first.err());
    var second = CliTestSupport.run("train", "--resume", tmp.resolve("halves").toString(), "--set",
        "training.steps=24");
    assertEquals(0, second.exitCode(), second.err());
    assertTrue(second.err().contains("resumed from"), second.err());
    // Bit for bit: same parameters, optimizer state and data position at step 12, deterministic kernels.
    assertEquals(losses, trainLosses(tmp.resolve("halves")));
  }

  @Test
  void badConfigsNameTheKey() throws Exception {
    Path good = config("c.json", "bad", 2);
    var r = CliTestSupport.run("train", "--config", good.toString(), "--set", "model.d_modle=32");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("unknown key model.d_modle"), r.err());

    r = CliTestSupport.run("train", "--config", good.toString(), "--set", "model.num_heads=5");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("model.d_model (32) is not divisible by model.num_heads (5)"), r.err());

    r = CliTestSupport.run("train", "--config", good.toString(), "--set", "data.train=" + tmp.resolve("none.bin"));
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("data.train: token file") && r.err().contains("not found"), r.err());

    Path tok = tmp.resolve("tok");
    TokenizerFiles.save(BpeTrainer.train("hello hello world", 260, List.of("<|endoftext|>")).tokenizer(), tok);
    r = CliTestSupport.run("train", "--config", good.toString(), "--set", "data.tokenizer=" + tok);
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("model.vocab_size is " + VOCAB + " but the tokenizer"), r.err());

    r = CliTestSupport.run("train", "--config", good.toString(), "--set", "model.ffn=swish");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("model.ffn"), r.err());

    // --graphs is training.cuda_graphs, which the CPU cannot honour: refused before anything runs.
    r = CliTestSupport.run("train", "--config", good.toString(), "--graphs");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("training.cuda_graphs needs training.device cuda"), r.err());
    assertTrue(!Files.exists(tmp.resolve("bad")), "nothing written for a bad config");
  }
}
