package dev.kiln.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/** The build compiles every module's generated CUDA C to a fatbin when nvcc is on the PATH (models/pom.xml). */
class GeneratedCudaFatbinTest {
  /** The magic number that starts every CUDA fatbin (fatbinary.h: FATBIN_MAGIC). */
  private static final int FATBIN_MAGIC = 0xBA55ED50;

  @Test
  void everyGeneratedCudaSourceHasAFatbin() throws IOException, InterruptedException {
    boolean nvcc = new ProcessBuilder("bash", "-c", "command -v nvcc").start().waitFor() == 0;
    Assumptions.assumeTrue(nvcc, "nvcc is not on the PATH: the build leaves the .cu sources for NVRTC");
    Path dir = Path.of("target", "classes", "META-INF", "kiln", "cuda");
    List<Path> sources;
    try (Stream<Path> s = Files.list(dir)) {
      sources = s.filter(p -> p.toString().endsWith(".cu")).sorted().toList();
    }
    assertFalse(sources.isEmpty(), "no generated .cu files in " + dir);
    for (Path cu : sources) {
      Path fatbin = cu.resolveSibling(cu.getFileName().toString().replaceFirst("\\.cu$", ".fatbin"));
      assertTrue(Files.isRegularFile(fatbin), "missing " + fatbin);
      byte[] head = new byte[4];
      try (var in = Files.newInputStream(fatbin)) {
        assertEquals(4, in.read(head));
      }
      assertEquals(FATBIN_MAGIC, ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).getInt(), fatbin + " magic");
    }
  }
}
