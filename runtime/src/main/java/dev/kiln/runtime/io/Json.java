package dev.kiln.runtime.io;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small, strict JSON reader and writer (RFC 8259) for the formats Kiln speaks: safetensors headers, GPT-2
 * {@code vocab.json}, Hugging Face {@code tokenizer.json}, configs, metrics lines. Kiln keeps it in-house rather than
 * taking a JSON library because these documents are small and flat, and one dependency fewer is one conflict fewer
 * for users embedding the runtime.
 *
 * <p>Values map to Java as: object → {@code LinkedHashMap<String,Object>} (key order kept), array →
 * {@code ArrayList<Object>}, string → {@code String}, number → {@code Long} when integral and in range, else
 * {@code Double}, {@code true/false} → {@code Boolean}, {@code null} → {@code null}.
 */
public final class Json {
  private final String s;
  private int i;

  private Json(String s) {
    this.s = s;
  }

  /** Thrown for malformed JSON; the message gives the character offset, line and column. */
  public static final class ParseException extends IllegalArgumentException {
    private final int offset;

    ParseException(String message, int offset) {
      super(message);
      this.offset = offset;
    }

    /** Character offset of the problem. */
    public int offset() {
      return offset;
    }
  }

  /** Parses one JSON document; trailing non-whitespace is an error. */
  public static Object parse(String text) {
    Json p = new Json(text);
    p.ws();
    Object v = p.value(0);
    p.ws();
    if (p.i != text.length()) {
      throw p.error("unexpected text after the JSON value");
    }
    return v;
  }

  /** Parses a document that must be an object. */
  @SuppressWarnings("unchecked")
  public static Map<String, Object> parseObject(String text) {
    Object v = parse(text);
    if (!(v instanceof Map)) {
      throw new ParseException("expected a JSON object at the top level, found " + typeName(v), 0);
    }
    return (Map<String, Object>) v;
  }

  private static final int MAX_DEPTH = 512;

  private Object value(int depth) {
    if (depth > MAX_DEPTH) {
      throw error("nesting deeper than " + MAX_DEPTH);
    }
    if (i >= s.length()) {
      throw error("unexpected end of input, expected a value");
    }
    char c = s.charAt(i);
    return switch (c) {
      case '{' -> object(depth);
      case '[' -> array(depth);
      case '"' -> string();
      case 't' -> literal("true", Boolean.TRUE);
      case 'f' -> literal("false", Boolean.FALSE);
      case 'n' -> literal("null", null);
      default -> {
        if (c == '-' || (c >= '0' && c <= '9')) {
          yield number();
        }
        throw error("unexpected character '" + c + "', expected a value");
      }
    };
  }

  private Map<String, Object> object(int depth) {
    Map<String, Object> m = new LinkedHashMap<>();
    i++;
    ws();
    if (peek() == '}') {
      i++;
      return m;
    }
    while (true) {
      ws();
      if (peek() != '"') {
        throw error("expected a string key in object");
      }
      int keyAt = i;
      String k = string();
      ws();
      expect(':');
      ws();
      Object v = value(depth + 1);
      if (m.containsKey(k)) {
        throw new ParseException("duplicate key \"" + k + "\" " + where(keyAt), keyAt);
      }
      m.put(k, v);
      ws();
      char c = next("',' or '}' in object");
      if (c == '}') {
        return m;
      }
      if (c != ',') {
        i--;
        throw error("expected ',' or '}' in object");
      }
    }
  }

  private List<Object> array(int depth) {
    List<Object> a = new ArrayList<>();
    i++;
    ws();
    if (peek() == ']') {
      i++;
      return a;
    }
    while (true) {
      ws();
      a.add(value(depth + 1));
      ws();
      char c = next("',' or ']' in array");
      if (c == ']') {
        return a;
      }
      if (c != ',') {
        i--;
        throw error("expected ',' or ']' in array");
      }
    }
  }

  private String string() {
    i++;
    StringBuilder b = null;
    int start = i;
    while (true) {
      if (i >= s.length()) {
        throw error("unterminated string");
      }
      char c = s.charAt(i);
      if (c == '"') {
        String out = b == null ? s.substring(start, i) : b.append(s, start, i).toString();
        i++;
        return out;
      }
      if (c < 0x20) {
        throw error("control character U+" + String.format("%04X", (int) c) + " inside a string (escape it)");
      }
      if (c == '\\') {
        if (b == null) {
          b = new StringBuilder();
        }
        b.append(s, start, i);
        i++;
        char e = next("escape character");
        switch (e) {
          case '"' -> b.append('"');
          case '\\' -> b.append('\\');
          case '/' -> b.append('/');
          case 'b' -> b.append('\b');
          case 'f' -> b.append('\f');
          case 'n' -> b.append('\n');
          case 'r' -> b.append('\r');
          case 't' -> b.append('\t');
          case 'u' -> {
            if (i + 4 > s.length()) {
              throw error("truncated \\u escape");
            }
            int cp = 0;
            for (int k = 0; k < 4; k++) {
              int h = Character.digit(s.charAt(i + k), 16);
              if (h < 0) {
                throw error("bad hex digit in \\u escape");
              }
              cp = cp * 16 + h;
            }
            i += 4;
            b.append((char) cp);
          }
          default -> {
            i--;
            throw error("unknown escape \\" + e);
          }
        }
        start = i;
      } else {
        i++;
      }
    }
  }

