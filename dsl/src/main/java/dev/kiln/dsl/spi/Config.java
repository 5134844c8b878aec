package dev.kiln.dsl.spi;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The values of a model's config dims and hyper-parameters, by config key in snake_case ({@code d_model},
 * {@code num_layers}, {@code rope_theta}, {@code eps}). Dims are positive integers; hyper-parameters are numbers,
 * booleans, or enum constants (given as the constant or its name).
 *
 * <p>Generated {@code init} reads it; a sub-module sees its own dim names, bound to the parent's through
 * {@link #bind}.
 */
public final class Config {
  private final Map<String, Object> values;

  private Config(Map<String, Object> values) {
    this.values = values;
  }

  /** A config of these values (copied). */
  public static Config of(Map<String, ?> values) {
    return new Config(new LinkedHashMap<>(values));
  }

  /** The raw value of {@code key}, or throws naming the key and the keys there are. */
  public Object get(String key) {
    Object v = values.get(key);
    if (v == null) {
      throw new IllegalArgumentException("the config has no value for '" + key + "' (it has " + values.keySet()
          + "); add \"" + key + "\" to the config");
    }
    return v;
  }

  /** Whether {@code key} has a value. */
  public boolean has(String key) {
    return values.containsKey(key);
  }

  /** A dim: a positive integer. */
  public long dim(String key) {
    Object v = get(key);
    if (!(v instanceof Number n) || n.doubleValue() != Math.rint(n.doubleValue()) || n.longValue() <= 0) {
      throw new IllegalArgumentException("config '" + key + "' is a dim and must be a positive integer, got " + v);
    }
    return n.longValue();
  }

  /** An integer hyper-parameter (any sign). */
  public long integer(String key) {
    Object v = get(key);
    if (!(v instanceof Number n) || n.doubleValue() != Math.rint(n.doubleValue())) {
      throw new IllegalArgumentException("config '" + key + "' must be an integer, got " + v);
    }
    return n.longValue();
  }

  /** A real hyper-parameter. */
  public double real(String key) {
    Object v = get(key);
    if (!(v instanceof Number n)) {
      throw new IllegalArgumentException("config '" + key + "' must be a number, got " + v);
    }
    return n.doubleValue();
  }

  /** A boolean hyper-parameter. */
  public boolean flag(String key) {
    Object v = get(key);
    if (!(v instanceof Boolean b)) {
      throw new IllegalArgumentException("config '" + key + "' must be true or false, got " + v);
    }
    return b;
  }

  /** An enum hyper-parameter. */
  public <E extends Enum<E>> E choice(String key, Class<E> type) {
    Object v = get(key);
    if (type.isInstance(v)) {
      return type.cast(v);
    }
    for (E e : type.getEnumConstants()) {
      if (e.name().equalsIgnoreCase(String.valueOf(v))) {
        return e;
      }
    }
    throw new IllegalArgumentException("config '" + key + "' must be one of " + java.util.Arrays.toString(
        type.getEnumConstants()) + ", got " + v);
  }

  /**
   * The config a sub-module sees: this one plus its bound dims ({@code d_in} → the value of {@code d_model}), which
   * replace same-named keys.
   */
  public Config bind(Map<String, Long> dims) {
    Map<String, Object> m = new LinkedHashMap<>(values);
    m.putAll(dims);
    return new Config(m);
  }

  @Override
  public String toString() {
    return values.toString();
  }
}
