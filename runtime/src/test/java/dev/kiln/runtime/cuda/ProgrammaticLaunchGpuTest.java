package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * Programmatic dependent launch: a chain of kernels each reading the one before it gives the same bits launched
 * programmatically as launched plainly, eagerly and from a CUDA graph. A kernel that read before its wait would see
 * its predecessor's output half written: with 64 MB tensors the predecessor's last blocks are still running when the
 * next kernel's first blocks start, so the sums would come out short.
 */
class ProgrammaticLaunchGpuTest {
  private static final int LINKS = 48;

  @Test
  void aChainOfDependentKernelsSumsExactlyWithProgrammaticLaunches() {
    CudaDevice dev = GpuTesting.device();
    boolean supported = dev.supportsProgrammaticLaunch();
    if (!supported) {
      System.out.println("[skip] " + dev + " has no programmatic dependent launch (sm_90 and a CUDA 12 driver)");
    }
    Assumptions.assumeTrue(supported, "no programmatic dependent launch on " + dev);
    KernelLoader.Module ops = dev.kernels().module("device_ops");
    assertTrue(ops.waitsAtEntry(), "device_ops marks its kernels as waiting at their entry");
    CudaKernel add = ops.kernel("kiln_binary4_f32");
    boolean before = dev.programmaticLaunch();
    long n = 1L << 24;
    Random rnd = new Random(11);
    NdArray x = GpuTesting.randn(rnd, DType.F32, 1, n);
    // x plus LINKS ones, each added by its own kernel: an fp32 add rounds on the GPU as in Java, so every run must give
    // the host's sums bit for bit.
    float[] expected = new float[(int) n];
    float[] xs = x.toFloatArray();
    for (int i = 0; i < n; i++) {
      float v = xs[i];
      for (int k = 0; k < LINKS; k++) {
        v += 1f;
      }
      expected[i] = v;
    }
    CudaStream stream = dev.defaultStream();
    try (CudaArray in = CudaArray.fromHost(dev, x);
        CudaArray one = CudaArray.fromHost(dev, NdArray.full(DType.F32, 1.0, n));
        CudaArray a = CudaArray.empty(dev, DType.F32, n).poison();
        CudaArray b = CudaArray.empty(dev, DType.F32, n).poison()) {
      Runnable chain = () -> {
        CudaArray src = in;
        for (int k = 0; k < LINKS; k++) {
          CudaArray dst = k % 2 == 0 ? a : b;
          // 2 waves of blocks on an H200, so a kernel's tail and the next one's start overlap
          add.launch(stream, 264, 1, 256, 0,
              new KernelArgs().ptr(src).ptr(one).ptr(dst).i64(n / 4).i32(0));
          src = dst;
        }
      };
      CudaArray last = LINKS % 2 == 0 ? b : a;
      for (boolean programmatic : new boolean[] {false, true}) {
        dev.programmaticLaunch(programmatic);
        chain.run();
        assertEquals(programmatic, dev.programmaticLaunch());
        assertArrayEqualsBits("eager, programmatic " + programmatic, expected, last.toHost().toFloatArray());
        a.poison();
        b.poison();
        try (CudaGraph graph = CudaGraph.capture(stream, chain)) {
          for (int replay = 0; replay < 3; replay++) {
            graph.launch(stream);
            assertArrayEqualsBits("graph replay " + replay + ", programmatic " + programmatic, expected,
                last.toHost().toFloatArray());
            a.poison();
            b.poison();
          }
        }
      }
    } finally {
      dev.programmaticLaunch(before);
    }
  }

  private static void assertArrayEqualsBits(String what, float[] expected, float[] got) {
    int wrong = 0;
    int first = -1;
    for (int i = 0; i < expected.length; i++) {
      if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(got[i])) {
        if (first < 0) {
          first = i;
        }
        wrong++;
      }
    }
    String where = first < 0 ? "" : ", the first at " + first + ": expected " + expected[first] + ", got " + got[first];
    assertEquals(0, wrong, what + ": elements differ" + where);
  }
}
