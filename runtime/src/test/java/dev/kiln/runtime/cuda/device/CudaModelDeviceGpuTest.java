package dev.kiln.runtime.cuda.device;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.GpuTesting;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Every primitive of {@link CudaModelDevice} against {@link CpuDevice} on the same random inputs (never zeros), with
 * every device output poisoned (NaN) before the kernel runs. fp32 results are compared with 1e-5 relative (the same
 * float math in another order: sums over at most a few thousand terms; transcendental functions within a few ulp),
 * bf16 GEMM/attention with 2e-2 of the largest magnitude (8 significant bits in the operands).
 */
class CudaModelDeviceGpuTest {
  private CudaModelDevice gpu;
  private CudaModelDevice gpuBf16;
  private final CpuDevice cpu = new CpuDevice();
  private final Random rnd = new Random(42);

  @BeforeEach
  void open() {
    GpuTesting.device();
    gpu = new CudaModelDevice(0, CudaModelDevice.Precision.FP32);
    gpu.poisonNewTensors(true);
    gpuBf16 = new CudaModelDevice(0, CudaModelDevice.Precision.BF16);
    gpuBf16.poisonNewTensors(true);
  }

  private NdArray randn(long... shape) {
    return GpuTesting.randn(rnd, DType.F32, 1.0, shape);
  }

  /** Values in [0.1, 5): logs and roots are defined, and unsigned casts do not wrap. */
  private NdArray positive(long... shape) {
    float[] v = new float[(int) NdArray.numel(shape)];
    for (int i = 0; i < v.length; i++) {
      v[i] = 0.1f + 4.9f * rnd.nextFloat();
    }
    return NdArray.fromFloats(v, shape);
  }

  private static double[] d(Tensor t, Device dev) {
    NdArray a = dev instanceof CudaModelDevice c ? c.toHost(t) : (NdArray) t;
    return GpuTesting.doubles(a);
  }

  private void same(String what, Tensor ref, Tensor got) {
    assertEquals(Arrays.toString(ref.shape()), Arrays.toString(got.shape()), what + ": shape");
    GpuTesting.assertClose(what, d(ref, cpu), d(got, gpu), 1e-5, 1e-6);
  }

  @Test
  void copiesAndCastsBetweenEveryDtypeThroughStridesAndBroadcasts() {
    NdArray x = GpuTesting.randn(rnd, DType.F32, 7.0, 3, 4, 5);
    NdArray px = positive(3, 4, 5);
    DType[] types = {DType.F32, DType.F64, DType.BF16, DType.I32, DType.I64, DType.U8, DType.BOOL};
    for (DType from : types) {
      NdArray src = from == DType.U8 ? px.to(from) : x.to(from);
      for (DType to : types) {
        Tensor ref = cpu.cast(cpu.permute(src, 2, 0, 1), to);
        Tensor got = gpu.cast(gpu.permute(gpu.fromHost(src), 2, 0, 1), to);
        GpuTesting.assertClose("cast " + from + " -> " + to, d(ref, cpu), d(got, gpu), 0, 0);
      }
    }
    NdArray row = randn(5);
    Tensor dst = gpu.zeros(DType.F32, 4, 5);
    gpu.copy(gpu.fromHost(row), dst);
    Tensor ref = cpu.zeros(DType.F32, 4, 5);
    cpu.copy(row, ref);
    same("broadcast copy", ref, dst);
    // A row broadcast over a strided destination: the four-a-thread walk (innermost size a multiple of 4).
    NdArray row4 = randn(4);
    Tensor wide = gpu.zeros(DType.F32, 4, 8);
    gpu.copy(gpu.fromHost(row4), gpu.permute(wide, 1, 0));
    Tensor refWide = cpu.zeros(DType.F32, 4, 8);
    cpu.copy(row4, cpu.permute(refWide, 1, 0));
    same("broadcast copy into a transposed view", refWide, wide);
    Tensor full = gpu.full(DType.F32, 2.5, 3, 2);
    assertTrue(Arrays.stream(gpu.download(full)).allMatch(v -> v == 2.5));
    assertEquals(0.5, gpu.download(gpu.full(DType.F32, 0.5))[0], "a 0-d tensor");
    Tensor iota = gpu.iota(DType.I64, 9);
    assertEquals(8.0, gpu.download(iota)[8]);
  }

  @Test
  void contiguousFastPathsMatchTheCpu() {
    NdArray h = GpuTesting.randn(rnd, DType.F32, 50.0, 101);
    double[] all = h.toDoubleArray();
    dev.kiln.runtime.cuda.CudaArray onGpu = ((CudaTensor) gpu.fromHost(h)).array();
    // Offset 0: aligned, the four-a-thread kernels run; offset 1 (one float in): not 16-byte aligned, the strided
    // kernels run. Both must equal the CPU: casts bit for bit, arithmetic to 1e-5.
    for (int offset : new int[] {0, 1}) {
      float[] part = new float[100];
      for (int i = 0; i < 100; i++) {
        part[i] = (float) all[offset + i];
      }
      NdArray hx = NdArray.fromFloats(part, 25, 4);
      Tensor x = new CudaTensor(onGpu.strided(new long[] {25, 4}, new long[] {4, 1}, offset), null);
      GpuTesting.assertClose("cast to bf16 at offset " + offset, d(cpu.cast(hx, DType.BF16), cpu),
          d(gpu.cast(x, DType.BF16), gpu), 0, 0);
      NdArray hy = randn(25, 4);
      for (Device.Binary op : Device.Binary.values()) {
        same(op + " at offset " + offset, cpu.binary(op, hx, hy), gpu.binary(op, x, gpu.fromHost(hy)));
      }
      Tensor acc = gpu.fromHost(hy);
      gpu.addInto(acc, x);
      same("addInto at offset " + offset, cpu.binary(Device.Binary.ADD, hy, hx), acc);
    }
  }

  @Test
  void pointwiseOpsBroadcastLikeTheCpu() {
    NdArray a = randn(4, 1, 6);
    NdArray b = randn(3, 1);
    NdArray pos = positive(4, 3, 6);
    for (Device.Unary op : Device.Unary.values()) {
      NdArray in = op == Device.Unary.LOG || op == Device.Unary.SQRT || op == Device.Unary.RSQRT ? pos : a;
      same("unary " + op, cpu.unary(op, in), gpu.unary(op, gpu.fromHost(in)));
    }
    for (Device.Binary op : Device.Binary.values()) {
      same("binary " + op, cpu.binary(op, a, b), gpu.binary(op, gpu.fromHost(a), gpu.fromHost(b)));
    }
    for (Device.Compare op : Device.Compare.values()) {
      Tensor ref = cpu.compare(op, a, b);
      Tensor got = gpu.compare(op, gpu.fromHost(a), gpu.fromHost(b));
      GpuTesting.assertClose("compare " + op, d(ref, cpu), d(got, gpu), 0, 0);
      same("where after " + op, cpu.where(ref, a, b), gpu.where(got, gpu.fromHost(a), gpu.fromHost(b)));
    }
    // A transposed (non-contiguous) operand.
    NdArray m = randn(5, 7);
    NdArray n = randn(7, 5);
    same("add transposed", cpu.binary(Device.Binary.ADD, m.transpose(0, 1), n),
        gpu.binary(Device.Binary.ADD, gpu.permute(gpu.fromHost(m), 1, 0), gpu.fromHost(n)));
  }

  @Test
  void reductionsOverEveryAxisPattern() {
    NdArray x = randn(6, 130, 33);
    int[][] patterns = {{0}, {1}, {2}, {0, 1}, {1, 2}, {0, 2}, {0, 1, 2}, {}};
    for (Reduction how : new Reduction[] {Reduction.SUM, Reduction.MAX, Reduction.MIN}) {
      for (int[] axes : patterns) {
        for (boolean keep : new boolean[] {false, true}) {
          String what = how + " over " + Arrays.toString(axes) + (keep ? " keepDims" : "");
          same(what, cpu.reduce(how, x, axes, keep), gpu.reduce(how, gpu.fromHost(x), axes, keep));
        }
      }
    }
    // A long column reduction (bias gradients: [tokens, features] summed over tokens) takes the chunked path.
    NdArray tall = randn(4096, 70);
    same("sum over 4096 rows", cpu.reduce(Reduction.SUM, tall, new int[] {0}, false),
        gpu.reduce(Reduction.SUM, gpu.fromHost(tall), new int[] {0}, false));
    same("sumTo", cpu.sumTo(tall, 1, 70), gpu.sumTo(gpu.fromHost(tall), 1, 70));
    // 256 to 1,024 rows take one launch of 32 row lanes a block (a norm's weight gradient's partial rows at xl:
    // [256, 2,560]); 300 rows are not a multiple of the lanes, 2,561 columns not of a block's 32.
    NdArray partials = randn(300, 2_561);
    for (Reduction how : new Reduction[] {Reduction.SUM, Reduction.MAX}) {
      same(how + " over 300 rows of 2,561", cpu.reduce(how, partials, new int[] {0}, false),
          gpu.reduce(how, gpu.fromHost(partials), new int[] {0}, false));
    }
    // A few long rows (a loss's mean over the positions) take blocks of 1,024 threads.
    NdArray wide = randn(3, 40_003);
    for (Reduction how : new Reduction[] {Reduction.SUM, Reduction.MAX}) {
      same(how + " over 3 rows of 40,003", cpu.reduce(how, wide, new int[] {1}, false),
          gpu.reduce(how, gpu.fromHost(wide), new int[] {1}, false));
    }
  }

  @Test
  void bf16GradientsSumOverRowsInFp32() {
    // A norm's backward takes its result's gradient in bf16 where the GEMMs after it wrote it so (the processor's
    // BF16_GRADIENT); LayerNorm's bias gradient sums it over the rows (sumTo). In mixed precision the device reads
    // the bf16 values and sums in fp32: against the CPU's sum of the same values widened exactly, 1e-5 relative (the
    // kernel sums in double, the CPU in its own order). Contiguous rows take the bf16 column kernel (one launch up
    // to its single-pass rows, chunks past them); other patterns an exact fp32 copy first.
    for (long[] shape : new long[][] {{64, 48}, {4096, 70}, {2, 300, 33}}) {
      NdArray x16 = randn(shape).to(DType.BF16).to(DType.F32);
      Tensor onGpu = gpuBf16.cast(gpuBf16.fromHost(x16), DType.BF16);
      assertEquals(DType.BF16, onGpu.dtype());
      int r = shape.length;
      long[] to = new long[r];
      Arrays.fill(to, 1);
      to[r - 1] = shape[r - 1];
      String what = "sumTo of bf16 " + Arrays.toString(shape);
      Tensor got = gpuBf16.sumTo(onGpu, to);
      assertEquals(DType.F32, got.dtype(), what);
      GpuTesting.assertClose(what, d(cpu.sumTo(x16, to), cpu), d(got, gpuBf16), 1e-5, 1e-6);
      int[] last = {r - 1};
      GpuTesting.assertClose("sum over the last axis of bf16 " + Arrays.toString(shape),
          d(cpu.reduce(Reduction.SUM, x16, last, false), cpu),
          d(gpuBf16.reduce(Reduction.SUM, onGpu, last, false), gpuBf16), 1e-5, 1e-6);
    }
  }

