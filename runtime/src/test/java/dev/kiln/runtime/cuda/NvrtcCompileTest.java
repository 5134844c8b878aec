package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Compiles every kernel source with NVRTC exactly as {@link KernelLoader} does on a machine without build-time
 * fatbins. Needs the NVRTC library but no GPU, so it runs wherever NVRTC is installed (skipped, with the reason,
 * elsewhere).
 */
class NvrtcCompileTest {
  @BeforeAll
  static void nvrtcPresent() {
    String problem = null;
    try {
      Nvrtc.version();
    } catch (IllegalStateException e) {
      problem = e.getMessage();
      System.out.println("[skip] NVRTC unavailable: " + problem);
    }
    String p = problem;
    Assumptions.assumeTrue(p == null, () -> "NVRTC unavailable: " + p);
  }

  private static String resource(String name) throws IOException {
    try (InputStream in = NvrtcCompileTest.class.getResourceAsStream("/dev/kiln/runtime/cuda/kernels/" + name)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  /** The headers the kernels include, by name, as KernelLoader hands them to NVRTC. */
  private static Map<String, String> headers() throws IOException {
    return Map.of("kiln_common.cuh", resource("kiln_common.cuh"), "kiln_attention.cuh",
        resource("kiln_attention.cuh"), "kiln_wgmma.cuh", resource("kiln_wgmma.cuh"));
  }

  @Test
  void everyKernelSourceCompilesForAmpereAndHopper() throws IOException {
    for (String name : new String[] {"flash_attention.cu", "cross_entropy.cu", "adamw.cu", "device_ops.cu"}) {
      for (int cc : new int[] {80, 90}) {
        byte[] cubin = Nvrtc.compileToCubin(name, resource(name), headers(), cc, List.of("-std=c++17"));
        // An ELF image: 0x7f 'E' 'L' 'F'.
        assertTrue(cubin.length > 1000 && cubin[0] == 0x7f && cubin[1] == 'E', name + " sm_" + cc);
        System.out.println("  NVRTC " + name + " sm_" + cc + ": " + cubin.length + " bytes of cubin");
      }
    }
  }

  @Test
  void hopperOnlyKernelsCompileForSm90a() throws IOException {
    byte[] cubin = Nvrtc.compileToCubin("flash_attention_sm90a.cu", resource("flash_attention_sm90a.cu"), headers(),
        "sm_90a", List.of("-std=c++17"));
    assertTrue(cubin.length > 1000 && cubin[0] == 0x7f && cubin[1] == 'E', "flash_attention_sm90a.cu sm_90a");
  }

  @Test
  void generatedModuleSourcesCompileWithoutHeaders() throws IOException {
    // The processor's reviewed output for CS336's RMSNorm (processor/src/test/resources/golden): what the runtime
    // hands NVRTC when a model was built without nvcc.
    java.nio.file.Path golden = java.nio.file.Path.of("../processor/src/test/resources/golden/cs336.RmsNorm.cu.txt");
    Assumptions.assumeTrue(java.nio.file.Files.isRegularFile(golden), () -> "no " + golden + " (not in the project)");
    byte[] cubin = Nvrtc.compileToCubin("cs336.RmsNorm.cu", java.nio.file.Files.readString(golden), Map.of(), 90,
        List.of("-std=c++17"));
    assertTrue(cubin.length > 1000 && cubin[0] == 0x7f && cubin[1] == 'E', "generated RMSNorm sm_90");
  }

  @Test
  void compileErrorsCarryNvrtcsLog() {
    CudaException e = assertThrows(CudaException.class, () -> Nvrtc.compileToCubin("broken.cu",
        "extern \"C\" __global__ void k() { undeclared_thing(); }", Map.of(), 90, List.of()));
    assertTrue(e.getMessage().contains("undeclared_thing"), e.getMessage());
  }
}
