package dev.kiln.models.cs336;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Config;
import dev.kiln.dsl.spi.Context;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.CudaProbe;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.optim.AdamW;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.CompiledModel;
import dev.kiln.runtime.train.CudaEngine;
import dev.kiln.runtime.train.LmModule;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.TrainConfig;
import dev.kiln.runtime.train.TrainingEngine;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The generated CS336 LM on the GPU ({@link CudaModelDevice}) against the same generated code on the CPU device, from
 * the same initialisation (the device draws Philox numbers exactly as the CPU does): loss and every parameter
 * gradient, in fp32 and in bf16 mixed precision, for every variant; then 12 training steps of {@link CudaEngine}
 * next to the CPU trainer's engine.
 */
class TransformerLmGpuTest {
  private static final int BATCH = 3;

  private static CudaModelDevice gpu(CudaModelDevice.Precision p) {
    CudaProbe.Report r = CudaProbe.probe();
    if (!r.available()) {
      System.out.println("[skip] no CUDA device: " + r.problem());
    }
    Assumptions.assumeTrue(r.available(), () -> "no CUDA device: " + r.problem());
    CudaModelDevice d = new CudaModelDevice(0, p);
    d.poisonNewTensors(true);
    return d;
  }

  /** vocab 97, context 32, d_model 128 in 2 heads of 64 (the tensor-core attention path), d_ff 192. */
  private static ModelConfig config(TransformerLmVariantsTest.Variant v) {
    ModelConfig c = v.config();
    return new ModelConfig(97, 32, 128, c.numLayers(), 2, 192, c.ropeTheta(), c.normPlacement(), c.norm(),
        c.normEps(), c.ffn(), c.positions(), c.tiedEmbeddings(), c.qkNorm(), c.zLoss());
  }

  private record Run(double loss, Map<String, double[]> grads) {}

  /** BATCH random sequences of c's context and their targets, from {@code seed}. */
  private record Batch(NdArray tokens, NdArray targets, NdArray positions) {
    static Batch random(ModelConfig c, long seed) {
      Rng rng = new Rng(seed);
      NdArray tokens = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
      NdArray targets = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
      return new Batch(tokens, targets, NdArray.arange(DType.I64, c.contextLength()));
    }
  }

  private static Run run(CompiledTransformerLm m, ModelConfig c, Tensor tokens, Tensor positions, Tensor targets,
      java.util.function.Function<Tensor, double[]> read, CudaModelDevice cuda) {
    TransformerLm p = m.init(Config.of(LmModule.moduleConfig(c)), 7);
    if (c.tiedEmbeddings()) {
      p = p.withTiedEmbeddings();
    }
    if (cuda != null && cuda.precision() == CudaModelDevice.Precision.BF16) {
      for (Tensor t : m.stateDict(p).values()) {
        cuda.withBf16Twin(t);
      }
    }
    Context ctx = new Context();
    double loss = read.apply(m.loss(ctx, p, tokens, positions, targets))[0];
    Tensor one = cuda != null ? cuda.full(DType.F32, 1, new long[0]) : NdArray.scalar(DType.F32, 1);
    Map<String, double[]> g = new LinkedHashMap<>();
    m.stateDict(m.lossBackward(ctx, p, one).params()).forEach((k, t) -> g.put(k, read.apply(t)));
    return new Run(loss, g);
  }

