package dev.kiln.dsl.shape;

import java.util.ArrayList;
import java.util.List;

/**
 * A parsed shape: the axes of one tensor, e.g. {@code ... d_model} or {@code b s (h d)}.
 *
 * <p>{@code start} and {@code end} delimit this shape within {@code source}, which for a pattern or einsum spec is
 * the whole pattern. Axis offsets are offsets into {@code source} too.
 */
public record ShapeSpec(String source, List<Axis> axes, int start, int end) {
  public ShapeSpec {
    axes = List.copyOf(axes);
  }

  /** Whether {@code ...} appears, at the top level or inside a group. */
  public boolean hasEllipsis() {
    return ellipsis() != null;
  }

  /** The {@code ...} node, wherever it is, or null. */
  public Axis.Ellipsis ellipsis() {
    for (Axis a : axes) {
      if (a instanceof Axis.Ellipsis e) {
        return e;
      }
      if (a instanceof Axis.Group g) {
        for (Axis m : g.members()) {
          if (m instanceof Axis.Ellipsis e) {
            return e;
          }
        }
      }
    }
    return null;
  }

  /**
   * The names that stand as axes (at the top level or as group members), in order, duplicates kept. Names that
   * appear only inside arithmetic ({@code heads} in {@code d_model/heads}) are not axes and are not listed.
   */
  public List<Axis.Name> axisNames() {
    List<Axis.Name> out = new ArrayList<>();
    for (Axis a : axes) {
      if (a instanceof Axis.Name n) {
        out.add(n);
      } else if (a instanceof Axis.Group g) {
        for (Axis m : g.members()) {
          if (m instanceof Axis.Name n) {
            out.add(n);
          }
        }
      }
    }
    return out;
  }

  /** The canonical text: axes separated by one space. */
  @Override
  public String toString() {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < axes.size(); i++) {
      b.append(i == 0 ? "" : " ").append(axes.get(i));
    }
    return b.toString();
  }
}
