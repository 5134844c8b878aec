package dev.kiln.processor.diag;

import com.sun.source.util.Trees;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import javax.annotation.processing.Messager;
import javax.tools.Diagnostic;

/**
 * The diagnostics of one module, collected by the passes and printed in one place ({@link #printTo}). Identical
 * items (same ID, position and text) are kept once: a statement after an {@code if} is analysed once per branch.
 */
public final class Report {
  /** One diagnostic. */
  public record Item(Id id, String message, Pos pos) {
    /** The text as printed: tag, message, column inside a string, hint. */
    public String text() {
      StringBuilder b = new StringBuilder(id.tag()).append(' ').append(message);
      if (pos instanceof Pos.InAnnotation a && a.offset() >= 0) {
        b.append(" (column ").append(a.offset() + 1).append(" of \"").append(a.text()).append("\")\n  ");
        b.append(a.text()).append("\n  ").append(" ".repeat(a.offset())).append('^');
      }
      return b.append("\n  hint: ").append(id.hint()).toString();
    }
  }

  private final Set<Item> items = new LinkedHashSet<>();

  /** Adds a diagnostic. */
  public void add(Id id, Pos pos, String message) {
    items.add(new Item(id, message, pos));
  }

  /** The diagnostics in the order they were added. */
  public List<Item> items() {
    return new ArrayList<>(items);
  }

  /** Whether any diagnostic is an error (code is generated only from a report without errors). */
  public boolean hasErrors() {
    for (Item i : items) {
      if (i.id().kind() == Diagnostic.Kind.ERROR) {
        return true;
      }
    }
    return false;
  }

  /** Prints every diagnostic at its position. */
  public void printTo(Messager messager, Trees trees) {
    for (Item i : items) {
      String text = i.text();
      switch (i.pos()) {
        case Pos.AtTree t -> trees.printMessage(i.id().kind(), text, t.tree(), t.unit());
        case Pos.InAnnotation a -> messager.printMessage(i.id().kind(), text, a.element(), a.mirror(), a.value());
        case Pos.OnElement e -> messager.printMessage(i.id().kind(), text, e.element());
      }
    }
  }
}
