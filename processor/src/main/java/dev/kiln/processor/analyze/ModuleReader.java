package dev.kiln.processor.analyze;

import dev.kiln.dsl.Init;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.dsl.shape.ShapeSyntaxException;
import dev.kiln.processor.diag.Id;
import dev.kiln.processor.diag.Pos;
import dev.kiln.processor.diag.Report;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Shape;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.lang.model.element.AnnotationMirror;
import javax.lang.model.element.Element;
import javax.lang.model.element.ElementKind;
import javax.lang.model.element.ExecutableElement;
import javax.lang.model.element.RecordComponentElement;
import javax.lang.model.element.TypeElement;
import javax.lang.model.element.VariableElement;
import javax.lang.model.type.DeclaredType;
import javax.lang.model.type.TypeKind;
import javax.lang.model.type.TypeMirror;

/**
 * Reads the declaration of a {@code @Module} record (components, annotations, method signatures) into a
 * {@link ModuleIr}, reporting structural mistakes. Works on source and on compiled classes alike, so a module can
 * use sub-modules from a library.
 */
public final class ModuleReader {
  private final Map<String, ModuleIr> callees = new HashMap<>();
  private final Set<String> reading = new HashSet<>();

  /**
   * Reads {@code type}, reporting into {@code report}.
   *
   * @throws Deferred when a component's type does not exist yet (another processor may generate it)
   */
  public ModuleIr read(TypeElement type, Report report) {
    String name = type.getQualifiedName().toString();
    if (!reading.add(name)) {
      report.add(Id.BadModule, new Pos.OnElement(type), "module " + type.getSimpleName() + " contains itself");
      return new ModuleIr(name, type.getSimpleName().toString());
    }
    try {
      return readUnguarded(type, report);
    } finally {
      reading.remove(name);
    }
  }

  /** The declaration of a sub-module, read once; its own mistakes are reported when it is processed itself. */
  public ModuleIr callee(TypeElement type) {
    String name = type.getQualifiedName().toString();
    ModuleIr m = callees.get(name);
    if (m == null) {
      m = read(type, new Report());
      callees.put(name, m);
    }
    return m;
  }

  private ModuleIr readUnguarded(TypeElement type, Report report) {
    ModuleIr m = new ModuleIr(type.getQualifiedName().toString(), type.getSimpleName().toString());
    if (type.getKind() != ElementKind.RECORD) {
      report.add(Id.BadModule, new Pos.OnElement(type), "@Module " + type.getSimpleName() + " must be a record, not a "
          + type.getKind().toString().toLowerCase().replace('_', ' '));
      return m;
    }
    for (RecordComponentElement c : type.getRecordComponents()) {
      component(m, c, report);
    }
    boolean forwardDeclared = false;
    for (Element e : type.getEnclosedElements()) {
      if (e instanceof ExecutableElement x) {
        boolean fwd = Annotations.find(x, Annotations.FORWARD) != null;
        boolean loss = Annotations.find(x, Annotations.LOSS) != null;
        if (fwd && loss) {
          report.add(Id.BadModule, new Pos.OnElement(x), "'" + x.getSimpleName() + "' cannot be both @Forward and @Loss");
        } else if (fwd) {
          if (forwardDeclared) {
            report.add(Id.BadModule, new Pos.OnElement(x), "module " + m.simpleName() + " has a second @Forward method '"
                + x.getSimpleName() + "'");
          } else {
            forwardDeclared = true;
            m.setForward(signature(m, x, report));
          }
        } else if (loss) {
          if (m.loss() != null) {
            report.add(Id.BadModule, new Pos.OnElement(x), "module " + m.simpleName() + " has a second @Loss method '"
                + x.getSimpleName() + "'");
          } else {
            m.setLoss(signature(m, x, report));
          }
        }
      }
    }
    if (!forwardDeclared) {
      report.add(Id.BadModule, new Pos.OnElement(type), "module " + m.simpleName() + " has no @Forward method");
    }
    return m;
  }

