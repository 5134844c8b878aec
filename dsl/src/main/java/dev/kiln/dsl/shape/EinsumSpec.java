package dev.kiln.dsl.shape;

import java.util.List;

/**
 * A parsed einsum spec in einops style: {@code ... d_in, d_out d_in -> ... d_out}. Operands are separated by commas,
 * axis names by spaces; every axis is a name or {@code ...} (no groups, sizes or arithmetic, as in
 * {@code einops.einsum}).
 *
 * <p>The parser checks: at least one input, one {@code ->}, {@code ...} at most once per operand, every output name
 * appears in some input, the output names no dim twice, and {@code ...} is in the output exactly when it is in some
 * input. A name repeated within one input ({@code i i -> i}) is allowed: it takes that operand's diagonal.
 */
public record EinsumSpec(String source, List<ShapeSpec> inputs, ShapeSpec output) {
  public EinsumSpec {
    inputs = List.copyOf(inputs);
  }

  @Override
  public String toString() {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < inputs.size(); i++) {
      b.append(i == 0 ? "" : ", ").append(inputs.get(i));
    }
    return b.append(" -> ").append(output).toString();
  }
}
