package dev.kiln.processor;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.processor.diag.Id;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Every diagnostic ID has its page with a wrong and a fixed example (surefire runs in the module directory). */
class DiagnosticDocsTest {
  @ParameterizedTest
  @EnumSource(Id.class)
  void everyIdHasAPage(Id id) throws IOException {
    Path page = Path.of("..", "docs", "diagnostics", id.name() + ".md");
    assertTrue(Files.isRegularFile(page), "missing " + page.toAbsolutePath().normalize());
    String text = Files.readString(page);
    assertTrue(text.startsWith("# " + id.tag()), page + " must start with its tag");
    assertTrue(text.contains("## Wrong") && text.contains("## Fixed"), page + " needs a wrong and a fixed example");
  }
}
