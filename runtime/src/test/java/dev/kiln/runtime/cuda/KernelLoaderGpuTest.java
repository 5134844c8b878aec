package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The NVRTC path (used when the build had no nvcc): compile, cache on disk, reload from the cache, run. */
class KernelLoaderGpuTest {
  @Test
  void nvrtcCompilesEveryModuleCachesItAndTheCodeRuns() throws IOException {
    CudaDevice dev = GpuTesting.device();
    Path cache = Files.createTempDirectory("kiln-cuda-cache");
    String old = System.getProperty("kiln.cuda.cache");
    System.setProperty("kiln.cuda.cache", cache.toString());
    try {
      System.out.println("  NVRTC " + Nvrtc.version() + " from " + Nvrtc.librarySource());
      java.util.List<String> names = new java.util.ArrayList<>(java.util.List.of("flash_attention", "cross_entropy",
          "adamw"));
      if (dev.kernels().hopper()) {
        names.add("flash_attention_sm90a"); // NVRTC for sm_90a, with kiln_wgmma.cuh as a named header
      }
      for (String name : names) {
        long t0 = System.nanoTime();
        KernelLoader.Module first = dev.kernels().loadFresh(name, true);
        long t1 = System.nanoTime();
        assertEquals(KernelLoader.Origin.NVRTC_COMPILED, first.origin(), name);
        KernelLoader.Module second = dev.kernels().loadFresh(name, true);
        assertEquals(KernelLoader.Origin.NVRTC_DISK_CACHE, second.origin(), name);
        System.out.printf("  %s: NVRTC %.0f ms, then from %s%n", name, (t1 - t0) / 1e6, cache);
      }
      // Run one NVRTC-built kernel: dot[i] = sum_d dO[i,d] * O[i,d], against a float64 loop.
      KernelLoader.Module m = dev.kernels().loadFresh("flash_attention", true);
      Random rnd = new Random(5);
      int rows = 37, d = 50;
      NdArray o = GpuTesting.randn(rnd, DType.F32, 1, rows, d);
      NdArray g = GpuTesting.randn(rnd, DType.F32, 1, rows, d);
      double[] od = GpuTesting.doubles(o), gd = GpuTesting.doubles(g), ref = new double[rows];
      for (int i = 0; i < rows; i++) {
        for (int c = 0; c < d; c++) {
          ref[i] += od[i * d + c] * gd[i * d + c];
        }
      }
      try (CudaArray dO = CudaArray.fromHost(dev, o);
          CudaArray dG = CudaArray.fromHost(dev, g);
          CudaArray dot = CudaArray.empty(dev, DType.F32, rows).poison()) {
        // One [rows, d] slab (batch and head strides unused), row stride d.
        long[] layout = {0, 0, d};
        m.kernel("kiln_attn_bwd_dot_f32_f32").launch(dev.defaultStream(), (rows + 7) / 8, 1, 256, 0,
            new KernelArgs().ptr(dO).ptr(dG).ptr(dot).i32(rows).i32(1).i32(d).struct(layout).struct(layout));
        // fp32 sum of 50 products: 1e-5 relative.
        GpuTesting.assertClose("NVRTC-built kiln_attn_bwd_dot_f32_f32", ref, GpuTesting.doubles(dot.toHost()), 1e-5,
            1e-5 * GpuTesting.maxAbs(ref));
      }
    } finally {
      if (old == null) {
        System.clearProperty("kiln.cuda.cache");
      } else {
        System.setProperty("kiln.cuda.cache", old);
      }
    }
  }

  @Test
  void buildTimeFatbinsLoadWhenPresent() {
    CudaDevice dev = GpuTesting.device();
    for (String name : new String[] {"flash_attention", "cross_entropy", "adamw"}) {
      boolean present = KernelLoader.class.getResource("/dev/kiln/runtime/cuda/kernels/" + name + ".fatbin") != null;
      KernelLoader.Module m = dev.kernels().loadFresh(name, false);
      System.out.println("  " + name + ": fatbin on class path " + present + ", loaded from " + m.origin());
      if (present) {
        assertEquals(KernelLoader.Origin.FATBIN, m.origin(), name);
      }
    }
    KernelLoader.Module fa = dev.kernels().module("flash_attention");
    for (String k : new String[] {"kiln_attn_fwd_bf16_d64_w4mb4_obf16", "kiln_attn_fwd_bf16_d128_w4mb2_obf16",
        "kiln_attn_fwd_bf16_d32_w4mb4_of32", "kiln_attn_fwd_bf16_d80_w4mb3_of32",
        "kiln_attn_bwd_dkdv_bf16_d64_w4mb3_obf16", "kiln_attn_bwd_dkdv_bf16_d128_w4_obf16",
        "kiln_attn_bwd_dkdv_bf16_d80_w4_of32", "kiln_attn_bwd_dq_bf16_d128_w4_obf16",
        "kiln_attn_bwd_dq_bf16_d80_w4_of32"}) {
      System.out.println("  " + k + " uses " + fa.kernel(k).registers() + " registers per thread");
    }
  }
}
