package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.infer.Generator;
import dev.kiln.runtime.infer.LmWeights;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.infer.Sampler;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import dev.kiln.runtime.train.Checkpoints;
import dev.kiln.runtime.train.ConfigLoader;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.TrainerState;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code kiln generate} end to end on tiny random models written to temporary folders. */
class GenerateCommandTest {
  static final String END = ModelFolder.END_OF_TEXT;

  /** The CS336 keys of a tiny model; the vocabulary is the tokenizer's. */
  private static Map<String, Object> cs336Config(int vocab) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("vocab_size", (long) vocab);
    m.put("context_length", 32L);
    m.put("d_model", 16L);
    m.put("num_layers", 2L);
    m.put("num_heads", 2L);
    m.put("d_ff", 24L);
    m.put("rope_theta", 10000.0);
    return m;
  }

  private static BpeTokenizer tokenizer(Path dir) throws Exception {
    BpeTokenizer tok = BpeTrainer.train("Once upon a time there was a little cat. The cat sat on the mat." + END
        + "Once more the little dog ran to the park." + END, 290, List.of(END)).tokenizer();
    TokenizerFiles.save(tok, dir);
    return tok;
  }

  /** Random weights for every tensor the config needs (matrices N(0, 1/d_in), gains 1). */
  private static Map<String, NdArray> weights(ModelConfig c, long seed) {
    Map<String, NdArray> sd = new LinkedHashMap<>();
    Rng rng = new Rng(seed);
    int stream = 0;
    for (var e : LmWeights.expectedShapes(c).entrySet()) {
      long[] s = e.getValue();
      NdArray a = NdArray.zeros(DType.F32, s);
      if (s.length == 1) {
        a.fill(1);
      } else {
        rng.stream(stream).normal(a, 0, e.getKey().contains("embeddings") ? 1 : 1 / Math.sqrt(s[1]));
      }
      stream++;
      sd.put(e.getKey(), a);
    }
    return sd;
  }

  /** A CS336-style folder: config.json with top-level keys, model.safetensors, tokenizer files. */
  private static Path cs336Folder(Path dir, boolean withTokenizer) throws Exception {
    Files.createDirectories(dir);
    BpeTokenizer tok = tokenizer(withTokenizer ? dir : dir.resolveSibling(dir.getFileName() + "-tok"));
    Map<String, Object> cfg = cs336Config(tok.vocabSize());
    Files.writeString(dir.resolve("config.json"), Json.writePretty(cfg));
    Safetensors.write(dir.resolve("model.safetensors"),
        weights(ModelFolder.configFromTree(cfg, "test"), 5), Map.of("format", "pt"));
    return dir;
  }

  private static String expectedText(Path folder, String prompt, int maxTokens, long seed) throws Exception {
    ModelFolder f = ModelFolder.open(folder);
    Generator g = new Generator(f.loadEngine(), f.loadTokenizer(null));
    StringBuilder sb = new StringBuilder(prompt);
    g.generate(prompt, maxTokens, new Sampler(1.0, 0, 1.0, new Rng(seed)), sb);
    return sb.append(System.lineSeparator()).toString();
  }

  private static void assertFails(CliTestSupport.Result r, String... fragments) {
    assertEquals(1, r.exitCode(), "exit code; stderr: " + r.err());
    assertTrue(r.err().startsWith("kiln: "), r.err());
    for (String f : fragments) {
      assertTrue(r.err().contains(f), "stderr should mention \"" + f + "\": " + r.err());
    }
  }

  @Test
  void generatesFromACs336FolderDeterministicallyUnderASeed(@TempDir Path tmp) throws Exception {
    Path dir = cs336Folder(tmp.resolve("model"), true);
    String[] args = {"generate", "--model", dir.toString(), "--prompt", "Once upon", "--max-tokens", "20",
        "--seed", "3", "--temperature", "1", "--top-p", "1"};
    CliTestSupport.Result a = CliTestSupport.run(args);
    assertEquals(0, a.exitCode(), a.err());
    assertEquals(expectedText(dir, "Once upon", 20, 3), a.out());
    assertTrue(a.err().contains("tokens/s decoding") && a.err().contains("seed 3"), a.err());
    assertTrue(a.err().contains("stopped at --max-tokens 20") || a.err().contains("stopped at " + END), a.err());
    assertEquals(a.out(), CliTestSupport.run(args).out());
    CliTestSupport.Result other = CliTestSupport.run("generate", "--model", dir.toString(), "--prompt", "Once upon",
        "--max-tokens", "20", "--seed", "4", "--temperature", "1", "--top-p", "1");
    assertTrue(!other.out().equals(a.out()), "seeds 3 and 4 gave the same text: " + a.out());
  }

  @Test
  void generatesFromAKilnRunFolderAndCheckpoint(@TempDir Path tmp) throws Exception {
    Path tokDir = tmp.resolve("tok");
    BpeTokenizer tok = tokenizer(tokDir);
    Path data = tmp.resolve("train.bin");
    Files.write(data, new byte[64]);
    Map<String, Object> tree = new LinkedHashMap<>();
    tree.put("model", cs336Config(tok.vocabSize()));
    tree.put("data", Map.of("train", data.toString(), "tokenizer", tokDir.toString()));
    tree.put("training", Map.of("steps", 10L, "run_dir", tmp.resolve("run").toString()));
    TrainConfig config = ConfigLoader.fromTree(tree, List.of(), "test");
    ParameterSet params = ParameterSet.of(weights(config.model(), 5));
    Path ckpt = new Checkpoints(tmp.resolve("run").resolve("checkpoints"), 2).write(config, params,
        config.optimizer().create(params), new TrainerState(10, new Rng(0).state(), 0, 0, Double.NaN, 0), tokDir);
    // The same weights in a CS336 folder: both must print the same text.
    Path cs336 = cs336Folder(tmp.resolve("cs336"), true);
    String expected = expectedText(cs336, "the cat", 12, 9);
    for (Path m : List.of(tmp.resolve("run"), tmp.resolve("run").resolve("checkpoints"), ckpt)) {
      CliTestSupport.Result r = CliTestSupport.run("generate", "--model", m.toString(), "--prompt", "the cat",
          "--max-tokens", "12", "--seed", "9", "--temperature", "1", "--top-p", "1");
      assertEquals(0, r.exitCode(), r.err());
      assertEquals(expected, r.out(), "from " + m);
      assertTrue(r.err().contains("model " + ckpt), r.err());
    }
  }

  @Test
  void stopsAtTheContextAndRefusesALongPrompt(@TempDir Path tmp) throws Exception {
    Path dir = cs336Folder(tmp.resolve("model"), true);
    CliTestSupport.Result r = CliTestSupport.run("generate", "--model", dir.toString(), "--prompt",
        "Once upon a time there was a little cat.", "--max-tokens", "1000", "--seed", "1");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.err().contains("stopped: the context of 32 tokens is full") || r.err().contains("stopped at " + END),
        r.err());
    String longPrompt = "Once upon a time there was a little cat. ".repeat(8);
    assertFails(CliTestSupport.run("generate", "--model", dir.toString(), "--prompt", longPrompt),
        "tokens long but the model's context_length is 32; shorten it by at least");
  }

  @Test
  void missingFilesAreNamed(@TempDir Path tmp) throws Exception {
    assertFails(CliTestSupport.run("generate", "--model", tmp.resolve("nope").toString()), "model folder not found");
    Path empty = Files.createDirectories(tmp.resolve("empty"));
    assertFails(CliTestSupport.run("generate", "--model", empty.toString()), "config.json",
        "no config.json in the model folder");
    Path dir = cs336Folder(tmp.resolve("model"), true);
    Files.delete(dir.resolve("model.safetensors"));
    assertFails(CliTestSupport.run("generate", "--model", dir.toString()), "no model weights in the model folder");

    Path noTok = cs336Folder(tmp.resolve("bare"), false);
    assertFails(CliTestSupport.run("generate", "--model", noTok.toString()), "no tokenizer files in the model folder",
        "pass --tokenizer DIR");
    CliTestSupport.Result withTok = CliTestSupport.run("generate", "--model", noTok.toString(), "--tokenizer",
        tmp.resolve("bare-tok").toString(), "--prompt", "the", "--max-tokens", "3");
    assertEquals(0, withTok.exitCode(), withTok.err());
  }

  @Test
  void stateDictsThatDoNotFitAreExplained(@TempDir Path tmp) throws Exception {
    Path dir = cs336Folder(tmp.resolve("model"), true);
    ModelConfig c = ModelFolder.readConfig(dir.resolve("config.json"));
    Map<String, NdArray> sd = weights(c, 1);
    sd.remove("layers.1.ffn.w3.weight");
    sd.put("layers.0.attn.q_proj.weight", NdArray.zeros(DType.F32, 16, 8));
    sd.put("layers.0.attn.bias", NdArray.zeros(DType.F32, 16));
    Safetensors.write(dir.resolve("model.safetensors"), sd, Map.of());
    assertFails(CliTestSupport.run("generate", "--model", dir.toString()), "model.safetensors",
        "3 problems", "missing tensor layers.1.ffn.w3.weight [24, 16]",
        "tensor layers.0.attn.q_proj.weight has shape [16, 8], expected [16, 16]",
        "unexpected tensor layers.0.attn.bias [16]");

    Map<String, Object> cfg = cs336Config(c.vocabSize());
    cfg.put("eps", 1e-5);
    Files.writeString(dir.resolve("config.json"), Json.writePretty(cfg));
    assertFails(CliTestSupport.run("generate", "--model", dir.toString()), "config.json",
        "unknown key eps; a CS336 model config.json holds only the model keys vocab_size");
    cfg.remove("eps");
    cfg.put("d_model", 15L);
    Files.writeString(dir.resolve("config.json"), Json.writePretty(cfg));
    assertFails(CliTestSupport.run("generate", "--model", dir.toString()),
        "d_model (15) is not divisible by num_heads (2)");
  }
}
