package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Config;
import dev.kiln.dsl.spi.Context;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Kernel;
import dev.kiln.runtime.tensor.NdArray;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Counts what generated code asks the device to do. The counts are the point of the lower pass: a pointwise chain
 * or a row reduction is one kernel, an einsum is one GEMM without copies, attention is one call each way.
 */
class FusionTest {
  private static Object compiled(String module, CountingDevice dev) {
    try {
      return Generated.cs336().type(Harness.compiledName(module)).getConstructor(Device.class, DType.class)
          .newInstance(dev, DType.F64);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(e);
    }
  }

  /**
   * A compiled test module on a counting CPU device, with its parameters and a context: {@link #forward} and
   * {@link #backward} reset the counts first, so each pass's calls are what the test sees.
   */
  private record Run(CountingDevice dev, Object m, Record p, Context ctx) {
    static Run of(String module, Map<String, Object> config) {
      CountingDevice dev = new CountingDevice(Harness.CPU);
      Object m = compiled(module, dev);
      return new Run(dev, m, (Record) Generated.call(m, "init", Config.of(config), 1L), new Context());
    }

    Tensor forward(Object... inputs) {
      dev.reset();
      Object[] args = new Object[inputs.length + 2];
      args[0] = ctx;
      args[1] = p;
      System.arraycopy(inputs, 0, args, 2, inputs.length);
      return (Tensor) Generated.call(m, "forward", args);
    }

    /** Backward of the last forward, with a random gradient of {@code y}'s shape. */
    void backward(Tensor y) {
      dev.reset();
      Generated.call(m, "backward", ctx, p, Harness.random(new Random(2), y.shape()));
    }
  }