  @Test
  void everyVariantMatchesTheCpuDeviceInFp32AndBf16() {
    CudaModelDevice fp32 = gpu(CudaModelDevice.Precision.FP32);
    CudaModelDevice bf16 = gpu(CudaModelDevice.Precision.BF16);
    for (TransformerLmVariantsTest.Variant v : TransformerLmVariantsTest.variants().toList()) {
      ModelConfig c = config(v);
      Batch batch = Batch.random(c, 3);
      NdArray tokens = batch.tokens();
      NdArray targets = batch.targets();
      NdArray positions = batch.positions();
      Run ref = run(new CompiledTransformerLm(new CpuDevice(), DType.F32), c, tokens, positions, targets,
          t -> ((NdArray) t).to(DType.F64).toDoubleArray(), null);
      for (CudaModelDevice dev : new CudaModelDevice[] {fp32, bf16}) {
        boolean mixed = dev.precision() == CudaModelDevice.Precision.BF16;
        try (CudaModelDevice.Scope s = dev.scope()) {
          Run got = run(new CompiledTransformerLm(dev, DType.F32), c, dev.fromHost(tokens), dev.fromHost(positions),
              dev.fromHost(targets), dev::download, dev);
          String what = v.name() + (mixed ? " bf16" : " fp32");
          // fp32: the same float math in another order (cuBLAS, block reductions, atomics in the embedding
          // gradient): 1e-5 relative on the loss, 1e-3 of each gradient's largest element plus 1e-5 absolute
          // (some gradients are sums of nearly cancelling terms, ~1e-6 in size, e.g. QK-norm biases under
          // z-loss: there only rounding noise is left, while real gradient entries are 1e-3 to 1). bf16: operands
          // of GEMMs and attention, and the GEMM outputs kept in bf16, have 8 significant bits: 1e-2 on the loss, 6e-2
          // relative L2 error per gradient.
          assertEquals(ref.loss(), got.loss(), (mixed ? 1e-2 : 1e-5) * Math.abs(ref.loss()), what + ": loss");
          if (mixed) {
            assertGradientsClose(what, ref, got, 6e-2);
            continue;
          }
          for (Map.Entry<String, double[]> e : ref.grads().entrySet()) {
            double[] r = e.getValue();
            double[] g = got.grads().get(e.getKey());
            double worst = 0;
            double max = 0;
            for (int i = 0; i < r.length; i++) {
              assertTrue(!Double.isNaN(g[i]), what + " " + e.getKey() + ": NaN at " + i);
              worst = Math.max(worst, Math.abs(g[i] - r[i]));
              max = Math.max(max, Math.abs(r[i]));
            }
            assertTrue(worst <= 1e-3 * max + 1e-5, what + " " + e.getKey() + ": worst error " + worst + " of max "
                + max);
          }
        }
      }
    }
  }

  @Test
  void gemmResultsStoredInBf16ChangeResultsByTheirRoundingOnly() {
    // In mixed precision the GEMM outputs whose readers all take bf16 (the SwiGLU's w1 x and w3 x, the logits, the
    // gradients entering the SwiGLU and the q/k/v sum, ...) are stored in bf16, as autocast keeps them; the fused
    // kernels read them through their _in16 variants, the cross-entropy through its bf16 kernel. Against the same
    // step with those outputs in fp32, each rounded once to 8 significant bits: the loss must move (else nothing was
    // stored in bf16) but by less than 1e-2 relative, and each gradient by less than 3e-2 relative L2 (plus the
    // noise floor of a sum of nearly cancelling terms, as in the test above). A kernel reading bf16 as fp32, or the
    // wrong element, is off by O(1).
    CudaModelDevice dev = gpu(CudaModelDevice.Precision.BF16);
    boolean moved = false;
    for (TransformerLmVariantsTest.Variant v : TransformerLmVariantsTest.variants().toList()) {
      ModelConfig c = config(v);
      Run[] runs = onAndOff(dev, c, Batch.random(c, 7), dev::storeGemmResultsInBf16);
      moved |= runs[0].loss() != runs[1].loss();
      assertEquals(runs[1].loss(), runs[0].loss(), 1e-2 * Math.abs(runs[1].loss()), v.name() + ": loss");
      assertGradientsClose(v.name() + " bf16 GEMM results", runs[1], runs[0], 3e-2);
    }
    assertTrue(moved, "no variant's loss changed: were the GEMM results stored in bf16 at all?");
  }

  /** A step's loss and gradients, the launches of its forward and of its backward, and the backward's profile. */
  private record TwinnedStep(Run run, long forwardLaunches, long backwardLaunches, String backwardProfile) {}

  /**
   * One step of {@code c} on {@code batch} in a scope of its own, with the parameters' bf16 copies end to end in one
   * allocation as {@code CudaEngine} lays them out ({@code withBf16Twins}). The forward's launches are counted once
   * the loss is downloaded, the backward's once every gradient is: GEMMs wait for their first reader.
   */
  private static TwinnedStep twinnedStep(CudaModelDevice dev, ModelConfig c, Batch batch) {
    try (CudaModelDevice.Scope s = dev.scope()) {
      CompiledTransformerLm m = new CompiledTransformerLm(dev, DType.F32);
      TransformerLm p = m.init(Config.of(LmModule.moduleConfig(c)), 7);
      if (c.tiedEmbeddings()) {
        p = p.withTiedEmbeddings();
      }
      List<Tensor> params = new ArrayList<>(m.stateDict(p).values());
      dev.withBf16Twins(m.stateDict(p));
      Context ctx = new Context();
      long before = dev.launches();
      double loss = dev.download(m.loss(ctx, p, dev.fromHost(batch.tokens()), dev.fromHost(batch.positions()),
          dev.fromHost(batch.targets())))[0];
      long forward = dev.launches() - before;
      before = dev.launches();
      dev.profile(true);
      TransformerLm g = m.lossBackward(ctx, p, dev.full(DType.F32, 1, new long[0])).params();
      Map<String, double[]> grads = new LinkedHashMap<>();
      m.stateDict(g).forEach((k, t) -> grads.put(k, dev.download(t)));
      long backward = dev.launches() - before;
      String report = dev.profileReport();
      dev.profile(false);
      params.forEach(dev::release);
      return new TwinnedStep(new Run(loss, grads), forward, backward, report);
    }
  }

