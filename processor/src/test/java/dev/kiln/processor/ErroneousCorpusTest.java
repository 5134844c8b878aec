package dev.kiln.processor;

import static com.google.testing.compile.CompilationSubject.assertThat;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.JavaFileObjects;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import javax.tools.Diagnostic;
import javax.tools.JavaFileObject;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every {@code erroneous/Erroneous*.java} marks the one line where Kiln must report, with the ID and the column:
 * {@code // expect [ShapeMismatch] 12}. The test compiles it (with the CS336 modules it may use) and asserts that
 * exact error, and that it is the only error: one mistake, one message.
 */
class ErroneousCorpusTest {
  private static final Pattern MARK = Pattern.compile("// expect \\[(\\w+)] (\\d+)");

  record Case(String file, String id, int line, int column) {
    @Override
    public String toString() {
      return file;
    }
  }

  static List<Case> cases() throws IOException, URISyntaxException {
    Path dir = Path.of(ErroneousCorpusTest.class.getResource("/erroneous").toURI());
    List<Case> out = new ArrayList<>();
    try (Stream<Path> files = Files.list(dir)) {
      for (Path p : files.sorted().toList()) {
        List<String> lines = Files.readAllLines(p);
        Case c = null;
        for (int i = 0; i < lines.size(); i++) {
          Matcher m = MARK.matcher(lines.get(i));
          if (m.find()) {
            assertEquals(null, c, p + " has more than one expectation");
            c = new Case(p.getFileName().toString(), m.group(1), i + 1, Integer.parseInt(m.group(2)));
          }
        }
        assertTrue(c != null, p + " has no '// expect [Id] column' marker");
        out.add(c);
      }
    }
    assertTrue(out.size() >= 30, "the corpus should cover at least 30 mistakes, has " + out.size());
    return out;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("cases")
  void reportsExactlyTheMarkedError(Case c) {
    JavaFileObject source = JavaFileObjects.forResource("erroneous/" + c.file());
    List<JavaFileObject> sources = new ArrayList<>(Fixtures.cs336());
    sources.add(source);
    Compilation compilation = Fixtures.compile(sources);
    String all = describe(compilation);
    assertThat(compilation).failed();
    assertEquals(1, compilation.errors().size(), "expected one error, got:\n" + all);
    assertThat(compilation).hadErrorContaining("[" + c.id() + "]").inFile(source).onLine(c.line()).atColumn(c.column());
    assertEquals(List.of(), compilation.warnings(), "no warnings expected:\n" + all);
  }

  private static String describe(Compilation c) {
    StringBuilder b = new StringBuilder();
    for (Diagnostic<? extends JavaFileObject> d : c.diagnostics()) {
      b.append(d.getKind()).append(' ').append(d.getSource() == null ? "-" : d.getSource().getName()).append(':')
          .append(d.getLineNumber()).append(':').append(d.getColumnNumber()).append(' ')
          .append(d.getMessage(null)).append('\n');
    }
    return b.toString();
  }

  static {
    // Fail fast with a readable message if the resources are not where the test expects them.
    if (ErroneousCorpusTest.class.getResource("/erroneous") == null) {
      throw new UncheckedIOException(new IOException("test resources erroneous/ not on the class path"));
    }
  }
}
