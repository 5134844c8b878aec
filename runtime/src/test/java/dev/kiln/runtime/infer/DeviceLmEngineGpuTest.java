package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.cuda.GpuTesting;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.Ffn;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Generation on the GPU: {@link DeviceLmEngine} on the fp32 CUDA device against the reference CPU engine, prefill and
 * every decode step, with {@link DeviceLmEngineTest#TOL} (fp32 cuBLAS without TF32 and fp32 kernels: the same
 * rounding budget as the CPU device).
 */
class DeviceLmEngineGpuTest {
  @Test
  void gpuGenerationFollowsTheReferenceEngine() {
    GpuTesting.device();
    CudaModelDevice gpu = new CudaModelDevice(0, CudaModelDevice.Precision.FP32);
    Random rnd = new Random(11);
    double worst = 0;
    int seed = 0;
    // The CS336 variant at a width where the GPU kernels take their vector paths, and each other option once.
    ModelConfig[] configs = {
        TinyLms.config(97, 48, 128, 2, 8, 200, NormPlacement.PRE, NormType.RMSNORM, Ffn.SWIGLU, Positions.ROPE, false,
            true),
        TinyLms.config(29, 12, 16, 2, 4, 24, NormPlacement.POST, NormType.LAYERNORM, Ffn.GELU, Positions.LEARNED,
            true, false),
        TinyLms.config(29, 12, 16, 2, 4, 24, NormPlacement.NONE, NormType.RMSNORM, Ffn.SQUARED_RELU, Positions.NOPE,
            false, false),
        TinyLms.config(29, 12, 16, 1, 2, 24, NormPlacement.PRE, NormType.LAYERNORM, Ffn.RELU, Positions.ROPE, false,
            true),
        TinyLms.config(29, 12, 16, 1, 2, 24, NormPlacement.PRE, NormType.RMSNORM, Ffn.SILU, Positions.ROPE, true,
            false)};
    for (ModelConfig c : configs) {
      String what = c.normPlacement() + "/" + c.norm() + "/" + c.ffn() + "/" + c.positions() + "/d" + c.dModel();
      LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, seed++), what);
      int[] ids = rnd.ints(c.contextLength(), 0, c.vocabSize()).toArray();
      worst = Math.max(worst, DeviceLmEngineTest.checkAgainstReference(c, w, gpu, ids, 1 + c.contextLength() / 3,
          what));
    }
    System.out.printf("  GPU generation vs reference engine: worst relative error %.1e%n", worst);
  }

  @Test
  void aMixedPrecisionDeviceIsRefused() {
    GpuTesting.device();
    ModelConfig c = TinyLms.cs336(29, 12, 16, 1, 2, 24);
    LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, 1), "test");
    CudaModelDevice bf16 = new CudaModelDevice(0, CudaModelDevice.Precision.BF16);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new DeviceLmEngine(w, bf16));
    assertTrue(e.getMessage().contains("generation runs in fp32"), e.getMessage());
  }
}