  private Object number() {
    int start = i;
    if (peek() == '-') {
      i++;
    }
    if (peek() == '0') {
      i++;
    } else if (isDigit(peek())) {
      while (isDigit(peek())) {
        i++;
      }
    } else {
      throw error("expected a digit");
    }
    boolean integral = true;
    if (peek() == '.') {
      integral = false;
      i++;
      if (!isDigit(peek())) {
        throw error("expected a digit after the decimal point");
      }
      while (isDigit(peek())) {
        i++;
      }
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      i++;
      if (peek() == '+' || peek() == '-') {
        i++;
      }
      if (!isDigit(peek())) {
        throw error("expected a digit in the exponent");
      }
      while (isDigit(peek())) {
        i++;
      }
    }
    String t = s.substring(start, i);
    if (integral) {
      try {
        return Long.parseLong(t);
      } catch (NumberFormatException tooBig) {
        return new BigDecimal(t).doubleValue();
      }
    }
    return Double.parseDouble(t);
  }

  private Object literal(String word, Object v) {
    if (!s.startsWith(word, i)) {
      throw error("unexpected token, expected " + word);
    }
    i += word.length();
    return v;
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  private char peek() {
    return i < s.length() ? s.charAt(i) : '\0';
  }

  private char next(String what) {
    if (i >= s.length()) {
      throw error("unexpected end of input, expected " + what);
    }
    return s.charAt(i++);
  }

  private void expect(char c) {
    if (peek() != c) {
      throw error("expected '" + c + "'");
    }
    i++;
  }

  private void ws() {
    while (i < s.length()) {
      char c = s.charAt(i);
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        i++;
      } else {
        break;
      }
    }
  }

  private ParseException error(String msg) {
    return new ParseException(msg + " " + where(i), i);
  }

  private String where(int at) {
    int line = 1;
    int col = 1;
    for (int k = 0; k < Math.min(at, s.length()); k++) {
      if (s.charAt(k) == '\n') {
        line++;
        col = 1;
      } else {
        col++;
      }
    }
    return "at line " + line + ", column " + col + " (offset " + at + ")";
  }

  private static String typeName(Object v) {
    if (v == null) {
      return "null";
    }
    if (v instanceof List) {
      return "an array";
    }
    if (v instanceof String) {
      return "a string";
    }
    if (v instanceof Boolean) {
      return "a boolean";
    }
    return "a number";
  }

  // ---------------------------------------------------------------- writing

  /** Compact JSON for a value built from maps, lists, strings, numbers, booleans and null. */
  public static String write(Object v) {
    StringBuilder b = new StringBuilder();
    write(b, v, -1, 0);
    return b.toString();
  }

  /** Indented JSON (two spaces) for people to read, e.g. configs. */
  public static String writePretty(Object v) {
    StringBuilder b = new StringBuilder();
    write(b, v, 2, 0);
    return b.append('\n').toString();
  }

  private static void write(StringBuilder b, Object v, int indent, int level) {
    switch (v) {
      case null -> b.append("null");
      case String str -> quote(b, str);
      case Boolean bool -> b.append(bool);
      case Double d -> number(b, d);
      case Float f -> number(b, f.doubleValue());
      case Number n -> b.append(n);
      case Map<?, ?> m -> {
        b.append('{');
        boolean first = true;
        for (Map.Entry<?, ?> e : m.entrySet()) {
          if (!first) {
            b.append(',');
          }
          first = false;
          newline(b, indent, level + 1);
          quote(b, String.valueOf(e.getKey()));
          b.append(indent >= 0 ? ": " : ":");
          write(b, e.getValue(), indent, level + 1);
        }
        if (!m.isEmpty()) {
          newline(b, indent, level);
        }
        b.append('}');
      }
      case Iterable<?> it -> {
        b.append('[');
        boolean first = true;
        for (Object o : it) {
          if (!first) {
            b.append(indent >= 0 ? ", " : ",");
          }
          first = false;
          write(b, o, indent, level + 1);
        }
        b.append(']');
      }
      default -> throw new IllegalArgumentException("cannot write " + v.getClass().getName() + " as JSON");
    }
  }

  private static void number(StringBuilder b, double d) {
    if (Double.isNaN(d) || Double.isInfinite(d)) {
      // JSON has no NaN/Infinity; write them as strings a reader can still recognise.
      quote(b, Double.toString(d));
    } else if (d == Math.rint(d) && Math.abs(d) < 1e15) {
      b.append((long) d).append(".0");
    } else {
      b.append(d);
    }
  }

  private static void newline(StringBuilder b, int indent, int level) {
    if (indent >= 0) {
      b.append('\n');
      b.append(" ".repeat(indent * level));
    }
  }

  /** Appends {@code str} as a JSON string literal; non-ASCII characters are kept as UTF-16 text, not escaped. */
  public static void quote(StringBuilder b, String str) {
    b.append('"');
    for (int k = 0; k < str.length(); k++) {
      char c = str.charAt(k);
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        case '\b' -> b.append("\\b");
        case '\f' -> b.append("\\f");
        default -> {
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    b.append('"');
  }
}
