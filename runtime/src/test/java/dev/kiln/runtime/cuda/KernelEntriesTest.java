package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Every kernel of Kiln's CUDA sources waits for the grid before it at its entry ({@code kiln_pdl_enter()}), the
 * condition under which the runtime launches them programmatically; and the scan that checks it finds a kernel that
 * does not, in each form the sources use.
 */
class KernelEntriesTest {
  private static String resource(String name) throws IOException {
    try (InputStream in = KernelEntriesTest.class.getResourceAsStream("/dev/kiln/runtime/cuda/kernels/" + name)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  @Test
  void everyKernelOfKilnsSourcesWaitsAtItsEntry() throws IOException {
    for (String name : List.of("adamw.cu", "cross_entropy.cu", "device_ops.cu", "flash_attention.cu",
        "flash_attention_sm90a.cu")) {
      String source = resource(name);
      assertTrue(source.contains("__global__"), name + " has kernels");
      assertEquals(List.of(), KernelEntries.withoutWait(source), name);
    }
    // The marker by which KernelLoader knows a module's kernels wait; every .cu file includes the header.
    assertTrue(resource("kiln_common.cuh").contains("extern \"C\" __device__ int " + KernelLoader.WAITS_AT_ENTRY
        + " = 1;"));
  }

  @Test
  void aKernelThatTouchesMemoryFirstIsFound() {
    String source = """
        extern "C" __global__ void good(float* x) {
          kiln_pdl_enter();
          x[0] = 1;
        }
        extern "C" __global__ void __launch_bounds__(256, 2) bad(float* x, int n) {
          x[threadIdx.x] = n;
          kiln_pdl_enter();
        }
        __global__ void oneLine(float* x) { kiln_pdl_enter(); x[0] = 2; }
        __global__ void declaredOnly(float* x);
        #define K(NAME, T)                                           \\
          extern "C" __global__ void NAME(const T* a, T* b) {        \\
            kiln_pdl_enter();                                        \\
            b[0] = a[0];                                             \\
          }                                                          \\
          extern "C" __global__ void NAME##_late(const T* a, T* b) { \\
            b[0] = a[0];                                             \\
          }
        """;
    assertEquals(List.of("__global__ void __launch_bounds__(256, 2) bad", "__global__ void NAME##_late"),
        KernelEntries.withoutWait(source));
  }
}
