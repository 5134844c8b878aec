package dev.kiln.runtime.io;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Parses the Python literal subset a {@code .npy} header uses: dicts, tuples, lists, strings, integers,
 * {@code True}/{@code False}/{@code None}. numpy writes the header with {@code repr} and reads it with
 * {@code ast.literal_eval}; this is the safe Java counterpart. Tuples and lists both become {@code List<Object>},
 * integers {@code Long}.
 */
final class PyLiteral {
  private final String s;
  private int i;

  private PyLiteral(String s) {
    this.s = s;
  }

  /** Parses the whole text as one literal; throws {@link IllegalArgumentException} with the position on error. */
  static Object parse(String text) {
    PyLiteral p = new PyLiteral(text);
    p.ws();
    Object v = p.value(0);
    p.ws();
    if (p.i != text.length()) {
      throw p.error("unexpected text after the literal");
    }
    return v;
  }

  private Object value(int depth) {
    if (depth > 64) {
      throw error("nesting too deep");
    }
    if (i >= s.length()) {
      throw error("unexpected end, expected a value");
    }
    char c = s.charAt(i);
    if (c == '{') {
      return dict(depth);
    }
    if (c == '(' || c == '[') {
      return sequence(c == '(' ? ')' : ']', depth);
    }
    if (c == '\'' || c == '"') {
      return string(c);
    }
    if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
      return integer();
    }
    for (String word : new String[] {"True", "False", "None"}) {
      if (s.startsWith(word, i)) {
        i += word.length();
        return word.equals("None") ? null : Boolean.valueOf(word.equals("True"));
      }
    }
    throw error("unexpected character '" + c + "'");
  }

  private Map<Object, Object> dict(int depth) {
    Map<Object, Object> m = new LinkedHashMap<>();
    i++;
    while (true) {
      ws();
      if (peek() == '}') {
        i++;
        return m;
      }
      Object k = value(depth + 1);
      ws();
      if (peek() != ':') {
        throw error("expected ':' in dict");
      }
      i++;
      ws();
      Object v = value(depth + 1);
      if (m.containsKey(k)) {
        throw error("duplicate key " + k);
      }
      m.put(k, v);
      ws();
      if (peek() == ',') {
        i++;
      } else if (peek() != '}') {
        throw error("expected ',' or '}' in dict");
      }
    }
  }

  private List<Object> sequence(char close, int depth) {
    List<Object> out = new ArrayList<>();
    i++;
    while (true) {
      ws();
      if (peek() == close) {
        i++;
        return out;
      }
      out.add(value(depth + 1));
      ws();
      if (peek() == ',') {
        i++;
      } else if (peek() != close) {
        throw error("expected ',' or '" + close + "'");
      }
    }
  }

  private String string(char quote) {
    StringBuilder b = new StringBuilder();
    i++;
    while (true) {
      if (i >= s.length()) {
        throw error("unterminated string");
      }
      char c = s.charAt(i++);
      if (c == quote) {
        return b.toString();
      }
      if (c == '\\') {
        if (i >= s.length()) {
          throw error("unterminated escape");
        }
        char e = s.charAt(i++);
        b.append(switch (e) {
          case 'n' -> '\n';
          case 't' -> '\t';
          case 'r' -> '\r';
          case '0' -> '\0';
          default -> e; // \\ \' \" and anything else literally
        });
      } else {
        b.append(c);
      }
    }
  }

  private Long integer() {
    int start = i;
    if (peek() == '-' || peek() == '+') {
      i++;
    }
    if (!Character.isDigit(peek())) {
      throw error("expected a digit");
    }
    while (Character.isDigit(peek())) {
      i++;
    }
    String digits = s.substring(start, i);
    if (peek() == 'L' || peek() == 'l') {
      i++; // Python 2 long suffix, still found in old .npy files
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') {
      throw error("only integers are supported here");
    }
    try {
      return Long.parseLong(digits.startsWith("+") ? digits.substring(1) : digits);
    } catch (NumberFormatException e) {
      throw error("integer " + digits + " out of 64-bit range");
    }
  }

  private char peek() {
    return i < s.length() ? s.charAt(i) : '\0';
  }

  private void ws() {
    while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
      i++;
    }
  }

  private IllegalArgumentException error(String msg) {
    return new IllegalArgumentException(msg + " at character " + i + " of " + abbreviate(s));
  }

  private static String abbreviate(String s) {
    String t = s.strip();
    return '"' + (t.length() > 120 ? t.substring(0, 120) + "..." : t) + '"';
  }
}