  /** One step of {@code c} on {@code batch} with a device setting on, then off; the setting is left on. */
  private static Run[] onAndOff(CudaModelDevice dev, ModelConfig c, Batch batch,
      java.util.function.Consumer<Boolean> setting) {
    Run[] runs = new Run[2];
    for (int i = 0; i < 2; i++) {
      setting.accept(i == 0);
      try (CudaModelDevice.Scope s = dev.scope()) {
        runs[i] = run(new CompiledTransformerLm(dev, DType.F32), c, dev.fromHost(batch.tokens()),
            dev.fromHost(batch.positions()), dev.fromHost(batch.targets()), dev::download, dev);
      }
    }
    setting.accept(true);
    return runs;
  }

  /**
   * Each gradient of {@code got} within {@code relative} L2 error of {@code ref}'s, plus per element 2^-8 of the
   * model's largest gradient entry: a gradient that is a sum of nearly cancelling terms (QK-norm biases under z-loss)
   * keeps only bf16 rounding noise of terms of that size.
   */
  private static void assertGradientsClose(String what, Run ref, Run got, double relative) {
    double scale = 0;
    for (double[] r : ref.grads().values()) {
      for (double x : r) {
        scale = Math.max(scale, Math.abs(x));
      }
    }
    for (Map.Entry<String, double[]> e : ref.grads().entrySet()) {
      double[] r = e.getValue();
      double[] g = got.grads().get(e.getKey());
      double num = 0;
      double den = 0;
      for (int i = 0; i < r.length; i++) {
        assertTrue(!Double.isNaN(g[i]), what + " " + e.getKey() + ": NaN at " + i);
        num += (g[i] - r[i]) * (g[i] - r[i]);
        den += r[i] * r[i];
      }
      assertTrue(Math.sqrt(num) <= relative * Math.sqrt(den) + scale / 256 * Math.sqrt(r.length), what + " "
          + e.getKey() + ": relative L2 error " + Math.sqrt(num / Math.max(den, 1e-300)));
    }
  }

  @Test
  void theQkvAndSwiGluGradientsAreOneGemmEachWhereTheirOperandsStack() {
    // In mixed precision, with the parameters' bf16 copies end to end in one allocation (withBf16Twins, as CudaEngine
    // makes them), attention's backward writes dq, dk and dv interleaved, and the q, k and v projections' input
    // gradients and their sum run as one GEMM with K = 3·d_model (CudaModelDevice.stackedSum); their weight
    // gradients, laid end to end as the weights' copies are (emptyParamGradient), run as one GEMM with M = 3·d_model
    // (runGradientGemms). Heads of 32 and a
    // context of 32 (narrowHeads), where RoPE runs inside attention and dq and dk reach the projections as attention
    // wrote them; and heads of 64, where RoPE's own kernel turns dq and dk back over attention's interleaved
    // gradients (the processor's overwrite: nothing else reads them). Against the same step with stacking off: the
    // loss bit for bit (the forward is the same), five
    // launches a layer fewer where it applies (three GEMMs and the sum kernel become one GEMM, and three weight-gradient
    // GEMMs one; QK-norm's variants put a norm between attention and the projections, so not there), two more
    // where the FFN is SwiGLU (its backward writes the gradients for w1 and w3 side by side, emptyGemmOperands, and
    // the engine's twin order puts w1 and w3 end to end: their input gradients, two GEMMs of which the second adds
    // the first, become one GEMM with K = 2·d_ff, and their two weight-gradient GEMMs one with M = 2·d_ff), and every
    // gradient within 3e-2 relative L2, as in the test above: the stacked GEMM adds in its fp32 accumulator where
    // the sum kernel added three bf16-rounded GEMM results.
    CudaModelDevice dev = gpu(CudaModelDevice.Precision.BF16);
    int stacked = 0;
    for (TransformerLmVariantsTest.Variant v : TransformerLmVariantsTest.variants().toList()) {
      for (ModelConfig c : List.of(narrowHeads(config(v)), config(v))) {
        Batch batch = Batch.random(c, 11);
        // A first step unmeasured: the device learns from it which kernels write bf16 copies of their outputs for
        // later GEMMs (the norms' _tw variants), so the first step casts more than later ones, stacked or not.
        Run[] runs = new Run[3];
        long[] launches = new long[3];
        String[] reports = new String[3];
        for (int i = 2; i >= 0; i--) {
          dev.stackGemms(i != 1);
          TwinnedStep step = twinnedStep(dev, c, batch);
          launches[i] = step.backwardLaunches();
          reports[i] = step.backwardProfile();
          runs[i] = step.run();
        }
        dev.stackGemms(true);
        String what = v.name() + ", heads of " + c.dModel() / c.numHeads();
        assertEquals(runs[1].loss(), runs[0].loss(), 0.0, what + ": loss");
        long saved = launches[1] - launches[0];
        String calls = what + ": " + launches[0] + " launches stacked:\n" + reports[0] + launches[1] + " not:\n"
            + reports[1];
        long swiGlu = c.ffn() == ModelConfig.Ffn.SWIGLU ? 2 : 0;
        assertEquals(((c.qkNorm() ? 0 : 5L) + swiGlu) * c.numLayers(), saved, calls);
        stacked += saved > 0 ? 1 : 0;
        assertGradientsClose(what + " stacked q/k/v gradients", runs[1], runs[0], 3e-2);
      }
    }
    assertTrue(stacked > 0, "no variant stacked its q/k/v GEMMs");
  }

