package dev.kiln.processor.diag;

import com.sun.source.tree.CompilationUnitTree;
import com.sun.source.tree.Tree;
import javax.lang.model.element.AnnotationMirror;
import javax.lang.model.element.AnnotationValue;
import javax.lang.model.element.Element;

/**
 * Where a diagnostic goes: a tree in a method body, an annotation value, or an element. The IR carries these only
 * to report; no pass after {@code analyze} reads the trees.
 */
public sealed interface Pos {

  /** A tree of a forward or loss body. */
  record AtTree(Tree tree, CompilationUnitTree unit) implements Pos {}

  /** A string inside an annotation (a shape, a binding); {@code offset} is into that string, or -1. */
  record InAnnotation(Element element, AnnotationMirror mirror, AnnotationValue value, String text, int offset)
      implements Pos {
    /** The same annotation value, pointing at another character. */
    public InAnnotation at(int newOffset) {
      return new InAnnotation(element, mirror, value, text, newOffset);
    }
  }

  /** A whole element (a record component, a method). */
  record OnElement(Element element) implements Pos {}
}
