package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The GEMM choices file: what one process writes, the next reads; a damaged file is an error that names the fix. */
class GemmChoicesTest {
  @TempDir Path dir;

  @Test
  void choicesWrittenByOneProcessAreReadByTheNext() throws Exception {
    Path file = dir.resolve("sub/choices.txt");
    String a = GemmChoices.key("NVIDIA H200", "libcublasLt.so.13", "Problem[m=512, n=32768, k=1344]");
    String b = GemmChoices.key("NVIDIA H200", "libcublasLt.so.12", "Problem[m=512, n=32768, k=1344]");
    String c = GemmChoices.key("NVIDIA H200", "libcublasLt.so.13", "Problem[m=10000, n=32768, k=512]");
    byte[] algo = new byte[(int) CublasLt.ALGO_BYTES];
    for (int i = 0; i < algo.length; i++) {
      algo[i] = (byte) (i * 37 + 200); // every byte different, some above 127
    }
    GemmChoices first = new GemmChoices(file);
    assertNull(first.get(a));
    first.put(a, GemmChoices.Choice.of(3));
    first.put(b, GemmChoices.Choice.of(0));
    first.put(a, GemmChoices.Choice.of(5));
    first.put(c, GemmChoices.Choice.of(algo));
    algo[0] = 0; // the file keeps what was put, not the caller's array
    GemmChoices second = new GemmChoices(file);
    assertEquals(GemmChoices.Choice.of(5), second.get(a));
    assertEquals(GemmChoices.Choice.of(0), second.get(b));
    GemmChoices.Choice kept = second.get(c);
    assertEquals(-1, kept.index());
    assertEquals((byte) 200, kept.algo()[0]);
    assertEquals((byte) (63 * 37 + 200), kept.algo()[63]);
    assertEquals(3, Files.readAllLines(file).size());
    String line = Files.readAllLines(file).get(2);
    assertTrue(line.endsWith("\talgo:" + java.util.HexFormat.of().formatHex(kept.algo())) && line.contains("algo:c8ed"),
        "an algorithm is written as its 64 bytes in hex: " + line);
    try (var listing = Files.list(file.getParent())) {
      assertEquals(List.of(file), listing.toList(), "no temporary file is left behind");
    }
  }

  @Test
  void aDamagedLineIsAnErrorNamingTheFileAndTheFix() throws Exception {
    Path file = dir.resolve("choices.txt");
    Files.writeString(file, "NVIDIA H200 | lib | Problem[m=1]\t2\nno tab here\n");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new GemmChoices(file));
    assertTrue(e.getMessage().contains("line 2") && e.getMessage().contains(file.toString())
        && e.getMessage().contains("delete the file"), e.getMessage());
    // An algorithm cut short (63 bytes) or not hex is as damaged as a line without its tab.
    for (String bad : new String[] {"algo:" + "ab".repeat(63), "algo:" + "zz".repeat(64), "-1"}) {
      Files.writeString(file, "NVIDIA H200 | lib | Problem[m=1]\t" + bad + "\n");
      e = assertThrows(IllegalArgumentException.class, () -> new GemmChoices(file), bad);
      assertTrue(e.getMessage().contains("line 1") && e.getMessage().contains("algo:"), e.getMessage());
    }
  }
}
