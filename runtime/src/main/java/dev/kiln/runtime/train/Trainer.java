package dev.kiln.runtime.train;

import dev.kiln.runtime.data.Batch;
import dev.kiln.runtime.data.RandomBatches;
import dev.kiln.runtime.data.SequentialBatches;
import dev.kiln.runtime.data.TokenSource;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.optim.LrSchedule;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.Rng;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * The training loop: for each step, {@code grad_accum_steps} micro-batches of CS336 {@code get_batch} windows,
 * gradients averaged over them, clipped by the global norm, one optimizer update at the schedule's learning rate.
 * Around it: validation loss every {@code eval.every} steps, {@code metrics.jsonl}, a progress bar on stderr,
 * checkpoints every {@code checkpoint.every} steps, at the end and on Ctrl-C, a stop on a NaN/Inf loss, and a
 * loss-curve PNG at the end.
 *
 * <p>Files of a run, under {@code training.run_dir}: {@code config.json} (the resolved config),
 * {@code metrics.jsonl}, {@code checkpoints/step-NNNNNN/} and {@code checkpoints/latest}, {@code loss.png}.
 *
 * <p><b>Exact resume.</b> {@link #resumeFrom} restores the parameters, the optimizer state, the step and the data
 * generator's state; the schedule is a function of the step. With a deterministic model, the losses after a resume
 * equal those of an uninterrupted run bit for bit.
 *
 * <p><b>Randomness.</b> Training batches come from {@code new Rng(training.seed).stream(1)}; stream 0 of the same
 * seed is left for the model's initialisation.
 */
public final class Trainer implements AutoCloseable {
  /** How a {@link #run} ended. */
  public enum Status {
    COMPLETED,
    /** Stopped early by {@link #requestStop} (Ctrl-C): the step in progress finished and was checkpointed. */
    STOPPED
  }

  /**
   * The outcome of {@link #run}: final step, last losses (NaN when not measured), last checkpoint, plot (null when
   * this Java runtime cannot draw images).
   */
  public record Result(
      Status status, long step, double trainLoss, double valLoss, double bestValLoss, Path checkpoint, Path plot) {}

  private final TrainConfig config;
  private final TrainingEngine engine;
  private final ParameterSet params;
  private final LrSchedule schedule;
  private final TokenFile trainTokens;
  private final TokenFile valTokens;
  private final SequentialBatches validation;
  private final Path runDir;
  private final Checkpoints checkpoints;
  private final MetricsLog metrics;
  private final ProgressBar progress;
  private final PrintStream log;

  private RandomBatches trainBatches;
  private long step;
  private long tokensSeen;
  private double bestValLoss = Double.NaN;
  private double elapsedBefore;
  private Path lastCheckpoint;
  private boolean resumed;

  private volatile boolean stopRequested;
  private volatile boolean running;
  private final CountDownLatch finished = new CountDownLatch(1);
  private Thread installedHook;

  /**
   * A trainer for {@code model} (freshly initialised, or about to be {@link #resumeFrom resumed}) under a validated
   * {@code config}; progress goes to {@code log} ({@code System.err}), redrawn in place when {@code terminal}.
   */
  public Trainer(TrainConfig config, TrainableModel model, PrintStream log, boolean terminal) throws IOException {
    this(config, TrainingEngine.forModel(model, config.optimizer()), log, terminal);
  }

  /** A trainer that runs its steps on {@code engine} (the CPU's, or {@link CudaEngine} on a GPU). */
  public Trainer(TrainConfig config, TrainingEngine engine, PrintStream log, boolean terminal) throws IOException {
    this.config = config;
    this.engine = engine;
    this.params = engine.hostParameters();
    if (config.training().cudaGraphs()) {
      engine.enableGraphs(config.training().maxGradNorm());
    }
    this.schedule = config.schedule().create(config.training().steps());
    this.runDir = config.training().runDir();
    this.checkpoints = new Checkpoints(runDir.resolve("checkpoints"), config.checkpoint().keep());
    this.metrics = new MetricsLog(runDir.resolve("metrics.jsonl"));
    this.log = log;
    this.progress = new ProgressBar(log, terminal, config.logging().progressEvery());
    ModelConfig m = config.model();
    TokenFile.Width width = switch (config.data().tokenDtype()) {
      case AUTO -> null;
      case UINT16 -> TokenFile.Width.UINT16;
      case UINT32 -> TokenFile.Width.UINT32;
    };
    this.trainTokens = TokenSource.open(config.data().train(), width, m.contextLength(), m.vocabSize());
    TrainConfig.TrainingConfig t = config.training();
    this.trainBatches = new RandomBatches(
        trainTokens, t.batchSize(), m.contextLength(), m.vocabSize(), new Rng(t.seed()).stream(1), 0);
    if (config.data().validation() != null) {
      this.valTokens = TokenSource.open(config.data().validation(), width, m.contextLength(), m.vocabSize());
      int evalBatch = config.eval().batchSize() > 0 ? config.eval().batchSize() : t.batchSize();
      this.validation =
          new SequentialBatches(valTokens, evalBatch, m.contextLength(), m.vocabSize(), config.eval().maxBatches());
    } else {
      this.valTokens = null;
      this.validation = null;
    }
  }

  /**
   * Continues from checkpoint {@code path} (a checkpoint folder, or a folder with a {@code latest} file): loads the
   * parameters into the model, the optimizer state, the step, the data generator's state and the run's counters.
   * Call before {@link #run}. The config should be the checkpoint's own ({@code config.json}), possibly with
   * overrides that do not change the arithmetic (e.g. {@code checkpoint.every}).
   */
  public Path resumeFrom(Path path) throws IOException {
    Path ckpt = Checkpoints.resolve(path);
    TrainerState s = Checkpoints.readState(ckpt);
    Checkpoints.loadModel(ckpt, params);
    engine.hostOptimizer().load(ckpt.resolve(Checkpoints.OPTIMIZER));
    if (engine.hostOptimizer().stepCount() != s.step()) {
      throw new IOException(
          "checkpoint " + ckpt + " is inconsistent: trainer.json says step " + s.step() + " but the optimizer state"
              + " has taken " + engine.hostOptimizer().stepCount() + " steps");
    }
    engine.syncFromHost();
    if (s.step() > config.training().steps()) {
      throw new IllegalArgumentException(
          "checkpoint " + ckpt + " is at step " + s.step() + ", past training.steps = " + config.training().steps()
              + "; raise training.steps to continue");
    }
    TrainConfig.TrainingConfig t = config.training();
    trainBatches = new RandomBatches(trainTokens, t.batchSize(), config.model().contextLength(),
        config.model().vocabSize(), new Rng(s.dataRng()), s.batchesDrawn());
    step = s.step();
    tokensSeen = s.tokensSeen();
    bestValLoss = s.bestValLoss();
    elapsedBefore = s.elapsedSeconds();
    lastCheckpoint = ckpt;
    resumed = true;
    metrics.truncateAfter(step);
    return ckpt;
  }

  /** Asks the loop to stop after the step in progress, writing a checkpoint first (what Ctrl-C does). */
  public void requestStop() {
    stopRequested = true;
  }

  /**
   * A shutdown hook for Ctrl-C: it asks the loop to stop and waits (up to 10 minutes) until the step in progress
   * has finished and its checkpoint is on disk, so the JVM does not exit half-way through the write.
   */
  public Thread shutdownHook() {
    return new Thread(() -> {
      if (!running) {
        return;
      }
      requestStop();
      try {
        if (!finished.await(10, TimeUnit.MINUTES)) {
          log.println("kiln: gave up waiting for the checkpoint after 10 minutes");
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }, "kiln-train-shutdown");
  }

  /** Registers {@link #shutdownHook()} with the JVM for the duration of {@link #run}. */
  public void installShutdownHook() {
    installedHook = shutdownHook();
    Runtime.getRuntime().addShutdownHook(installedHook);
  }

  /** Trains to {@code training.steps} (or until stopped); throws {@link TrainingDivergedException} on NaN/Inf. */
  public Result run() throws IOException {
    running = true;
    try {
      return loop();
    } finally {
      running = false;
      finished.countDown();
      if (installedHook != null) {
        try {
          Runtime.getRuntime().removeShutdownHook(installedHook);
        } catch (IllegalStateException e) {
          // the JVM is shutting down: the hook is what is waiting for us
        }
      }
    }
  }

  private Result loop() throws IOException {
    TrainConfig.TrainingConfig t = config.training();
    long total = t.steps();
    if (!resumed) {
      if (checkpoints.latest().isPresent() || Files.exists(metrics.file())) {
        throw new IllegalStateException(
            "run folder " + runDir + " already holds a run (metrics.jsonl or checkpoints/latest); resume it, or set"
                + " training.run_dir to a new folder");
      }
    }
    Files.createDirectories(runDir);
    ConfigLoader.write(config, runDir.resolve("config.json"));
    long tokensPerStep = (long) t.batchSize() * t.gradAccumSteps() * config.model().contextLength();
    log.println(String.format(Locale.ROOT, "%s %,d parameters for %d steps of %,d tokens%s", resumed ? "resuming" : "training",
        params.numel(), total, tokensPerStep, resumed ? " from step " + step + " (" + lastCheckpoint + ")" : ""));
    long start = System.nanoTime();
    double stepSecondsAvg = Double.NaN;
    double lastLoss = Double.NaN;
    double lastVal = Double.NaN;
    Status status = Status.COMPLETED;
    // Queued steps (CUDA graphs, one micro-batch): step k + 1 is queued before step k's results are awaited, so the
    // GPU never waits for the host between steps. Not past a step whose parameters are read (evaluation, checkpoint,
    // the last step, a stop request), so those see exactly the parameters of their step.
    boolean queued = engine.canQueueSteps() && t.gradAccumSteps() == 1;
    TrainingEngine.QueuedStep ahead = null;
    while (step < total) {
      long t0 = System.nanoTime();
      double lr = schedule.lr(step);
      long thisStep = step + 1;
      double loss = 0;
      double norm;
      if (queued) {
        TrainingEngine.QueuedStep current = ahead != null ? ahead : queue(lr);
        ahead = thisStep < total && !evalDue(thisStep) && !checkpointDue(thisStep) && !stopRequested
            ? queue(schedule.lr(thisStep)) : null;
        TrainingEngine.StepResult r = current.await();
        loss = r.loss();
        norm = r.gradNorm();
      } else {
        engine.beginStep(lr);
        for (int micro = 0; micro < t.gradAccumSteps(); micro++) {
          Batch b = trainBatches.next();
          loss += engine.accumulate(b.inputs(), b.targets());
        }
        loss /= t.gradAccumSteps();
        norm = engine.clipGradients(t.gradAccumSteps(), t.maxGradNorm());
      }
      double elapsed = elapsedBefore + (System.nanoTime() - start) / 1e9;
      if (!Double.isFinite(loss) || !Double.isFinite(norm)) {
        if (ahead != null) {
          // The next step was queued before this one's results came back; it has run too. Nothing of either is
          // saved: the message points at the last checkpoint.
          ahead.await();
        }
        engine.abandonStep();
        metrics.append(new MetricsLog.Entry(thisStep, loss, Double.NaN, lr, norm, 0, elapsed));
        progress.finish();
        String what = !Double.isFinite(loss) ? "loss is " + loss : "gradient norm is " + norm;
        String msg = "training diverged at step " + thisStep + ": the " + what + "; the update was not applied. "
            + (lastCheckpoint != null
                ? "The last good checkpoint is " + lastCheckpoint + " (resume from it with a lower schedule.max_lr)"
                : "No checkpoint was written before it (try a lower schedule.max_lr)");
        plot();
        throw new TrainingDivergedException(msg, thisStep, lastCheckpoint);
      }
      if (!queued) {
        engine.update(lr);
      }
      step = thisStep;
      tokensSeen += tokensPerStep;
      lastLoss = loss;
      double stepSeconds = (System.nanoTime() - t0) / 1e9;
      stepSecondsAvg = Double.isNaN(stepSecondsAvg) ? stepSeconds : 0.9 * stepSecondsAvg + 0.1 * stepSeconds;

      double val = Double.NaN;
      boolean evalNow = evalDue(step);
      if (evalNow) {
        val = validation.meanLoss(b -> engine.loss(b.inputs(), b.targets()));
        lastVal = val;
        if (Double.isNaN(bestValLoss) || val < bestValLoss) {
          bestValLoss = val;
        }
      }
      elapsed = elapsedBefore + (System.nanoTime() - start) / 1e9;
      metrics.append(new MetricsLog.Entry(step, loss, val, lr, norm, tokensPerStep / stepSeconds, elapsed));
      progress.update(step, total, loss, lr, tokensPerStep / stepSecondsAvg, (total - step) * stepSecondsAvg);
      if (evalNow) {
        progress.message(String.format(Locale.ROOT, "step %d: validation loss %.4f", step, val));
      }
      // With the next step already queued, stop after it: its update is in the parameters a checkpoint would read.
      boolean stop = stopRequested && ahead == null;
      boolean due = checkpointDue(step);
      if (due || stop) {
        elapsed = elapsedBefore + (System.nanoTime() - start) / 1e9;
        engine.syncToHost();
        lastCheckpoint = checkpoints.write(config, params, engine.hostOptimizer(),
            new TrainerState(step, trainBatches.rngState(), trainBatches.batchesDrawn(), tokensSeen, bestValLoss,
                elapsed),
            config.data().tokenizer());
        if (stop || step == total) {
          progress.message("checkpoint " + lastCheckpoint);
        }
      }
      if (stop && step < total) {
        status = Status.STOPPED;
        progress.message("stopped at step " + step + " of " + total + "; continue with --resume " + lastCheckpoint);
        break;
      }
    }
    progress.finish();
    Path png = plot();
    return new Result(status, step, lastLoss, lastVal, bestValLoss, lastCheckpoint, png);
  }

  /** Queues the next step on the next training batch ({@link TrainingEngine#queueStep}). */
  private TrainingEngine.QueuedStep queue(double lr) {
    Batch b = trainBatches.next();
    return engine.queueStep(lr, b.inputs(), b.targets());
  }

  /** Whether the validation loss is measured after {@code step} (which reads the parameters that step left). */
  private boolean evalDue(long step) {
    return validation != null
        && ((config.eval().every() > 0 && step % config.eval().every() == 0) || step == config.training().steps());
  }

  /** Whether a checkpoint is written after {@code step}. */
  private boolean checkpointDue(long step) {
    return (config.checkpoint().every() > 0 && step % config.checkpoint().every() == 0)
        || step == config.training().steps();
  }

  /** Draws {@code loss.png} from the whole of {@code metrics.jsonl} (so a resumed run's plot has its history). */
  private Path plot() throws IOException {
    List<LossPlot.Point> train = new ArrayList<>();
    List<LossPlot.Point> val = new ArrayList<>();
    for (MetricsLog.Entry e : metrics.read()) {
      train.add(new LossPlot.Point(e.step(), e.trainLoss()));
      if (!Double.isNaN(e.valLoss())) {
        val.add(new LossPlot.Point(e.step(), e.valLoss()));
      }
    }
    Path png = runDir.resolve("loss.png");
    try {
      LossPlot.write(png, "Loss: " + runDir.toAbsolutePath().normalize().getFileName(), train, val);
    } catch (LinkageError e) {
      // A trimmed Java runtime (a jlinked one on a GPU host) may lack java.desktop; the run itself is complete.
      log.println("kiln: loss.png not drawn: this Java runtime has no image support (" + e + "); metrics.jsonl"
          + " has every point");
      return null;
    }
    return png;
  }

  /** Unmaps the token files and releases the engine (GPU memory). */
  @Override
  public void close() {
    engine.close();
    trainTokens.close();
    if (valTokens != null) {
      valTokens.close();
    }
  }

  /** The step reached so far. */
  public long step() {
    return step;
  }
}