  @Test
  void projectionsOfOneInputRunAsOneBatchedGemm() {
    // In mixed precision, with the parameters' bf16 copies end to end (withBf16Twins, as CudaEngine makes them), the
    // q, k and v projections of one normed input, and SwiGLU's w1 and w3, are deferred GEMMs that share A with their
    // weights at one stride: the first read of any of them runs the group as one strided-batched GEMM
    // (CudaModelDevice.runSiblings). Against the same step with batching off: the forward launches 2 GEMMs a layer
    // fewer, one more for SwiGLU, the loss within 1e-3 relative and every gradient within 3e-2 relative L2 (the results are
    // the same dot products rounded to bf16; only cuBLAS's kernel for the batched problem, and so the fp32
    // summation order, may differ, which moves an occasional element by one bf16 step).
    CudaModelDevice dev = gpu(CudaModelDevice.Precision.BF16);
    for (TransformerLmVariantsTest.Variant v : TransformerLmVariantsTest.variants().toList()) {
      ModelConfig c = config(v);
      Batch batch = Batch.random(c, 13);
      Run[] runs = new Run[2];
      long[] launches = new long[2];
      for (int i = 1; i >= 0; i--) {
        dev.batchSiblingGemms(i == 0);
        TwinnedStep step = twinnedStep(dev, c, batch);
        launches[i] = step.forwardLaunches();
        runs[i] = step.run();
      }
      dev.batchSiblingGemms(true);
      // Under QK-norm the q and k projections stay fp32 for their norms, so they run as they come (not deferred).
      long perLayer = (c.qkNorm() ? 0 : 2) + (c.ffn() == ModelConfig.Ffn.SWIGLU ? 1 : 0);
      assertEquals(perLayer * c.numLayers(), launches[1] - launches[0], v.name() + ": forward launches saved");
      assertEquals(runs[1].loss(), runs[0].loss(), 1e-3 * Math.abs(runs[1].loss()), v.name() + ": loss");
      assertGradientsClose(v.name() + " batched projections", runs[1], runs[0], 3e-2);
    }
  }

  @Test
  void gemmOnlyOutputsStoredInBf16ChangeNoBit() {
    // In mixed precision the outputs only GEMMs read (the FFN's activation product, the gradients entering W1 and
    // W3) are written as bf16 by their kernels; stored in fp32 and cast instead, the GEMMs read the same bf16
    // operands (both round to nearest even). So the loss and every gradient must be equal bit for bit, for every
    // feed-forward kind.
    CudaModelDevice dev = gpu(CudaModelDevice.Precision.BF16);
    for (TransformerLmVariantsTest.Variant v : TransformerLmVariantsTest.variants().toList()) {
      ModelConfig c = config(v);
      Run[] runs = onAndOff(dev, c, Batch.random(c, 5), dev::storeGemmOperandsInBf16);
      assertEquals(runs[1].loss(), runs[0].loss(), 0.0, v.name() + ": loss");
      for (var e : runs[1].grads().entrySet()) {
        double[] ref = e.getValue();
        double[] got = runs[0].grads().get(e.getKey());
        if (e.getKey().contains("embeddings")) {
          // Embedding gradients are summed with float atomics, in an order that changes from run to run: equal to
          // fp32 rounding of the sums (1e-6 of the largest entry), not bit for bit.
          double max = java.util.Arrays.stream(ref).map(Math::abs).max().orElse(0);
          for (int i = 0; i < ref.length; i++) {
            assertEquals(ref[i], got[i], 1e-6 * max, v.name() + " " + e.getKey() + " at " + i);
          }
        } else {
          assertTrue(java.util.Arrays.equals(ref, got),
              v.name() + " " + e.getKey() + ": gradients differ with bf16-stored GEMM operands");
        }
      }
    }
  }