  private void component(ModuleIr m, RecordComponentElement c, Report report) {
    String name = c.getSimpleName().toString();
    TypeMirror t = c.asType();
    if (t.getKind() == TypeKind.ERROR) {
      throw new Deferred("component '" + name + "' of " + m.simpleName() + " has type " + t + ", not generated yet");
    }
    AnnotationMirror param = Annotations.find(c, Annotations.PARAM);
    AnnotationMirror bind = Annotations.find(c, Annotations.BIND);
    AnnotationMirror repeat = Annotations.find(c, Annotations.REPEAT);
    AnnotationMirror hyper = Annotations.find(c, Annotations.HYPER);
    Pos pos = new Pos.OnElement(c);
    boolean isTensor = isType(t, Annotations.TENSOR);
    TypeElement moduleType = moduleType(t);
    TypeElement listElement = listElementModule(t);
    if (param != null && !isTensor) {
      report.add(Id.BadModule, pos, "@Param component '" + name + "' must have type Tensor, not " + t);
      return;
    }
    if (isTensor) {
      if (param == null) {
        report.add(Id.BadModule, pos, "Tensor component '" + name + "' needs @Param(shape = \"...\", init = ...)");
        return;
      }
      Annotations.Text shape = Annotations.text(c, param, "shape");
      Shape s = parseShape(shape, report, "parameter '" + name + "'", false);
      Object init = Annotations.value(param, "init") == null ? null : Annotations.value(param, "init").getValue();
      Init in = init instanceof VariableElement v ? Init.valueOf(v.getSimpleName().toString()) : Init.ZEROS;
      if (s != null) {
        m.components().put(name, new ModuleIr.ParamTensor(name, s, in, pos));
        for (Dim d : s.dims()) {
          m.dims().addAll(d.symbols());
        }
      }
      return;
    }
    if (bind != null && moduleType == null && listElement == null) {
      report.add(Id.BadModule, pos, "@Bind on '" + name + "', which is not a sub-module (its type " + t
          + " is not a @Module record)");
      return;
    }
    if (repeat != null && listElement == null) {
      report.add(Id.BadModule, pos, "@Repeat component '" + name + "' must be a List of a @Module record, not " + t);
      return;
    }
    if (moduleType != null) {
      ModuleIr sub = callee(moduleType);
      Map<String, Pos> bindingPos = new LinkedHashMap<>();
      Map<String, Dim> bindings = bindings(c, bind, sub, report, bindingPos);
      m.components().put(name, new ModuleIr.SubModule(name, sub.type(), bindings, bindingPos, pos));
      addSubDims(m, sub, bindings);
      return;
    }
    if (listElement != null) {
      if (repeat == null) {
        report.add(Id.BadModule, pos, "list component '" + name + "' needs @Repeat(\"<config key>\") to say how many "
            + listElement.getSimpleName() + "s it holds");
        return;
      }
      ModuleIr sub = callee(listElement);
      Map<String, Pos> bindingPos = new LinkedHashMap<>();
      Map<String, Dim> bindings = bindings(c, bind, sub, report, bindingPos);
      String key = Annotations.text(c, repeat, "value").text();
      m.components().put(name, new ModuleIr.ModuleList(name, sub.type(), key, bindings, bindingPos, pos));
      addSubDims(m, sub, bindings);
      return;
    }
    ModuleIr.HyperKind kind = hyperKind(t);
    if (kind == null) {
      report.add(Id.BadModule, pos, "component '" + name + "' has type " + t + ": a module component is a @Param"
          + " Tensor, a @Module record, a @Repeat List of one, or a float, double, int, long, boolean or enum"
          + " hyper-parameter");
      return;
    }
    String key = hyper != null ? Annotations.text(c, hyper, "value").text() : snakeCase(name);
    List<String> constants = new ArrayList<>();
    String enumType = null;
    if (kind == ModuleIr.HyperKind.ENUM) {
      TypeElement en = (TypeElement) ((DeclaredType) t).asElement();
      enumType = en.getQualifiedName().toString();
      for (Element e : en.getEnclosedElements()) {
        if (e.getKind() == ElementKind.ENUM_CONSTANT) {
          constants.add(e.getSimpleName().toString());
        }
      }
    }
    m.components().put(name, new ModuleIr.Hyper(name, key, kind, enumType, constants, pos));
    if (kind == ModuleIr.HyperKind.INT) {
      m.dims().add(key);
    }
  }

  private static void addSubDims(ModuleIr m, ModuleIr sub, Map<String, Dim> bindings) {
    for (String d : sub.dims()) {
      Dim b = bindings.get(d);
      m.dims().addAll(b == null ? Set.of(d) : b.symbols());
    }
    for (Map.Entry<String, Dim> b : bindings.entrySet()) {
      m.dims().addAll(b.getValue().symbols());
    }
  }

