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
    GemmChoices first = new GemmChoices(file);
    assertNull(first.get(a));
    first.put(a, 3);
    first.put(b, 0);
    first.put(a, 5);
    GemmChoices second = new GemmChoices(file);
    assertEquals(5, second.get(a));
    assertEquals(0, second.get(b));
    assertEquals(2, Files.readAllLines(file).size());
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
  }
}