  @Test
  void gatherScatterPickAndTheirIndexErrors() {
    long[] idv = new long[24];
    for (int i = 0; i < idv.length; i++) {
      idv[i] = rnd.nextInt(50) / (i % 3 == 0 ? 5 : 1); // repeats, so scatter-add accumulates
    }
    NdArray ids = NdArray.fromLongs(idv, 4, 6);
    NdArray ids32 = ids.to(DType.I32);
    // Rows of float4s (16; 1,032, more float4s than a block's threads) and of single floats (6).
    for (int d : new int[] {16, 1032, 6}) {
      NdArray table = randn(50, d);
      same("gather, rows of " + d, cpu.gather(table, ids), gpu.gather(gpu.fromHost(table), gpu.fromHost(ids)));
      same("gather i32, rows of " + d, cpu.gather(table, ids32),
          gpu.gather(gpu.fromHost(table), gpu.fromHost(ids32)));
      NdArray src = randn(4, 6, d);
      Tensor refT = cpu.zeros(DType.F32, 50, d);
      cpu.scatterAddRows(refT, ids, src);
      Tensor gotT = gpu.zeros(DType.F32, 50, d);
      gpu.scatterAddRows(gotT, gpu.fromHost(ids), gpu.fromHost(src));
      same("scatterAddRows, rows of " + d, refT, gotT);
      Tensor gotT32 = gpu.zeros(DType.F32, 50, d);
      gpu.scatterAddRows(gotT32, gpu.fromHost(ids32), gpu.fromHost(src));
      same("scatterAddRows i32, rows of " + d, refT, gotT32);
    }
    NdArray table = randn(50, 16);

    NdArray logits = randn(4, 6, 50);
    same("pick", cpu.pick(logits, ids), gpu.pick(gpu.fromHost(logits), gpu.fromHost(ids)));
    NdArray k2 = NdArray.fromLongs(new long[] {1, 7, 7, 3, 0, 49}, 3, 2);
    NdArray s2 = randn(3, 2);
    Tensor refD = cpu.zeros(DType.F32, 3, 50);
    cpu.scatterAddLast(refD, k2, s2);
    Tensor gotD = gpu.zeros(DType.F32, 3, 50);
    gpu.scatterAddLast(gotD, gpu.fromHost(k2), gpu.fromHost(s2));
    same("scatterAddLast", refD, gotD);

    TopK rt = cpu.topk(logits, 3);
    TopK gt = gpu.topk(gpu.fromHost(logits), 3);
    same("topk values", rt.values(), gt.values());
    GpuTesting.assertClose("topk indices", d(rt.indices(), cpu), d(gt.indices(), gpu), 0, 0);

    NdArray bad = NdArray.fromLongs(new long[] {3, 50}, 2);
    gpu.gather(gpu.fromHost(table), gpu.fromHost(bad));
    IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
    assertTrue(e.getMessage().contains("id 50") && e.getMessage().contains("size 50"), e.getMessage());
    gpu.synchronize(); // the error word was cleared
  }

  @Test
  void viewsReshapeWithoutCopiesWhereStridesAllow() {
    NdArray x = randn(4, 6, 8);
    Tensor g = gpu.fromHost(x);
    same("reshape view", cpu.reshape(x, 24, 8), gpu.reshape(g, 24, 8));
    Tensor t = gpu.permute(g, 0, 2, 1);
    same("reshape of a transpose (copy)", cpu.reshape(cpu.permute(x, 0, 2, 1), 4, 48), gpu.reshape(t, 4, 48));
    NdArray row = randn(1, 8);
    same("expand", cpu.contiguous(cpu.expand(row, 5, 8)), gpu.contiguous(gpu.expand(gpu.fromHost(row), 5, 8)));
  }

  @Test
  void gemmWithLayoutsBatchesAndMixedPrecision() {
    NdArray a = randn(3, 20, 12);
    NdArray b = randn(12, 9);
    NdArray bt = randn(9, 12);
    for (boolean transB : new boolean[] {false, true}) {
      NdArray bb = transB ? bt : b;
      Tensor ref = cpu.zeros(DType.F32, 3, 20, 9);
      cpu.gemm(a, false, bb, transB, ref, 1.5, 0);
      Tensor got = gpu.empty(DType.F32, 3, 20, 9);
      gpu.gemm(gpu.fromHost(a), false, gpu.fromHost(bb), transB, got, 1.5, 0);
      same("gemm shared b, transB " + transB, ref, got);
      // beta = 1 accumulates (parameter gradients).
      cpu.gemm(a, false, bb, transB, ref, 1, 1);
      gpu.gemm(gpu.fromHost(a), false, gpu.fromHost(bb), transB, got, 1, 1);
      same("gemm += , transB " + transB, ref, got);
    }
    NdArray at = randn(12, 30);
    Tensor ref = cpu.zeros(DType.F32, 30, 9);
    cpu.gemm(at, true, b, false, ref, 1, 0);
    Tensor got = gpuBf16.empty(DType.F32, 30, 9);
    Tensor w = gpuBf16.fromHost(b);
    gpuBf16.withBf16Twin(w);
    gpuBf16.gemm(gpuBf16.fromHost(at), true, w, false, got, 1, 0);
    double[] r = d(ref, cpu);
    GpuTesting.assertClose("bf16 gemm (transA, twin)", r, GpuTesting.doubles(gpuBf16.toHost(got)), 0,
        2e-2 * GpuTesting.maxAbs(r));
  }

