package dev.kiln.runtime.train;

import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.LrSchedule;
import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.optim.Sgd;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A whole training run's settings, one typed record per section of the config file. Keys in the file are the
 * components' names in snake_case ({@code model.d_model}, {@code training.grad_accum_steps}); enums are written in
 * lower case ({@code ffn: squared_relu}). {@link ConfigLoader} reads a file, applies {@code key.path=value}
 * overrides and fills defaults; {@link #validate()} checks what a single key cannot (divisibility, files, the
 * tokenizer's vocabulary). {@code docs/training.md} lists every key.
 */
public record TrainConfig(
    ModelConfig model,
    OptimizerConfig optimizer,
    ScheduleConfig schedule,
    DataConfig data,
    TrainingConfig training,
    EvalConfig eval,
    CheckpointConfig checkpoint,
    LoggingConfig logging) {

  public static TrainConfig defaults() {
    return new TrainConfig(
        ModelConfig.defaults(), OptimizerConfig.defaults(), ScheduleConfig.defaults(), DataConfig.defaults(),
        TrainingConfig.defaults(), EvalConfig.defaults(), CheckpointConfig.defaults(), LoggingConfig.defaults());
  }

  /** Which optimizer, and its hyper-parameters (the learning rate comes from the schedule). */
  public record OptimizerConfig(
      OptimizerName name,
      double beta1,
      double beta2,
      double eps,
      double weightDecay,
      AdamW.Formula formula,
      double momentum,
      boolean nesterov) {
    public static OptimizerConfig defaults() {
      return new OptimizerConfig(OptimizerName.ADAMW, 0.9, 0.999, 1e-8, 0.01, AdamW.Formula.CS336, 0.9, false);
    }

    /** A new optimizer over {@code params} with these settings. */
    public Optimizer create(ParameterSet params) {
      return switch (name) {
        case ADAMW -> new AdamW(params, beta1, beta2, eps, weightDecay, formula);
        case SGD -> new Sgd(params, momentum, weightDecay, nesterov);
      };
    }
  }

  public enum OptimizerName {
    ADAMW,
    SGD
  }

  /** The learning-rate schedule; see {@link LrSchedule}. */
  public record ScheduleConfig(
      ScheduleType type,
      double maxLr,
      double minLr,
      long warmupSteps,
      long cosineCycleSteps,
      double decayFraction,
      LrSchedule.DecayShape decayShape) {
    public static ScheduleConfig defaults() {
      return new ScheduleConfig(ScheduleType.COSINE, 1e-3, 1e-4, 0, 0, 0.2, LrSchedule.DecayShape.LINEAR);
    }

    /** The schedule for a run of {@code totalSteps} updates. */
    public LrSchedule create(long totalSteps) {
      return switch (type) {
        case CONSTANT -> new LrSchedule.Constant(maxLr);
        case COSINE -> new LrSchedule.Cosine(maxLr, minLr, warmupSteps, cosineCycleSteps > 0 ? cosineCycleSteps : totalSteps);
        case WSD -> new LrSchedule.WarmupStableDecay(
            maxLr, minLr, warmupSteps, Math.round(decayFraction * totalSteps), totalSteps, decayShape);
      };
    }
  }

  public enum ScheduleType {
    COSINE,
    CONSTANT,
    WSD
  }

  /** Token files (see {@code TokenFile}) and the tokenizer folder that made them. */
  public record DataConfig(@Required Path train, Path validation, TokenDtype tokenDtype, Path tokenizer) {
    public static DataConfig defaults() {
      return new DataConfig(null, null, TokenDtype.AUTO, null);
    }
  }

  /** Width of the token ids in the files: from their manifest ({@code auto}), or stated for raw files. */
  public enum TokenDtype {
    AUTO,
    UINT16,
    UINT32
  }

  /**
   * The optimisation loop, and where it runs: {@code device} cpu or cuda; {@code precision} fp32, or bf16 (mixed
   * precision on cuda: bf16 GEMMs and attention, fp32 master weights, optimizer state and everything else);
   * {@code cudaGraphs}: replay each step after the first as one CUDA graph (cuda, one micro-batch per step).
   */
  public record TrainingConfig(
      @Required long steps, int batchSize, int gradAccumSteps, double maxGradNorm, long seed, Path runDir,
      TrainDevice device, Precision precision, boolean cudaGraphs) {
    public static TrainingConfig defaults() {
      return new TrainingConfig(0, 32, 1, 1.0, 0, Path.of("run"), TrainDevice.CPU, Precision.FP32, false);
    }
  }

  /** Where training runs. */
  public enum TrainDevice {
    CPU,
    CUDA
  }

  /** Arithmetic of the matrix products. */
  public enum Precision {
    FP32,
    BF16
  }

  /** Validation: a loss over the validation file every {@code every} steps (0: only at the end). */
  public record EvalConfig(long every, long maxBatches, int batchSize) {
    public static EvalConfig defaults() {
      return new EvalConfig(100, 0, 0);
    }
  }

  /** Checkpoints every {@code every} steps (0: only at the end and on Ctrl-C), keeping the last {@code keep}. */
  public record CheckpointConfig(long every, int keep) {
    public static CheckpointConfig defaults() {
      return new CheckpointConfig(1000, 3);
    }
  }

  /** The progress display: when stderr is not a terminal, one line every {@code progressEvery} steps. */
  public record LoggingConfig(long progressEvery) {
    public static LoggingConfig defaults() {
      return new LoggingConfig(10);
    }
  }

  /**
   * Checks every rule that involves more than one key or the file system, and throws one {@link ConfigException}
   * listing every problem, each naming its key.
   */
  public TrainConfig validate(String source) {
    List<String> p = new ArrayList<>();
    ModelConfig m = model;
    positive(p, "model.vocab_size", m.vocabSize());
    positive(p, "model.context_length", m.contextLength());
    positive(p, "model.d_model", m.dModel());
    positive(p, "model.num_layers", m.numLayers());
    positive(p, "model.num_heads", m.numHeads());
    positive(p, "model.d_ff", m.dFf());
    if (m.numHeads() > 0 && m.dModel() > 0 && m.dModel() % m.numHeads() != 0) {
      p.add("model.d_model (" + m.dModel() + ") is not divisible by model.num_heads (" + m.numHeads() + ")");
    } else if (m.positions() == ModelConfig.Positions.ROPE && m.numHeads() > 0 && m.headDim() % 2 != 0) {
      p.add("model.positions is rope, which rotates pairs of dims, but the head width d_model / num_heads = "
          + m.headDim() + " is odd");
    }
    if (!(m.ropeTheta() > 0)) {
      p.add("model.rope_theta must be > 0, got " + m.ropeTheta());
    }
    if (!(m.normEps() > 0)) {
      p.add("model.norm_eps must be > 0, got " + m.normEps());
    }
    if (!(m.zLoss() >= 0)) {
      p.add("model.z_loss must be >= 0, got " + m.zLoss());
    }

    OptimizerConfig o = optimizer;
    unitInterval(p, "optimizer.beta1", o.beta1());
    unitInterval(p, "optimizer.beta2", o.beta2());
    unitInterval(p, "optimizer.momentum", o.momentum());
    if (!(o.eps() >= 0)) {
      p.add("optimizer.eps must be >= 0, got " + o.eps());
    }
    if (!(o.weightDecay() >= 0)) {
      p.add("optimizer.weight_decay must be >= 0, got " + o.weightDecay());
    }
    if (o.nesterov() && o.momentum() == 0) {
      p.add("optimizer.nesterov needs optimizer.momentum > 0");
    }

    TrainingConfig t = training;
    positive(p, "training.steps", t.steps());
    positive(p, "training.batch_size", t.batchSize());
    positive(p, "training.grad_accum_steps", t.gradAccumSteps());
    if (t.precision() == Precision.BF16 && t.device() != TrainDevice.CUDA) {
      p.add("training.precision bf16 (mixed precision) needs training.device cuda; on the cpu use fp32");
    }
    if (t.cudaGraphs() && (t.device() != TrainDevice.CUDA || t.gradAccumSteps() != 1)) {
      p.add("training.cuda_graphs needs training.device cuda and training.grad_accum_steps 1 (a graph records one"
          + " micro-batch), got device " + t.device().toString().toLowerCase(java.util.Locale.ROOT)
          + " and grad_accum_steps " + t.gradAccumSteps());
    }
    if (t.device() == TrainDevice.CUDA && o.name() != OptimizerName.ADAMW) {
      p.add("training.device cuda trains with AdamW (the fused GPU optimizer); optimizer.name " + o.name()
          .toString().toLowerCase(java.util.Locale.ROOT) + " runs on the cpu only");
    }
    if (!(t.maxGradNorm() >= 0)) {
      p.add("training.max_grad_norm must be >= 0 (0 turns clipping off), got " + t.maxGradNorm());
    }

    ScheduleConfig s = schedule;
    if (!(s.maxLr() > 0) || Double.isInfinite(s.maxLr())) {
      p.add("schedule.max_lr must be a finite number > 0, got " + s.maxLr());
    }
    if (!(s.minLr() >= 0) || s.minLr() > s.maxLr()) {
      p.add("schedule.min_lr must lie in [0, schedule.max_lr = " + s.maxLr() + "], got " + s.minLr());
    }
    if (s.warmupSteps() < 0) {
      p.add("schedule.warmup_steps must be >= 0, got " + s.warmupSteps());
    } else if (t.steps() > 0 && s.warmupSteps() > t.steps()) {
      p.add("schedule.warmup_steps (" + s.warmupSteps() + ") is greater than training.steps (" + t.steps() + ")");
    }
    if (s.type() == ScheduleType.COSINE && s.cosineCycleSteps() != 0 && s.cosineCycleSteps() < s.warmupSteps()) {
      p.add("schedule.cosine_cycle_steps (" + s.cosineCycleSteps() + ") is less than schedule.warmup_steps ("
          + s.warmupSteps() + "); set it to at least the warmup, or 0 for training.steps");
    }
    if (s.cosineCycleSteps() < 0) {
      p.add("schedule.cosine_cycle_steps must be >= 0 (0 means training.steps), got " + s.cosineCycleSteps());
    }
    if (!(s.decayFraction() >= 0 && s.decayFraction() <= 1)) {
      p.add("schedule.decay_fraction must lie in [0, 1], got " + s.decayFraction());
    } else if (s.type() == ScheduleType.WSD && s.warmupSteps() >= 0 && t.steps() > 0
        && s.warmupSteps() + Math.round(s.decayFraction() * t.steps()) > t.steps()) {
      p.add("schedule.warmup_steps + schedule.decay_fraction × training.steps exceeds training.steps ("
          + s.warmupSteps() + " + " + Math.round(s.decayFraction() * t.steps()) + " > " + t.steps() + ")");
    }

    if (eval.every() < 0) {
      p.add("eval.every must be >= 0 (0: only at the end), got " + eval.every());
    }
    if (eval.maxBatches() < 0) {
      p.add("eval.max_batches must be >= 0 (0: the whole file), got " + eval.maxBatches());
    }
    if (eval.batchSize() < 0) {
      p.add("eval.batch_size must be >= 0 (0: training.batch_size), got " + eval.batchSize());
    }
    if (checkpoint.every() < 0) {
      p.add("checkpoint.every must be >= 0 (0: only at the end and on Ctrl-C), got " + checkpoint.every());
    }
    positive(p, "checkpoint.keep", checkpoint.keep());
    if (logging.progressEvery() < 1) {
      p.add("logging.progress_every must be >= 1, got " + logging.progressEvery());
    }

    DataConfig d = data;
    if (d.train() != null && !Files.isRegularFile(d.train())) {
      p.add("data.train: token file " + d.train().toAbsolutePath() + " not found");
    }
    if (d.validation() != null && !Files.isRegularFile(d.validation())) {
      p.add("data.validation: token file " + d.validation().toAbsolutePath() + " not found");
    }
    if (d.tokenizer() != null) {
      if (!Files.isDirectory(d.tokenizer())) {
        p.add("data.tokenizer: folder " + d.tokenizer().toAbsolutePath() + " not found");
      } else {
        try {
          int v = TokenizerFiles.load(d.tokenizer(), List.of()).vocabSize();
          if (m.vocabSize() > 0 && v != m.vocabSize()) {
            p.add("model.vocab_size is " + m.vocabSize() + " but the tokenizer in " + d.tokenizer() + " has " + v
                + " tokens; set model.vocab_size=" + v);
          }
        } catch (IOException | RuntimeException e) {
          p.add("data.tokenizer: cannot load the tokenizer in " + d.tokenizer() + ": " + e.getMessage());
        }
      }
    }
    if (!p.isEmpty()) {
      throw new ConfigException(source, p);
    }
    return this;
  }

  private static void positive(List<String> p, String key, long v) {
    if (v < 1) {
      p.add(key + " must be >= 1, got " + v);
    }
  }

  private static void unitInterval(List<String> p, String key, double v) {
    if (!(v >= 0 && v < 1)) {
      p.add(key + " must lie in [0, 1), got " + v);
    }
  }
}
