package dev.kiln.dsl;

/**
 * The size of a dim named in an einops pattern that the operand does not determine, as einops' keyword arguments
 * ({@code rearrange(x, "b (h d) -> b h d", h=4)}). Write it with {@link Ops#size(String, long)}.
 *
 * @param name the dim name as it appears in the pattern
 * @param value its size, positive
 */
public record DimSize(String name, long value) {
  public DimSize {
    if (name == null || name.isEmpty()) {
      throw new IllegalArgumentException("a DimSize needs the name of a dim in the pattern");
    }
    if (value <= 0) {
      throw new IllegalArgumentException("dim '" + name + "' must have a positive size, got " + value);
    }
  }
}
