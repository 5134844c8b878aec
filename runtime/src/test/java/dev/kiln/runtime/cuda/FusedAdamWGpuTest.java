package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Multi-tensor AdamW against a float64 loop of torch.optim.AdamW's update (and of CS336's, the form Kiln's trainer
 * uses by default), over several steps.
 */
class FusedAdamWGpuTest {
  private static void run(DType gradType, boolean bf16Copy) {
    run(gradType, bf16Copy, false, false);
  }

  /** {@code mixed}: every other tensor's gradient is in the other dtype (fp32 and bf16 in one launch). */
  private static void run(DType gradType, boolean bf16Copy, boolean cs336, boolean mixed) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(gradType.ordinal() * 2 + (bf16Copy ? 1 : 0));
    // Sizes straddle the 4096-element chunk: one element, chunk + 1, several chunks and a ragged end.
    int[] sizes = {1, FusedAdamW.CHUNK + 1, 3 * FusedAdamW.CHUNK + 77, 1000};
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gradScale = 0.5f;
    List<double[]> p = new ArrayList<>(), m = new ArrayList<>(), v = new ArrayList<>();
    List<CudaArray> owned = new ArrayList<>();
    List<FusedAdamW.Param> params = new ArrayList<>();
    List<CudaArray> grads = new ArrayList<>();
    List<DType> types = new ArrayList<>();
    for (int n : sizes) {
      DType type = mixed && types.size() % 2 == 1 ? (gradType == DType.F32 ? DType.BF16 : DType.F32) : gradType;
      types.add(type);
      NdArray p0 = GpuTesting.randn(rnd, DType.F32, 1, n);
      p.add(GpuTesting.doubles(p0));
      m.add(new double[n]);
      v.add(new double[n]);
      CudaArray dp = CudaArray.fromHost(dev, p0);
      CudaArray dm = CudaArray.zeros(dev, DType.F32, n);
      CudaArray dv = CudaArray.zeros(dev, DType.F32, n);
      CudaArray dg = CudaArray.empty(dev, type, n);
      CudaArray copy = bf16Copy ? CudaArray.empty(dev, DType.BF16, n).poison() : null;
      owned.addAll(List.of(dp, dm, dv, dg));
      if (copy != null) {
        owned.add(copy);
      }
      grads.add(dg);
      params.add(new FusedAdamW.Param(dp, dg, dm, dv, copy));
    }
    FusedAdamW opt = new FusedAdamW(dev);
    try {
      for (int step = 1; step <= 3; step++) {
        for (int t = 0; t < sizes.length; t++) {
          NdArray g = GpuTesting.randn(rnd, types.get(t), 1, sizes[t]);
          grads.get(t).copyFromHost(g);
          double[] gd = GpuTesting.doubles(g);
          double bc1 = 1 - Math.pow(b1, step), bc2 = 1 - Math.pow(b2, step);
          for (int i = 0; i < sizes[t]; i++) {
            double gi = gd[i] * gradScale;
            double[] pp = p.get(t), mm = m.get(t), vv = v.get(t);
            mm[i] = b1 * mm[i] + (1 - (double) b1) * gi;
            vv[i] = b2 * vv[i] + (1 - (double) b2) * gi * gi;
            if (cs336) {
              pp[i] -= (lr * Math.sqrt(bc2) / bc1) * mm[i] / (Math.sqrt(vv[i]) + eps);
              pp[i] -= (double) lr * wd * pp[i];
            } else {
              pp[i] *= 1 - (double) lr * wd;
              pp[i] -= (lr / bc1) * mm[i] / (Math.sqrt(vv[i]) / Math.sqrt(bc2) + eps);
            }
          }
        }
        opt.step(params, new FusedAdamW.Hyper(lr, b1, b2, eps, wd, step, gradScale, cs336));
      }
      for (int t = 0; t < sizes.length; t++) {
        String name = "gradients " + types.get(t) + ", tensor of " + sizes[t];
        FusedAdamW.Param pr = params.get(t);
        // fp32 state against float64: 1e-5 relative, 1e-7 absolute (values near zero).
        GpuTesting.assertClose(name + " param", p.get(t), GpuTesting.doubles(pr.param().toHost()), 1e-5, 1e-7);
        GpuTesting.assertClose(name + " m", m.get(t), GpuTesting.doubles(pr.m().toHost()), 1e-5, 1e-7);
        GpuTesting.assertClose(name + " v", v.get(t), GpuTesting.doubles(pr.v().toHost()), 1e-5, 1e-9);
        if (bf16Copy) {
          // The copy is the fp32 parameter rounded to bf16: within half a bf16 ulp (2^-9 relative) of the reference.
          GpuTesting.assertClose(name + " bf16 copy", p.get(t), GpuTesting.doubles(pr.paramBf16().toHost()),
              1.0 / 256, 1e-7);
        }
      }
    } finally {
      owned.forEach(CudaArray::close);
    }
  }

  @Test
  void fp32GradientsSeveralTensorsThreeSteps() {
    run(DType.F32, false);
  }

  @Test
  void cs336FormulaAsTheTrainerUsesIt() {
    run(DType.F32, true, true, false);
  }

  @Test
  void bf16GradientsWithBf16ParameterCopy() {
    run(DType.BF16, true);
  }

  @Test
  void fp32AndBf16GradientsInOneLaunch() {
    // A mixed-precision step: GEMM weight gradients in bf16, norms' and embeddings' in fp32, one table.
    run(DType.F32, true, false, true);
  }
}