  /** config(v) with heads of 32 (4 of them): RoPE inside attention, and the q/k/v GEMMs stacked in mixed precision. */
  private static ModelConfig narrowHeads(ModelConfig c) {
    return new ModelConfig(c.vocabSize(), c.contextLength(), c.dModel(), c.numLayers(), c.dModel() / 32, c.dFf(),
        c.ropeTheta(), c.normPlacement(), c.norm(), c.normEps(), c.ffn(), c.positions(), c.tiedEmbeddings(),
        c.qkNorm(), c.zLoss());
  }

  @Test
  void cudaGraphStepsEqualEagerSteps() {
    ModelConfig first = config(TransformerLmVariantsTest.variants().findFirst().orElseThrow());
    // Heads of 64 in both precisions; in bf16 also heads of 32, whose graph holds the stacked q/k/v GEMMs.
    record Case(CudaModelDevice.Precision precision, ModelConfig c) {}
    for (Case k : List.of(new Case(CudaModelDevice.Precision.FP32, first), new Case(CudaModelDevice.Precision.BF16,
        first), new Case(CudaModelDevice.Precision.BF16, narrowHeads(first)))) {
      CudaModelDevice.Precision precision = k.precision();
      ModelConfig c = k.c();
      CudaModelDevice eagerDev = gpu(precision);
      CudaModelDevice graphDev = gpu(precision);
      TrainConfig.OptimizerConfig opt = cs336AdamW();
      try (CudaEngine<TransformerLm> eager = engine(eagerDev, c, opt);
          CudaEngine<TransformerLm> graphed = engine(graphDev, c, opt)) {
        graphed.enableGraphs(0.5);
        Rng rng = new Rng(8);
        for (int step = 1; step <= 6; step++) {
          NdArray x = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
          NdArray y = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
          double[] loss = new double[2];
          double[] norm = new double[2];
          TrainingEngine[] engines = {eager, graphed};
          for (int e = 0; e < 2; e++) {
            engines[e].beginStep(3e-3);
            loss[e] = engines[e].accumulate(x, y);
            norm[e] = engines[e].clipGradients(1, 0.5);
            engines[e].update(3e-3);
          }
          // The same kernels in the same order; only the embedding gradient's atomics may add in another order. In
          // fp32 that stays in the last bits. In bf16 a master weight that differs in its last bits can round its
          // bf16 twin to the neighbouring value, a 2^-8 change of that weight: seen as 2e-5 of the loss at step 3.
          boolean mixed = precision == CudaModelDevice.Precision.BF16;
          String what = precision + " heads " + c.numHeads() + " step " + step + " (the graph is captured at step 2)";
          assertEquals(loss[0], loss[1], (mixed ? 1e-3 : 1e-5) * loss[0], what + " loss");
          assertEquals(norm[0], norm[1], (mixed ? 1e-2 : 1e-4) * norm[0], what + " gradient norm");
        }
        eager.syncToHost();
        graphed.syncToHost();
        assertEquals(6, graphed.hostOptimizer().stepCount());
        // Untied: AdamW reads every gradient where the captured backward wrote it (or, for a parameter the config
        // leaves unused, in its fixed buffer of zeros); the graph copies none.
        assertEquals(0, graphed.gradientsCopiedByGraph(), "gradients the graph copies");
        assertEquals(-1, eager.gradientsCopiedByGraph(), "no graph, no count");
        for (String n : eager.hostParameters().names()) {
          double[] a = eager.hostParameters().get(n).to(DType.F64).toDoubleArray();
          double[] b = graphed.hostParameters().get(n).to(DType.F64).toDoubleArray();
          if (precision == CudaModelDevice.Precision.BF16) {
            // AdamW normalises each update, so an entry whose gradient is at bf16 noise level may move differently:
            // compare whole tensors, by relative L2.
            assertTrue(relativeL2(a, b) <= 1e-2, precision + " " + n + " after 6 steps: relative L2 "
                + relativeL2(a, b));
          } else {
            for (int i = 0; i < a.length; i++) {
              assertEquals(a[i], b[i], 1e-5, precision + " " + n + " after 6 steps");
            }
          }
        }
      }
    }
  }

