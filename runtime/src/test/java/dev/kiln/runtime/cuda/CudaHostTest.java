package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The parts of the CUDA package that need no GPU: size classes, library search messages, the probe's manners. */
class CudaHostTest {
  @Test
  void sizeClassesArePowersOfTwoThenTwoMiBGranules() {
    assertEquals(512, CachingAllocator.sizeClass(1));
    assertEquals(512, CachingAllocator.sizeClass(512));
    assertEquals(1024, CachingAllocator.sizeClass(513));
    assertEquals(1L << 20, CachingAllocator.sizeClass((1L << 20) - 5));
    assertEquals(2L << 20, CachingAllocator.sizeClass((1L << 20) + 1));
    assertEquals(6L << 20, CachingAllocator.sizeClass((4L << 20) + 1));
  }

  @Test
  void missingLibraryErrorListsEverythingTriedAndTheOverride(@org.junit.jupiter.api.io.TempDir Path dir) {
    IllegalStateException e = assertThrows(IllegalStateException.class, () -> NativeLibrary.load("cuBLAS",
        "KILN_CUBLAS", null, List.of("libkiln-absent.so.13", "libkiln-absent.so.12"), List.of(dir)));
    String msg = e.getMessage();
    assertTrue(msg.contains("libkiln-absent.so.13 (system loader)"), msg);
    assertTrue(msg.contains(dir.resolve("libkiln-absent.so.12").toString()), msg);
    assertTrue(msg.contains("KILN_CUBLAS="), msg);
    IllegalStateException o = assertThrows(IllegalStateException.class, () -> NativeLibrary.load("NVRTC",
        "KILN_NVRTC", dir.resolve("nope.so").toString(), List.of("libnvrtc.so.13"), List.of()));
    assertTrue(o.getMessage().contains("KILN_NVRTC=" + dir.resolve("nope.so")), o.getMessage());
  }

  @Test
  void probeNeverThrowsAndExplainsAnAbsentGpu() {
    CudaProbe.Report r = CudaProbe.probe();
    if (!r.available()) {
      assertTrue(r.problem() != null && !r.problem().isBlank());
    }
  }
}