  @Test
  void bf16CastsAreSharedWithinAScopeUntilTheirSourceChanges() {
    NdArray x = randn(16, 32);
    NdArray w = randn(8, 32);
    NdArray delta = randn(16, 32);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      Tensor gx = gpuBf16.fromHost(x);
      Tensor gw = gpuBf16.fromHost(w);
      Tensor first = gpuBf16.empty(DType.F32, 16, 8);
      gpuBf16.gemm(gx, false, gw, true, first, 1, 0);
      Tensor again = gpuBf16.empty(DType.F32, 16, 8);
      gpuBf16.gemm(gx, false, gw, true, again, 1, 0);
      GpuTesting.assertClose("same cast twice", d(first, gpuBf16), d(again, gpuBf16), 0, 0);
      gpuBf16.addInto(gx, gpuBf16.fromHost(delta));
      Tensor after = gpuBf16.empty(DType.F32, 16, 8);
      gpuBf16.gemm(gx, false, gw, true, after, 1, 0);
      Tensor ref = cpu.zeros(DType.F32, 16, 8);
      cpu.gemm(cpu.binary(Device.Binary.ADD, x, delta), false, w, true, ref, 1, 0);
      double[] r = d(ref, cpu);
      // The second product must see the changed x (a stale cast would be off by the size of delta, ~1).
      GpuTesting.assertClose("cast after its source changed", r, GpuTesting.doubles(gpuBf16.toHost(after)), 0,
          2e-2 * GpuTesting.maxAbs(r));
    }
  }

  @Test
  void theCrossEntropyGradientsBf16CopyServesTheHeadGemms() {
    // In mixed precision the backward kernel also writes the gradient rounded to bf16, and the head's GEMMs read
    // that copy through a reshaped view instead of casting the fp32 gradient: the products must be the ones a cast
    // gives, bit for bit (the same bf16 operands through the same GEMM).
    NdArray logits = GpuTesting.randn(rnd, DType.F32, 4.0, 2, 3, 1000);
    NdArray ids = NdArray.fromLongs(new long[] {0, 999, 500, 3, 77, 1}, 2, 3);
    NdArray dLoss = randn(2, 3);
    NdArray w = randn(8, 1000);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      Tensor g = gpuBf16.crossEntropyBackward(gpuBf16.fromHost(logits), gpuBf16.fromHost(ids),
          gpuBf16.fromHost(dLoss));
      same("the fp32 gradient", cpu.crossEntropyBackward(logits, ids, dLoss), g);
      Tensor gw = gpuBf16.fromHost(w);
      long before = gpuBf16.launches();
      Tensor viaCopy = gpuBf16.empty(DType.F32, 6, 8);
      gpuBf16.gemm(gpuBf16.reshape(g, 6, 1000), false, gw, true, viaCopy, 1, 0);
      assertEquals(before + 2, gpuBf16.launches(), "one cast (of w) and the GEMM: the gradient is not cast again");
      Tensor fresh = gpuBf16.empty(DType.F32, 2, 3, 1000);
      gpuBf16.copy(g, fresh);
      Tensor viaCast = gpuBf16.empty(DType.F32, 6, 8);
      gpuBf16.gemm(gpuBf16.reshape(fresh, 6, 1000), false, gw, true, viaCast, 1, 0);
      GpuTesting.assertClose("dLogits · wᵀ from the kernel's bf16 copy and from a cast", d(viaCast, gpuBf16),
          d(viaCopy, gpuBf16), 0, 0);
      // A write to the gradient drops its copy: the next GEMM sees the new values.
      gpuBf16.addInto(g, fresh);
      Tensor doubled = gpuBf16.empty(DType.F32, 6, 8);
      gpuBf16.gemm(gpuBf16.reshape(g, 6, 1000), false, gw, true, doubled, 1, 0);
      double[] twice = Arrays.stream(d(viaCast, gpuBf16)).map(v -> 2 * v).toArray();
      GpuTesting.assertClose("after g += (a copy of g)", twice, d(doubled, gpuBf16), 0, 0);
    }
  }

  @Test
  void ropesBf16CopyServesAttentionAndTheGemmsAfterIt() {
    // In mixed precision RoPE also writes its result rounded to bf16 (laid out as the result, a head-split view of
    // [b, s, h·d]); attention reads that copy instead of casting q and k, and so do GEMMs that read the result
    // through the rearrange merging the heads. Either must give what a cast of the fp32 result gives, bit for bit.
    NdArray x = randn(2, 64, 2, 32);
    NdArray v = randn(2, 64, 2, 32);
    NdArray w = randn(8, 64);
    NdArray pos = NdArray.arange(DType.I64, 64);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      Tensor roped = gpuBf16.rope(gpuBf16.permute(gpuBf16.fromHost(x), 0, 2, 1, 3), gpuBf16.fromHost(pos), 10_000,
          false);
      // The same values in new memory (laid out alike): its casts are made afresh.
      Tensor fresh = gpuBf16.empty(DType.F32, 2, 64, 2, 32);
      gpuBf16.copy(gpuBf16.permute(roped, 0, 2, 1, 3), fresh);
      Tensor copied = gpuBf16.permute(fresh, 0, 2, 1, 3);
      Tensor gv = gpuBf16.permute(gpuBf16.fromHost(v), 0, 2, 1, 3);
      Device.AttentionOut viaRope = gpuBf16.attention(roped, roped, gv, Mask.CAUSAL, 0.2);
      Device.AttentionOut viaCast = gpuBf16.attention(copied, copied, gv, Mask.CAUSAL, 0.2);
      GpuTesting.assertClose("attention on RoPE's bf16 copy and on a cast", d(viaCast.out(), gpuBf16),
          d(viaRope.out(), gpuBf16), 0, 0);
      // The heads merged back: [2, 64, 64] read by a GEMM as [128, 64].
      Tensor merged = gpuBf16.reshape(gpuBf16.permute(roped, 0, 2, 1, 3), 128, 64);
      Tensor gw = gpuBf16.fromHost(w);
      long before = gpuBf16.launches();
      Tensor a = gpuBf16.empty(DType.F32, 128, 8);
      gpuBf16.gemm(merged, false, gw, true, a, 1, 0);
      assertEquals(before + 2, gpuBf16.launches(), "one cast (of w) and the GEMM: RoPE's result is not cast again");
      Tensor b = gpuBf16.empty(DType.F32, 128, 8);
      gpuBf16.gemm(gpuBf16.reshape(gpuBf16.permute(copied, 0, 2, 1, 3), 128, 64), false, gw, true, b, 1, 0);
      GpuTesting.assertClose("GEMM on RoPE's bf16 copy and on a cast", d(b, gpuBf16), d(a, gpuBf16), 0, 0);
    }
  }

  @Test
  void ropeReadsAProjectionKeptInBf16() {
    // The q and k projections are GEMM outputs that mixed precision keeps in bf16 (emptyGemmResult): RoPE reads them
    // as they are, through their head-split view. Against the CPU on the rounded values, at fp32 RoPE tolerance:
    // positions shared by a token's heads take the token kernel (bf16 loads), per-row positions the general kernel
    // (x widened to fp32 first).
    NdArray x = randn(128, 16);
    NdArray w = randn(64, 16);
    int[] rows = new int[2 * 2 * 64];
    for (int i = 0; i < rows.length; i++) {
      rows[i] = rnd.nextInt(4096);
    }
    for (NdArray pos : new NdArray[] {NdArray.arange(DType.I64, 64), NdArray.fromInts(rows, 2, 2, 64)}) {
      String what = "rope of a bf16 projection, positions " + Arrays.toString(pos.shape());
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor proj = gpuBf16.emptyGemmResult(DType.F32, 128, 64);
        assertEquals(DType.BF16, proj.dtype(), what);
        gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w), true, proj, 1, 0);
        NdArray rounded = gpuBf16.toHost(proj).to(DType.F32);
        Tensor ref = cpu.rope(cpu.permute(rounded.reshape(2, 64, 2, 32), 0, 2, 1, 3), pos, 10_000, false);
        Tensor view = gpuBf16.permute(gpuBf16.reshape(proj, 2, 64, 2, 32), 0, 2, 1, 3);
        Tensor got = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false);
        assertEquals(DType.F32, got.dtype(), what + ": the rotation is fp32");
        sameRope(what, ref, got);
        Tensor only = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false, true);
        GpuTesting.assertClose(what + ", forGemms", d(gpuBf16.cast(got, DType.BF16), gpuBf16), d(only, gpuBf16), 0,
            0);
      }
    }
  }

  @Test
  void ropeForGemmsWritesOnlyTheBf16Result() {
    // forGemms (only GEMMs and attention read the result): in mixed precision RoPE returns its bf16 copy alone. It
    // must hold what the copy of the plain call holds, and attention (forward and backward, in a scope and outside
    // one) and a GEMM through the merged heads must give the same bits on it as on the fp32 result. Positions shared
    // by a token's heads take the token kernel; per-row positions the general one.
    NdArray x = randn(2, 64, 2, 32);
    NdArray v = randn(2, 64, 2, 32);
    NdArray dOut = randn(2, 2, 64, 32);
    NdArray w = randn(8, 64);
    int[] rows = new int[2 * 2 * 64];
    for (int i = 0; i < rows.length; i++) {
      rows[i] = rnd.nextInt(4096);
    }
    for (NdArray pos : new NdArray[] {NdArray.arange(DType.I64, 64), NdArray.fromInts(rows, 2, 2, 64)}) {
      String what = "rope forGemms, positions " + Arrays.toString(pos.shape());
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor view = gpuBf16.permute(gpuBf16.fromHost(x), 0, 2, 1, 3);
        Tensor plain = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false);
        Tensor only = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false, true);
        assertEquals(DType.BF16, only.dtype(), what);
        assertEquals(Arrays.toString(plain.shape()), Arrays.toString(only.shape()), what);
        GpuTesting.assertClose(what + ": values", d(gpuBf16.cast(plain, DType.BF16), gpuBf16), d(only, gpuBf16), 0,
            0);
        Tensor gv = gpuBf16.permute(gpuBf16.fromHost(v), 0, 2, 1, 3);
        Device.AttentionOut ref = gpuBf16.attention(plain, plain, gv, Mask.CAUSAL, 0.2);
        Device.AttentionOut got = gpuBf16.attention(only, only, gv, Mask.CAUSAL, 0.2);
        GpuTesting.assertClose(what + ": attention", d(ref.out(), gpuBf16), d(got.out(), gpuBf16), 0, 0);
        Tensor dO = gpuBf16.fromHost(dOut);
        Device.AttentionGrads gRef = gpuBf16.attentionBackward(plain, plain, gv, ref.out(), ref.lse(), dO,
            Mask.CAUSAL, 0.2);
        Device.AttentionGrads gGot = gpuBf16.attentionBackward(only, only, gv, got.out(), got.lse(), dO,
            Mask.CAUSAL, 0.2);
        GpuTesting.assertClose(what + ": attention dq", d(gRef.dq(), gpuBf16), d(gGot.dq(), gpuBf16), 0, 0);
        GpuTesting.assertClose(what + ": attention dv", d(gRef.dv(), gpuBf16), d(gGot.dv(), gpuBf16), 0, 0);
        Tensor gw = gpuBf16.fromHost(w);
        Tensor a = gpuBf16.empty(DType.F32, 128, 8);
        Tensor b = gpuBf16.empty(DType.F32, 128, 8);
        gpuBf16.gemm(gpuBf16.reshape(gpuBf16.permute(plain, 0, 2, 1, 3), 128, 64), false, gw, true, a, 1, 0);
        gpuBf16.gemm(gpuBf16.reshape(gpuBf16.permute(only, 0, 2, 1, 3), 128, 64), false, gw, true, b, 1, 0);
        GpuTesting.assertClose(what + ": GEMM", d(a, gpuBf16), d(b, gpuBf16), 0, 0);
      }
      // Outside a scope (attention casts its operands itself) and with bf16 storage switched off.
      Tensor view = gpuBf16.permute(gpuBf16.fromHost(x), 0, 2, 1, 3);
      Tensor plain = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false);
      Tensor only = gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false, true);
      Tensor gv = gpuBf16.permute(gpuBf16.fromHost(v), 0, 2, 1, 3);
      Device.AttentionOut ref = gpuBf16.attention(plain, plain, gv, Mask.CAUSAL, 0.2);
      Device.AttentionOut got = gpuBf16.attention(only, only, gv, Mask.CAUSAL, 0.2);
      Tensor dO = gpuBf16.fromHost(dOut);
      GpuTesting.assertClose(what + ", no scope: attention dk",
          d(gpuBf16.attentionBackward(plain, plain, gv, ref.out(), ref.lse(), dO, Mask.CAUSAL, 0.2).dk(), gpuBf16),
          d(gpuBf16.attentionBackward(only, only, gv, got.out(), got.lse(), dO, Mask.CAUSAL, 0.2).dk(), gpuBf16), 0,
          0);
      gpuBf16.storeGemmOperandsInBf16(false);
      try {
        assertEquals(DType.F32, gpuBf16.rope(view, gpuBf16.fromHost(pos), 10_000, false, true).dtype(), what);
      } finally {
        gpuBf16.storeGemmOperandsInBf16(true);
      }
      assertEquals(DType.F32, gpu.rope(gpu.permute(gpu.fromHost(x), 0, 2, 1, 3), gpu.fromHost(pos), 10_000, false,
          true).dtype(), what + ": fp32 device");
    }
  }

  @Test
  void attentionTurnsQAndKItselfWhereRopeFeedsIt() {
    // RoPE of bf16 q and k projections for attention alone (forGemms) launches nothing: the whole-head attention
    // kernels (d32 up to 256 rows, d80 up to 512) turn q and k as they load them, the backward writes the gradients
    // of q and k before RoPE, and RoPE's backward (forGemms) returns them as they are. Against the CPU on the bf16-rounded
    // projections and dOut, RoPE's result rounded to bf16 as the kernels round it: 3e-2 of the largest magnitude,
    // attentionCase's bf16 tolerance; a turned q read on its own, 1e-2 (one bf16 rounding of the same rotation).
    // Positions shared by the batch, and per-token ones in the thousands (the angle reduction); causal (the kernels
    // turn each half of the rows as it lands) and unmasked (all rows at once). Heads of 32 over 96 rows (the
    // whole-head kernels) and of 80 over 200 (xl's slab kernels: k turned in shared memory and q in registers
    // forward; dK/dV turns q in shared memory and k in registers, dQ the other way round, each storing its gradient
    // turned back).
    for (int[] shape : new int[][] {{32, 96}, {80, 200}}) {
      attentionTurnsQAndK(shape[0], shape[1]);
    }
    gpuBf16.fuseRope(true);
  }

  private void attentionTurnsQAndK(int dh, int s) {
    int b = 2;
    int h = 2;
    double theta = 10_000;
    double scale = 1 / Math.sqrt(dh);
    NdArray x = randn(b * s, 16);
    NdArray[] w = {randn(h * dh, 16), randn(h * dh, 16), randn(h * dh, 16)};
    NdArray dOut = randn(b, h, s, dh);
    long[] far = new long[b * s];
    for (int i = 0; i < far.length; i++) {
      far[i] = 8_000 + rnd.nextInt(400);
    }
    for (NdArray pos : new NdArray[] {NdArray.arange(DType.I64, s), NdArray.fromLongs(far, b, 1, s)}) {
      for (Mask mask : new Mask[] {Mask.CAUSAL, Mask.NONE}) {
        for (boolean fuse : new boolean[] {true, false}) {
          gpuBf16.fuseRope(fuse);
          String what = "d" + dh + ", " + mask + ", fuse " + fuse + ", positions " + Arrays.toString(pos.shape());
          try (CudaModelDevice.Scope sc = gpuBf16.scope()) {
            Tensor[] proj = new Tensor[3];
            Tensor[] view = new Tensor[3];
            NdArray[] heads = new NdArray[3];
            for (int i = 0; i < 3; i++) {
              proj[i] = gpuBf16.emptyGemmResult(DType.F32, b * s, h * dh);
              gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w[i]), true, proj[i], 1, 0);
              heads[i] = gpuBf16.toHost(proj[i]).to(DType.F32).reshape(b, s, h, dh).permute(0, 2, 1, 3).contiguous();
              view[i] = gpuBf16.permute(gpuBf16.reshape(proj[i], b, s, h, dh), 0, 2, 1, 3);
            }
            Tensor rq = cpu.cast(cpu.cast(cpu.rope(heads[0], pos, theta, false), DType.BF16), DType.F32);
            Tensor rk = cpu.cast(cpu.cast(cpu.rope(heads[1], pos, theta, false), DType.BF16), DType.F32);
            NdArray dOut16 = dOut.to(DType.BF16).to(DType.F32);
            Device.AttentionOut ro = cpu.attention(rq, rk, heads[2], mask, scale);
            Device.AttentionGrads rg = cpu.attentionBackward(rq, rk, heads[2], ro.out(), ro.lse(), dOut16, mask, scale);
            Tensor gpos = gpuBf16.fromHost(pos);
            Tensor gd = gpuBf16.cast(onGpu(gpuBf16, dOut, true), DType.BF16);

            long before = gpuBf16.launches();
            Tensor q = gpuBf16.rope(view[0], gpos, theta, false, true);
            Tensor k = gpuBf16.rope(view[1], gpos, theta, false, true);
            assertEquals(fuse ? 0 : 2, gpuBf16.launches() - before, what + ": RoPE waits for attention");
            Device.AttentionOut go = gpuBf16.attention(q, k, view[2], mask, scale, true);
            assertEquals(fuse ? 1 : 3, gpuBf16.launches() - before, what + ": RoPE and attention forward");
            long mid = gpuBf16.launches();
            Device.AttentionGrads gg = gpuBf16.attentionBackward(q, k, view[2], go.out(), go.lse(), gd, mask, scale,
                true, true, true);
            Tensor dq = gpuBf16.rope(gg.dq(), gpos, theta, true, true);
            // Unfused: the backward kernel (counted as its three passes) and two RoPE kernels. Fused: the backward
            // alone for dq; dk, through the plain call, turns the gradient forward (its deferred kernel) and back.
            Tensor dk = gpuBf16.rope(gg.dk(), gpos, theta, true);
            assertEquals(fuse ? 3 : 5, gpuBf16.launches() - mid, what + ": attention backward and RoPE's backward");
            check(what + ": out", ro.out(), go.out(), gpuBf16, 3e-2);
            check(what + ": lse", ro.lse(), go.lse(), gpuBf16, 3e-2);
            check(what + ": dq", cpu.rope(rg.dq(), pos, theta, true), dq, gpuBf16, 3e-2);
            check(what + ": dk", cpu.rope(rg.dk(), pos, theta, true), dk, gpuBf16, 3e-2);
            check(what + ": dv", rg.dv(), gg.dv(), gpuBf16, 3e-2);
            // The turned q read on its own: its kernel runs then.
            check(what + ": q read after attention", rq, q, gpuBf16, 1e-2);
            // k's source rewritten before attention reads the turned k: RoPE runs first, on the values of the call.
            Tensor k2 = gpuBf16.rope(view[1], gpos, theta, false, true);
            gpuBf16.copy(gpuBf16.cast(gpuBf16.fromHost(randn(b * s, h * dh)), DType.BF16), proj[1]);
            Tensor q2 = gpuBf16.rope(view[0], gpos, theta, false, true);
            check(what + ": out, k's source rewritten", ro.out(),
                gpuBf16.attention(q2, k2, view[2], mask, scale, true).out(), gpuBf16, 3e-2);
            // A turned q nobody reads by the scope's end never runs.
            long unread = gpuBf16.launches();
            gpuBf16.rope(view[0], gpos, theta, false, true);
            sc.close();
            assertEquals(fuse ? 0 : 1, gpuBf16.launches() - unread, what + ": an unread RoPE");
          }
        }
      }
    }
  }

  @Test
  void attentionMatchesTheCpuInFp32AndBf16() {
    // Widths 64 (tensor cores as is), 32 and 80 (zero-padded to 64 and 128 in bf16; SIMT in fp32).
    for (int width : new int[] {64, 32, 80}) {
      attentionCase(width);
    }
  }

  private void attentionCase(int width) {
    for (Mask mask : Mask.values()) {
      NdArray q = randn(2, 3, 40, width);
      NdArray k = randn(2, 3, 40, width);
      NdArray v = randn(2, 3, 40, width);
      NdArray dOut = randn(2, 3, 40, width);
      double scale = 0.125;
      Device.AttentionOut ro = cpu.attention(q, k, v, mask, scale);
      Device.AttentionGrads rg = cpu.attentionBackward(q, k, v, ro.out(), ro.lse(), dOut, mask, scale);
      for (CudaModelDevice dev : new CudaModelDevice[] {gpu, gpuBf16}) {
        for (boolean headSplit : new boolean[] {false, true}) {
          boolean bf = dev.precision() == CudaModelDevice.Precision.BF16;
          // fp32: 2e-5 of the largest magnitude (online softmax in another order); bf16: 2e-2 (8-bit operands).
          double tol = bf ? 3e-2 : 2e-5;
          // headSplit: q, k, v, dOut as the model passes them, [b, h, s, d] views of [b, s, h, d] memory.
          Tensor gq = onGpu(dev, q, headSplit);
          Tensor gk = onGpu(dev, k, headSplit);
          Tensor gv = onGpu(dev, v, headSplit);
          Device.AttentionOut go = dev.attention(gq, gk, gv, mask, scale);
          Device.AttentionGrads gg = dev.attentionBackward(gq, gk, gv, go.out(), go.lse(), onGpu(dev, dOut,
              headSplit), mask, scale);
          String what = mask + " d" + width + (bf ? " bf16" : " fp32") + (headSplit ? " head-split views" : "");
          check(what + " out", ro.out(), go.out(), dev, tol);
          check(what + " lse", ro.lse(), go.lse(), dev, tol);
          check(what + " dq", rg.dq(), gg.dq(), dev, tol);
          check(what + " dk", rg.dk(), gg.dk(), dev, tol);
          check(what + " dv", rg.dv(), gg.dv(), dev, tol);
          if (headSplit && bf) {
            // Results come back in their inputs' layout, so merging the heads again needs no copy.
            for (Tensor t : new Tensor[] {go.out(), gg.dq(), gg.dk(), gg.dv()}) {
              assertTrue(((CudaTensor) dev.permute(t, 0, 2, 1, 3)).array().isContiguous(), what
                  + ": a result is not laid out as its input");
            }
          }
        }
      }
    }
  }

  /**
   * Told that every reader takes bf16 (the output projection's GEMMs; RoPE's backward and the projections' GEMMs),
   * mixed-precision attention writes its output, and its backward the three gradients, in bf16 from the same fp32
   * accumulators: exactly the fp32 results rounded once, bit for bit, in their inputs' layout. Widths 32 and 64 run
   * the kernels in place, 80 the zero-padded path. A gradient that must stay fp32 keeps all three fp32 (the kernels
   * write one dtype); fp32 precision, and the policy switched off, ignore the hints.
   */
  @Test
  void attentionWritesBf16ResultsWhereEveryReaderTakesThem() {
    for (int width : new int[] {32, 64, 80}) {
      NdArray q = randn(2, 3, 40, width);
      NdArray k = randn(2, 3, 40, width);
      NdArray v = randn(2, 3, 40, width);
      NdArray dOut = randn(2, 3, 40, width);
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor gq = onGpu(gpuBf16, q, true);
        Tensor gk = onGpu(gpuBf16, k, true);
        Tensor gv = onGpu(gpuBf16, v, true);
        Tensor gd = onGpu(gpuBf16, dOut, true);
        String what = "d" + width;
        Device.AttentionOut wide = gpuBf16.attention(gq, gk, gv, Mask.CAUSAL, 0.125, false);
        Device.AttentionOut narrow = gpuBf16.attention(gq, gk, gv, Mask.CAUSAL, 0.125, true);
        assertEquals(DType.F32, wide.out().dtype(), what + ": out without the hint");
        assertEquals(DType.BF16, narrow.out().dtype(), what + ": out with the hint");
        GpuTesting.assertClose(what + " bf16 out", d(gpuBf16.cast(wide.out(), DType.BF16), gpuBf16),
            d(narrow.out(), gpuBf16), 0, 0);
        GpuTesting.assertClose(what + " lse", d(wide.lse(), gpuBf16), d(narrow.lse(), gpuBf16), 0, 0);
        // The backward of the bf16 output (its row sums read it so), with fp32 and with bf16 gradients.
        Device.AttentionGrads g32 = gpuBf16.attentionBackward(gq, gk, gv, narrow.out(), narrow.lse(), gd,
            Mask.CAUSAL, 0.125);
        Device.AttentionGrads g16 = gpuBf16.attentionBackward(gq, gk, gv, narrow.out(), narrow.lse(), gd,
            Mask.CAUSAL, 0.125, true, true, true);
        Tensor[][] pairs = {{g32.dq(), g16.dq()}, {g32.dk(), g16.dk()}, {g32.dv(), g16.dv()}};
        for (int i = 0; i < 3; i++) {
          String name = what + " " + List.of("dq", "dk", "dv").get(i);
          assertEquals(DType.F32, pairs[i][0].dtype(), name + " without the hint");
          assertEquals(DType.BF16, pairs[i][1].dtype(), name + " with the hint");
          GpuTesting.assertClose(name + " in bf16", d(gpuBf16.cast(pairs[i][0], DType.BF16), gpuBf16),
              d(pairs[i][1], gpuBf16), 0, 0);
          assertTrue(((CudaTensor) gpuBf16.permute(pairs[i][0], 0, 2, 1, 3)).array().isContiguous(), name
              + " (fp32): not laid out as its input");
          // The bf16 gradients of head-split inputs are interleaved, [b, s, 3, h, d] (for the q/k/v projections'
          // stacked GEMM): each laid out as its input but for rows of 3·h·d, side by side in each row.
          CudaArray grad = ((CudaTensor) gpuBf16.permute(pairs[i][1], 0, 2, 1, 3)).array();
          CudaArray first = ((CudaTensor) gpuBf16.permute(g16.dq(), 0, 2, 1, 3)).array();
          assertArrayEquals(new long[] {40L * 9 * width, 9L * width, width, 1}, grad.strides(), name + " (bf16)");
          assertTrue(grad.sharesBufferWith(first), name + " (bf16): not in dq's allocation");
          assertEquals(3L * width * i, grad.offset() - first.offset(), name + " (bf16): its place in the row");
        }
        assertTrue(((CudaTensor) gpuBf16.permute(narrow.out(), 0, 2, 1, 3)).array().isContiguous(), what
            + ": out not laid out as v");
        Device.AttentionGrads mixed = gpuBf16.attentionBackward(gq, gk, gv, narrow.out(), narrow.lse(), gd,
            Mask.CAUSAL, 0.125, true, true, false);
        assertEquals(DType.F32, mixed.dq().dtype(), what + ": dv must stay fp32, so all three do");
      }
    }
    NdArray x = randn(1, 2, 8, 64);
    assertEquals(DType.F32, gpu.attention(gpu.fromHost(x), gpu.fromHost(x), gpu.fromHost(x), Mask.CAUSAL, 0.125,
        true).out().dtype(), "fp32 precision ignores the hint");
    gpuBf16.storeGemmResultsInBf16(false);
    try {
      assertEquals(DType.F32, gpuBf16.attention(gpuBf16.fromHost(x), gpuBf16.fromHost(x), gpuBf16.fromHost(x),
          Mask.CAUSAL, 0.125, true).out().dtype(), "the policy switched off");
    } finally {
      gpuBf16.storeGemmResultsInBf16(true);
    }
  }

  /** {@code x} [b, h, s, d] on the device: contiguous, or a permuted view of a [b, s, h, d] copy. */
  private static Tensor onGpu(CudaModelDevice dev, NdArray x, boolean headSplit) {
    if (!headSplit) {
      return dev.fromHost(x);
    }
    return dev.permute(dev.fromHost(x.permute(0, 2, 1, 3).contiguous()), 0, 2, 1, 3);
  }

  @Test
  void weightGradientsLaidEndToEndRunAsOneGemmOverTheirStackedRows() {
    // The q, k and v projections' weight gradients dW_i = dY_iᵀ X, with dY_i the i-th third of one interleaved
    // [n, 3d] bf16 matrix (attention's backward writes them so) and the three weights' bf16 twins end to end
    // (withBf16Twins, as the trainer makes them): emptyParamGradient lays the gradients end to end as well, the GEMMs
    // wait for the first read of a gradient, and run as one GEMM with M = 3d. Against the CPU on the same
    // bf16-rounded operands, within 1e-2 of the largest magnitude: the results are rounded to bf16 (2^-9 relative),
    // the fp32 sums over 64 terms differ far less.
    int n = 64;
    int d = 48;
    Tensor[] w = new Tensor[3];
    for (int i = 0; i < 3; i++) {
      w[i] = gpuBf16.fromHost(randn(d, d));
    }
    gpuBf16.withBf16Twins(List.of(w));
    NdArray dy = randn(n, 3 * d).to(DType.BF16).to(DType.F32);
    NdArray x = randn(n, d).to(DType.BF16).to(DType.F32);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      Tensor gdy = gpuBf16.cast(gpuBf16.fromHost(dy), DType.BF16);
      Tensor gx = gpuBf16.cast(gpuBf16.fromHost(x), DType.BF16);
      Tensor[] g = new Tensor[3];
      long before = gpuBf16.launches();
      for (int i = 0; i < 3; i++) {
        g[i] = gpuBf16.emptyParamGradient(w[i], DType.F32, d, d);
        gpuBf16.gemm(gpuBf16.narrow(gdy, 1, (long) i * d, d), true, gx, false, g[i], 1, 0);
      }
      assertEquals(0, gpuBf16.launches() - before, "the GEMMs wait for their first reader");
      for (int i = 0; i < 3; i++) {
        assertEquals(DType.BF16, g[i].dtype(), "a weight gradient in mixed precision");
        CudaArray slot = ((CudaTensor) g[i]).array();
        assertEquals(((CudaTensor) g[0]).array().offset() + (long) i * d * d, slot.offset(), "end to end");
        Tensor ref = cpu.empty(DType.F32, d, d);
        cpu.gemm(cpu.narrow(dy, 1, (long) i * d, d), true, x, false, ref, 1, 0);
        check("weight gradient " + i, ref, g[i], gpuBf16, 1e-2);
      }
      assertEquals(1, gpuBf16.launches() - before, "one GEMM for the three");
      // A second gradient of one parameter in a scope (a weight used twice) gets memory of its own.
      Tensor again = gpuBf16.emptyParamGradient(w[0], DType.F32, d, d);
      assertTrue(!((CudaTensor) again).array().overlaps(((CudaTensor) g[0]).array()), "a second gradient of w0");
    }
    for (Tensor t : w) {
      gpuBf16.release(t);
    }
  }

  @Test
  void projectionsOfOneInputRunAsOneStridedBatchedGemm() {
    // The q, k and v projections of one input (bf16 twins end to end), and the FFN's w1 and w3 (w2 between their
    // twins): each GEMM waits for its first reader, and the first read runs the group as one strided-batched GEMM
    // after moving the results end to end into one allocation. Against the CPU on the same bf16-rounded operands,
    // within 1e-2 of the largest magnitude: the results are rounded to bf16 (2^-9 relative); the fp32 sums over
    // 40 terms differ far less.
    int n = 96;
    int d = 40;
    int f = 72;
    NdArray[] wh = {randn(d, d), randn(d, d), randn(d, d), randn(f, d), randn(d, f), randn(f, d)};
    Tensor[] w = withTwinsEndToEnd(wh);
    NdArray xh = randn(n, d).to(DType.BF16).to(DType.F32);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) { // cuBLAS's workspace and plans, made once, before counting
      Tensor y = gpuBf16.emptyGemmResult(DType.F32, n, d);
      gpuBf16.gemm(gpuBf16.cast(gpuBf16.fromHost(xh), DType.BF16), false, w[0], true, y, 1, 0);
      gpuBf16.toHost(y);
    }
    long inUse = gpuBf16.gpu().allocator().stats().bytesInUse();
    for (boolean on : new boolean[] {true, false}) {
      gpuBf16.batchSiblingGemms(on);
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor x = gpuBf16.cast(gpuBf16.fromHost(xh), DType.BF16);
        long before = gpuBf16.launches();
        Tensor[] y = new Tensor[w.length];
        for (int i : new int[] {0, 1, 2, 3, 5}) {
          y[i] = gpuBf16.emptyGemmResult(DType.F32, n, wh[i].shape()[0]);
          gpuBf16.gemm(x, false, w[i], true, y[i], 1, 0);
        }
        assertEquals(0, gpuBf16.launches() - before, "the GEMMs wait for their first reader");
        for (int i : new int[] {1, 0, 2, 5, 3}) { // k read first: its group runs whole
          Tensor ref = cpu.empty(DType.F32, n, wh[i].shape()[0]);
          cpu.gemm(xh, false, wh[i].to(DType.BF16).to(DType.F32), true, ref, 1, 0);
          check("projection " + i + (on ? "" : ", batching off"), ref, y[i], gpuBf16, 1e-2);
        }
        assertEquals(on ? 2 : 5, gpuBf16.launches() - before, "q, k, v as one GEMM, w1 and w3 as another");
        if (on) {
          long q = ((CudaTensor) y[0]).array().address();
          long slot = ((CudaTensor) y[1]).array().address() - q;
          assertEquals(2 * slot, ((CudaTensor) y[2]).array().address() - q, "q, k and v at one stride");
          assertTrue(slot >= (long) n * d * 2, "slots do not overlap");
        }
        // A group nobody reads is dropped with its scope; one whose A changes between calls is no group.
        Tensor[] unread = new Tensor[3];
        for (int i = 0; i < 3; i++) {
          unread[i] = gpuBf16.emptyGemmResult(DType.F32, n, d);
          gpuBf16.gemm(x, false, w[i], true, unread[i], 1, 0);
        }
        Tensor other = gpuBf16.cast(gpuBf16.fromHost(randn(n, d)), DType.BF16);
        Tensor[] split = {gpuBf16.emptyGemmResult(DType.F32, n, d), gpuBf16.emptyGemmResult(DType.F32, n, d)};
        gpuBf16.gemm(x, false, w[0], true, split[0], 1, 0);
        gpuBf16.gemm(other, false, w[1], true, split[1], 1, 0);
        before = gpuBf16.launches();
        gpuBf16.toHost(split[1]);
        gpuBf16.toHost(split[0]);
        assertEquals(2, gpuBf16.launches() - before, "two inputs, two GEMMs");
      }
      assertEquals(inUse, gpuBf16.gpu().allocator().stats().bytesInUse(), "the scope's memory, moved or not, is back");
    }
    gpuBf16.batchSiblingGemms(true);
    for (Tensor t : w) {
      gpuBf16.release(t);
    }
  }

  @Test
  void aSiblingGroupWhoseTailAScopeDroppedTakesNoMoreMembers() {
    // w1's GEMM in the outer scope, w2's and w3's in an inner one (a group of three; the inner scope's end drops
    // its two, unread). A later GEMM of w0, whose twin lies one stride before w1's, must not join what is left:
    // the batch would run at a negative stride over members that are gone. Each runs on its own, right.
    int n = 64;
    int d = 32;
    NdArray[] wh = {randn(d, d), randn(d, d), randn(d, d), randn(d, d)};
    Tensor[] w = withTwinsEndToEnd(wh);
    NdArray xh = randn(n, d).to(DType.BF16).to(DType.F32);
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      Tensor x = gpuBf16.cast(gpuBf16.fromHost(xh), DType.BF16);
      Tensor y1 = gpuBf16.emptyGemmResult(DType.F32, n, d);
      gpuBf16.gemm(x, false, w[1], true, y1, 1, 0);
      try (CudaModelDevice.Scope inner = gpuBf16.scope()) {
        for (int i : new int[] {2, 3}) {
          gpuBf16.gemm(x, false, w[i], true, gpuBf16.emptyGemmResult(DType.F32, n, d), 1, 0);
        }
      }
      Tensor y0 = gpuBf16.emptyGemmResult(DType.F32, n, d);
      gpuBf16.gemm(x, false, w[0], true, y0, 1, 0);
      long before = gpuBf16.launches();
      for (int i : new int[] {0, 1}) {
        Tensor ref = cpu.empty(DType.F32, n, d);
        cpu.gemm(xh, false, wh[i].to(DType.BF16).to(DType.F32), true, ref, 1, 0);
        check("projection " + i, ref, i == 0 ? y0 : y1, gpuBf16, 1e-2);
      }
      assertEquals(2, gpuBf16.launches() - before, "two GEMMs on their own");
    }
    for (Tensor t : w) {
      gpuBf16.release(t);
    }
  }

  /** {@code hosts} on the mixed-precision device, their bf16 twins end to end in that order, as CudaEngine lays them. */
  private Tensor[] withTwinsEndToEnd(NdArray... hosts) {
    Tensor[] w = new Tensor[hosts.length];
    for (int i = 0; i < w.length; i++) {
      w[i] = gpuBf16.fromHost(hosts[i]);
    }
    gpuBf16.withBf16Twins(List.of(w));
    return w;
  }

  private void check(String what, Tensor ref, Tensor got, CudaModelDevice dev, double tol) {
    double[] r = d(ref, cpu);
    GpuTesting.assertClose(what, r, GpuTesting.doubles(dev.toHost(got)), 0, tol * GpuTesting.maxAbs(r));
  }

  @Test
  void addingAKnownZeroLaunchesNothingAndWritesAreSeen() {
    try (CudaModelDevice.Scope s = gpu.scope()) {
      NdArray xh = randn(3, 4);
      Tensor x = gpu.fromHost(xh);
      // The z-loss gradient when z-loss is off: a broadcast zero added to the cross-entropy gradient.
      long before = gpu.launches();
      Tensor sum = gpu.binary(Device.Binary.ADD, gpu.expand(gpu.full(DType.F32, 0.0), 3, 4), x);
      assertEquals(before, gpu.launches(), "nothing runs: the zero's fill waits for a reader, and there is none");
      same("0 + x", xh, sum);
      // A zero array written in place is zero no longer.
      Tensor acc = gpu.zeros(DType.F32, 3, 4);
      gpu.addInto(acc, x);
      same("acc (was 0) + x after acc += x", cpu.binary(Device.Binary.MUL, xh, cpu.full(DType.F32, 2.0)),
          gpu.binary(Device.Binary.ADD, acc, x));
      NdArray ids = NdArray.fromLongs(new long[] {1, 1, 3}, 3);
      Tensor table = gpu.reshape(gpu.zeros(DType.F32, 20), 5, 4);
      gpu.scatterAddRows(table, gpu.fromHost(ids), x);
      Tensor refTable = cpu.zeros(DType.F32, 5, 4);
      cpu.scatterAddRows(refTable, ids, xh);
      NdArray ones = NdArray.fromFloats(new float[] {1, 1, 1, 1}, 4);
      same("scatter-added zero table + 1", cpu.binary(Device.Binary.ADD, refTable, ones),
          gpu.binary(Device.Binary.ADD, table, gpu.fromHost(ones)));
    }
    // Outside a scope a zero may be a parameter the optimizer rewrites in place: it is not assumed to stay zero.
    Tensor bias = gpu.zeros(DType.F32, 4);
    NdArray ones = NdArray.fromFloats(new float[] {1, 1, 1, 1}, 4);
    gpu.copyFromHost(ones, bias);
    same("a rewritten parameter", cpu.binary(Device.Binary.ADD, ones, ones),
        gpu.binary(Device.Binary.ADD, bias, gpu.fromHost(ones)));
  }

  @Test
  void gemmResultsKeptInBf16ReachTheCrossEntropyAsTheirRoundedValues() {
    // In mixed precision a GEMM output whose readers take bf16 (Device.emptyGemmResult: the LM head's logits) is
    // written by the GEMM in bf16, and the cross-entropy reads it so: the loss and its fp32 gradient must be the
    // CPU's on the same values, the logits rounded to bf16 (exact in fp32), at fp32 tolerance. Rows of 1,000 take
    // the 4-wide kernel; rows of 999 (not a multiple of 4) are widened to fp32 first.
    for (int vocab : new int[] {1000, 999}) {
      NdArray x = GpuTesting.randn(rnd, DType.F32, 2.0, 6, 32);
      NdArray w = randn(vocab, 32);
      NdArray ids = NdArray.fromLongs(new long[] {0, vocab - 1, 500, 3, 77, 1}, 2, 3);
      NdArray dLoss = randn(2, 3);
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor logits = gpuBf16.emptyGemmResult(DType.F32, 6, vocab);
        assertEquals(DType.BF16, logits.dtype(), "a GEMM result in mixed precision");
        gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w), true, logits, 1, 0);
        NdArray rounded = gpuBf16.toHost(logits).to(DType.F32).reshape(2, 3, vocab);
        // The GEMM's own result, rounded once: against the CPU's fp32 product of the bf16-rounded operands.
        Tensor product = cpu.zeros(DType.F32, 6, vocab);
        cpu.gemm(x.to(DType.BF16).to(DType.F32), false, w.to(DType.BF16).to(DType.F32), true, product, 1, 0);
        double[] p = d(product, cpu);
        GpuTesting.assertClose("the bf16 GEMM result", p, GpuTesting.doubles(rounded), 0,
            1e-2 * GpuTesting.maxAbs(p));
        Tensor view = gpuBf16.reshape(logits, 2, 3, vocab);
        same("cross-entropy of bf16 logits, vocabulary " + vocab, cpu.crossEntropy(rounded, ids),
            gpuBf16.crossEntropy(view, gpuBf16.fromHost(ids)));
        Tensor g = gpuBf16.crossEntropyBackward(view, gpuBf16.fromHost(ids), gpuBf16.fromHost(dLoss));
        assertEquals(DType.F32, g.dtype(), "the gradient is fp32");
        same("cross-entropy backward of bf16 logits, vocabulary " + vocab,
            cpu.crossEntropyBackward(rounded, ids, dLoss), g);
        // Told that every reader takes bf16 (the head's GEMMs), the 4-wide kernel writes the bf16 gradient alone:
        // the fp32 one rounded, bit for bit. Rows it cannot take (999) stay fp32.
        Tensor g16 = gpuBf16.crossEntropyBackward(view, gpuBf16.fromHost(ids), gpuBf16.fromHost(dLoss), true);
        if (vocab % 4 == 0) {
          assertEquals(DType.BF16, g16.dtype(), "the gradient alone in bf16");
          GpuTesting.assertClose("bf16-only gradient", d(gpuBf16.cast(g, DType.BF16), gpuBf16), d(g16, gpuBf16), 0, 0);
          // Adding the z-loss gradient when z-loss is off (a remembered zero) hands it on as it is, or, without the
          // hint, in fp32.
          Tensor zero = gpuBf16.expand(gpuBf16.full(DType.F32, 0), 2, 3, vocab);
          Tensor passed = gpuBf16.binary(Device.Binary.ADD, zero, g16, true);
          assertEquals(DType.BF16, passed.dtype(), "zero + a bf16 gradient, bf16 result allowed");
          GpuTesting.assertClose("zero + g", d(g16, gpuBf16), d(passed, gpuBf16), 0, 0);
          Tensor wide = gpuBf16.binary(Device.Binary.ADD, zero, g16);
          assertEquals(DType.F32, wide.dtype(), "zero + a bf16 gradient without the hint");
          GpuTesting.assertClose("zero + g, fp32", d(g16, gpuBf16), d(wide, gpuBf16), 0, 0);
        } else {
          assertEquals(DType.F32, g16.dtype(), "rows of 999: the scalar kernel, fp32");
        }
      }
    }
    // Adds and subtractions take them too (the residual add of a projection's output, the sum of two projections'
    // input gradients): fp32 results, against the CPU on the rounded values. Same-shaped operands go through the
    // 4-wide mixed kernels (f32 + bf16, bf16 - f32, bf16 + bf16); a broadcast one is widened first.
    try (CudaModelDevice.Scope s = gpuBf16.scope()) {
      NdArray x = randn(8, 16);
      NdArray w = randn(24, 16);
      NdArray r = randn(8, 24);
      Tensor p = gpuBf16.emptyGemmResult(DType.F32, 8, 24);
      Tensor q = gpuBf16.emptyGemmResult(DType.F32, 8, 24);
      gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w), true, p, 1, 0);
      gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w), true, q, 2, 0);
      NdArray ph = gpuBf16.toHost(p).to(DType.F32);
      NdArray qh = gpuBf16.toHost(q).to(DType.F32);
      Tensor gr = gpuBf16.fromHost(r);
      same("f32 + bf16", cpu.binary(Device.Binary.ADD, r, ph), gpuBf16.binary(Device.Binary.ADD, gr, p));
      same("bf16 - f32", cpu.binary(Device.Binary.SUB, ph, r), gpuBf16.binary(Device.Binary.SUB, p, gr));
      same("bf16 + bf16", cpu.binary(Device.Binary.ADD, ph, qh), gpuBf16.binary(Device.Binary.ADD, p, q));
      Tensor bias = gpuBf16.narrow(gr, 0, 0, 1); // [1, 24], broadcast over the rows
      same("bf16 + broadcast f32", cpu.binary(Device.Binary.ADD, ph, cpu.narrow(r, 0, 0, 1)),
          gpuBf16.binary(Device.Binary.ADD, p, bias));
      assertEquals(DType.F32, gpuBf16.binary(Device.Binary.ADD, p, q).dtype(), "the sum is fp32");
    }
    assertEquals(DType.F32, gpu.emptyGemmResult(DType.F32, 2, 3).dtype(), "fp32 precision keeps GEMM results fp32");
    gpuBf16.storeGemmResultsInBf16(false);
    assertEquals(DType.F32, gpuBf16.emptyGemmResult(DType.F32, 2, 3).dtype(), "switched off");
    gpuBf16.storeGemmResultsInBf16(true);
  }

  @Test
  void aResidualAddTakesTheDeferredGemmBeforeItInOneCall() {
    // In mixed precision a GEMM's bf16 result waits for its first reader. A residual add (fp32 x + that result)
    // becomes one cuBLASLt call with x in the epilogue, and the GEMM itself never runs unless something else reads
    // its result. Checked against the CPU's fp32 product of the bf16-rounded operands: the fused sum is of the fp32
    // accumulator, so 1e-4 of the largest magnitude (the sums' order over k = 96); the result read on its own is
    // rounded to bf16 once, so 1e-2.
    int m = 64;
    int n = 48;
    int k = 96;
    NdArray xa = randn(m, k);
    NdArray w = randn(n, k);
    NdArray res = randn(m, n);
    Tensor product = cpu.zeros(DType.F32, m, n);
    cpu.gemm(xa.to(DType.BF16).to(DType.F32), false, w.to(DType.BF16).to(DType.F32), true, product, 1, 0);
    Tensor sum = cpu.binary(Device.Binary.ADD, res, product);
    for (boolean fuse : new boolean[] {true, false}) {
      gpuBf16.fuseGemmAdds(fuse);
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor a = gpuBf16.fromHost(xa);
        Tensor wt = gpuBf16.fromHost(w);
        Tensor r = gpuBf16.fromHost(res);
        Tensor y = gpuBf16.emptyGemmResult(DType.F32, m, n);
        // The operands' bf16 casts, made (and kept for the scope) by a GEMM into fp32 before counting.
        gpuBf16.gemm(a, false, wt, true, gpuBf16.empty(DType.F32, m, n), 1, 0);
        long before = gpuBf16.launches();
        gpuBf16.gemm(a, false, wt, true, y, 1, 0);
        assertEquals(fuse ? 0 : 1, gpuBf16.launches() - before, "fuse " + fuse + ": the GEMM waits for a reader");
        Tensor h = gpuBf16.binary(Device.Binary.ADD, r, y);
        assertEquals(fuse ? 1 : 2, gpuBf16.launches() - before, "fuse " + fuse + ": GEMM and add");
        assertEquals(DType.F32, h.dtype(), "the residual stream stays fp32");
        check("x + a w^T, fuse " + fuse, sum, h, gpuBf16, fuse ? 1e-4 : 1e-2);
        // Read on its own afterwards, the GEMM's result is there (it runs then, once).
        check("a w^T read after the add, fuse " + fuse, product, y, gpuBf16, 1e-2);
        // The operand order of the add does not matter, nor does the addend's deferred fill.
        Tensor y2 = gpuBf16.emptyGemmResult(DType.F32, m, n);
        gpuBf16.gemm(a, false, wt, true, y2, 2, 0);
        Tensor ones = gpuBf16.full(DType.F32, 1.0, m, n);
        Tensor h2 = gpuBf16.binary(Device.Binary.ADD, y2, ones);
        check("2 a w^T + 1, fuse " + fuse, cpu.binary(Device.Binary.ADD, cpu.binary(Device.Binary.MUL, product,
            cpu.full(DType.F32, 2.0)), cpu.full(DType.F32, 1.0)), h2, gpuBf16, fuse ? 1e-4 : 1e-2);
        // An operand rewritten before the first read: the result is still the product of the values at the call.
        Tensor y3 = gpuBf16.emptyGemmResult(DType.F32, m, n);
        Tensor a16 = gpuBf16.cast(a, DType.BF16);
        gpuBf16.gemm(a16, false, wt, true, y3, 1, 0);
        gpuBf16.copy(gpuBf16.cast(gpuBf16.fromHost(randn(m, k)), DType.BF16), a16);
        check("a w^T, its operand rewritten after the call, fuse " + fuse, product, y3, gpuBf16, 1e-2);
        // The sum of two deferred results (w1's and w3's input gradients): the first GEMM writes fp32, the second
        // adds it in its epilogue, two launches in all.
        NdArray xb = randn(m, k);
        Tensor yb = gpuBf16.emptyGemmResult(DType.F32, m, n);
        Tensor y5 = gpuBf16.emptyGemmResult(DType.F32, m, n);
        gpuBf16.gemm(a, false, wt, true, y5, 1, 0);
        gpuBf16.gemm(gpuBf16.fromHost(xb), false, wt, true, yb, 1, 0);
        long pair = gpuBf16.launches();
        Tensor both = gpuBf16.binary(Device.Binary.ADD, y5, yb);
        assertEquals(fuse ? 2 : 1, gpuBf16.launches() - pair,
            "fuse " + fuse + ": the sum of two GEMMs (or the add alone)");
        Tensor productB = cpu.zeros(DType.F32, m, n);
        cpu.gemm(xb.to(DType.BF16).to(DType.F32), false, w.to(DType.BF16).to(DType.F32), true, productB, 1, 0);
        check("a w^T + b w^T, fuse " + fuse, cpu.binary(Device.Binary.ADD, product, productB), both, gpuBf16,
            fuse ? 1e-4 : 1e-2);
        // A result nobody reads by the scope's end never runs.
        Tensor y4 = gpuBf16.emptyGemmResult(DType.F32, m, n);
        long unread = gpuBf16.launches();
        gpuBf16.gemm(a, false, wt, true, y4, 1, 0);
        s.close();
        assertEquals(fuse ? 0 : 1, gpuBf16.launches() - unread, "fuse " + fuse + ": an unread GEMM result");
      }
    }
    gpuBf16.fuseGemmAdds(true);
  }

  @Test
  void crossEntropyWritesItsGradientAheadWhereTheLossGradientIsKnown() {
    // A training step's loss gradient is the seed times the mean's 1/n in every row, known to the device (full, then
    // a product of known values). Once a backward took such a gradient with its result for the LM head's GEMMs alone
    // (bf16), the next forward of logits of that shape writes the gradient in the same pass, and the backward
    // launches nothing. Every gradient is checked against the CPU on the bf16-rounded logits: bf16 results, so 2^-8
    // relative (one rounding of an fp32 value that is the CPU's to 1e-5) and 1e-7 absolute (the bf16 rounding of
    // entries near zero is relative too; the absolute term covers the fp32 difference there).
    int rows = 6;
    int vocab = 1000;
    NdArray w = randn(vocab, 32);
    long[] idv = {0, vocab - 1, 500, 3, 77, 1};
    NdArray ids = NdArray.fromLongs(idv, 2, 3);
    // Steps: 0 learns; 1 takes the gradient written ahead; 2 is an evaluation (the gradient goes unused, so the plan
    // is dropped); 3 learns a seed of 2; 4 rewrites the targets between forward and backward; 5 changes the seed
    // back to 1 (the gradient written ahead for 2 is not taken); 6 takes it again.
    for (int step = 0; step < 7; step++) {
      NdArray x = GpuTesting.randn(rnd, DType.F32, 2.0, rows, 32);
      double seed = step == 3 || step == 4 ? 2.0 : 1.0;
      try (CudaModelDevice.Scope s = gpuBf16.scope()) {
        Tensor logits = gpuBf16.emptyGemmResult(DType.F32, rows, vocab);
        gpuBf16.gemm(gpuBf16.fromHost(x), false, gpuBf16.fromHost(w), true, logits, 1, 0);
        NdArray rounded = gpuBf16.toHost(logits).to(DType.F32).reshape(2, 3, vocab);
        Tensor view = gpuBf16.reshape(logits, 2, 3, vocab);
        Tensor targets = gpuBf16.fromHost(ids);
        same("loss, step " + step, cpu.crossEntropy(rounded, ids), gpuBf16.crossEntropy(view, targets));
        if (step == 2) {
          continue; // an evaluation: the gradient written ahead goes unused, and the next forward writes none
        }
        NdArray t = ids;
        if (step == 4) {
          // Targets rewritten between the forward and the backward: the gradient written ahead is for the old ones.
          long[] other = idv.clone();
          other[2] = 501;
          t = NdArray.fromLongs(other, 2, 3);
          gpuBf16.copyFromHost(t, targets);
        }
        Tensor scale = gpuBf16.binary(Device.Binary.MUL, gpuBf16.full(DType.F32, seed),
            gpuBf16.full(DType.F32, 1.0 / rows));
        Tensor dLoss = gpuBf16.expand(scale, 2, 3);
        long before = gpuBf16.launches();
        Tensor g = gpuBf16.crossEntropyBackward(view, targets, dLoss, true);
        long launched = gpuBf16.launches() - before;
        assertEquals(DType.BF16, g.dtype(), "step " + step + ": the gradient in bf16 alone");
        Tensor dLossHost = cpu.expand(cpu.full(DType.F32, (float) seed * (float) (1.0 / rows)), 2, 3);
        double[] ref = d(cpu.crossEntropyBackward(rounded, t, dLossHost), cpu);
        GpuTesting.assertClose("gradient, step " + step, ref, d(g, gpuBf16), 0x1p-8, 1e-7);
        boolean ahead = step == 1 || step == 6;
        assertEquals(ahead, launched == 0, "step " + step + ": the backward launched " + launched + " kernels; "
            + (ahead ? "the forward should have written the gradient" : "it should have computed it"));
      }
    }
  }

  @Test
  void crossEntropyBackwardInAScopeTakesTheForwardsLogSumExpUntilTheLogitsAreWritten() {
    // In a scope, the forward leaves each row's log-sum-exp and the backward of the same logits streams the gradient
    // from it (kiln_xent_grad4): fp32 and bf16-precision devices, vocabularies 10,000 (two warps' worth of groups a
    // thread) and 8 (one group, a warp mostly idle). Writing the logits afterwards (addInto) must drop the saved
    // values: the backward is then the CPU's on the new logits. fp32 on both sides: 1e-5 relative (same()).
    for (CudaModelDevice dev : new CudaModelDevice[] {gpu, gpuBf16}) {
      for (int vocab : new int[] {10_000, 8}) {
        NdArray logits = GpuTesting.randn(rnd, DType.F32, 4.0, 37, vocab);
        long[] ids = new long[37];
        for (int i = 0; i < ids.length; i++) {
          ids[i] = rnd.nextInt(vocab);
        }
        NdArray t = NdArray.fromLongs(ids, 37);
        NdArray dLoss = randn(37);
        NdArray shift = GpuTesting.randn(rnd, DType.F32, 3.0, 37, vocab);
        try (CudaModelDevice.Scope s = dev.scope()) {
          Tensor x = dev.fromHost(logits);
          Tensor ids32 = dev.fromHost(t);
          same("cross-entropy in a scope, vocabulary " + vocab, cpu.crossEntropy(logits, t), dev.crossEntropy(x, ids32));
          same("backward from the saved log-sum-exp, vocabulary " + vocab, cpu.crossEntropyBackward(logits, t, dLoss),
              dev.crossEntropyBackward(x, ids32, dev.fromHost(dLoss)));
          dev.addInto(x, dev.fromHost(shift));
          Tensor moved = cpu.binary(Device.Binary.ADD, logits, shift);
          same("backward after the logits were written, vocabulary " + vocab,
              cpu.crossEntropyBackward(moved, t, dLoss), dev.crossEntropyBackward(x, ids32, dev.fromHost(dLoss)));
        }
      }
    }
  }

  @Test
  void crossEntropyAndItsGradientMatchTheCpu() {
    // A language model's shape in small: rows of a 1,000-entry vocabulary, logits spread wide (std 4).
    NdArray logits = GpuTesting.randn(rnd, DType.F32, 4.0, 3, 5, 1000);
    long[] ids = new long[15];
    for (int i = 0; i < ids.length; i++) {
      ids[i] = rnd.nextInt(1000);
    }
    NdArray t64 = NdArray.fromLongs(ids, 3, 5);
    NdArray t32 = t64.to(DType.I32);
    NdArray dLoss = randn(3, 5);
    for (NdArray t : new NdArray[] {t64, t32}) {
      // fp32 on both, sums of 1,000 exponentials in another order: 1e-5 relative.
      same("cross-entropy, targets " + t.dtype(), cpu.crossEntropy(logits, t),
          gpu.crossEntropy(gpu.fromHost(logits), gpu.fromHost(t)));
      same("cross-entropy backward, targets " + t.dtype(), cpu.crossEntropyBackward(logits, t, dLoss),
          gpu.crossEntropyBackward(gpu.fromHost(logits), gpu.fromHost(t), gpu.fromHost(dLoss)));
    }
    // Rows held in registers up to 16,384 entries: as float4s when the length is a multiple of 4 (10,000; 16,384, the
    // most; 8), else one float at a time (16,383; 7, shorter than a warp). Swept twice beyond (GPT-2's 50,257).
    for (int vocab : new int[] {10_000, 16_384, 8, 16_383, 7, 50_257}) {
      NdArray wide = GpuTesting.randn(rnd, DType.F32, 4.0, 4, vocab);
      NdArray tw = NdArray.fromLongs(new long[] {0, vocab - 1, vocab / 2, 3 % vocab}, 4);
      NdArray gw = randn(4);
      same("cross-entropy, vocabulary " + vocab, cpu.crossEntropy(wide, tw),
          gpu.crossEntropy(gpu.fromHost(wide), gpu.fromHost(tw)));
      same("cross-entropy backward, vocabulary " + vocab, cpu.crossEntropyBackward(wide, tw, gw),
          gpu.crossEntropyBackward(gpu.fromHost(wide), gpu.fromHost(tw), gpu.fromHost(gw)));
    }
    // Thousands of rows, fp32 and bf16 logits as a mixed-precision head keeps them (the CPU on the same values).
    int rows = 6000;
    NdArray many = GpuTesting.randn(rnd, DType.F32, 4.0, rows, 1000);
    long[] manyIds = new long[rows];
    for (int i = 0; i < rows; i++) {
      manyIds[i] = rnd.nextInt(1000);
    }
    NdArray tm = NdArray.fromLongs(manyIds, rows);
    NdArray gm = randn(rows);
    same("cross-entropy, 6,000 rows", cpu.crossEntropy(many, tm), gpu.crossEntropy(gpu.fromHost(many),
        gpu.fromHost(tm)));
    same("cross-entropy backward, 6,000 rows", cpu.crossEntropyBackward(many, tm, gm),
        gpu.crossEntropyBackward(gpu.fromHost(many), gpu.fromHost(tm), gpu.fromHost(gm)));
    NdArray many16 = many.to(DType.BF16);
    NdArray rounded = many16.to(DType.F32);
    same("cross-entropy of bf16 logits, 6,000 rows", cpu.crossEntropy(rounded, tm),
        gpuBf16.crossEntropy(gpuBf16.fromHost(many16), gpuBf16.fromHost(tm)));
    same("cross-entropy backward of bf16 logits, 6,000 rows", cpu.crossEntropyBackward(rounded, tm, gm),
        gpuBf16.crossEntropyBackward(gpuBf16.fromHost(many16), gpuBf16.fromHost(tm), gpuBf16.fromHost(gm)));
    // bf16 logits of the sweep's float4 lengths (kiln_xent_cached4 reads them as they are): i32 targets, the first
    // and last entries as targets; and a bad id is reported as for fp32.
    for (int vocab : new int[] {10_000, 16_384, 8}) {
      NdArray wide16 = GpuTesting.randn(rnd, DType.F32, 4.0, 5, vocab).to(DType.BF16);
      NdArray tw = NdArray.fromLongs(new long[] {0, vocab - 1, vocab / 2, 3 % vocab, 1}, 5).to(DType.I32);
      NdArray gw = randn(5);
      NdArray wideRounded = wide16.to(DType.F32);
      same("cross-entropy of bf16 logits, vocabulary " + vocab, cpu.crossEntropy(wideRounded, tw),
          gpuBf16.crossEntropy(gpuBf16.fromHost(wide16), gpuBf16.fromHost(tw)));
      same("cross-entropy backward of bf16 logits, vocabulary " + vocab, cpu.crossEntropyBackward(wideRounded, tw,
          gw), gpuBf16.crossEntropyBackward(gpuBf16.fromHost(wide16), gpuBf16.fromHost(tw), gpuBf16.fromHost(gw)));
    }
    gpuBf16.crossEntropy(gpuBf16.fromHost(NdArray.zeros(DType.BF16, 2, 1000)),
        gpuBf16.fromHost(NdArray.fromLongs(new long[] {3, 1000}, 2)));
    IndexOutOfBoundsException e16 = assertThrows(IndexOutOfBoundsException.class, gpuBf16::synchronize);
    assertTrue(e16.getMessage().contains("1000"), e16.getMessage());
    // The mean's gradient arrives as a broadcast scalar.
    Tensor scalar = gpu.expand(gpu.full(DType.F32, 1.0 / 15), 3, 5);
    same("cross-entropy backward, broadcast dLoss", cpu.crossEntropyBackward(logits, t64, cpu.full(DType.F32,
        1.0 / 15, 3, 5)), gpu.crossEntropyBackward(gpu.fromHost(logits), gpu.fromHost(t64), scalar));
    NdArray bad = NdArray.fromLongs(new long[] {3, 1000}, 2);
    gpu.crossEntropy(gpu.fromHost(NdArray.zeros(DType.F32, 2, 1000)), gpu.fromHost(bad));
    IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
    assertTrue(e.getMessage().contains("1000"), e.getMessage());
  }

  @Test
  void ropeMatchesTheCpuForStridedInputsAndBroadcastPositions() {
    // x [2, 3, 5, 8] seen through a permutation (not contiguous); positions up to 4,095 so that the angles are large.
    // fp32 looks cos and sin up in a table for positions below 8,192 and computes the others (12,345, and a negative
    // position) from the angle: both paths are checked.
    NdArray x = randn(2, 5, 3, 8);
    NdArray seq = NdArray.fromLongs(new long[] {0, 1, 7, 512, 4095}, 5);
    NdArray beyond = NdArray.fromLongs(new long[] {8191, 8192, 12_345, -3, 100}, 5);
    int[] rows = new int[30];
    for (int i = 0; i < rows.length; i++) {
      rows[i] = rnd.nextInt(4096);
    }
    NdArray perRow = NdArray.fromInts(rows, 2, 3, 5);
    for (NdArray pos : new NdArray[] {seq, perRow, beyond}) {
      for (boolean inverse : new boolean[] {false, true}) {
        String what = "rope, positions " + Arrays.toString(pos.shape()) + " " + pos.dtype() + (inverse ? ", inverse"
            : "");
        Tensor ref = cpu.rope(cpu.permute(x, 0, 2, 1, 3), pos, 10_000, inverse);
        Tensor got = gpu.rope(gpu.permute(gpu.fromHost(x), 0, 2, 1, 3), gpu.fromHost(pos), 10_000, inverse);
        sameRope(what, ref, got);
      }
    }
    // The result keeps the head-split layout of its input, so merging the heads again is a view.
    Tensor split = gpu.rope(gpu.permute(gpu.fromHost(x), 0, 2, 1, 3), gpu.fromHost(seq), 10_000, false);
    assertTrue(((CudaTensor) gpu.permute(split, 0, 2, 1, 3)).array().isContiguous(), "rope changed the layout");
    // Rows at odd offsets (a view of [2, 5, 3, 9] memory from its element 1): pairs cannot move as 8-byte vectors,
    // so they take the element-wise path.
    NdArray wide9 = randn(2, 5, 3, 9);
    double[] w9 = GpuTesting.doubles(wide9);
    float[] inner = new float[2 * 5 * 3 * 8];
    for (int r = 0; r < 30; r++) {
      for (int c = 0; c < 8; c++) {
        inner[r * 8 + c] = (float) w9[r * 9 + c + 1];
      }
    }
    dev.kiln.runtime.cuda.CudaArray base = ((CudaTensor) gpu.fromHost(wide9)).array();
    Tensor odd = new CudaTensor(base.strided(new long[] {2, 5, 3, 8}, new long[] {135, 27, 9, 1}, base.offset() + 1),
        null);
    sameRope("rope, rows at odd offsets", cpu.rope(cpu.permute(NdArray.fromFloats(inner, 2, 5, 3, 8), 0, 2, 1, 3),
        seq, 10_000, false), gpu.rope(gpu.permute(odd, 0, 2, 1, 3), gpu.fromHost(seq), 10_000, false));
    // Wide rows, one warp a token: 64 (the lane's pairs the same every 128-element step), 80, 96 and 256 (pairs
    // repeating every 5, 3 and 2 steps, taken once a lane), 144 (a period of 9: taken anew each step), against 8, 6
    // and 4 above (several rows a warp); 3 heads, and xl's 32 heads of 80 (2,560 a token, 4 periods a lane), both
    // directions, positions in the table and beyond it.
    for (int[] hw : new int[][] {{3, 64}, {3, 80}, {3, 96}, {3, 144}, {3, 256}, {32, 80}}) {
      NdArray wide = randn(2, 5, hw[0], hw[1]);
      for (boolean inverse : new boolean[] {false, true}) {
        for (NdArray pos : new NdArray[] {seq, beyond}) {
          sameRope("rope, " + hw[0] + " heads of " + hw[1] + (inverse ? ", inverse" : "")
              + (pos == seq ? ", positions in the table" : ", positions beyond it"),
              cpu.rope(cpu.permute(wide, 0, 2, 1, 3), pos, 10_000, inverse),
              gpu.rope(gpu.permute(gpu.fromHost(wide), 0, 2, 1, 3), gpu.fromHost(pos), 10_000, inverse));
        }
      }
    }
    // Rank 2 (rows padded to three leading dims) and rank 5 (copied to contiguous first).
    NdArray flat = randn(5, 6);
    sameRope("rope, rank 2", cpu.rope(flat, seq, 10_000, false), gpu.rope(gpu.fromHost(flat), gpu.fromHost(seq), 10_000,
        false));
    NdArray deep = randn(2, 2, 3, 5, 4);
    sameRope("rope, rank 5", cpu.rope(deep, seq, 10_000, false), gpu.rope(gpu.fromHost(deep), gpu.fromHost(seq), 10_000,
        false));
    // The inverse rotation undoes the rotation (it is the VJP the processor emits): a few float roundings apart.
    Tensor there = gpu.rope(gpu.fromHost(x), gpu.fromHost(seq.reshape(5, 1)), 500, false);
    Tensor back = gpu.rope(there, gpu.fromHost(seq.reshape(5, 1)), 500, true);
    GpuTesting.assertClose("rope then inverse rope", GpuTesting.doubles(x), d(back, gpu), 0, 1e-5);
  }

  /**
   * The angle is in double on both devices; the CPU takes cos and sin in double, the GPU reads them from a table of
   * the double values rounded to float (within 6e-8) or, beyond the table, reduces the angle to [-pi, pi] in double
   * and takes them in float (within 3e-7), and FMA contraction may round the products differently: within 1e-6 of
   * values near 3 (the largest inputs here), so 2e-6 absolute plus 1e-5 relative.
   */
  private void sameRope(String what, Tensor ref, Tensor got) {
    assertEquals(Arrays.toString(ref.shape()), Arrays.toString(got.shape()), what + ": shape");
    GpuTesting.assertClose(what, d(ref, cpu), d(got, gpu), 1e-5, 2e-6);
  }

  @Test
  void inPlaceAddAndSquaredNorms() {
    NdArray a = randn(33, 17);
    NdArray b = randn(17);
    Tensor g = gpu.fromHost(a);
    gpu.addInto(g, gpu.fromHost(b));
    same("addInto", cpu.binary(Device.Binary.ADD, a, b), g);
    NdArray big = randn(300_001);
    double[] ref = {0, 0};
    for (double v : GpuTesting.doubles(a)) {
      ref[0] += v * v;
    }
    for (double v : GpuTesting.doubles(big)) {
      ref[1] += v * v;
    }
    double[] got = gpu.sumsOfSquares(java.util.List.of(gpu.fromHost(a), gpu.fromHost(big)));
    // Squares of floats summed in double on both sides: only the order differs.
    GpuTesting.assertClose("sums of squares", ref, got, 1e-12, 0);
    // One table, one launch (contiguous F32): an empty tensor between others, tensors of a chunk and a chunk plus
    // one (8,192 elements a block), each block's sum going to its own tensor.
    List<NdArray> hosts = List.of(a, NdArray.zeros(DType.F32, 0), big, randn(8192), randn(8193), randn(5));
    List<Tensor> tensors = new ArrayList<>();
    double[] refs = new double[hosts.size()];
    for (int i = 0; i < hosts.size(); i++) {
      tensors.add(gpu.fromHost(hosts.get(i)));
      for (double v : GpuTesting.doubles(hosts.get(i))) {
        refs[i] += v * v;
      }
    }
    try (CudaModelDevice.SquaresTable t = gpu.squaresTable(tensors)) {
      assertTrue(t != null && t.count() == hosts.size(), "contiguous F32 tensors make a table");
    }
    GpuTesting.assertClose("sums of squares, one table", refs, gpu.sumsOfSquares(tensors), 1e-12, 0);
    // A transposed tensor makes no table: a launch per tensor, the same sums.
    List<Tensor> mixed = List.of(gpu.permute(gpu.fromHost(a), 1, 0), gpu.fromHost(big));
    try (CudaModelDevice.SquaresTable t = gpu.squaresTable(mixed)) {
      assertTrue(t == null, "a transposed tensor makes no table");
    }
    GpuTesting.assertClose("sums of squares, a launch each", ref, gpu.sumsOfSquares(mixed), 1e-12, 0);
    // bf16 tensors (a mixed-precision step's weight gradients, emptyParamGradient) share a table with fp32 ones, with
    // 16-byte loads over the chunks and a ragged end (8,193 and 5 elements, and one starting 2 bytes past 16-byte
    // alignment, which takes the scalar loads), and take a launch each beside a transposed tensor. The table kernel
    // sums each 16-byte load's eight squares in fp32 (exact squares, within 7·2^-24 relative for the sum of eight,
    // kiln_sumsq8_bf16) before adding it in double: 1e-6 relative; a launch each sums in double (1e-12).
    NdArray lowBig = GpuTesting.randn(rnd, DType.BF16, 1.0, 8193);
    NdArray lowSmall = GpuTesting.randn(rnd, DType.BF16, 1.0, 5);
    NdArray lowOdd = GpuTesting.randn(rnd, DType.BF16, 1.0, 1001);
    // Two full chunks (four loads a thread at once) and a partial third (loads one at a time).
    NdArray lowChunks = GpuTesting.randn(rnd, DType.BF16, 1.0, 20_000);
    Tensor offset = gpu.narrow(gpu.fromHost(lowOdd), 0, 1, 1000);
    List<Tensor> lows = new ArrayList<>(tensors);
    lows.addAll(List.of(gpu.fromHost(lowBig), gpu.fromHost(lowSmall), offset, gpu.fromHost(lowChunks)));
    double[] lowRefs = Arrays.copyOf(refs, lows.size());
    double[][] lowValues = {GpuTesting.doubles(lowBig), GpuTesting.doubles(lowSmall),
        Arrays.copyOfRange(GpuTesting.doubles(lowOdd), 1, 1001), GpuTesting.doubles(lowChunks)};
    for (int i = 0; i < lowValues.length; i++) {
      for (double v : lowValues[i]) {
        lowRefs[refs.length + i] += v * v;
      }
    }
    try (CudaModelDevice.SquaresTable t = gpu.squaresTable(lows)) {
      assertTrue(t != null && t.count() == lows.size(), "contiguous F32 and BF16 tensors make one table");
    }
    GpuTesting.assertClose("sums of squares, fp32 and bf16 in one table", lowRefs, gpu.sumsOfSquares(lows), 1e-6, 0);
    List<Tensor> lowMixed = List.of(gpu.permute(gpu.fromHost(a), 1, 0), gpu.fromHost(lowBig));
    GpuTesting.assertClose("sums of squares of bf16, a launch each", new double[] {ref[0], lowRefs[refs.length]},
        gpu.sumsOfSquares(lowMixed), 1e-12, 0);
    // A bf16 gradient added into an fp32 sum (micro-batches, a tied weight's two uses): widened exactly.
    NdArray sum = randn(33, 17);
    NdArray low = GpuTesting.randn(rnd, DType.BF16, 1.0, 33, 17);
    Tensor acc = gpu.fromHost(sum);
    gpu.addInto(acc, gpu.fromHost(low));
    same("addInto of a bf16 source", cpu.binary(Device.Binary.ADD, sum, cpu.cast(low, DType.F32)), acc);
  }

  @Test
  void scopesReturnMemoryAndRefuseUseAfterClose() {
    Tensor kept;
    Tensor dropped;
    long before = gpu.gpu().allocator().stats().bytesInUse();
    try (CudaModelDevice.Scope s = gpu.scope()) {
      dropped = gpu.zeros(DType.F32, 1024, 1024);
      kept = s.keep(gpu.full(DType.F32, 1, 16));
    }
    assertEquals(before + 512 /* the kept 64 bytes' size class */, gpu.gpu().allocator().stats().bytesInUse());
    assertEquals(16.0, Arrays.stream(gpu.download(kept)).sum());
    assertThrows(IllegalStateException.class, () -> gpu.download(dropped));
    gpu.release(kept);
  }

  @Test
  void refusesForeignTensorsAndFloat64Gemm() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> gpu.unary(Device.Unary.EXP, randn(3)));
    assertTrue(e.getMessage().contains("not a tensor of the cuda device"), e.getMessage());
    Tensor a = gpu.fromHost(randn(2, 2).to(DType.F64));
    e = assertThrows(IllegalArgumentException.class, () -> gpu.gemm(a, false, a, false, gpu.zeros(DType.F64, 2, 2),
        1, 0));
    assertTrue(e.getMessage().contains("cpu device"), e.getMessage());
  }
}
