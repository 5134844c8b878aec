package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.train.Checkpoints;
import dev.kiln.runtime.train.ConfigLoader;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ProgressBar;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.Trainer;
import dev.kiln.runtime.train.TrainingEngine;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln train}: trains the CS336 Transformer LM (compiled from the DSL) on token files, as one config file says.
 * The trainer draws the progress bar, validates, logs {@code metrics.jsonl}, checkpoints (also on Ctrl-C), plots
 * {@code loss.png} and stops on a NaN; see {@code docs/model.md} and {@code docs/training.md}.
 */
@Command(
    name = "train",
    description = "Train a Transformer language model from a config file (JSON or YAML).",
    footer = {
      "",
      "Example:  kiln train --config examples/tinystories.json --set training.steps=2000",
      "Resume:   kiln train --resume run/ (reads the checkpoint's own config.json; --config overrides it)",
      "Every key of the config is described in docs/model.md and docs/training.md."
    })
public final class TrainCommand implements Callable<Integer> {
  @Option(names = "--config", paramLabel = "FILE",
      description = "Training config (.json, .yaml or .yml). Optional with --resume.")
  Path configFile;

  @Option(names = "--set", paramLabel = "KEY=VALUE",
      description = "Override one config key, e.g. --set training.steps=2000 --set model.ffn=gelu (repeatable).")
  List<String> overrides = new ArrayList<>();

  @Option(names = "--device", paramLabel = "cpu|cuda",
      description = "Where to train (same as --set training.device=...); cuda needs an NVIDIA GPU.")
  String device;

  @Option(names = "--precision", paramLabel = "fp32|bf16",
      description = "bf16: mixed precision on cuda (bf16 GEMMs and attention, fp32 weights and optimizer state);"
          + " same as --set training.precision=...")
  String precision;

  @Option(names = "--graphs", description = "On cuda, replay each step after the first as one CUDA graph (same as"
      + " --set training.cuda_graphs=true): a large speed-up for models up to about a billion parameters, whose steps"
      + " are many short kernels; needs training.grad_accum_steps 1.")
  boolean graphs;

  @Option(names = "--resume", paramLabel = "DIR",
      description = "Continue from a checkpoint: a run folder, its checkpoints/ folder or one step-NNNNNN/ folder."
          + " The losses after a resume equal those of an uninterrupted run.")
  Path resume;

  @Override
  public Integer call() throws Exception {
    PrintStream err = System.err;
    Path file;
    if (configFile != null) {
      file = configFile;
    } else if (resume != null) {
      file = Checkpoints.resolve(resume).resolve(Checkpoints.CONFIG);
    } else {
      throw new IllegalArgumentException("give --config FILE (or --resume DIR, which reads the checkpoint's"
          + " config.json)");
    }
    List<String> sets = new ArrayList<>(overrides);
    if (device != null) {
      sets.add("training.device=" + device);
    }
    if (precision != null) {
      sets.add("training.precision=" + precision);
    }
    if (graphs) {
      sets.add("training.cuda_graphs=true");
    }
    TrainConfig config = ConfigLoader.load(file, sets);
    Trainer.Result r = train(config, resume, err);
    return r.status() == Trainer.Status.COMPLETED ? 0 : 130;
  }

  /**
   * Builds the model a config describes and runs the trainer (Ctrl-C checkpoints and stops), optionally resuming;
   * prints the model line and a summary to {@code err}. {@code kiln quickstart} trains through here too.
   */
  static Trainer.Result train(TrainConfig config, Path resume, PrintStream err) throws java.io.IOException {
    ModelConfig m = config.model();
    long t0 = System.nanoTime();
    TrainingEngine engine;
    String where;
    if (config.training().device() == TrainConfig.TrainDevice.CUDA) {
      CudaModelDevice dev = new CudaModelDevice(0, config.training().precision() == TrainConfig.Precision.BF16
          ? CudaModelDevice.Precision.BF16 : CudaModelDevice.Precision.FP32);
      engine = Cs336Lm.cudaEngine(m, config.training().seed(), dev, config.optimizer());
      where = dev.gpu() + ", " + lower(config.training().precision());
    } else {
      engine = TrainingEngine.forModel(Cs336Lm.create(m, config.training().seed(), DType.F32).trainable(),
          config.optimizer());
      where = "cpu";
    }
    err.printf(Locale.ROOT, "model: %,d parameters (d_model %d, %d layers, %d heads, d_ff %d, vocab %d, context %d;"
            + " %s, %s, %s, %s%s%s%s) on %s, built in %.2f s%n",
        engine.hostParameters().numel(), m.dModel(), m.numLayers(), m.numHeads(), m.dFf(), m.vocabSize(),
        m.contextLength(), lower(m.normPlacement()) + "-norm", lower(m.norm()), lower(m.ffn()), lower(m.positions()),
        m.tiedEmbeddings() ? ", tied" : "", m.qkNorm() ? ", qk-norm" : "",
        m.zLoss() > 0 ? ", z-loss " + m.zLoss() : "", where, (System.nanoTime() - t0) / 1e9);
    try (Trainer trainer = new Trainer(config, engine, err, ProgressBar.isTerminal())) {
      if (resume != null) {
        Path from = trainer.resumeFrom(resume);
        err.println("resumed from " + from + " at step " + trainer.step());
      }
      trainer.installShutdownHook();
      Trainer.Result r = trainer.run();
      err.printf(Locale.ROOT, "%s at step %d: train loss %.4f%s; checkpoint %s; plot %s%n",
          r.status() == Trainer.Status.COMPLETED ? "done" : "stopped", r.step(), r.trainLoss(),
          Double.isNaN(r.valLoss()) ? "" : String.format(Locale.ROOT, ", validation loss %.4f", r.valLoss()),
          r.checkpoint(), r.plot() == null ? "not drawn" : r.plot());
      return r;
    }
  }

  private static String lower(Enum<?> e) {
    return e.name().toLowerCase(Locale.ROOT);
  }
}
