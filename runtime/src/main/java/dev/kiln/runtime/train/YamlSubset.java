package dev.kiln.runtime.train;

import java.util.ArrayDeque;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads the part of YAML a config needs: nested block mappings of {@code key: value}, with plain, single-quoted
 * or double-quoted scalars, {@code #} comments, blank lines and an optional leading {@code ---}. Indentation is by
 * spaces. Everything else YAML can say (lists, flow collections, anchors, multi-line strings, tags, several
 * documents) is refused with the line number, rather than half-understood.
 *
 * <p>Plain scalars come back as {@link ConfigTree.Plain}, so the field they fill decides their type ({@code 001}
 * stays the string "001" for a path and is 1 for a number); quoted scalars are always strings. Kiln keeps this
 * parser in-house because the subset is small and a YAML library would be the runtime's only dependency for it.
 */
final class YamlSubset {
  private YamlSubset() {}

  /** Thrown for input outside the subset or malformed; the message starts with {@code line N}. */
  static final class YamlException extends IllegalArgumentException {
    YamlException(int line, String message) {
      super("line " + line + ": " + message);
    }
  }

  private record Open(int indent, Map<String, Object> map) {}

  static Map<String, Object> parse(String text) {
    Map<String, Object> root = new LinkedHashMap<>();
    Deque<Open> stack = new ArrayDeque<>();
    stack.push(new Open(-1, root));
    String[] lines = text.split("\r?\n", -1);
    String pendingKey = null; // a "key:" with no value, waiting for its indented block
    int pendingIndent = 0;
    Map<String, Object> pendingParent = null;
    boolean sawContent = false;
    for (int n = 0; n < lines.length; n++) {
      int lineNo = n + 1;
      String raw = lines[n];
      if (n == 0 && raw.startsWith("\uFEFF")) {
        raw = raw.substring(1);
      }
      String line = stripComment(raw, lineNo);
      if (line.isBlank()) {
        continue;
      }
      if (line.strip().equals("---") && !sawContent) {
        sawContent = true;
        continue;
      }
      sawContent = true;
      int indent = 0;
      while (indent < line.length() && line.charAt(indent) == ' ') {
        indent++;
      }
      if (line.charAt(indent) == '\t') {
        throw new YamlException(lineNo, "indent with spaces, not tabs");
      }
      String body = line.substring(indent).stripTrailing();
      char first = body.charAt(0);
      if (body.equals("---") || body.equals("...")) {
        throw new YamlException(lineNo, "only one YAML document per config file");
      }
      if (first == '-' && (body.length() == 1 || body.charAt(1) == ' ')) {
        throw new YamlException(lineNo, "lists are not used in Kiln configs (found '- ...')");
      }
      if ("[{&*!|>%@`".indexOf(first) >= 0) {
        throw new YamlException(lineNo, "unsupported YAML ('" + first + "'); a config holds only key: value lines");
      }
      if (pendingKey != null) {
        if (indent <= pendingIndent) {
          pendingParent.put(pendingKey, null); // "key:" with nothing under it is null, as in YAML
        } else {
          Map<String, Object> child = new LinkedHashMap<>();
          pendingParent.put(pendingKey, child);
          stack.push(new Open(indent, child));
        }
        pendingKey = null;
      }
      while (indent < stack.peek().indent()) {
        stack.pop();
      }
      if (stack.peek().indent() == -1) {
        stack.pop();
        stack.push(new Open(indent, root)); // the first key fixes the top level's column
      } else if (indent != stack.peek().indent()) {
        throw new YamlException(lineNo, "indentation does not match any enclosing key (" + indent + " spaces)");
      }
      Map<String, Object> map = stack.peek().map();
      int colon = findColon(body, lineNo);
      String key = unquoteKey(body.substring(0, colon).strip(), lineNo);
      String rest = body.substring(colon + 1).strip();
      if (map.containsKey(key)) {
        throw new YamlException(lineNo, "duplicate key '" + key + "'");
      }
      if (rest.isEmpty()) {
        map.put(key, null);
        pendingKey = key;
        pendingIndent = indent;
        pendingParent = map;
      } else {
        map.put(key, value(rest, lineNo));
      }
    }
    return root;
  }

  /** Removes a {@code #} comment (at the start or after a space, outside quotes). */
  private static String stripComment(String line, int lineNo) {
    char quote = 0;
    for (int i = 0; i < line.length(); i++) {
      char c = line.charAt(i);
      if (quote != 0) {
        if (c == '\\' && quote == '"') {
          i++;
        } else if (c == quote) {
          quote = 0;
        }
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '#' && (i == 0 || line.charAt(i - 1) == ' ' || line.charAt(i - 1) == '\t')) {
        return line.substring(0, i);
      }
    }
    return line;
  }

  /** The colon that ends the key: the first ": " or a trailing ":" outside quotes. */
  private static int findColon(String body, int lineNo) {
    char quote = 0;
    for (int i = 0; i < body.length(); i++) {
      char c = body.charAt(i);
      if (quote != 0) {
        if (c == quote) {
          quote = 0;
        }
      } else if (i == 0 && (c == '"' || c == '\'')) {
        quote = c;
      } else if (c == ':' && (i + 1 == body.length() || body.charAt(i + 1) == ' ')) {
        return i;
      }
    }
    throw new YamlException(lineNo, "expected 'key: value', found '" + body + "'");
  }

  private static String unquoteKey(String key, int lineNo) {
    if (key.isEmpty()) {
      throw new YamlException(lineNo, "empty key");
    }
    if (key.charAt(0) == '"' || key.charAt(0) == '\'') {
      return (String) value(key, lineNo);
    }
    return key;
  }

  private static Object value(String s, int lineNo) {
    char first = s.charAt(0);
    if (first == '"') {
      StringBuilder b = new StringBuilder();
      int i = 1;
      for (; i < s.length() && s.charAt(i) != '"'; i++) {
        char c = s.charAt(i);
        if (c == '\\') {
          if (++i == s.length()) {
            break;
          }
          char e = s.charAt(i);
          switch (e) {
            case 'n' -> b.append('\n');
            case 't' -> b.append('\t');
            case '"' -> b.append('"');
            case '\\' -> b.append('\\');
            case '/' -> b.append('/');
            case 'u' -> {
              if (i + 4 >= s.length()) {
                throw new YamlException(lineNo, "incomplete \\u escape");
              }
              b.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16));
              i += 4;
            }
            default -> throw new YamlException(lineNo, "unknown escape \\" + e + " in a double-quoted string");
          }
        } else {
          b.append(c);
        }
      }
      if (i >= s.length()) {
        throw new YamlException(lineNo, "unterminated double-quoted string");
      }
      if (i + 1 != s.length()) {
        throw new YamlException(lineNo, "unexpected text after the quoted string: '" + s.substring(i + 1) + "'");
      }
      return b.toString();
    }
    if (first == '\'') {
      StringBuilder b = new StringBuilder();
      int i = 1;
      while (true) {
        if (i >= s.length()) {
          throw new YamlException(lineNo, "unterminated single-quoted string");
        }
        char c = s.charAt(i);
        if (c == '\'') {
          if (i + 1 < s.length() && s.charAt(i + 1) == '\'') {
            b.append('\'');
            i += 2;
            continue;
          }
          break;
        }
        b.append(c);
        i++;
      }
      if (i + 1 != s.length()) {
        throw new YamlException(lineNo, "unexpected text after the quoted string: '" + s.substring(i + 1) + "'");
      }
      return b.toString();
    }
    if ("[{&*!|>%@`".indexOf(first) >= 0) {
      throw new YamlException(lineNo, "unsupported YAML value '" + s + "' (lists, maps in braces, anchors, tags and"
          + " block strings are not used in configs; quote the value if it is a string)");
    }
    if (s.contains(": ")) {
      throw new YamlException(lineNo, "a value cannot contain ': ' unless quoted: '" + s + "'");
    }
    return new ConfigTree.Plain(s);
  }
}