  /** Parses {@code @Bind("d_in=d_model d_out=4*d_model")}; each right side through the shared shape grammar. */
  private Map<String, Dim> bindings(RecordComponentElement c, AnnotationMirror bind, ModuleIr sub, Report report,
      Map<String, Pos> bindingPos) {
    Map<String, Dim> out = new LinkedHashMap<>();
    if (bind == null) {
      return out;
    }
    Annotations.Text t = Annotations.text(c, bind, "value");
    String s = t.text();
    Set<String> bindable = new HashSet<>(sub.dims());
    if (sub.forward() != null) {
      bindable.addAll(sub.forward().names());
    }
    int i = 0;
    while (i < s.length()) {
      if (Character.isWhitespace(s.charAt(i))) {
        i++;
        continue;
      }
      int start = i;
      while (i < s.length() && !Character.isWhitespace(s.charAt(i))) {
        i++;
      }
      String entry = s.substring(start, i);
      int eq = entry.indexOf('=');
      if (eq < 0) {
        report.add(Id.MalformedShape, t.pos().at(start), "@Bind entry '" + entry + "' is not name=dim");
        return out;
      }
      String lhs = entry.substring(0, eq);
      if (!ShapeParser.isName(lhs)) {
        report.add(Id.MalformedShape, t.pos().at(start), "@Bind entry '" + entry + "': '" + lhs + "' is not a dim name");
        return out;
      }
      if (!bindable.contains(lhs)) {
        report.add(Id.UnknownDim, t.pos().at(start), sub.simpleName() + " has no dim '" + lhs + "' to bind; its dims are "
            + (bindable.isEmpty() ? "none" : String.join(", ", bindable.stream().sorted().toList())));
        return out;
      }
      if (out.containsKey(lhs)) {
        report.add(Id.MalformedShape, t.pos().at(start), "@Bind binds '" + lhs + "' twice");
        return out;
      }
      String rhs = entry.substring(eq + 1);
      int rhsStart = start + eq + 1;
      ShapeSpec spec;
      try {
        spec = ShapeParser.parseShape(rhs);
      } catch (ShapeSyntaxException ex) {
        report.add(Id.MalformedShape, t.pos().at(rhsStart + Math.min(ex.offset(), rhs.length())), "@Bind entry '"
            + entry + "': " + ex.problem());
        return out;
      }
      if (spec.axes().size() != 1 || !(spec.axes().get(0) instanceof Axis.DimExpr e)) {
        report.add(Id.MalformedShape, t.pos().at(rhsStart), "@Bind entry '" + entry
            + "': the right side must be one dim (a name, a size or arithmetic such as 4*d_model)");
        return out;
      }
      out.put(lhs, Dim.of(e, Dim::sym));
      bindingPos.put(lhs, t.pos().at(start));
    }
    return out;
  }

  /** Every name in the result shape must get its size from an input shape or from the config. */
  private static boolean resultBound(ModuleIr m, ExecutableElement x, Annotations.Text text, List<Shape> params,
      Report report) {
    Set<String> known = new HashSet<>(m.dims());
    for (Shape p : params) {
      for (Dim d : p.dims()) {
        known.addAll(d.symbols());
      }
    }
    ShapeSpec spec = ShapeParser.parseShape(text.text());
    for (Axis.Name n : spec.axisNames()) {
      if (!known.contains(n.name())) {
        report.add(Id.UnboundDim, text.pos().at(n.start()), "the result of '" + x.getSimpleName() + "' names '" + n.name()
            + "', which no input shape, parameter shape or config dim of " + m.simpleName() + " gives a size");
        return false;
      }
    }
    return true;
  }

  private ModuleIr.Signature signature(ModuleIr m, ExecutableElement x, Report report) {
    List<String> names = new ArrayList<>();
    List<Shape> params = new ArrayList<>();
    boolean ok = true;
    for (VariableElement p : x.getParameters()) {
      names.add(p.getSimpleName().toString());
      AnnotationMirror sh = Annotations.find(p, Annotations.SHAPE);
      if (p.asType().getKind() == TypeKind.ERROR) {
        throw new Deferred("parameter '" + p.getSimpleName() + "' has type " + p.asType() + ", not generated yet");
      }
      if (!isType(p.asType(), Annotations.TENSOR)) {
        report.add(Id.BadModule, new Pos.OnElement(p), "parameter '" + p.getSimpleName() + "' of '" + x.getSimpleName()
            + "' has type " + p.asType() + "; forward and loss methods take Tensors only (hyper-parameters are"
            + " record components)");
        ok = false;
        continue;
      }
      if (sh == null) {
        report.add(Id.MissingShape, new Pos.OnElement(p), "parameter '" + p.getSimpleName() + "' of '" + x.getSimpleName()
            + "' needs @Shape(\"...\")");
        ok = false;
        continue;
      }
      Shape s = parseShape(Annotations.text(p, sh, "value"), report, "parameter '" + p.getSimpleName() + "'", true);
      ok &= s != null;
      params.add(s);
    }
    Shape result = null;
    AnnotationMirror rs = Annotations.find(x, Annotations.SHAPE);
    if (!isType(x.getReturnType(), Annotations.TENSOR)) {
      report.add(Id.BadModule, new Pos.OnElement(x), "'" + x.getSimpleName() + "' must return Tensor, not "
          + x.getReturnType());
      ok = false;
    } else if (rs == null) {
      report.add(Id.MissingShape, new Pos.OnElement(x), "the result of '" + x.getSimpleName()
          + "' needs @Shape(\"...\") on the method");
      ok = false;
    } else {
      Annotations.Text text = Annotations.text(x, rs, "value");
      result = parseShape(text, report, "the result of '" + x.getSimpleName() + "'", true);
      ok &= result != null;
      // After a mistake in a component or a parameter the module's dims are incomplete: do not guess further.
      if (result != null && ok && !report.hasErrors()) {
        ok = resultBound(m, x, text, params, report);
      }
    }
    return ok ? new ModuleIr.Signature(x.getSimpleName().toString(), names, params, result) : null;
  }

