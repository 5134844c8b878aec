package dev.kiln.runtime.eager;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Repeat;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Builds a {@code @Module} record from a config by reflection, the way the annotation processor reads its
 * declaration: {@code @Param} tensors get their shapes from the config dims in scope, sub-modules see their
 * {@code @Bind} bindings, {@code @Repeat} lists are as long as their config key says, hyper-parameters come from
 * the config key named by {@code @Hyper} or the component name in snake_case. What a parameter tensor is
 * (freshly initialised, loaded, or nothing) is the {@link ParamSource}'s business.
 */
final class ModuleWalker {

  /** One parameter of a module tree, in state-dict order. */
  record ParamSlot(String name, String declaredShape, long[] shape, Init init, String owner, String dims) {}

  /** Supplies the tensor for one parameter. */
  @FunctionalInterface
  interface ParamSource {
    Tensor tensor(ParamSlot slot);
  }

  private final String op;
  private final ParamSource source;

  ModuleWalker(String op, ParamSource source) {
    this.op = op;
    this.source = source;
  }

  /** Builds the record of {@code type} with the config's values in scope. */
  <R extends Record> R build(Class<R> type, Map<String, ?> config) {
    if (type.getAnnotation(Module.class) == null) {
      throw new IllegalArgumentException(op + ": " + type.getName() + " is not annotated @Module");
    }
    Map<String, Object> scope = new LinkedHashMap<>();
    for (Map.Entry<String, ?> e : config.entrySet()) {
      scope.put(e.getKey(), e.getValue());
    }
    return type.cast(build(type, scope, "", type.getSimpleName()));
  }

  private Object build(Class<?> type, Map<String, Object> scope, String prefix, String path) {
    if (!type.isRecord() || type.getAnnotation(Module.class) == null) {
      throw new IllegalArgumentException(
          op + ": " + path + " has type " + type.getName() + ", which is not a @Module record");
    }
    RecordComponent[] components = type.getRecordComponents();
    Object[] args = new Object[components.length];
    for (int i = 0; i < components.length; i++) {
      RecordComponent c = components[i];
      String key = prefix + snakeCase(c.getName());
      String where = path + "." + c.getName();
      Class<?> t = c.getType();
      Param param = c.getAnnotation(Param.class);
      if (Tensor.class.isAssignableFrom(t)) {
        if (param == null) {
          throw new IllegalArgumentException(
              op + ": Tensor component " + where + " needs @Param(shape = \"...\", init = ...)");
        }
        args[i] = source.tensor(slot(key, param, scope, type.getSimpleName() + "." + c.getName(), where));
      } else if (t.isRecord() && t.getAnnotation(Module.class) != null) {
        args[i] = build(t, bound(scope, c, where), key + ".", where);
      } else if (List.class.isAssignableFrom(t)) {
        Repeat repeat = c.getAnnotation(Repeat.class);
        Class<?> element = listElement(c);
        if (repeat == null || element == null) {
          throw new IllegalArgumentException(
              op + ": list component " + where + " must be @Repeat(\"<config key>\") List<M> of a @Module record M");
        }
        long n = integral(scope, repeat.value(), where, "the number of elements of @Repeat list");
        Map<String, Object> inner = bound(scope, c, where);
        List<Object> items = new ArrayList<>();
        for (long j = 0; j < n; j++) {
          items.add(build(element, inner, key + "." + j + ".", where + "[" + j + "]"));
        }
        args[i] = List.copyOf(items);
      } else {
        args[i] = hyper(c, scope, where);
      }
    }
    return construct(type, components, args, path);
  }

