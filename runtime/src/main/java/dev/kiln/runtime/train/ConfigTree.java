package dev.kiln.runtime.train;

import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.RecordComponent;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;

/**
 * Binds a tree of maps and scalars (parsed JSON or YAML, plus overrides) to config records and back.
 *
 * <p>A record's components are its keys, in snake_case; a component's type says how to read the value: {@code int},
 * {@code long}, {@code double}, {@code boolean}, {@link String}, {@link Path}, an enum (case-insensitive, {@code -}
 * read as {@code _}), or a nested record (a section). Each record class has a static {@code defaults()}; a key left
 * out takes its default, unless the component is {@link Required}. Unknown keys, wrong types and missing required
 * keys are collected and reported together, each with its dotted key.
 */
final class ConfigTree {
  /** A scalar written without quotes (YAML plain scalar, or an override's value): typed by the field it fills. */
  record Plain(String text) {}

  private ConfigTree() {}

  /** camelCase → snake_case ({@code dModel} → {@code d_model}, {@code dFf} → {@code d_ff}). */
  static String snake(String name) {
    StringBuilder b = new StringBuilder();
    for (char c : name.toCharArray()) {
      if (Character.isUpperCase(c)) {
        b.append('_').append(Character.toLowerCase(c));
      } else {
        b.append(c);
      }
    }
    return b.toString();
  }

  static <R extends Record> R bind(
      Class<R> type, Map<String, Object> tree, Function<String, String> origin, List<String> problems) {
    return type.cast(bindRecord(type, tree, "", origin, problems));
  }

  private static Object bindRecord(
      Class<?> type, Map<String, Object> tree, String prefix, Function<String, String> origin, List<String> problems) {
    RecordComponent[] comps = type.getRecordComponents();
    Record defaults = defaultsOf(type);
    Map<String, RecordComponent> byKey = new LinkedHashMap<>();
    for (RecordComponent c : comps) {
      byKey.put(snake(c.getName()), c);
    }
    for (String key : tree.keySet()) {
      if (!byKey.containsKey(key)) {
        String hint = closest(key, byKey.keySet());
        problems.add("unknown key " + prefix + key + at(origin, prefix + key)
            + (hint != null ? " (did you mean " + prefix + hint + "?)" : "")
            + "; " + (prefix.isEmpty() ? "sections" : "keys of " + prefix.substring(0, prefix.length() - 1))
            + " are " + String.join(", ", byKey.keySet()));
      }
    }
    Object[] args = new Object[comps.length];
    Class<?>[] types = new Class<?>[comps.length];
    for (int i = 0; i < comps.length; i++) {
      RecordComponent c = comps[i];
      types[i] = c.getType();
      String key = snake(c.getName());
      String path = prefix + key;
      Object dflt = read(c, defaults);
      if (!tree.containsKey(key)) {
        if (c.isAnnotationPresent(Required.class)) {
          problems.add("missing required key " + path);
        }
        args[i] = dflt;
        continue;
      }
      Object v = tree.get(key);
      Object bound = convert(c.getType(), v, path, origin, problems);
      args[i] = bound == null && c.getType().isPrimitive() ? dflt : bound;
    }
    try {
      Constructor<?> ctor = type.getDeclaredConstructor(types);
      return ctor.newInstance(args);
    } catch (InvocationTargetException e) {
      problems.add((prefix.isEmpty() ? "config" : prefix.substring(0, prefix.length() - 1)) + ": "
          + e.getCause().getMessage());
      return defaults;
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("config record " + type.getName() + " cannot be built", e);
    }
  }

