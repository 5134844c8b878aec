package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

class QuickstartDataTest {
  @Test
  void storiesSplitOnEndOfTextLinesOnly() {
    String text = "\nOnce there was a cat.\nIt sat.\n<|endoftext|>\nA dog ran. <|endoftext|> inline stays\n"
        + "<|endoftext|>\nLast one, cut off";
    assertEquals(
        List.of("Once there was a cat.\nIt sat.", "A dog ran. <|endoftext|> inline stays", "Last one, cut off"),
        QuickstartData.stories(text));
  }

  /** The bundled data's README counts 4,196 complete stories plus 2 cut off: the splitter must find all 4,198. */
  @Test
  void bundledDataHoldsTheDocumentedStories() throws IOException {
    Path dir = Path.of("..", "data", "tinystories");
    int n = 0;
    try (Stream<Path> files = Files.list(dir)) {
      for (Path f : files.filter(p -> p.toString().endsWith(".txt")).toList()) {
        n += QuickstartData.stories(Files.readString(f, StandardCharsets.UTF_8)).size();
      }
    }
    assertEquals(4198, n);
  }
}
