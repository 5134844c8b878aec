package dev.kiln.processor;

import static com.google.testing.compile.CompilationSubject.assertThat;

import com.google.testing.compile.Compilation;
import org.junit.jupiter.api.Test;

/** The CS336 modules, written in the DSL, compile through the processor without a single diagnostic. */
class PositiveFixturesTest {
  @Test
  void cs336ModulesCompileWithoutDiagnostics() {
    Compilation c = Fixtures.compile(Fixtures.cs336());
    assertThat(c).succeededWithoutWarnings();
    // succeededWithoutWarnings ignores notes; Kiln prints none either.
    org.junit.jupiter.api.Assertions.assertEquals(java.util.List.of(), c.notes(), "notes: " + c.notes());
  }
}
