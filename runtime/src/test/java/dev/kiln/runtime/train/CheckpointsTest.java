package dev.kiln.runtime.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointsTest {
  @TempDir Path tmp;

  private TrainConfig config() throws IOException {
    Path bin = tmp.resolve("t.bin");
    try (TokenFile.Writer w = TokenFile.writer(bin, 16)) {
      w.append(new int[] {1, 2, 3, 4, 5, 6, 7, 8});
    }
    return ConfigLoader.fromTree(new LinkedHashMap<>(), List.of("model.vocab_size=16", "model.context_length=4",
        "model.d_model=8", "model.num_layers=1", "model.num_heads=2", "model.d_ff=8", "data.train=" + bin,
        "training.steps=10"), "test");
  }

  private static TrainerState state(long step) {
    return new TrainerState(step, new Rng.State(5, 1, 40 * step), 2 * step, 64 * step, step == 0 ? Double.NaN : 1.0 / step,
        1.5 * step);
  }

  @Test
  void writeLatestPruneAndReadBack() throws IOException {
    TrainConfig c = config();
    BigramModel m = new BigramModel(16, DType.F32, 1);
    Optimizer opt = new AdamW(m.parameters(), 0.9, 0.95, 1e-8, 0.1);
    Path tok = tmp.resolve("tok");
    TokenizerFiles.save(BpeTrainer.train("a tiny text", 258, List.of("<|endoftext|>")).tokenizer(), tok);
    Checkpoints ck = new Checkpoints(tmp.resolve("run/checkpoints"), 2);
    // A crash while writing step 3 left a temporary folder behind: it is never listed and is replaced.
    Files.createDirectories(ck.dir().resolve("step-000003.tmp"));
    Files.writeString(ck.dir().resolve("step-000003.tmp/model.safetensors"), "half a file");
    for (long s = 1; s <= 3; s++) {
      ck.write(c, m.parameters(), opt, state(s), tok);
    }
    assertEquals(List.of(ck.dir().resolve("step-000002"), ck.dir().resolve("step-000003")), ck.list());
    assertEquals(ck.dir().resolve("step-000003"), ck.latest().orElseThrow());
    assertTrue(Files.notExists(ck.dir().resolve("step-000003.tmp")));
    Path last = ck.dir().resolve("step-000003");
    assertEquals(state(3), Checkpoints.readState(last));
    assertEquals(c, ConfigLoader.fromTree(
        dev.kiln.runtime.io.Json.parseObject(Files.readString(last.resolve("config.json"))), List.of(), "x"));
    assertEquals(TokenizerFiles.load(tok, List.of()).vocabSize(), TokenizerFiles.load(last, List.of()).vocabSize());

    // Re-writing an existing step replaces it whole.
    ck.write(c, m.parameters(), opt, state(3), null);
    assertEquals(List.of(ck.dir().resolve("step-000002"), ck.dir().resolve("step-000003")), ck.list());
    assertTrue(Files.notExists(last.resolve("vocab.json")));

    // resolve() accepts the checkpoint, the checkpoints folder and the run folder.
    assertEquals(last, Checkpoints.resolve(last));
    assertEquals(last, Checkpoints.resolve(ck.dir()));
    assertEquals(last, Checkpoints.resolve(tmp.resolve("run")));
    assertThrows(NoSuchFileException.class, () -> Checkpoints.resolve(tmp));

    // Parameters come back bit for bit; another model's layout is refused by name.
    BigramModel other = new BigramModel(16, DType.F32, 2);
    Checkpoints.loadModel(last, other.parameters());
    assertArrayEquals(m.parameters().get("table.weight").toFloatArray(),
        other.parameters().get("table.weight").toFloatArray(), 0f);
    BigramModel wrong = new BigramModel(8, DType.F32, 2);
    IOException e = assertThrows(IOException.class, () -> Checkpoints.loadModel(last, wrong.parameters()));
    assertTrue(e.getMessage().contains("table.weight") && e.getMessage().contains("another model config"),
        e.getMessage());
  }

  @Test
  void trainerStateRoundTripsExactly() {
    TrainerState s = new TrainerState(123, new Rng.State(-7, 1, Long.MAX_VALUE), 456, 789, 2.718281828459045e-3, 0.1 + 0.2);
    assertEquals(s, TrainerState.fromJson(s.toJson(), "t"));
    TrainerState none = state(0);
    assertTrue(Double.isNaN(TrainerState.fromJson(none.toJson(), "t").bestValLoss()));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> TrainerState.fromJson("{\"format\": 9}", "trainer.json"));
    assertTrue(e.getMessage().contains("format 9"), e.getMessage());
  }
}