  /** Parses an annotation's shape string; null after reporting. */
  static Shape parseShape(Annotations.Text text, Report report, String what, boolean allowRest) {
    ShapeSpec spec;
    try {
      spec = ShapeParser.parseShape(text.text());
    } catch (ShapeSyntaxException e) {
      report.add(Id.MalformedShape, text.pos().at(e.offset()), "malformed shape of " + what + ": " + e.problem());
      return null;
    }
    return toShape(spec, text.pos(), report, what, allowRest);
  }

  static Shape toShape(ShapeSpec spec, Pos.InAnnotation pos, Report report, String what, boolean allowRest) {
    List<Dim> dims = new ArrayList<>();
    int restAt = -1;
    for (Axis a : spec.axes()) {
      switch (a) {
        case Axis.Ellipsis e -> {
          if (!allowRest) {
            report.add(Id.UnboundDim, pos.at(e.start()), "the shape of " + what + " has '...', but a parameter's size"
                + " is fixed by the config: name every dim");
            return null;
          }
          restAt = dims.size();
        }
        case Axis.Group g -> {
          List<Dim> ms = new ArrayList<>();
          for (Axis x : g.members()) {
            if (x instanceof Axis.Ellipsis e) {
              report.add(Id.MalformedShape, pos.at(e.start()), "'...' inside a group in the shape of " + what
                  + ": a declared shape must keep '...' separate");
              return null;
            }
            ms.add(Dim.of((Axis.DimExpr) x, Dim::sym));
          }
          dims.add(Dim.product(ms));
        }
        case Axis.DimExpr e -> dims.add(Dim.of(e, Dim::sym));
      }
    }
    return new Shape(dims, restAt, restAt < 0 ? null : ModuleIr.REST);
  }

  static boolean isType(TypeMirror t, String qualified) {
    return t instanceof DeclaredType d && ((TypeElement) d.asElement()).getQualifiedName().contentEquals(qualified);
  }

  private static TypeElement moduleType(TypeMirror t) {
    if (t instanceof DeclaredType d && d.asElement() instanceof TypeElement te
        && Annotations.find(te, Annotations.MODULE) != null) {
      return te;
    }
    return null;
  }

  private static TypeElement listElementModule(TypeMirror t) {
    if (isType(t, "java.util.List") && ((DeclaredType) t).getTypeArguments().size() == 1) {
      return moduleType(((DeclaredType) t).getTypeArguments().get(0));
    }
    return null;
  }

  private static ModuleIr.HyperKind hyperKind(TypeMirror t) {
    return switch (t.getKind()) {
      case FLOAT, DOUBLE -> ModuleIr.HyperKind.FLOAT;
      case INT, LONG -> ModuleIr.HyperKind.INT;
      case BOOLEAN -> ModuleIr.HyperKind.BOOL;
      case DECLARED -> ((DeclaredType) t).asElement().getKind() == ElementKind.ENUM ? ModuleIr.HyperKind.ENUM : null;
      default -> null;
    };
  }

  /** {@code postNorm} → {@code post_norm}: config keys follow the Python side's names. */
  static String snakeCase(String name) {
    StringBuilder b = new StringBuilder();
    for (char ch : name.toCharArray()) {
      if (Character.isUpperCase(ch)) {
        b.append('_').append(Character.toLowerCase(ch));
      } else {
        b.append(ch);
      }
    }
    return b.toString();
  }
}
