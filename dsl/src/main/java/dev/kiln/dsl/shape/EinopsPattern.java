package dev.kiln.dsl.shape;

/**
 * A parsed einops pattern such as {@code b s (h d) -> b h s d}, for rearrange, repeat and reduce.
 *
 * <p>The parser checks what holds for every einops operation: one {@code ->}, no duplicate axis name on either side,
 * {@code ...} at most once per side, {@code ...} on the right only when it is on the left, and no {@code ...} in a
 * group on the left. What differs between operations (which names may appear on one side only) is checked by the
 * operation.
 *
 * @param arrow offset of the {@code ->} in {@code source}
 */
public record EinopsPattern(String source, ShapeSpec left, ShapeSpec right, int arrow) {
  @Override
  public String toString() {
    return left + " -> " + right;
  }
}