  @SuppressWarnings("unchecked")
  private static Object convert(
      Class<?> t, Object v, String path, Function<String, String> origin, List<String> problems) {
    String where = at(origin, path);
    if (t.isRecord()) {
      if (v instanceof Map<?, ?> m) {
        return bindRecord(t, (Map<String, Object>) m, path + ".", origin, problems);
      }
      problems.add(path + where + " must be a section of keys, not " + describe(v));
      return bindRecord(t, Map.of(), path + ".", origin, new ArrayList<>());
    }
    if (v instanceof Map<?, ?> || v instanceof List<?>) {
      problems.add(path + where + " must be " + expected(t) + ", not " + (v instanceof Map ? "a section" : "a list"));
      return null;
    }
    boolean plain = v instanceof Plain;
    String text = plain ? ((Plain) v).text() : null;
    if (t == String.class || t == Path.class) {
      if (v == null || (plain && (text.equals("null") || text.equals("~")))) {
        if (t == Path.class) {
          return null;
        }
        problems.add(path + where + " must be a string, not null");
        return null;
      }
      String s = plain ? text : v instanceof String str ? str : null;
      if (s == null) {
        problems.add(path + where + " must be a " + (t == Path.class ? "path" : "string") + " in quotes, not "
            + describe(v));
        return null;
      }
      if (t == Path.class) {
        return s.isEmpty() ? null : Path.of(s);
      }
      return s;
    }
    if (v == null || (plain && (text.equals("null") || text.equals("~")))) {
      problems.add(path + where + " must be " + expected(t) + ", not null");
      return null;
    }
    Object original = v;
    if (plain) {
      v = scalar(text);
    }
    if (t == boolean.class) {
      if (v instanceof Boolean b) {
        return b;
      }
    } else if (t == int.class || t == long.class) {
      Long n = null;
      if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte) {
        // Trees built in Java (kiln quickstart) hold Integers; parsed JSON/YAML holds Longs.
        n = ((Number) v).longValue();
      } else if (v instanceof Double d && d == Math.rint(d) && Math.abs(d) < 9.0e15) {
        n = (long) (double) d; // 1e4 and 10000.0 are whole numbers too
      }
      if (n != null) {
        if (t == int.class && (n < Integer.MIN_VALUE || n > Integer.MAX_VALUE)) {
          problems.add(path + where + " is " + n + ", too large for this key (at most " + Integer.MAX_VALUE + ")");
          return null;
        }
        return t == int.class ? (Object) n.intValue() : (Object) n;
      }
    } else if (t == double.class) {
      if (v instanceof Long || v instanceof Integer || v instanceof Double || v instanceof Float) {
        return ((Number) v).doubleValue();
      }
    } else if (t.isEnum()) {
      if (v instanceof String s) {
        String want = s.trim().replace('-', '_').toUpperCase(Locale.ROOT);
        for (Object c : t.getEnumConstants()) {
          if (((Enum<?>) c).name().equals(want)) {
            return c;
          }
        }
      }
      problems.add(path + where + " must be one of " + enumChoices(t) + ", not " + describe(original));
      return null;
    } else {
      throw new IllegalStateException("config key " + path + " has an unsupported type " + t);
    }
    problems.add(path + where + " must be " + expected(t) + ", not " + describe(original));
    return null;
  }

  /** A plain scalar's value by YAML 1.2's core schema: booleans, integers, floats; anything else is a string. */
  static Object scalar(String s) {
    switch (s) {
      case "true", "True", "TRUE" -> {
        return Boolean.TRUE;
      }
      case "false", "False", "FALSE" -> {
        return Boolean.FALSE;
      }
      case ".inf", "+.inf" -> {
        return Double.POSITIVE_INFINITY;
      }
      case "-.inf" -> {
        return Double.NEGATIVE_INFINITY;
      }
      case ".nan" -> {
        return Double.NaN;
      }
      default -> {}
    }
    String u = s.replace("_", "");
    if (u.matches("[-+]?[0-9]+")) {
      try {
        return Long.parseLong(u.startsWith("+") ? u.substring(1) : u);
      } catch (NumberFormatException e) {
        return s;
      }
    }
    if (u.matches("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?")) {
      return Double.parseDouble(u);
    }
    return s;
  }

  /** A record back to a tree (snake_case keys, enums in lower case, paths as strings), for config.json. */
  static Map<String, Object> toTree(Record r) {
    LinkedHashMap<String, Object> out = new LinkedHashMap<>();
    for (RecordComponent c : r.getClass().getRecordComponents()) {
      Object v = read(c, r);
      out.put(snake(c.getName()), switch (v) {
        case null -> null;
        case Record nested -> toTree(nested);
        case Enum<?> e -> e.name().toLowerCase(Locale.ROOT);
        case Path p -> p.toString();
        case Integer i -> (long) i;
        default -> v;
      });
    }
    return out;
  }

  private static Record defaultsOf(Class<?> type) {
    try {
      Method m = type.getMethod("defaults");
      return (Record) m.invoke(null);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("config record " + type.getName() + " needs a static defaults() method", e);
    }
  }

  private static Object read(RecordComponent c, Record r) {
    try {
      return c.getAccessor().invoke(r);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException(e);
    }
  }

  private static String at(Function<String, String> origin, String path) {
    String o = origin.apply(path);
    return o == null ? "" : " (" + o + ")";
  }

  private static String expected(Class<?> t) {
    if (t == boolean.class) {
      return "true or false";
    }
    if (t == int.class || t == long.class) {
      return "a whole number";
    }
    if (t == double.class) {
      return "a number";
    }
    if (t.isEnum()) {
      return "one of " + enumChoices(t);
    }
    return "a string";
  }

  private static String enumChoices(Class<?> t) {
    List<String> names = new ArrayList<>();
    for (Object c : t.getEnumConstants()) {
      names.add(((Enum<?>) c).name().toLowerCase(Locale.ROOT));
    }
    return String.join(", ", names);
  }

  private static String describe(Object v) {
    return switch (v) {
      case null -> "null";
      case Plain p -> "'" + p.text() + "'";
      case String s -> "the string \"" + s + "\"";
      case Map<?, ?> m -> "a section";
      case List<?> l -> "a list";
      default -> v.toString();
    };
  }

  /** The known key nearest to {@code key} by edit distance, if it is near enough to be a typo. */
  private static String closest(String key, Iterable<String> known) {
    String best = null;
    int bestD = Integer.MAX_VALUE;
    for (String k : known) {
      int d = distance(key, k);
      if (d < bestD) {
        bestD = d;
        best = k;
      }
    }
    return bestD <= Math.max(2, key.length() / 3) ? best : null;
  }

  private static int distance(String a, String b) {
    int[] prev = new int[b.length() + 1];
    int[] cur = new int[b.length() + 1];
    for (int j = 0; j <= b.length(); j++) {
      prev[j] = j;
    }
    for (int i = 1; i <= a.length(); i++) {
      cur[0] = i;
      for (int j = 1; j <= b.length(); j++) {
        int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
        cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
      }
      int[] t = prev;
      prev = cur;
      cur = t;
    }
    return prev[b.length()];
  }
}
