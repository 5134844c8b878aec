package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** A shape fact the compiler warned about is checked by the generated forward, with the warning's message. */
class RuntimeCheckRunTest {
  @Test
  void generatedForwardChecksWhatTheCompilerCouldNotProve() {
    Harness h = new Harness(Generated.of("warning/WarnsRuntimeCheck.java"), "warning.WarnsRuntimeCheck", Map.of("d_model", 4),
        1, DType.F64);
    Random r = new Random(2);
    Tensor y = h.forward("forward", new Context(), Harness.random(r, 2, 3, 4), Harness.random(r, 2, 3, 4));
    assertArrayEquals(new long[] {2, 3}, y.shape());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> h.forward("forward", new Context(), Harness.random(r, 2, 3, 4), Harness.random(r, 2, 5, 4)));
    assertTrue(e.getMessage().startsWith("[RuntimeCheck] einsum operand 2 'k' 'b t d_model': 's' is t here but s in"),
        e.getMessage());
    assertTrue(e.getMessage().contains("(at run time: 3 vs 5)"), e.getMessage());
  }
}
