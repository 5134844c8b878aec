package dev.kiln.models.cs336;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Config;
import dev.kiln.dsl.spi.Context;
import dev.kiln.dsl.spi.Kernel;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.cuda.CudaProbe;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The generated norm on the GPU against the CPU device: its forward, and its backward, where a row kernel sums the
 * weight gradient's terms over runs of rows (ColumnSums; {@code CudaModelDevice.columnSumRows}) while the CPU keeps
 * one partial row per row. The shapes are chosen to take every form of the row kernels' launch
 * ({@code CudaModelDevice.RowLaunch}) on a GPU of 126 to 140 SMs (an H100 or H200 has 132), where the test checks
 * that they do; elsewhere the forms differ, the comparison with the CPU does not:
 * <ul>
 *   <li>10,001 rows of 96 and 9,000 of 1,000: the warp-row form, eight rows a block (spans 2 and 8 float4s a lane,
 *       the last block's run shorter, 1,000 not a multiple of 128);
 *   <li>4,000 rows of 200: the warp-row form, four rows a block (too few rows to fill the GPU with eight);
 *   <li>2,048 rows of 2,560 (xl's norms) and 1,500 of 1,300: the block-row form at span 2 (10 warps a row, and 6
 *       warps whose last float4 groups are partly past the row's end);
 *   <li>1,000 rows of 6,000: the block-row form at span 4 (span 2 would take 24 warps a row, over its 16);
 *   <li>3,001 rows of 1,001 (not a multiple of 4): one row a block, sums in shared memory;
 *   <li>601 rows of 16,384 (over what a block-row block holds; 64 KB of sums, over the 48 KB the launch gives): one
 *       row a block, sums in the output's partial rows in global memory.
 * </ul>
 */
class NormGpuTest {
  @Test
  void weightGradientsSummedOverRunsOfRowsMatchTheCpu() {
    CudaProbe.Report r = CudaProbe.probe();
    if (!r.available()) {
      System.out.println("[skip] no CUDA device: " + r.problem());
    }
    Assumptions.assumeTrue(r.available(), () -> "no CUDA device: " + r.problem());
    CudaModelDevice gpu = new CudaModelDevice(0, CudaModelDevice.Precision.FP32);
    gpu.poisonNewTensors(true);
    Set<String> forms = new TreeSet<>();
    for (NormType type : NormType.values()) {
      for (long[] shape : new long[][] {{10_001, 96}, {9_000, 1_000}, {4_000, 200}, {2_048, 2_560},
          {1_500, 1_300}, {1_000, 6_000}, {3_001, 1_001}, {601, 16_384}}) {
        long rows = shape[0];
        long cols = shape[1];
        for (Kernel k : columnSumKernels()) {
          assertTrue(gpu.columnSumRows(k, rows, cols) < rows, k.name() + ": the shape must make the GPU sum runs"
              + " of rows");
          CudaModelDevice.RowLaunch launch = gpu.rowLaunch(k, rows, cols, DType.F32);
          forms.add(launch.blockRow() ? "block-row span " + launch.span() : launch.span() > 0
              ? "warp rows x" + launch.rowGroups() : launch.sharedBytes() > 0 ? "block rows, shared"
              : "block rows, global");
        }
        Config config = Config.of(Map.of("d_model", cols, "norm", type.name(), "norm_eps", 1e-5));
        Rng rng = new Rng(11);
        NdArray x = rng.normal(NdArray.zeros(DType.F32, rows, cols), 0, 1);
        NdArray dy = rng.normal(NdArray.zeros(DType.F32, rows, cols), 0, 1);
        CompiledNorm cpuNorm = new CompiledNorm(new CpuDevice(), DType.F32);
        Norm cpuParams = cpuNorm.init(config, 5);
        Context cpuCtx = new Context();
        Tensor refY = cpuNorm.forward(cpuCtx, cpuParams, x);
        CompiledNorm.Gradients ref = cpuNorm.backward(cpuCtx, cpuParams, dy);
        try (CudaModelDevice.Scope s = gpu.scope()) {
          CompiledNorm gpuNorm = new CompiledNorm(gpu, DType.F32);
          Norm gpuParams = gpuNorm.init(config, 5);
          Context ctx = new Context();
          Tensor y = gpuNorm.forward(ctx, gpuParams, gpu.fromHost(x));
          CompiledNorm.Gradients got = gpuNorm.backward(ctx, gpuParams, gpu.fromHost(dy));
          String what = type + " " + rows + "x" + cols;
          // Outputs of size ~1 from fp32 sums of up to 16,384 squares in another order.
          close(what + " y", refY, y, gpu, 1e-4);
          // fp32 sums of 10,001 or 601 terms of size ~1 in another grouping: 1e-5 of the largest entry plus a
          // rounding bound of the sum (1e-6 * sqrt(rows) relative to its terms' magnitude, generously).
          close(what + " weight", ref.params().weight(), got.params().weight(), gpu, 1e-4 * Math.sqrt(rows));
          close(what + " x", ref.x(), got.x(), gpu, 1e-4);
          if (type == NormType.LAYERNORM) {
            close(what + " bias", ref.params().bias(), got.params().bias(), gpu, 1e-4 * Math.sqrt(rows));
          }
        }
      }
    }
    if (gpu.gpu().multiprocessors() > 125 && gpu.gpu().multiprocessors() <= 140) {
      assertEquals(Set.of("warp rows x8", "warp rows x4", "block-row span 2", "block-row span 4",
          "block rows, shared", "block rows, global"), forms,
          "the shapes take every form of the row kernels' launch on " + gpu.gpu().multiprocessors() + " SMs");
    }
  }

  @Test
  void theBackwardWritesItsInputGradientsBf16CopyOnceAGemmHasCastIt() {
    // In mixed precision a GEMM reads the norm backward's input gradient (the residual stream's, in a block) through
    // a bf16 cast. Once the device has seen that cast, the row kernel's _tw variant writes the copy from registers
    // and the GEMM takes it: one launch less. The copy is the fp32 gradient rounded to nearest even, as the cast
    // rounds it, so the GEMM's result must be the same bits as with the cast (same operands, same cuBLAS kernel).
    // Shapes: the warp-row form (4,000 x 200), the block-row form (2,048 x 2,560) and one row a block
    // (3,001 x 1,001); both norm types. What the device learns is per kernel, so each case has a device of its own.
    CudaProbe.Report r = CudaProbe.probe();
    Assumptions.assumeTrue(r.available(), () -> "no CUDA device: " + r.problem());
    for (NormType type : NormType.values()) {
      for (long[] shape : new long[][] {{4_000, 200}, {2_048, 2_560}, {3_001, 1_001}}) {
        // A device of its own per case: what it learns about a kernel holds for every shape it launches.
        CudaModelDevice gpu = new CudaModelDevice(0, CudaModelDevice.Precision.BF16);
        gpu.poisonNewTensors(true);
        long rows = shape[0];
        long cols = shape[1];
        Config config = Config.of(Map.of("d_model", cols, "norm", type.name(), "norm_eps", 1e-5));
        Rng rng = new Rng(13);
        NdArray x = rng.normal(NdArray.zeros(DType.F32, rows, cols), 0, 1);
        NdArray dy = rng.normal(NdArray.zeros(DType.F32, rows, cols), 0, 1);
        NdArray w = rng.normal(NdArray.zeros(DType.F32, 64, cols), 0, 1);
        CompiledNorm cpuNorm = new CompiledNorm(new CpuDevice(), DType.F32);
        Norm cpuParams = cpuNorm.init(config, 5);
        Context cpuCtx = new Context();
        cpuNorm.forward(cpuCtx, cpuParams, x);
        Tensor refX = cpuNorm.backward(cpuCtx, cpuParams, dy).x();
        CompiledNorm gpuNorm = new CompiledNorm(gpu, DType.F32);
        Norm gpuParams = gpuNorm.init(config, 5);
        Tensor weight = gpu.fromHost(w);
        gpu.withBf16Twin(weight); // a parameter's bf16 copy, as the engine keeps it: the GEMM casts only the gradient
        double[][] products = new double[2][];
        long[] gemmLaunches = new long[2];
        for (int step = 0; step < 2; step++) {
          try (CudaModelDevice.Scope s = gpu.scope()) {
            Context ctx = new Context();
            gpuNorm.forward(ctx, gpuParams, gpu.fromHost(x));
            Tensor gx = gpuNorm.backward(ctx, gpuParams, gpu.fromHost(dy)).x();
            String what = type + " " + rows + "x" + cols + ", step " + step;
            close(what + " x", refX, gx, gpu, 1e-4);
            Tensor out = gpu.empty(DType.F32, rows, 64);
            long before = gpu.launches();
            gpu.gemm(gx, false, weight, true, out, 1, 0);
            gemmLaunches[step] = gpu.launches() - before;
            products[step] = gpu.download(out);
          }
        }
        String what = type + " " + rows + "x" + cols;
        assertEquals(2, gemmLaunches[0], what + ": the first step casts the gradient for its GEMM");
        assertEquals(1, gemmLaunches[1], what + ": the second step's backward wrote the copy the GEMM reads");
        assertTrue(java.util.Arrays.equals(products[0], products[1]), what + ": the GEMM's result with the copy"
            + " written by the backward must be the one with the cast, bit for bit");
      }
    }
  }

  /** The norm's generated kernels that have column-sum outputs (the weight gradient's terms, and LayerNorm's bias's). */
  private static List<Kernel> columnSumKernels() {
    List<Kernel> out = new ArrayList<>();
    for (Field f : CompiledNorm.class.getDeclaredFields()) {
      if (f.getType() == Kernel.class && Modifier.isStatic(f.getModifiers())) {
        try {
          f.setAccessible(true);
          Kernel k = (Kernel) f.get(null);
          if (k.columnSums() != 0) {
            out.add(k);
          }
        } catch (IllegalAccessException e) {
          throw new IllegalStateException(e);
        }
      }
    }
    assertTrue(!out.isEmpty(), "the norm's backward has a column-sum kernel");
    return out;
  }

  private static void close(String what, Tensor ref, Tensor got, CudaModelDevice gpu, double tol) {
    double[] r = ((NdArray) ref).to(DType.F64).toDoubleArray();
    double[] g = gpu.download(got);
    double worst = 0;
    for (int i = 0; i < r.length; i++) {
      assertTrue(!Double.isNaN(g[i]), what + ": NaN at " + i);
      worst = Math.max(worst, Math.abs(g[i] - r[i]));
    }
    assertTrue(worst <= tol, what + ": worst error " + worst + " against " + tol);
  }
}
