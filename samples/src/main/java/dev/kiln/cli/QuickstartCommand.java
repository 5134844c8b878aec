package dev.kiln.cli;

import dev.kiln.runtime.infer.Generator;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.infer.Sampler;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.ConfigLoader;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.Trainer;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln quickstart}: the whole CS336 pipeline on the bundled TinyStories text, on the CPU, in a few minutes —
 * split the stories, train a BPE tokenizer, encode, train a small Transformer LM (the DSL model, compiled), keep a
 * checkpoint, report validation loss, and tell a story.
 *
 * <p>It goes through the same code as the separate commands ({@code kiln tokenizer train/encode}, {@code kiln
 * train}, {@code kiln generate}), and it writes the config it trained with ({@code <out>/train-config.json}), so
 * every step can be rerun and changed by hand.
 */
@Command(
    name = "quickstart",
    description = "Train a small language model on the bundled TinyStories text and generate a story (CPU, minutes).")
public final class QuickstartCommand implements Callable<Integer> {
  @Option(names = "--data", paramLabel = "DIR", description = "Folder of TinyStories .txt files (default: the"
      + " bundled data/tinystories).")
  Path data;

  @Option(names = "--out", paramLabel = "DIR", description = "Where the run goes (default: ${DEFAULT-VALUE}).")
  Path out = Path.of("runs", "quickstart");

  @Option(names = "--steps", description = "Training steps (default: ${DEFAULT-VALUE}).")
  int steps = 700;

  @Option(names = "--vocab-size", description = "BPE vocabulary size (default: ${DEFAULT-VALUE}).")
  int vocabSize = 1024;

  @Option(names = "--prompt", description = "Start of the story (default: \"${DEFAULT-VALUE}\").")
  String prompt = "Once upon a time";

  @Option(names = "--max-tokens", description = "Tokens to generate at most (default: ${DEFAULT-VALUE}).")
  int maxTokens = 200;

  @Option(names = "--seed", description = "Seed of the model, the data order and the sampler (default:"
      + " ${DEFAULT-VALUE}).")
  long seed = 336;

  @Option(names = "--set", paramLabel = "KEY=VALUE", description = "Override a training config key, as for"
      + " kiln train (e.g. --set model.d_model=256).")
  List<String> overrides = new java.util.ArrayList<>();

  @Override
  public Integer call() throws IOException {
    if (steps < 1) {
      throw new IllegalArgumentException("--steps must be at least 1, got " + steps);
    }
    if (maxTokens < 1) {
      throw new IllegalArgumentException("--max-tokens must be at least 1, got " + maxTokens);
    }
    Path runDir = out.resolve("run");
    if (Files.exists(runDir)) {
      // Checked before anything is written: a finished run (and its tokenizer and data) is never overwritten.
      throw new IllegalArgumentException(out + " already holds a quickstart run (" + runDir + "); pass --out DIR for"
          + " a new one, or talk to it: kiln generate --model " + runDir + " --prompt \"Once upon a time\"");
    }
    PrintStream err = System.err;
    long t0 = System.nanoTime();
    QuickstartData.Prepared d = QuickstartData.prepare(QuickstartData.locate(data), out, vocabSize, 20, err);

    Map<String, Object> tree = config(d);
    List<String> sets = new java.util.ArrayList<>(overrides);
    if (sets.stream().anyMatch(o -> o.replace(" ", "").equalsIgnoreCase("training.device=cuda"))
        && sets.stream().noneMatch(o -> o.startsWith("training.cuda_graphs") || o.startsWith("training.grad_accum"))) {
      // The quickstart's model is tiny: on a GPU each step is a few hundred short kernels, so replaying the step as
      // one CUDA graph is most of its speed.
      sets.add("training.cuda_graphs=true");
      err.println("cuda: steps replay as CUDA graphs (--set training.cuda_graphs=false to run them eagerly)");
    }
    TrainConfig config = ConfigLoader.fromTree(tree, sets, "kiln quickstart").validate("kiln quickstart");
    Path configFile = out.resolve("train-config.json");
    ConfigLoader.write(config, configFile);
    err.println("config: " + configFile + " (rerun with: kiln train --config " + configFile + ")");

    Trainer.Result r = TrainCommand.train(config, null, err);
    if (r.status() != Trainer.Status.COMPLETED) {
      err.println("training stopped at step " + r.step() + "; the checkpoint is in " + r.checkpoint());
      return 130;
    }

    ModelFolder folder = ModelFolder.open(config.training().runDir());
    Generator generator = new Generator(folder.loadEngine(), folder.loadTokenizer(null));
    Sampler sampler = new Sampler(0.8, 0, 1.0, new Rng(seed).stream(7));
    PrintWriter story = new PrintWriter(System.out, true, StandardCharsets.UTF_8);
    err.println();
    story.print(prompt);
    story.flush();
    Generator.Result g = generator.generate(prompt, maxTokens, sampler, story);
    story.println();
    story.flush();
    err.printf(Locale.ROOT, "%nquickstart done in %.1f min: validation loss %.3f (perplexity %.1f); model in %s;"
            + " generated %d tokens at %.0f tokens/s%n",
        (System.nanoTime() - t0) / 60e9, r.valLoss(), Math.exp(r.valLoss()), r.checkpoint(), g.generatedIds().length,
        g.decodeTokensPerSecond());
    err.println("talk to it: kiln generate --model " + config.training().runDir() + " --prompt \"Once upon a time\"");
    return 0;
  }

  /**
   * The training config: a model small enough to learn TinyStories' simple English on two cores in a few minutes
   * (about 1.1M parameters), the CS336 optimizer recipe scaled down (AdamW, cosine with warmup, clipping).
   */
  private Map<String, Object> config(QuickstartData.Prepared d) {
    Map<String, Object> tree = new LinkedHashMap<>();
    tree.put("model", map(
        "vocab_size", d.vocabSize(), "context_length", 128, "d_model", 128, "num_layers", 4, "num_heads", 4,
        "d_ff", 384, "rope_theta", 10000.0));
    tree.put("optimizer", map("name", "adamw", "beta1", 0.9, "beta2", 0.95, "eps", 1e-8, "weight_decay", 0.1));
    tree.put("schedule", map("type", "cosine", "max_lr", 3e-3, "min_lr", 3e-4, "warmup_steps", Math.min(100, steps / 10)));
    tree.put("data", map("train", d.trainTokens().toString(), "validation", d.validationTokens().toString(),
        "tokenizer", d.tokenizerDir().toString()));
    tree.put("training", map("steps", steps, "batch_size", 32, "max_grad_norm", 1.0, "seed", seed, "run_dir",
        out.resolve("run").toString()));
    tree.put("eval", map("every", Math.max(1, steps / 4), "max_batches", 20));
    tree.put("checkpoint", map("every", 0, "keep", 1));
    return tree;
  }

  private static Map<String, Object> map(Object... kv) {
    Map<String, Object> m = new LinkedHashMap<>();
    for (int i = 0; i < kv.length; i += 2) {
      m.put((String) kv[i], kv[i + 1]);
    }
    return m;
  }
}