  private ParamSlot slot(String name, Param param, Map<String, Object> scope, String owner, String where) {
    ShapeSpec spec;
    try {
      spec = ShapeParser.parseShape(param.shape());
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(op + ": @Param shape of " + where + ": " + e.getMessage(), e);
    }
    long[] shape = new long[spec.axes().size()];
    StringBuilder dims = new StringBuilder();
    for (int d = 0; d < shape.length; d++) {
      Axis a = spec.axes().get(d);
      List<Axis> members = a instanceof Axis.Group g ? g.members() : List.of(a);
      long size = 1;
      for (Axis m : members) {
        if (!(m instanceof Axis.DimExpr e)) {
          throw new IllegalArgumentException(
              op + ": @Param shape '" + param.shape() + "' of " + where + " has '...'; a parameter names every dim");
        }
        Long v;
        try {
          v = e.evaluate(n -> dimOrNull(scope, n));
        } catch (IllegalArgumentException ex) {
          throw new IllegalArgumentException(op + ": @Param shape '" + param.shape() + "' of " + where + ": "
              + ex.getMessage(), ex);
        }
        if (v == null) {
          String missing = e.names().stream().filter(n -> dimOrNull(scope, n) == null).findFirst().orElse("?");
          throw new IllegalArgumentException(
              op + ": @Param shape '" + param.shape() + "' of " + where + " (state-dict key '" + name + "') needs dim '"
                  + missing + "', which is neither a config key nor bound by an enclosing @Bind; dims in scope: "
                  + dimsInScope(scope));
        }
        size = Math.multiplyExact(size, v);
        for (String n : e.names()) {
          dims.append(dims.isEmpty() ? "" : " ").append(n).append('=').append(dimOrNull(scope, n));
        }
      }
      shape[d] = size;
    }
    return new ParamSlot(name, param.shape(), shape, param.init(), owner, dims.toString());
  }