  /**
   * Mixed precision keeps the linear layers' master weights in two planes ({@code MasterPlanes}): a graphed run with
   * them trains as one without them; no step joins the planes into the fp32 arrays (nor does the graph's capture
   * record a join), only a host copy does, once a master; and a checkpoint's host copy taken between replays, and
   * again after more, holds the latest weights each time. The two runs' bf16 weights differ only where a weight lies
   * exactly between two bf16 values (rounded away from zero instead of to even), so they agree as graphed and eager
   * runs do (the same tolerances as there); weights two steps stale would differ by about 5e-2 relative L2.
   */
  @Test
  void mastersInTwoPlanesTrainAsFp32Masters() {
    ModelConfig c = config(TransformerLmVariantsTest.variants().findFirst().orElseThrow());
    TrainConfig.OptimizerConfig opt = cs336AdamW();
    CudaModelDevice planesDev = gpu(CudaModelDevice.Precision.BF16);
    CudaModelDevice flatDev = gpu(CudaModelDevice.Precision.BF16);
    planesDev.storeMastersInPlanes(true);
    flatDev.storeMastersInPlanes(false);
    try (CudaEngine<TransformerLm> planes = engine(planesDev, c, opt);
        CudaEngine<TransformerLm> flat = engine(flatDev, c, opt)) {
      planes.enableGraphs(0.5);
      flat.enableGraphs(0.5);
      assertEquals(0, planes.mastersInPlanes(), "nothing in planes before the first update");
      Rng rng = new Rng(12);
      Map<String, double[]> atStep4 = null;
      for (int step = 1; step <= 6; step++) {
        NdArray x = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
        NdArray y = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
        double[] loss = new double[2];
        TrainingEngine[] engines = {flat, planes};
        for (int e = 0; e < 2; e++) {
          engines[e].beginStep(3e-3);
          loss[e] = engines[e].accumulate(x, y);
          engines[e].clipGradients(1, 0.5);
          engines[e].update(3e-3);
        }
        assertEquals(loss[0], loss[1], 1e-3 * loss[0], "step " + step + " loss");
        if (step == 4) {
          // No step joined a master (nor did the graph's capture record a join): only the host copy does, once each.
          assertEquals(0, planesDev.masterJoins(), "joins of masters in planes during 4 steps");
          planes.syncToHost();
          assertEquals(planes.mastersInPlanes(), planesDev.masterJoins(), "joins for the host copy at step 4");
          atStep4 = hostCopy(planes);
        }
      }
      // The linear layers' weights: q, k, v, the output projection and the FFN's three in each layer, and the LM
      // head (untied in this config). Norm weights and the embedding keep fp32 masters.
      assertEquals(c.numLayers() * 7 + 1, planes.mastersInPlanes(), "masters in planes");
      assertEquals(0, flat.mastersInPlanes(), "masters in planes with the device's planes off");
      assertEquals(planes.mastersInPlanes(), planesDev.masterJoins(), "joins after steps 5 and 6, before the copy");
      int pending = 0;
      for (Tensor t : planes.stateDict().values()) {
        dev.kiln.runtime.cuda.device.CudaTensor ct = (dev.kiln.runtime.cuda.device.CudaTensor) t;
        if (ct.lowerPlane() != null) {
          assertTrue(ct.array().producerPending(), ct + ": its fp32 array was joined during a step");
          pending++;
        }
      }
      assertEquals(planes.mastersInPlanes(), pending, "masters in planes found in the model's state dict");
      planes.syncToHost();
      flat.syncToHost();
      Map<String, double[]> a = hostCopy(flat);
      Map<String, double[]> b = hostCopy(planes);
      for (String n : a.keySet()) {
        assertTrue(relativeL2(a.get(n), b.get(n)) <= 1e-2, n + " after 6 steps: relative L2 "
            + relativeL2(a.get(n), b.get(n)));
      }
      // The copy taken at step 4 was of step 4: the weights moved since.
      double moved = 0;
      for (String n : a.keySet()) {
        moved = Math.max(moved, relativeL2(b.get(n), atStep4.get(n)));
      }
      assertTrue(moved > 1e-2, "the weights did not move between steps 4 and 6: " + moved);
    }
  }

  /** AdamW as the CS336 trainer configures it (betas 0.9/0.95, weight decay 0.1, CS336's form of the update). */
  private static TrainConfig.OptimizerConfig cs336AdamW() {
    return new TrainConfig.OptimizerConfig(TrainConfig.OptimizerName.ADAMW, 0.9, 0.95, 1e-8, 0.1, AdamW.Formula.CS336,
        0, false);
  }

  private static Map<String, double[]> hostCopy(TrainingEngine e) {
    Map<String, double[]> out = new LinkedHashMap<>();
    for (String n : e.hostParameters().names()) {
      out.put(n, e.hostParameters().get(n).to(DType.F64).toDoubleArray());
    }
    return out;
  }

