package dev.kiln.processor.analyze;

import dev.kiln.processor.diag.Pos;
import java.util.Map;
import javax.lang.model.element.AnnotationMirror;
import javax.lang.model.element.AnnotationValue;
import javax.lang.model.element.Element;
import javax.lang.model.element.ExecutableElement;
import javax.lang.model.element.TypeElement;

/** Reads Kiln annotations through mirrors, so diagnostics can point at the annotation value. */
final class Annotations {
  private Annotations() {}

  static AnnotationMirror find(Element e, String qualifiedName) {
    for (AnnotationMirror m : e.getAnnotationMirrors()) {
      if (((TypeElement) m.getAnnotationType().asElement()).getQualifiedName().contentEquals(qualifiedName)) {
        return m;
      }
    }
    return null;
  }

  static AnnotationValue value(AnnotationMirror m, String name) {
    for (Map.Entry<? extends ExecutableElement, ? extends AnnotationValue> e : m.getElementValues().entrySet()) {
      if (e.getKey().getSimpleName().contentEquals(name)) {
        return e.getValue();
      }
    }
    return null;
  }

  /** A string member, with the position of its value for diagnostics. */
  record Text(String text, Pos.InAnnotation pos) {}

  static Text text(Element e, AnnotationMirror m, String name) {
    AnnotationValue v = value(m, name);
    String s = v == null ? "" : String.valueOf(v.getValue());
    return new Text(s, new Pos.InAnnotation(e, m, v, s, -1));
  }

  static final String DSL = "dev.kiln.dsl.";
  static final String MODULE = DSL + "Module";
  static final String PARAM = DSL + "Param";
  static final String BIND = DSL + "Bind";
  static final String REPEAT = DSL + "Repeat";
  static final String HYPER = DSL + "Hyper";
  static final String FORWARD = DSL + "Forward";
  static final String LOSS = DSL + "Loss";
  static final String SHAPE = DSL + "Shape";
  static final String TENSOR = DSL + "Tensor";
}