  /** The scope a sub-module sees: this one's, with the {@code @Bind} entries evaluated here. */
  private Map<String, Object> bound(Map<String, Object> scope, RecordComponent c, String where) {
    Bind bind = c.getAnnotation(Bind.class);
    if (bind == null) {
      return scope;
    }
    Map<String, Object> inner = new LinkedHashMap<>(scope);
    for (String entry : bind.value().trim().split("\\s+")) {
      if (entry.isEmpty()) {
        continue;
      }
      int eq = entry.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException(op + ": @Bind entry '" + entry + "' on " + where + " is not name=dim");
      }
      String lhs = entry.substring(0, eq);
      String rhs = entry.substring(eq + 1);
      ShapeSpec spec = ShapeParser.parseShape(rhs);
      if (spec.axes().size() != 1 || !(spec.axes().get(0) instanceof Axis.DimExpr e)) {
        throw new IllegalArgumentException(
            op + ": @Bind entry '" + entry + "' on " + where + ": the right side must be one dim");
      }
      Long v = e.evaluate(n -> dimOrNull(scope, n));
      if (v == null) {
        String missing = e.names().stream().filter(n -> dimOrNull(scope, n) == null).findFirst().orElse("?");
        throw new IllegalArgumentException(
            op + ": @Bind entry '" + entry + "' on " + where + " needs dim '" + missing + "', which is not in the"
                + " config; dims in scope: " + dimsInScope(scope));
      }
      inner.put(lhs, v);
    }
    return inner;
  }

  private Object hyper(RecordComponent c, Map<String, Object> scope, String where) {
    Hyper h = c.getAnnotation(Hyper.class);
    String key = h != null ? h.value() : snakeCase(c.getName());
    Class<?> t = c.getType();
    Object v = scope.get(key);
    if (v == null) {
      throw new IllegalArgumentException(
          op + ": hyper-parameter " + where + " (" + t.getSimpleName() + ") reads config key '" + key
              + "', which the config does not have; config keys: " + new TreeSet<>(scope.keySet()));
    }
    String bad = op + ": config key '" + key + "' = " + v + " (" + v.getClass().getSimpleName() + ") does not fit "
        + where + " of type " + t.getSimpleName();
    if (t == float.class || t == double.class) {
      if (!(v instanceof Number n)) {
        throw new IllegalArgumentException(bad);
      }
      return t == float.class ? (Object) n.floatValue() : (Object) n.doubleValue();
    }
    if (t == int.class || t == long.class) {
      long n = integral(scope, key, where, "hyper-parameter");
      if (t == int.class) {
        return Math.toIntExact(n);
      }
      return n;
    }
    if (t == boolean.class) {
      if (!(v instanceof Boolean b)) {
        throw new IllegalArgumentException(bad);
      }
      return b;
    }
    if (t.isEnum()) {
      if (t.isInstance(v)) {
        return v;
      }
      if (v instanceof String s) {
        for (Object constant : t.getEnumConstants()) {
          if (((Enum<?>) constant).name().equalsIgnoreCase(s)) {
            return constant;
          }
        }
      }
      throw new IllegalArgumentException(bad + "; expected one of " + Arrays.toString(t.getEnumConstants()));
    }
    throw new IllegalArgumentException(
        op + ": component " + where + " has type " + t.getName() + ": a module component is a @Param Tensor, a"
            + " @Module record, a @Repeat List of one, or a float, double, int, long, boolean or enum hyper-parameter");
  }

  private long integral(Map<String, Object> scope, String key, String where, String what) {
    Object v = scope.get(key);
    Long n = v == null ? null : asDim(v);
    if (n == null) {
      throw new IllegalArgumentException(
          op + ": " + what + " " + where + " reads config key '" + key + "', which is "
              + (v == null ? "missing" : "not a non-negative whole number (" + v + ")") + "; config keys: "
              + new TreeSet<>(scope.keySet()));
    }
    return n;
  }

  private static Long dimOrNull(Map<String, Object> scope, String name) {
    Object v = scope.get(name);
    return v == null ? null : asDim(v);
  }

  private static Long asDim(Object v) {
    if (v instanceof Integer || v instanceof Long || v instanceof Short || v instanceof Byte) {
      long n = ((Number) v).longValue();
      return n >= 0 ? n : null;
    }
    if (v instanceof Number n) {
      double d = n.doubleValue();
      return d >= 0 && d == Math.rint(d) && d < 0x1p53 ? (long) d : null;
    }
    return null;
  }

  private static String dimsInScope(Map<String, Object> scope) {
    List<String> out = new ArrayList<>();
    for (Map.Entry<String, Object> e : scope.entrySet()) {
      Long v = asDim(e.getValue());
      if (v != null) {
        out.add(e.getKey() + "=" + v);
      }
    }
    return out.isEmpty() ? "none" : String.join(", ", out);
  }

  private static Class<?> listElement(RecordComponent c) {
    Type g = c.getGenericType();
    if (g instanceof ParameterizedType p && p.getActualTypeArguments().length == 1
        && p.getActualTypeArguments()[0] instanceof Class<?> e) {
      return e;
    }
    return null;
  }

  private Object construct(Class<?> type, RecordComponent[] components, Object[] args, String path) {
    Class<?>[] types = Arrays.stream(components).map(RecordComponent::getType).toArray(Class<?>[]::new);
    try {
      Constructor<?> k = type.getDeclaredConstructor(types);
      k.setAccessible(true);
      return k.newInstance(args);
    } catch (InvocationTargetException e) {
      throw new IllegalArgumentException(
          op + ": the constructor of " + path + " (" + type.getSimpleName() + ") rejected its components: "
              + e.getCause().getMessage(), e.getCause());
    } catch (ReflectiveOperationException | RuntimeException e) {
      throw new IllegalStateException(op + ": cannot construct " + type.getName() + ": " + e, e);
    }
  }

  /** {@code qProj} → {@code q_proj}: state-dict keys and config keys follow the Python side's names. */
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

  /** Visits the parameters of a built module in state-dict order. */
  static void forEachParam(Record module, String prefix, java.util.function.BiConsumer<String, Object> visit) {
    for (RecordComponent c : module.getClass().getRecordComponents()) {
      Object v = read(module, c);
      String key = prefix + snakeCase(c.getName());
      if (Tensor.class.isAssignableFrom(c.getType())) {
        visit.accept(key, v);
      } else if (v instanceof Record r && r.getClass().getAnnotation(Module.class) != null) {
        forEachParam(r, key + ".", visit);
      } else if (v instanceof List<?> list && c.getAnnotation(Repeat.class) != null) {
        for (int j = 0; j < list.size(); j++) {
          forEachParam((Record) list.get(j), key + "." + j + ".", visit);
        }
      }
    }
  }

  private static Object read(Record module, RecordComponent c) {
    try {
      var accessor = c.getAccessor();
      accessor.setAccessible(true);
      return accessor.invoke(module);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("cannot read component " + c.getName() + " of " + module.getClass(), e);
    }
  }
}
