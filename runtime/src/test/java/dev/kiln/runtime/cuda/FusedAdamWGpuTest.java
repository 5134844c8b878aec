package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

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

  /**
   * Masters kept in two planes ({@link MasterPlanes}) take the same update as fp32 ones: the same arithmetic on the
   * same fp32 values, so after three steps the joined planes equal the fp32 masters bit for bit, the moments are
   * equal, the upper plane is the master rounded to bf16 (ties away from zero), and the fp32 array beside the planes
   * is not written (it keeps its poison).
   */
  @Test
  void mastersInTwoPlanesUpdateBitForBitAsFp32Masters() {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(17);
    // A whole chunk (the unrolled path), chunks with a ragged end, an odd length (the scalar path), one element.
    int[] sizes = {2 * FusedAdamW.CHUNK, FusedAdamW.CHUNK + 1, 3 * FusedAdamW.CHUNK + 77, 1001, 1};
    List<CudaArray> owned = new ArrayList<>();
    List<FusedAdamW.Param> flat = new ArrayList<>();
    List<FusedAdamW.Param> planes = new ArrayList<>();
    List<CudaArray[]> grads = new ArrayList<>();
    try {
      for (int t = 0; t < sizes.length; t++) {
        int n = sizes[t];
        DType gradType = t % 2 == 0 ? DType.BF16 : DType.F32;
        NdArray p0 = GpuTesting.randn(rnd, DType.F32, 1, n);
        CudaArray[] a = new CudaArray[11];
        a[0] = CudaArray.fromHost(dev, p0);                          // fp32 master
        a[1] = CudaArray.empty(dev, DType.BF16, n).poison();        // its bf16 copy
        a[2] = CudaArray.zeros(dev, DType.F32, n);                  // m
        a[3] = CudaArray.zeros(dev, DType.F32, n);                  // v
        a[4] = CudaArray.empty(dev, DType.F32, n).poison();         // beside the planes: never written
        a[5] = CudaArray.empty(dev, DType.BF16, n).poison();        // upper plane
        a[6] = CudaArray.empty(dev, DType.BF16, n).poison();        // lower plane
        a[7] = CudaArray.zeros(dev, DType.F32, n);
        a[8] = CudaArray.zeros(dev, DType.F32, n);
        a[9] = CudaArray.empty(dev, gradType, n);
        a[10] = CudaArray.empty(dev, gradType, n);
        owned.addAll(List.of(a));
        try (CudaArray start = CudaArray.fromHost(dev, p0)) {
          MasterPlanes.split(dev.defaultStream(), start, a[5], a[6]);
        }
        flat.add(new FusedAdamW.Param(a[0], a[9], a[2], a[3], a[1]));
        planes.add(new FusedAdamW.Param(a[4], a[10], a[7], a[8], a[5], a[6]));
        grads.add(a);
      }
      FusedAdamW opt = new FusedAdamW(dev);
      for (int step = 1; step <= 3; step++) {
        for (int t = 0; t < sizes.length; t++) {
          NdArray g = GpuTesting.randn(rnd, grads.get(t)[9].dtype(), 1, sizes[t]);
          grads.get(t)[9].copyFromHost(g);
          grads.get(t)[10].copyFromHost(g);
        }
        FusedAdamW.Hyper h = new FusedAdamW.Hyper(3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f, step == 2);
        opt.step(flat, h);
        opt.step(planes, h);
      }
      for (int t = 0; t < sizes.length; t++) {
        CudaArray[] a = grads.get(t);
        int n = sizes[t];
        String name = "tensor of " + n;
        int[] master = bits32(a[0]);
        int[] joined;
        try (CudaArray j = CudaArray.empty(dev, DType.F32, n)) {
          MasterPlanes.join(dev.defaultStream(), a[5], a[6], j);
          joined = bits32(j);
        }
        short[] upper = bits16(a[5]);
        short[] copy = bits16(a[1]);
        for (int i = 0; i < n; i++) {
          if (joined[i] != master[i]) {
            throw new AssertionError(String.format("%s [%d]: two planes give %08x, the fp32 master %08x", name, i,
                joined[i], master[i]));
          }
          // Round to nearest: the fp32 path's copy (ties to even) except on an exact tie (away from zero).
          int expect = (master[i] & 0xffff) == 0x8000 ? (master[i] >>> 16) + 1 : copy[i] & 0xffff;
          assertEquals(expect, upper[i] & 0xffff, name + " [" + i + "]: upper plane");
        }
        assertEquals(java.util.Arrays.toString(bits32(a[2])), java.util.Arrays.toString(bits32(a[7])), name + " m");
        assertEquals(java.util.Arrays.toString(bits32(a[3])), java.util.Arrays.toString(bits32(a[8])), name + " v");
        for (double x : GpuTesting.doubles(a[4].toHost())) {
          if (!Double.isNaN(x)) {
            throw new AssertionError(name + ": the fp32 array beside the planes was written");
          }
        }
      }
    } finally {
      owned.forEach(CudaArray::close);
    }
  }

  private static int[] bits32(CudaArray a) {
    var s = a.toHost().contiguous().segment();
    int[] out = new int[(int) a.numel()];
    for (int i = 0; i < out.length; i++) {
      out[i] = s.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED, i);
    }
    return out;
  }

  private static short[] bits16(CudaArray a) {
    var s = a.toHost().contiguous().segment();
    short[] out = new short[(int) a.numel()];
    for (int i = 0; i < out.length; i++) {
      out[i] = s.getAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i);
    }
    return out;
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