  @Test
  void swiGluSiluTimesGateIsOneKernelEachWay() {
    Run run = Run.of("cs336.SwiGlu", Map.of("d_model", 4, "d_ff", 6));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 4));
    // Three Linear layers are three GEMMs; silu(w1 x) * w3 x is one kernel.
    assertEquals(List.of("gemm", "gemm", "launch SwiGlu_apply_fwd_0", "gemm"), dev.calls);
    run.backward(y);
    // Each Linear backward is two GEMMs (dx, dW); the backward of silu(a) * b is one kernel writing da and db; the
    // two paths into x add up (one add).
    assertEquals(1, dev.launches.size(), dev.calls::toString);
    assertEquals(2, dev.launches.get(0).outputs(), "the backward kernel writes d(w1 x) and d(w3 x)");
    assertEquals(6, dev.calls.stream().filter(c -> c.equals("gemm")).count(), dev.calls::toString);
    assertEquals(List.of("binary ADD"), dev.calls.stream().filter(c -> !c.equals("gemm") && !c.startsWith("launch"))
        .toList());
  }

  /**
   * Mlp's activation is a hyper-parameter, so gelu is computed inside a branch. Its inner values (the cube, the
   * tanh) are recomputed by the backward kernel, which runs in the backward branch mirroring the forward one, from
   * fc1's output: the forward kernel writes only the activation. gelu's constants are scalar arguments of both
   * kernels, never 0-d tensors: backward makes them again in its branch rather than saving them. The activation, and
   * the gradient of fc1's output, are read only by GEMMs (fc2's and fc1's), so both are allocated as GEMM operands.
   */
  @Test
  void aBranchsPointwiseValuesAreRecomputedInBackwardAndGemmOperandsMarked() {
    Run run = Run.of("cs336.Mlp", GeneratedModulesTest.mlpConfig("GELU"));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 4));
    assertEquals(1, dev.launches.size(), dev.calls::toString);
    assertEquals(1, dev.launches.get(0).outputs(), "the forward kernel writes gelu(fc1 x) only");
    assertEquals(0, dev.constants, "constants made as tensors in forward (the kernel takes them as arguments)");
    assertEquals(1, dev.gemmOperands, "gelu(fc1 x) is read only by fc2's GEMMs");
    run.backward(y);
    assertEquals(1, dev.launches.size(), dev.calls::toString);
    Kernel bwd = dev.launches.get(0);
    // fc1's output and the gradient of the activation: nothing else saved. gelu's constants (0.5, ...) are made again
    // in the mirroring backward branch, as scalar arguments, not saved as 0-d tensors.
    assertEquals(2, bwd.inputs(), "the backward kernel reads fc1 x and d(gelu)");
    assertEquals(0, dev.constants, "constants made as tensors in backward");
    assertEquals(1, bwd.outputs());
    assertEquals(1, dev.gemmOperands, "d(fc1 x) is read only by fc1's backward GEMMs");
  }

  /**
   * GEMM outputs whose every reader takes bf16 (a fused kernel through its {@code _in16} variant, a GEMM, attention,
   * cross-entropy) are allocated with {@code Device.emptyGemmResult}, where a mixed-precision device keeps them in
   * bf16 as autocast keeps a linear layer's output. Every GEMM lives in a {@code Linear}, so the caller's reads
   * decide, and the callee allocates through its context: SwiGLU's w1 x and w3 x are read by its kernels alone
   * (forward, and backward from the saved copies), w2's output is the module's result and goes to whoever called it
   * (the root context does not consent; a caller that does, gets it so too). In backward the gradient of w2's input
   * is read by the SwiGLU backward kernel alone, and w1's and w3's input gradients by the add that sums them.
   */
  @Test
  void gemmOutputsThatOnlyKernelsReadAreGemmResults() {
    Run run = Run.of("cs336.SwiGlu", Map.of("d_model", 4, "d_ff", 6));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 4));
    assertEquals(2, dev.gemmResults, "w1 x and w3 x, read by the SwiGLU kernels alone");
    assertEquals(3L, dev.launches.get(0).bf16Inputs(), "the forward kernel may read both in bf16");
    run.backward(y);
    assertEquals(3, dev.gemmResults, "the gradients of w2's input (read by the SwiGLU backward kernel alone) and of"
        + " w1's and w3's (read by their add)");
    assertEquals(7L, dev.launches.get(0).bf16Inputs(), "w1 x, w3 x and that gradient");
    assertEquals(3, dev.paramGradients, "the weight gradients of w1, w2 and w3: GEMM outputs nothing but the trainer"
        + " reads (Device.emptyParamGradient)");

    Run consenting = new Run(run.dev(), run.m(), run.p(), new Context().child("ffn", false, true, 0L));
    consenting.forward(Harness.random(new Random(1), 2, 3, 4));
    assertEquals(3, dev.gemmResults, "w2's output too, when the caller takes the result in bf16");
  }

  /**
   * A read that needs its own precision blocks bf16 only where it happens: in the Mlp, fc1's output goes to the gelu
   * kernel in one branch of the activation and to relu, a device op on its own, in the other, so fc1 keeps it in
   * bf16 only for GELU. The loss reads the logits (the forward's result) in cross-entropy only, so its call to the
   * forward consents, and fc2 keeps them in bf16 for either activation. In the loss's backward the logits' gradient
   * goes only to the forward's backward, which reads it only in fc2's GEMMs (the module's own facts, from its forward
   * graph): the cross-entropy's backward is told its result may be bf16.
   */
  @Test
  void aBranchThatReadsInItsOwnPrecisionBlocksBf16OnlyWhenTaken() {
    for (String activation : List.of("GELU", "RELU")) {
      Run run = Run.of("cs336.Mlp", GeneratedModulesTest.mlpConfig(activation));
      run.forward(Harness.random(new Random(1), 2, 3, 4));
      assertEquals(activation.equals("GELU") ? 1 : 0, run.dev().gemmResults, activation + ": fc1's output");
      run.dev().reset();
      Generated.call(run.m(), "loss", new Context(), run.p(), Harness.random(new Random(1), 3, 4),
          Harness.ints(new Random(2), 3, 3));
      assertEquals(activation.equals("GELU") ? 2 : 1, run.dev().gemmResults, activation + ": and the logits");
      Context ctx = new Context();
      Generated.call(run.m(), "loss", ctx, run.p(), Harness.random(new Random(1), 3, 4),
          Harness.ints(new Random(2), 3, 3));
      run.dev().reset();
      Generated.call(run.m(), "lossBackward", ctx, run.p(), Harness.CPU.full(DType.F64, 1.0));
      assertEquals(1, run.dev().bf16Results, activation + ": the logits' gradient");
    }
  }

  /**
   * A norm's output is its module's result, so only the caller knows what reads it. In the pre-norm block both norms'
   * outputs go only into projections (attention's q, k, v; the SwiGLU's W1 and W3), so the block asks for them as
   * GEMM operands (Context.child(name, true)) and the norm's kernel allocates its result so. A norm called on its
   * own allocates none. The block's third GEMM operand is the SwiGLU product.
   */
  @Test
  void normOutputsReadOnlyByProjectionsAreGemmOperands() {
    Run block = Run.of("cs336.TransformerBlock", Map.of("d_model", 8, "num_heads", 2, "d_ff", 12, "eps", 1e-5,
        "rope_theta", 10000.0));
    block.forward(Harness.random(new Random(1), 2, 3, 8), Harness.arange(3));
    assertEquals(3, block.dev().gemmOperands, "ln1's and ln2's outputs and the SwiGLU product");
    Run norm = Run.of("cs336.RmsNorm", Map.of("d_model", 8, "eps", 1e-5));
    norm.forward(Harness.random(new Random(2), 3, 8));
    assertEquals(0, norm.dev().gemmOperands, "a norm's result read by whoever called it");
  }

  /**
   * RoPE's results in forward are read only by attention (q and k, and again by attention's backward), which rounds
   * its operands to bf16 as a GEMM does, and in backward the rotated gradients only by the projections' GEMMs, through
   * the rearrange that merges the heads: all four RoPE calls say forGemms. (In the CS336 model's attention the same
   * holds in the branch without qk-norm; with it, the backward rotations feed the norms' backward and are not marked.)
   * The backward's two rotations read attention's dq and dk, which nothing else reads: they say overwrite; the
   * forward's read the projections, which attention's backward reads again, and do not.
   */
  @Test
  void ropeResultsReadOnlyByAttentionAndGemmsAreForGemms() {
    Run run = Run.of("cs336.RotaryAttention", Map.of("d_model", 8, "num_heads", 2, "rope_theta", 10000.0));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 8), Harness.arange(3));
    assertEquals(2, dev.ropesForGemms, "q's and k's rotations: " + dev.calls);
    assertEquals(0, dev.ropesOverwriting, "the projections are read again: " + dev.calls);
    run.backward(y);
    assertEquals(2, dev.ropesForGemms, "the gradients' rotations: " + dev.calls);
    assertEquals(2, dev.ropesOverwriting, "dq's and dk's rotations back: " + dev.calls);
  }

  /**
   * Reads that are not GEMM reads: the Heads fixture adds its two rotated tensors (a pointwise read, in their own
   * precision), so neither forward rotation says forGemms. In backward the gradient rotated back for the projection
   * goes only to its GEMMs (through the rearrange) and says forGemms; the one rotated back for the input x is x's
   * gradient, returned to the caller, and does not.
   */
  @Test
  void ropeResultsReadByPointwiseOpsOrReturnedAreNotForGemms() {
    Run run = Run.of("dev.kiln.fixture.Heads", Map.of("d", 8, "heads", 2, "mode", "GAINED", "twice", true));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 8), Harness.arange(3));
    assertEquals(2, dev.calls.stream().filter(c -> c.equals("rope")).count(), dev.calls::toString);
    assertEquals(0, dev.ropesForGemms, dev.calls::toString);
    run.backward(y);
    assertEquals(2, dev.calls.stream().filter(c -> c.equals("rope")).count(), dev.calls::toString);
    assertEquals(1, dev.ropesForGemms, dev.calls::toString);
    assertEquals(0, dev.ropesOverwriting, "no rotation back reads an attention gradient: " + dev.calls);
  }

  /**
   * Pointwise's backward row kernel makes several passes over a row (softmax's row sum, then the outputs) and reads
   * exponentials in more than one of them; the Java emitter computes each in the first pass that needs it and keeps
   * the row, so no exponential is computed twice. (Its numerics are covered with the rest of the generated modules by
   * GeneratedModulesTest.)
   */
  @Test
  void transcendentalsUsedByTwoPassesAreComputedOnce() {
    String src = Generated.cs336().source("CompiledPointwiseKernels.java");
    int at = src.indexOf("private static void Pointwise_apply_bwd_0_f32(");
    assertTrue(at >= 0, "no f32 body of Pointwise_apply_bwd_0 in the generated kernels");
    String body = src.substring(at, src.indexOf("\n  }\n", at));
    assertTrue(body.split("for \\(long c = 0", -1).length - 1 >= 2, "several passes over the row:\n" + body);
    assertTrue(body.contains("= new double[Math.toIntExact(cols)];"), "a row scratch array:\n" + body);
    java.util.Set<String> seen = new java.util.HashSet<>();
    for (String line : body.split("\n")) {
      if (line.contains("Math.exp(")) {
        String expr = line.substring(line.indexOf('=') + 1).strip();
        assertTrue(seen.add(expr), "computed twice: " + expr + "\n" + body);
      }
    }
    assertTrue(seen.size() >= 2, "exponentials in the kernel:\n" + body);
  }

  @Test
  void rmsNormForwardIsOneRowKernelAndBackwardCopiesNothing() {
    Run run = Run.of("cs336.RmsNorm", Map.of("d_model", 6, "eps", 1e-5));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 3, 6));
    assertEquals(List.of("launch RmsNorm_apply_fwd_0"), dev.calls);
    assertEquals(Kernel.Kind.ROWS, dev.launches.get(0).kind());
    // Backward saves only the input and the row statistic (1/rms), not the normalised row.
    assertEquals(2, run.ctx().savedCount(), "saved: x and the inverse rms");
    run.backward(y);
    // The per-row term of the input gradient is broadcast over the row inside the kernel that reads it (read at row
    // level), not expanded into a full-size copy first. The power of 1/rms, the row sum, the per-row arithmetic on it
    // and the input gradient are one row kernel, with 1/d a scalar argument. It was four kernels, then three while
    // the weight gradient's column sum was scheduled between the row kernel's steps (the constant 1/d, made again in
    // backward, sank below it), then two while the power of 1/rms, which needs no row, had a small kernel of its own
    // before the row kernel (Fusion.foldRowKernels).
    assertTrue(dev.calls.stream().noneMatch(c -> c.equals("contiguous copy")), dev.calls::toString);
    assertEquals(1, dev.launches.stream().filter(k -> k.kind() == Kernel.Kind.ROWS).count(), dev.calls::toString);
    assertEquals(1, dev.launches.size(), dev.calls::toString);
    assertEquals(0, dev.constants, "constants made as tensors in backward");
    Kernel rowKernel = dev.launches.stream().filter(k -> k.kind() == Kernel.Kind.ROWS).findFirst().orElseThrow();
    assertEquals(2L, rowKernel.columnSums(), "dy · x̂, read only by the weight gradient's sum over the rows");
    assertTrue(dev.launches.stream().noneMatch(Kernel::sumOfInputs), "no kernel of a norm is a plain sum");
  }

  /**
   * A norm's backward has a second form that adds a given tensor to the input gradient inside its row kernel: the
   * same launches as the plain form, no add of its own, and the plain gradient plus the addend to the bit (the add is
   * the kernel's last step, with the operands the caller's add would have).
   */
  @Test
  void aNormsBackwardAddsAnAddendToTheInputGradientInsideItsRowKernel() {
    NdArray x = Harness.random(new Random(1), 3, 6);
    NdArray dy = Harness.random(new Random(2), 3, 6);
    NdArray plus = Harness.random(new Random(3), 3, 6);
    Run plain = Run.of("cs336.RmsNorm", Map.of("d_model", 6, "eps", 1e-5));
    plain.forward(x);
    plain.dev().reset();
    Record g = (Record) Generated.call(plain.m(), "backward", plain.ctx(), plain.p(), dy);
    List<String> plainCalls = List.copyOf(plain.dev().calls);
    Run adding = Run.of("cs336.RmsNorm", Map.of("d_model", 6, "eps", 1e-5));
    adding.forward(x);
    adding.dev().reset();
    Record ga = (Record) Generated.call(adding.m(), "backward", adding.ctx(), adding.p(), dy, plus);
    assertEquals(plainCalls.size(), adding.dev().calls.size(), adding.dev().calls::toString);
    assertTrue(adding.dev().calls.stream().noneMatch(c -> c.startsWith("binary")), adding.dev().calls::toString);
    double[] dx = ((NdArray) Harness.component(g, 1)).toDoubleArray();
    double[] dxa = ((NdArray) Harness.component(ga, 1)).toDoubleArray();
    double[] p = plus.toDoubleArray();
    for (int i = 0; i < dx.length; i++) {
      assertEquals(p[i] + dx[i], dxa[i], 0.0, "input gradient " + i);
    }
    assertTrue(addsToInputGradients("cs336.RmsNorm"));
    // Linear's input gradient is a GEMM's output: an add there would be a kernel of its own, so no second form.
    assertTrue(!addsToInputGradients("cs336.Linear"));
  }

  private static boolean addsToInputGradients(String module) {
    return booleanConstant(module, "ADDS_TO_INPUT_GRADIENTS");
  }

  private static boolean booleanConstant(String module, String name) {
    try {
      return Generated.cs336().type(Harness.compiledName(module)).getField(name).getBoolean(null);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(e);
    }
  }

  /**
   * BF16_GRADIENT: whether a module's backward takes its result's gradient in bf16 as it is. A norm's backward reads
   * it only in its fused kernel, a Linear's only in GEMMs, the SwiGLU's only in its w2's backward: all do. A block's
   * does not: its result's gradient is also the residual addend of ln2's backward, a read in full precision. So the
   * block lets the SwiGLU's and attention's input gradients be bf16 (the norms read them next), and the SwiGLU adds
   * its two GEMMs' input gradients with that consent as the add's bf16 hint.
   */
  @Test
  void aResultGradientIsBf16WhereEveryReadTakesIt() {
    for (String module : List.of("cs336.RmsNorm", "cs336.Linear", "cs336.SwiGlu", "cs336.MultiHeadSelfAttention")) {
      assertTrue(booleanConstant(module, "BF16_GRADIENT"), module);
    }
    assertTrue(!booleanConstant("cs336.TransformerBlock", "BF16_GRADIENT"), "the block's gradient is the residual's");
    String block = Generated.cs336().source("CompiledTransformerBlock.java");
    assertTrue(block.contains("ffn$.forward(ctx$.child(\"ffn\", false, true, 1L)"), block);
    assertTrue(block.contains("attn$.forward(ctx$.child(\"attn\", false, true, 1L)"), block);
    String swiGlu = Generated.cs336().source("CompiledSwiGlu.java");
    assertTrue(swiGlu.contains("dev.binary(Device.Binary.ADD, v11$, v19$, ctx$.inputGradientInBf16(0))"), swiGlu);
  }

  /**
   * A pre-norm block's backward passes the residual stream's gradient to each norm's backward as its addend, so the
   * two residual adds are gone. The one add left is the SwiGLU's, which sums its w1 and w3 input gradients: two GEMM
   * outputs, with no kernel to add them in.
   */
  @Test
  void aPreNormBlockHandsTheResidualGradientToItsNormsBackward() {
    Run run = Run.of("cs336.TransformerBlock", Map.of("d_model", 8, "num_heads", 2, "d_ff", 16, "eps", 1e-5,
        "rope_theta", 10000.0));
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 8), Harness.arange(3));
    run.backward(y);
    assertEquals(1, run.dev().calls.stream().filter(c -> c.equals("binary ADD")).count(), run.dev().calls::toString);
    assertEquals(2, run.dev().calls.stream().filter(c -> c.equals("launch RmsNorm_applyPlus_bwd_0")).count(),
        run.dev().calls::toString);
  }

  /**
   * The row kernel of a norm's backward sums the weight gradient's terms over runs of rows itself (ColumnSums): with
   * 7 rows in 3 partial rows (runs of 3, 3 and 1), 1 partial row, or one per row (the CPU's default), the gradients
   * are the same to the last few ulps of float64 (the sums only group the rows differently).
   */
  @Test
  void aNormsWeightGradientIsSummedOverRunsOfRowsByItsKernel() {
    NdArray x = Harness.random(new Random(1), 7, 6);
    NdArray dy = Harness.random(new Random(2), 7, 6);
    double[][] grads = new double[3][];
    long[] partials = {0, 3, 1};
    for (int i = 0; i < partials.length; i++) {
      Run run = Run.of("cs336.RmsNorm", Map.of("d_model", 6, "eps", 1e-5));
      run.dev().partialRows = partials[i];
      run.forward(x);
      Record g = (Record) Generated.call(run.m(), "backward", run.ctx(), run.p(), dy);
      // The result: the parameters' gradients (a RmsNorm record: the weight's), then the input's.
      grads[i] = ((NdArray) Harness.component((Record) Harness.component(g, 0), 0)).toDoubleArray();
    }
    for (int i = 1; i < partials.length; i++) {
      for (int c = 0; c < 6; c++) {
        assertEquals(grads[0][c], grads[i][c], 1e-12 * (1 + Math.abs(grads[0][c])), partials[i] + " partial rows");
      }
    }
    assertTrue(java.util.Arrays.stream(grads[0]).anyMatch(v -> Math.abs(v) > 1e-3), "a gradient that is not zero");
  }

  /**
   * Attention is one device call each way. Its output goes only to the output projection's GEMMs (and its own
   * backward's row sums), so the call is told it may write it in bf16. Of its gradients, dv goes only to the v
   * projection's GEMMs and is marked too; dq and dk go to the {@code Rope} sub-module's backward, whose RoPE takes
   * its result gradient in bf16 as it is (its {@code BF16_GRADIENT}), so they are marked as well, as where the CS336
   * block applies RoPE inline.
   */
  @Test
  void attentionIsOneCallEachWayAndLinearsUseNoCopies() {
    Run run = Run.of("cs336.MultiHeadSelfAttention", Map.of("d_model", 8, "num_heads", 2, "rope_theta", 10000.0));
    CountingDevice dev = run.dev();
    Tensor y = run.forward(Harness.random(new Random(1), 2, 3, 8), Harness.arange(3));
    assertEquals(1, dev.calls.stream().filter(c -> c.equals("attention")).count(), dev.calls::toString);
    // The q, k, v and output projections; RoPE is one device call each for q and k.
    assertEquals(4, dev.calls.stream().filter(c -> c.equals("gemm")).count(), dev.calls::toString);
    assertEquals(2, dev.calls.stream().filter(c -> c.equals("rope")).count(), dev.calls::toString);
    assertEquals(1, dev.bf16Results, "attention's output, read only by the output projection");
    run.backward(y);
    assertEquals(1, dev.calls.stream().filter(c -> c.equals("attentionBackward")).count(), dev.calls::toString);
    assertEquals(3, dev.bf16Results, "dv, read only by the v projection's GEMMs; dq and dk, by Rope's backward");
    // x's gradient is the sum of the three projections' input gradients: one kernel, marked as a plain sum so that a
    // device may run the three GEMMs as one over stacked operands instead.
    List<Kernel> sums = dev.launches.stream().filter(Kernel::sumOfInputs).toList();
    assertEquals(1, sums.size(), dev.launches::toString);
    assertEquals(3, sums.get(0).inputs(), sums.get(0)::toString);
    // That sum is the module's input gradient: where the caller takes it in bf16 (a norm's backward next), the
    // generated code allocates it as a GEMM result, which a device that sums by one GEMM writes in bf16.
    String attention = Generated.cs336().source("CompiledMultiHeadSelfAttention.java");
    assertTrue(attention.contains("ctx$.inputGradientInBf16(0) ? dev.emptyGemmResult("), attention);
    String source = Generated.cs336().source("CompiledLinear.java");
    assertTrue(source.contains("no copies"), "Linear's einsums are GEMMs with layout flags:\n" + source);
    assertTrue(!source.contains("interleaved groups"), source);
  }
}
