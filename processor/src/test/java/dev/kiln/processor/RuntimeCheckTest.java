package dev.kiln.processor;

import static com.google.testing.compile.CompilationSubject.assertThat;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.JavaFileObjects;
import java.util.List;
import javax.tools.JavaFileObject;
import org.junit.jupiter.api.Test;

/** A fact that holds only for some inputs compiles, with one [RuntimeCheck] warning at the operand. */
class RuntimeCheckTest {
  @Test
  void unprovableDimEqualityWarnsAtTheOperand() {
    JavaFileObject f = JavaFileObjects.forResource("warning/WarnsRuntimeCheck.java");
    Compilation c = Fixtures.compile(List.of(f));
    assertThat(c).succeeded();
    assertEquals(1, c.warnings().size(), () -> "warnings: " + c.warnings());
    // Column 57 is 'k', the operand whose dim t must equal s.
    assertThat(c).hadWarningContaining("[RuntimeCheck] einsum operand 2 'k' 'b t d_model': 's' is t here but s in")
        .inFile(f).onLine(17).atColumn(57);
  }
}
