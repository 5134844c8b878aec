package dev.kiln.runtime.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.LrSchedule;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConfigTest {
  @TempDir Path tmp;
  private Path trainBin;

  @BeforeEach
  void tokens() throws IOException {
    trainBin = tmp.resolve("train.bin");
    try (TokenFile.Writer w = TokenFile.writer(trainBin, 300)) {
      w.append(new int[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    }
  }

  private String yaml(String extra) {
    return """
        # a small CS336 model
        model:
          vocab_size: 300
          context_length: 64
          d_model: 128     # width
          num_layers: 2
          num_heads: 4
          d_ff: 344
          ffn: squared-relu
          norm_placement: post
          qk_norm: true
          z_loss: 1e-4
        optimizer:
          name: adamw
          beta2: 0.95
          formula: pytorch
        schedule:
          type: wsd
          max_lr: 3e-3
          warmup_steps: 10
        data:
          train: "%s"
        training:
          steps: 1_000
          batch_size: 8
        %s""".formatted(trainBin.toString().replace("\\", "\\\\"), extra);
  }

  private Path file(String name, String text) throws IOException {
    Path p = tmp.resolve(name);
    Files.writeString(p, text);
    return p;
  }

  /** A tree built in Java holds Integers (and maybe Floats) where parsed JSON holds Longs and Doubles. */
  @Test
  void treesBuiltInJavaBindLikeParsedOnes() throws IOException {
    TrainConfig parsed = ConfigLoader.load(file("c.yaml", yaml("")), List.of());
    java.util.Map<String, Object> tree = Json.parseObject(ConfigLoader.toJson(parsed));
    @SuppressWarnings("unchecked")
    java.util.Map<String, Object> model = (java.util.Map<String, Object>) tree.get("model");
    model.put("d_model", 128);
    model.put("num_layers", Integer.valueOf(2));
    model.put("rope_theta", 10_000);
    model.put("z_loss", 1e-4f);
    TrainConfig built = ConfigLoader.fromTree(tree, List.of(), "a Java tree");
    assertEquals(parsed.model().dModel(), built.model().dModel());
    assertEquals(parsed.model().numLayers(), built.model().numLayers());
    assertEquals(parsed.model().ropeTheta(), built.model().ropeTheta());
    assertEquals((double) 1e-4f, built.model().zLoss());
  }

  @Test
  void yamlFileBindsWithDefaultsAndRoundTripsThroughConfigJson() throws IOException {
    TrainConfig c = ConfigLoader.load(file("c.yaml", yaml("")), List.of());
    assertEquals(128, c.model().dModel());
    assertEquals(ModelConfig.Ffn.SQUARED_RELU, c.model().ffn());
    assertEquals(ModelConfig.NormPlacement.POST, c.model().normPlacement());
    assertEquals(ModelConfig.Positions.ROPE, c.model().positions()); // default
    assertEquals(10_000.0, c.model().ropeTheta());
    assertTrue(c.model().qkNorm());
    assertEquals(1e-4, c.model().zLoss());
    assertEquals(0.95, c.optimizer().beta2());
    assertEquals(0.9, c.optimizer().beta1()); // default
    assertEquals(AdamW.Formula.PYTORCH, c.optimizer().formula());
    assertEquals(TrainConfig.ScheduleType.WSD, c.schedule().type());
    assertEquals(1000, c.training().steps());
    assertEquals(trainBin, c.data().train());
    assertNull(c.data().validation());
    LrSchedule s = c.schedule().create(c.training().steps());
    assertEquals(new LrSchedule.WarmupStableDecay(3e-3, 1e-4, 10, 200, 1000, LrSchedule.DecayShape.LINEAR), s);

    // config.json: every key, written and read back to an equal record.
    Path json = tmp.resolve("config.json");
    ConfigLoader.write(c, json);
    String text = Files.readString(json);
    assertTrue(text.contains("\"ffn\": \"squared_relu\""), text);
    assertTrue(text.contains("\"cosine_cycle_steps\": 0"), text);
    assertEquals(c, ConfigLoader.load(json, List.of()));
    assertEquals(c, ConfigLoader.fromTree(Json.parseObject(text), List.of(), "config.json"));
  }

  @Test
  void overridesReplaceAnyKeyAndAreTypedByTheirField() throws IOException {
    TrainConfig c = ConfigLoader.load(file("c.yaml", yaml("")),
        List.of("model.d_model=256", "optimizer.name=sgd", "training.seed=7", "model.tied_embeddings=true",
            "eval.every=0", "schedule.min_lr=0"));
    assertEquals(256, c.model().dModel());
    assertEquals(TrainConfig.OptimizerName.SGD, c.optimizer().name());
    assertEquals(7, c.training().seed());
    assertTrue(c.model().tiedEmbeddings());
    assertEquals(0, c.eval().every());
    assertEquals(0.0, c.schedule().minLr());

    ConfigException e = assertThrows(ConfigException.class,
        () -> ConfigLoader.load(file("c2.yaml", yaml("")), List.of("training.steps=lots")));
    assertTrue(e.getMessage().contains("training.steps (from --set training.steps=lots) must be a whole number"),
        e.getMessage());
    e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file("c3.yaml", yaml("")), List.of("steps")));
    assertTrue(e.getMessage().contains("not key.path=value"), e.getMessage());
  }

  @Test
  void unknownWrongTypedAndMissingKeysAreAllNamed() throws IOException {
    String text = yaml("""
        eval:
          evry: 10
        logging:
          progress_every: often
        """).replace("  num_heads: 4\n", "").replace("name: adamw", "name: adam");
    ConfigException e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file("bad.yaml", text), List.of()));
    String m = e.getMessage();
    assertTrue(m.contains("unknown key eval.evry (did you mean eval.every?)"), m);
    assertTrue(m.contains("logging.progress_every must be a whole number, not 'often'"), m);
    assertTrue(m.contains("missing required key model.num_heads"), m);
    assertTrue(m.contains("optimizer.name must be one of adamw, sgd, not 'adam'"), m);
    assertEquals(4, e.problems().size(), m);

    e = assertThrows(ConfigException.class,
        () -> ConfigLoader.load(file("top.json", "{\"modle\": {}, \"model\": 3}"), List.of()));
    assertTrue(e.getMessage().contains("unknown key modle (did you mean model?)"), e.getMessage());
    assertTrue(e.getMessage().contains("model must be a section of keys, not 3"), e.getMessage());
  }

  @Test
  void semanticErrorsNameTheirKeys() throws IOException {
    String text = yaml("").replace("num_heads: 4", "num_heads: 3").replace("warmup_steps: 10", "warmup_steps: 2000")
        .replace(trainBin.toString(), tmp.resolve("nope.bin").toString());
    ConfigException e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file("s.yaml", text), List.of()));
    String m = e.getMessage();
    assertTrue(m.contains("model.d_model (128) is not divisible by model.num_heads (3)"), m);
    assertTrue(m.contains("schedule.warmup_steps (2000) is greater than training.steps (1000)"), m);
    assertTrue(m.contains("data.train: token file") && m.contains("nope.bin not found"), m);

    // The tokenizer's vocabulary must match the model's.
    Path tok = tmp.resolve("tok");
    TokenizerFiles.save(BpeTrainer.train("hello hello world", 260, List.of("<|endoftext|>")).tokenizer(), tok);
    int v = TokenizerFiles.load(tok, List.of()).vocabSize();
    e = assertThrows(ConfigException.class,
        () -> ConfigLoader.load(file("t.yaml", yaml("")), List.of("data.tokenizer=" + tok)));
    assertTrue(e.getMessage().contains("model.vocab_size is 300 but the tokenizer in " + tok + " has " + v
        + " tokens; set model.vocab_size=" + v), e.getMessage());
    assertEquals(v, ConfigLoader.load(file("t2.yaml", yaml("")),
        List.of("data.tokenizer=" + tok, "model.vocab_size=" + v)).model().vocabSize());

    e = assertThrows(ConfigException.class,
        () -> ConfigLoader.load(file("r.yaml", yaml("")), List.of("model.d_model=12", "model.num_heads=4")));
    assertTrue(e.getMessage().contains("head width d_model / num_heads = 3 is odd"), e.getMessage());

    // Where training runs: bf16 is mixed precision on a GPU; the GPU trainer's optimizer is the fused AdamW.
    e = assertThrows(ConfigException.class,
        () -> ConfigLoader.load(file("d.yaml", yaml("")), List.of("training.precision=bf16")));
    assertTrue(e.getMessage().contains("training.precision bf16 (mixed precision) needs training.device cuda"),
        e.getMessage());
    e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file("d2.yaml", yaml("")),
        List.of("training.device=cuda", "optimizer.name=sgd")));
    assertTrue(e.getMessage().contains("training.device cuda trains with AdamW"), e.getMessage());
    e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file("d4.yaml", yaml("")),
        List.of("training.device=cuda", "training.cuda_graphs=true", "training.grad_accum_steps=2")));
    assertTrue(e.getMessage().contains("training.cuda_graphs needs training.device cuda and"
        + " training.grad_accum_steps 1"), e.getMessage());
    TrainConfig gpu = ConfigLoader.load(file("d3.yaml", yaml("")), List.of("training.device=CUDA",
        "training.precision=bf16", "training.cuda_graphs=true"));
    assertTrue(gpu.training().cudaGraphs());
    assertEquals(TrainConfig.TrainDevice.CUDA, gpu.training().device());
    assertEquals(TrainConfig.Precision.BF16, gpu.training().precision());
  }

  @Test
  void yamlOutsideTheSubsetIsRefusedWithItsLine() {
    assertYamlError("model:\n  layers:\n    - 1\n", "line 3: lists are not used");
    assertYamlError("model:\n\tvocab_size: 3\n", "line 2: indent with spaces, not tabs");
    assertYamlError("model:\n  a: 1\n  a: 2\n", "line 3: duplicate key 'a'");
    assertYamlError("model:\n    a: 1\n  b: 2\n", "line 3: indentation does not match");
    assertYamlError("a: &x 1\n", "line 1: unsupported YAML value");
    assertYamlError("a: \"open\n", "line 1: unterminated double-quoted string");
    assertYamlError("just text\n", "line 1: expected 'key: value'");
  }

  @Test
  void yamlScalarsQuotesAndComments() {
    var tree = YamlSubset.parse("---\na: 'it''s # not a comment'  # a comment\nb: \"x\\ty\"\nc: 001\nd:\ne: ~\n");
    assertEquals("it's # not a comment", tree.get("a"));
    assertEquals("x\ty", tree.get("b"));
    assertEquals(new ConfigTree.Plain("001"), tree.get("c"));
    assertTrue(tree.containsKey("d") && tree.get("d") == null);
    assertEquals(1L, ConfigTree.scalar("001"));
    assertEquals(1e-3, ConfigTree.scalar("1e-3"));
    assertEquals(Boolean.FALSE, ConfigTree.scalar("false"));
    assertEquals("3e", ConfigTree.scalar("3e"));
  }

  private static void assertYamlError(String text, String want) {
    YamlSubset.YamlException e = assertThrows(YamlSubset.YamlException.class, () -> YamlSubset.parse(text));
    assertTrue(e.getMessage().startsWith(want), e.getMessage());
  }
}