  private static double relativeL2(double[] a, double[] b) {
    double num = 0;
    double den = 0;
    for (int i = 0; i < a.length; i++) {
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += a[i] * a[i];
    }
    return Math.sqrt(num / Math.max(den, 1e-300));
  }

  @Test
  void queuedGraphStepsEqualAwaitedGraphSteps() {
    CudaModelDevice awaitedDev = gpu(CudaModelDevice.Precision.FP32);
    CudaModelDevice queuedDev = gpu(CudaModelDevice.Precision.FP32);
    ModelConfig c = config(TransformerLmVariantsTest.variants().findFirst().orElseThrow());
    TrainConfig.OptimizerConfig opt = cs336AdamW();
    try (CudaEngine<TransformerLm> awaited = engine(awaitedDev, c, opt);
        CudaEngine<TransformerLm> queued = engine(queuedDev, c, opt)) {
      awaited.enableGraphs(0.5);
      queued.enableGraphs(0.5);
      assertTrue(queued.canQueueSteps());
      Rng rng = new Rng(9);
      int steps = 8;
      // Step 7 runs at a NaN learning rate: its own loss and norm are finite, but it writes NaN into every weight,
      // so step 8's gradient norm is NaN and the device skips its update.
      double[] lrs = {3e-3, 3e-3, 2e-3, 2e-3, 1e-3, 1e-3, Double.NaN, 1e-3};
      NdArray[][] batches = new NdArray[steps][];
      double[] loss = new double[steps];
      double[] norm = new double[steps];
      for (int i = 0; i < steps; i++) {
        batches[i] = new NdArray[] {rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize()),
            rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize())};
        awaited.beginStep(lrs[i]);
        loss[i] = awaited.accumulate(batches[i][0], batches[i][1]);
        norm[i] = awaited.clipGradients(1, 0.5);
        awaited.update(lrs[i]);
      }
      // Two steps in flight before the first is awaited: the results of a step must survive the reuse of its host
      // slot by the step two after it.
      List<TrainingEngine.QueuedStep> handles = new ArrayList<>();
      for (int i = 0; i < steps; i++) {
        handles.add(queued.queueStep(lrs[i], batches[i][0], batches[i][1]));
      }
      for (int i = 0; i < steps; i++) {
        TrainingEngine.StepResult r = handles.get(i).await();
        String what = "step " + (i + 1) + " (captured at step 2)";
        if (i < steps - 1) {
          // The same graph on the same inputs: only the embedding gradient's atomics may add in another order.
          assertEquals(loss[i], r.loss(), 1e-5 * loss[i], what + " loss");
          assertEquals(norm[i], r.gradNorm(), 1e-4 * norm[i], what + " gradient norm");
          assertFalse(r.skipped(), what + " skipped");
        } else {
          assertTrue(Double.isNaN(r.gradNorm()) && Double.isNaN(norm[i]), what + ": NaN gradient norm expected");
          assertTrue(r.skipped(), what + " after NaN weights: the update must be skipped");
        }
        assertEquals(r, handles.get(i).await(), "a second await returns the same results");
      }
      awaited.syncToHost();
      queued.syncToHost();
      assertEquals(steps - 1, awaited.hostOptimizer().stepCount());
      assertEquals(steps - 1, queued.hostOptimizer().stepCount(), "the skipped step is not counted");
    }
  }

  /**
   * One training step of two micro-batches (the halves of a batch of two, so accumulation is exercised), clipping at
   * 0.5 and an update at lr 3e-3; returns {the mean loss, the gradient norm}.
   */
  private static double[] twoMicroBatchStep(TrainingEngine e, NdArray x, NdArray y) {
    e.beginStep(3e-3);
    double loss = (e.accumulate(x.narrow(0, 0, 1), y.narrow(0, 0, 1))
        + e.accumulate(x.narrow(0, 1, 2), y.narrow(0, 1, 2))) / 2;
    double norm = e.clipGradients(2, 0.5);
    e.update(3e-3);
    return new double[] {loss, norm};
  }

  /**
   * {@code steps} steps of two micro-batches ({@link #twoMicroBatchStep}) on random batches from {@code seed}, the
   * same on both engines: {@code got}'s loss and gradient norm within {@code lossTol} and {@code normTol} relative of
   * {@code ref}'s at every step.
   */
  private static void stepsAgree(TrainingEngine ref, TrainingEngine got, ModelConfig c, long seed, int steps,
      double lossTol, double normTol) {
    Rng rng = new Rng(seed);
    for (int step = 1; step <= steps; step++) {
      NdArray x = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
      NdArray y = rng.integers(NdArray.zeros(DType.I64, BATCH, c.contextLength()), 0, c.vocabSize());
      double[] expected = twoMicroBatchStep(ref, x, y);
      double[] actual = twoMicroBatchStep(got, x, y);
      assertEquals(expected[0], actual[0], lossTol * expected[0], "step " + step + " loss");
      assertEquals(expected[1], actual[1], normTol * expected[1], "step " + step + " gradient norm");
    }
  }

  /** The model initialised with seed 11 (as the CPU side of these tests) in a GPU engine. */
  private static CudaEngine<TransformerLm> engine(CudaModelDevice dev, ModelConfig c,
      TrainConfig.OptimizerConfig opt) {
    CompiledTransformerLm m = new CompiledTransformerLm(dev, DType.F32);
    TransformerLm p = m.init(Config.of(LmModule.moduleConfig(c)), 11);
    Map<String, String> names = LmModule.names(c, m.stateDict(p).keySet());
    Map<String, NdArray> host = new LinkedHashMap<>();
    names.forEach((k, n) -> host.put(n, NdArray.zeros(DType.F32, m.stateDict(p).get(k).shape())));
    // Positions made outside any scope: they live as long as the device.
    return new CudaEngine<>(dev, TransformerLmVariantsTest.program(m, dev.iota(DType.I64, c.contextLength())), p,
        names, ParameterSet.of(host), opt);
  }

  /**
   * Mixed precision keeps the linear layers' weight gradients in bf16 (CudaModelDevice.emptyParamGradient) and sums
   * them over micro-batches in fp32: two micro-batches a step, bf16 against fp32 gradients on the same model (the
   * first gradient is widened when the second comes). The bf16 step rounds each weight gradient once (2^-9
   * relative), and its GEMMs round their operands as well, so the losses agree to 1e-2 relative and the gradient
   * norms to 3e-2; a micro-batch lost or counted twice moves the norm by far more, and a bf16 running sum is refused
   * by the fp32 add the second micro-batch takes.
   */
  @Test
  void bf16WeightGradientsAreSummedOverMicroBatchesInFp32() {
    ModelConfig c = config(TransformerLmVariantsTest.variants().findFirst().orElseThrow());
    TrainConfig.OptimizerConfig opt = cs336AdamW();
    CudaModelDevice low = gpu(CudaModelDevice.Precision.BF16);
    CudaModelDevice wide = gpu(CudaModelDevice.Precision.BF16);
    wide.storeParamGradientsInBf16(false);
    try (CudaEngine<TransformerLm> a = engine(low, c, opt); CudaEngine<TransformerLm> b = engine(wide, c, opt)) {
      stepsAgree(b, a, c, 9, 3, 1e-2, 3e-2);
    }
  }

  @Test
  void gpuTrainingFollowsTheCpuTrainer() {
    CudaModelDevice dev = gpu(CudaModelDevice.Precision.FP32);
    ModelConfig c = config(TransformerLmVariantsTest.variants().findFirst().orElseThrow());
    Map<String, Object> mc = LmModule.moduleConfig(c);
    CompiledTransformerLm cpuM = new CompiledTransformerLm(new CpuDevice(), DType.F32);
    TransformerLm cpuP = cpuM.init(Config.of(mc), 11);
    CompiledModel<TransformerLm> cpuModel = new CompiledModel<>(
        TransformerLmVariantsTest.program(cpuM, NdArray.arange(DType.I64, c.contextLength())), cpuP,
        LmModule.names(c, cpuM.stateDict(cpuP).keySet()));
    TrainConfig.OptimizerConfig opt = cs336AdamW();
    TrainingEngine cpu = TrainingEngine.forModel(cpuModel, opt);

    try (CudaEngine<TransformerLm> gpu = engine(dev, c, opt)) {
      // Rounding differences grow slowly through the updates: 1e-4 relative after 12 steps is far below the
      // change a wrong update rule, clipping or accumulation makes (those move the loss by 1e-2 within a step).
      stepsAgree(cpu, gpu, c, 5, 12, 1e-4, 1e-3);
      gpu.syncToHost();
      double worst = 0;
      for (String n : cpu.hostParameters().names()) {
        double[] a = cpu.hostParameters().get(n).to(DType.F64).toDoubleArray();
        double[] b = gpu.hostParameters().get(n).to(DType.F64).toDoubleArray();
        for (int i = 0; i < a.length; i++) {
          worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
      }
      assertTrue(worst < 1e-3, "parameters after 12 steps differ by " + worst);
      assertEquals(12, gpu.hostOptimizer().stepCount());
    }
  }
}
