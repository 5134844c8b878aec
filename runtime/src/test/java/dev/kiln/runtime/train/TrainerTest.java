package dev.kiln.runtime.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainerTest {
  static final int VOCAB = 32;

  @TempDir Path tmp;
  private Path train;
  private Path val;
  private final ByteArrayOutputStream err = new ByteArrayOutputStream();
  private final PrintStream log = new PrintStream(err, true, StandardCharsets.UTF_8);

  /** A Markov chain over the vocabulary: token t is followed by (5t + 3) mod V with probability 0.7. */
  static void writeCorpus(Path p, int n, long seed) throws IOException {
    NdArray u = new Rng(seed).uniform(NdArray.zeros(DType.F64, n));
    NdArray r = new Rng(seed + 1).integers(NdArray.zeros(DType.I64, n), 0, VOCAB);
    try (TokenFile.Writer w = TokenFile.writer(p, VOCAB)) {
      int prev = 0;
      for (int i = 0; i < n; i++) {
        int next = u.getDouble(i) < 0.7 ? (5 * prev + 3) % VOCAB : (int) r.getLong(i);
        w.append(next);
        prev = next;
      }
    }
  }

  @BeforeEach
  void corpus() throws IOException {
    train = tmp.resolve("train.bin");
    val = tmp.resolve("val.bin");
    writeCorpus(train, 5000, 1);
    writeCorpus(val, 700, 2);
  }

  private TrainConfig config(String run, String... more) {
    List<String> o = new ArrayList<>(List.of(
        "model.vocab_size=" + VOCAB, "model.context_length=8", "model.d_model=8", "model.num_layers=1",
        "model.num_heads=2", "model.d_ff=16", "data.train=" + train, "data.validation=" + val,
        "training.steps=20", "training.batch_size=4", "training.grad_accum_steps=2", "training.max_grad_norm=0.5",
        "training.seed=5", "training.run_dir=" + tmp.resolve(run), "schedule.max_lr=0.05", "schedule.warmup_steps=3",
        "eval.every=5", "eval.max_batches=3", "checkpoint.every=5", "checkpoint.keep=10"));
    o.addAll(List.of(more));
    return ConfigLoader.fromTree(new java.util.LinkedHashMap<>(), o, "test").validate("test");
  }

  private static List<MetricsLog.Entry> metrics(TrainConfig c) throws IOException {
    return new MetricsLog(c.training().runDir().resolve("metrics.jsonl")).read();
  }

  @Test
  void resumedRunMatchesAnUninterruptedOneBitForBit() throws Exception {
    TrainConfig straight = config("straight");
    BigramModel a = new BigramModel(VOCAB, DType.F32, 11);
    try (Trainer t = new Trainer(straight, a, log, false)) {
      assertEquals(Trainer.Status.COMPLETED, t.run().status());
    }

    // The same run, stopped (as Ctrl-C would) during step 10, then resumed by a new trainer whose model starts
    // from other weights: everything must come from the checkpoint.
    TrainConfig split = config("split");
    BigramModel b = new BigramModel(VOCAB, DType.F32, 11);
    Trainer[] holder = new Trainer[1];
    Trainer first = new Trainer(split, new StopAt(b, 10, () -> holder[0].requestStop()), log, false);
    holder[0] = first;
    Trainer.Result r1 = first.run();
    first.close();
    assertEquals(Trainer.Status.STOPPED, r1.status());
    assertEquals(10, r1.step());
    assertEquals(split.training().runDir().resolve("checkpoints/step-000010"), r1.checkpoint());

    BigramModel c = new BigramModel(VOCAB, DType.F32, 999);
    Trainer.Result r2;
    try (Trainer second = new Trainer(split, c, log, false)) {
      second.resumeFrom(split.training().runDir());
      r2 = second.run();
    }
    assertEquals(Trainer.Status.COMPLETED, r2.status());
    assertEquals(20, r2.step());

    List<MetricsLog.Entry> ma = metrics(straight);
    List<MetricsLog.Entry> mb = metrics(split);
    assertEquals(20, ma.size());
    assertEquals(20, mb.size());
    for (int i = 0; i < 20; i++) {
      // Bit for bit: the same doubles, written and parsed as shortest round-trip decimals.
      assertEquals(Double.doubleToRawLongBits(ma.get(i).trainLoss()), Double.doubleToRawLongBits(mb.get(i).trainLoss()),
          "train loss of step " + (i + 1));
      assertEquals(Double.doubleToRawLongBits(ma.get(i).valLoss()), Double.doubleToRawLongBits(mb.get(i).valLoss()),
          "validation loss of step " + (i + 1));
      assertEquals(ma.get(i).gradNorm(), mb.get(i).gradNorm(), 0.0);
      assertEquals(ma.get(i).lr(), mb.get(i).lr(), 0.0);
    }
    for (String n : a.parameters().names()) {
      assertArrayEquals(a.parameters().get(n).toFloatArray(), c.parameters().get(n).toFloatArray(), 0f, n);
    }
    // The final checkpoints agree too, optimizer state included.
    for (String f : List.of(Checkpoints.MODEL, Checkpoints.OPTIMIZER)) {
      try (SafetensorsFile x = SafetensorsFile.open(straight.training().runDir().resolve("checkpoints/step-000020/" + f));
          SafetensorsFile y = SafetensorsFile.open(split.training().runDir().resolve("checkpoints/step-000020/" + f))) {
        assertEquals(x.names(), y.names());
        for (String n : x.names()) {
          assertArrayEquals(x.get(n).toFloatArray(), y.get(n).toFloatArray(), 0f, f + " " + n);
        }
        assertEquals(x.metadata(), y.metadata());
      }
    }
    assertTrue(r2.valLoss() < Math.log(VOCAB), "validation loss " + r2.valLoss() + " should fall below ln V");
  }

  @Test
  void shutdownHookFinishesTheStepWritesACheckpointAndThenLetsGo() throws Exception {
    TrainConfig cfg = config("hook", "checkpoint.every=0");
    Trainer[] holder = new Trainer[1];
    Thread[] hook = new Thread[1];
    BigramModel m = new BigramModel(VOCAB, DType.F32, 3);
    // The "signal" arrives in the middle of step 7: the JVM runs the hook on its own thread.
    Trainer t = new Trainer(cfg, new StopAt(m, 7, () -> {
      hook[0] = holder[0].shutdownHook();
      hook[0].start();
      // wait until the hook has asked for the stop, as a real hook would before the step ends
      long deadline = System.nanoTime() + 5_000_000_000L;
      while (hook[0].isAlive() && hook[0].getState() != Thread.State.WAITING
          && hook[0].getState() != Thread.State.TIMED_WAITING && System.nanoTime() < deadline) {
        Thread.onSpinWait();
      }
    }), log, false);
    holder[0] = t;
    Trainer.Result r = t.run();
    t.close();
    hook[0].join(5000);
    assertFalse(hook[0].isAlive(), "the hook must return once the checkpoint is written");
    assertEquals(Trainer.Status.STOPPED, r.status());
    assertEquals(7, r.step());
    Path ckpt = cfg.training().runDir().resolve("checkpoints/step-000007");
    assertEquals(ckpt, r.checkpoint());
    assertEquals(7, Checkpoints.readState(ckpt).step());
    assertEquals("step-000007", Files.readString(cfg.training().runDir().resolve("checkpoints/latest")).strip());
    assertTrue(err.toString(StandardCharsets.UTF_8).contains("continue with --resume"), err.toString());
    // A hook that fires when no run is in progress returns at once.
    Thread idle = t.shutdownHook();
    idle.start();
    idle.join(2000);
    assertFalse(idle.isAlive());
  }

  @Test
  void nanLossStopsTheRunNamingTheStepAndKeepsTheLastGoodCheckpoint() throws Exception {
    TrainConfig cfg = config("nan");
    BigramModel m = new BigramModel(VOCAB, DType.F32, 3);
    TrainableModel poisoned = new TrainableModel() {
      int calls;

      @Override
      public ParameterSet parameters() {
        return m.parameters();
      }

      @Override
      public double accumulateGradients(NdArray inputs, NdArray targets, ParameterSet gradients) {
        calls++;
        double l = m.accumulateGradients(inputs, targets, gradients);
        return calls == 2 * 7 ? Double.NaN : l; // second micro-batch of step 7
      }

      @Override
      public double loss(NdArray inputs, NdArray targets) {
        return m.loss(inputs, targets);
      }
    };
    try (Trainer t = new Trainer(cfg, poisoned, log, false)) {
      TrainingDivergedException e = assertThrows(TrainingDivergedException.class, t::run);
      assertEquals(7, e.step());
      Path good = cfg.training().runDir().resolve("checkpoints/step-000005");
      assertEquals(good, e.lastCheckpoint());
      assertTrue(e.getMessage().contains("step 7") && e.getMessage().contains("loss is NaN")
          && e.getMessage().contains(good.toString()), e.getMessage());
      assertEquals("step-000005", Files.readString(cfg.training().runDir().resolve("checkpoints/latest")).strip());
      assertEquals(5, Checkpoints.readState(good).step());
    }
  }

  @Test
  void metricsProgressCheckpointsAndPlot() throws Exception {
    TrainConfig cfg = config("full", "training.steps=12", "checkpoint.every=2", "checkpoint.keep=2",
        "logging.progress_every=5", "eval.every=4");
    Trainer.Result r;
    try (Trainer t = new Trainer(cfg, new BigramModel(VOCAB, DType.F32, 4), log, false)) {
      r = t.run();
    }
    Path run = cfg.training().runDir();
    List<MetricsLog.Entry> m = metrics(cfg);
    assertEquals(12, m.size());
    for (int i = 0; i < 12; i++) {
      assertEquals(i + 1, m.get(i).step());
      assertEquals((i + 1) % 4 == 0, !Double.isNaN(m.get(i).valLoss()), "val loss at step " + (i + 1));
      assertEquals(cfg.schedule().create(12).lr(i), m.get(i).lr(), 0.0);
      assertTrue(m.get(i).tokensPerSecond() > 0 && m.get(i).gradNorm() > 0);
    }
    String out = err.toString(StandardCharsets.UTF_8);
    long bars = out.lines().filter(l -> l.startsWith("step ") && l.contains("tok/s")).count();
    assertEquals(3, bars, out); // steps 5, 10 and the last, 12
    assertTrue(out.contains("step 12/12 [########################]"), out);
    assertTrue(out.contains("step 4: validation loss"), out);

    // keep=2: only the last two checkpoints remain, latest names the newest, no temporary folders linger.
    try (var s = Files.list(run.resolve("checkpoints"))) {
      assertEquals(List.of("latest", "step-000010", "step-000012"), s.map(p -> p.getFileName().toString()).sorted().toList());
    }
    Path last = run.resolve("checkpoints/step-000012");
    for (String f : List.of("config.json", "model.safetensors", "optimizer.safetensors", "trainer.json")) {
      assertTrue(Files.isRegularFile(last.resolve(f)), f);
    }
    assertEquals(cfg, ConfigLoader.load(last.resolve("config.json"), List.of()));
    TrainerState st = Checkpoints.readState(last);
    assertEquals(12 * 4 * 2 * 8, st.tokensSeen());
    assertEquals(24, st.batchesDrawn());
    assertEquals(r.bestValLoss(), st.bestValLoss(), 0.0);

    BufferedImage png = ImageIO.read(r.plot().toFile());
    assertEquals(960, png.getWidth());
    assertEquals(600, png.getHeight());

    // A fresh run into a folder that holds one is refused rather than mixing the two.
    try (Trainer again = new Trainer(cfg, new BigramModel(VOCAB, DType.F32, 4), log, false)) {
      IllegalStateException e = assertThrows(IllegalStateException.class, again::run);
      assertTrue(e.getMessage().contains("already holds a run"), e.getMessage());
    }
  }

  @Test
  void accumulationOverMicroBatchesEqualsOneLargeBatch() throws Exception {
    // Philox gives element i of a draw block offset+i, so two draws of 4 offsets are the one draw of 8: the two
    // runs see the same windows, and the averaged gradients agree up to float64 rounding.
    TrainConfig big = config("big", "training.batch_size=8", "training.grad_accum_steps=1", "training.steps=10");
    TrainConfig acc = config("acc", "training.batch_size=4", "training.grad_accum_steps=2", "training.steps=10");
    BigramModel a = new BigramModel(VOCAB, DType.F64, 8);
    BigramModel b = new BigramModel(VOCAB, DType.F64, 8);
    try (Trainer t = new Trainer(big, a, log, false)) {
      t.run();
    }
    try (Trainer t = new Trainer(acc, b, log, false)) {
      t.run();
    }
    List<MetricsLog.Entry> ma = metrics(big);
    List<MetricsLog.Entry> mb = metrics(acc);
    for (int i = 0; i < 10; i++) {
      // float64 sums in a different grouping: differences of order 1e-16 relative, compounded over 10 steps.
      assertEquals(ma.get(i).trainLoss(), mb.get(i).trainLoss(), 1e-12, "step " + (i + 1));
    }
    double[] pa = a.parameters().get("table.weight").toDoubleArray();
    double[] pb = b.parameters().get("table.weight").toDoubleArray();
    assertArrayEquals(pa, pb, 1e-12);
  }

  @Test
  void queuedStepsTrainAsAwaitedStepsAndNeverRunPastAStepWhoseParametersAreRead() throws Exception {
    String[] common = {"training.grad_accum_steps=1", "eval.every=4", "checkpoint.every=6"};
    TrainConfig straight = config("awaited", common);
    BigramModel a = new BigramModel(VOCAB, DType.F32, 11);
    try (Trainer t = new Trainer(straight, a, log, false)) {
      assertEquals(Trainer.Status.COMPLETED, t.run().status());
    }
    TrainConfig queuedCfg = config("queued", common);
    BigramModel b = new BigramModel(VOCAB, DType.F32, 11);
    QueueingEngine engine = new QueueingEngine(TrainingEngine.forModel(b, queuedCfg.optimizer()), 0.5, 0, null);
    try (Trainer t = new Trainer(queuedCfg, engine, log, false)) {
      assertEquals(Trainer.Status.COMPLETED, t.run().status());
    }
    assertEquals(2, engine.mostInFlight, "the next step is queued before the current one is awaited");
    List<MetricsLog.Entry> ma = metrics(straight);
    List<MetricsLog.Entry> mb = metrics(queuedCfg);
    assertEquals(20, mb.size());
    for (int i = 0; i < 20; i++) {
      assertEquals(ma.get(i).trainLoss(), mb.get(i).trainLoss(), 0.0, "train loss of step " + (i + 1));
      assertEquals(ma.get(i).valLoss(), mb.get(i).valLoss(), 0.0, "validation loss of step " + (i + 1));
      assertEquals(ma.get(i).gradNorm(), mb.get(i).gradNorm(), 0.0, "gradient norm of step " + (i + 1));
    }
    assertArrayEquals(a.parameters().get("table.weight").toDoubleArray(),
        b.parameters().get("table.weight").toDoubleArray(), 0.0);

    // A stop asked for while step 9 runs: step 10 is queued already (9 is no evaluation or checkpoint step), so the
    // trainer finishes 10 and checkpoints there, with 10 batches drawn; the resumed run ends as the straight one.
    TrainConfig split = config("queued-split", common);
    BigramModel c = new BigramModel(VOCAB, DType.F32, 11);
    Trainer[] holder = new Trainer[1];
    QueueingEngine stopping = new QueueingEngine(TrainingEngine.forModel(c, split.optimizer()), 0.5, 9,
        () -> holder[0].requestStop());
    Trainer first = new Trainer(split, stopping, log, false);
    holder[0] = first;
    Trainer.Result r1 = first.run();
    first.close();
    assertEquals(Trainer.Status.STOPPED, r1.status());
    assertEquals(10, r1.step());
    assertEquals(split.training().runDir().resolve("checkpoints/step-000010"), r1.checkpoint());
    BigramModel d = new BigramModel(VOCAB, DType.F32, 999);
    try (Trainer second = new Trainer(split, new QueueingEngine(TrainingEngine.forModel(d, split.optimizer()), 0.5,
        0, null), log, false)) {
      second.resumeFrom(split.training().runDir());
      assertEquals(20, second.run().step());
    }
    assertArrayEquals(a.parameters().get("table.weight").toDoubleArray(),
        d.parameters().get("table.weight").toDoubleArray(), 0.0);
  }

  /**
   * An engine with queued steps, as the CUDA engine's graph mode has them, over an engine that runs steps at once:
   * a queued step runs only when it (or a later one) is awaited, as on a busy device. Evaluating or reading the
   * parameters with a step still queued fails the test, because on a device that step's update would be in them.
   */
  static final class QueueingEngine implements TrainingEngine {
    private final TrainingEngine inner;
    private final double maxNorm;
    private final int actionAtStep;
    private final Runnable action;
    private final java.util.ArrayDeque<Runnable> queue = new java.util.ArrayDeque<>();
    private int run;
    int mostInFlight;

    QueueingEngine(TrainingEngine inner, double maxNorm, int actionAtStep, Runnable action) {
      this.inner = inner;
      this.maxNorm = maxNorm;
      this.actionAtStep = actionAtStep;
      this.action = action;
    }

    @Override
    public boolean canQueueSteps() {
      return true;
    }

    @Override
    public QueuedStep queueStep(double lr, NdArray inputs, NdArray targets) {
      NdArray x = inputs.copy();
      NdArray y = targets.copy();
      StepResult[] out = new StepResult[1];
      queue.add(() -> {
        if (++run == actionAtStep) {
          action.run();
        }
        inner.beginStep(lr);
        double loss = inner.accumulate(x, y);
        double norm = inner.clipGradients(1, maxNorm);
        boolean ok = Double.isFinite(loss) && Double.isFinite(norm);
        if (ok) {
          inner.update(lr);
        } else {
          inner.abandonStep();
        }
        out[0] = new StepResult(loss, norm, !ok);
      });
      mostInFlight = Math.max(mostInFlight, queue.size());
      return () -> {
        while (out[0] == null) {
          queue.poll().run();
        }
        return out[0];
      };
    }

    private void idle(String what) {
      assertTrue(queue.isEmpty(), what + " with a step still queued");
    }

    @Override
    public ParameterSet hostParameters() {
      return inner.hostParameters();
    }

    @Override
    public dev.kiln.runtime.optim.Optimizer hostOptimizer() {
      return inner.hostOptimizer();
    }

    @Override
    public void beginStep(double lr) {
      throw new AssertionError("a trainer with queued steps runs no awaited step");
    }

    @Override
    public double accumulate(NdArray inputs, NdArray targets) {
      throw new AssertionError("a trainer with queued steps runs no awaited step");
    }

    @Override
    public double clipGradients(int microBatches, double maxNorm) {
      throw new AssertionError("a trainer with queued steps runs no awaited step");
    }

    @Override
    public void update(double lr) {
      throw new AssertionError("a trainer with queued steps runs no awaited step");
    }

    @Override
    public void abandonStep() {
      inner.abandonStep();
    }

    @Override
    public double loss(NdArray inputs, NdArray targets) {
      idle("validation");
      return inner.loss(inputs, targets);
    }

    @Override
    public void syncToHost() {
      idle("a checkpoint");
      inner.syncToHost();
    }

    @Override
    public void syncFromHost() {
      idle("a resume");
      inner.syncFromHost();
    }

    @Override
    public void close() {
      inner.close();
    }
  }

  /** Wraps a model and runs {@code action} during the given step (its first micro-batch). */
  static final class StopAt implements TrainableModel {
    private final TrainableModel inner;
    private final int atStep;
    private final Runnable action;
    private int calls;

    StopAt(TrainableModel inner, int atStep, Runnable action) {
      this.inner = inner;
      this.atStep = atStep;
      this.action = action;
    }

    @Override
    public ParameterSet parameters() {
      return inner.parameters();
    }

    @Override
    public double accumulateGradients(NdArray inputs, NdArray targets, ParameterSet gradients) {
      calls++;
      if (calls == 2 * (atStep - 1) + 1) { // grad_accum_steps = 2 in these configs
        action.run();
      }
      return inner.accumulateGradients(inputs, targets, gradients);
    }

    @Override
    public double loss(NdArray inputs, NdArray targets) {
      return inner.loss(inputs, targets);
    }
  }
}
