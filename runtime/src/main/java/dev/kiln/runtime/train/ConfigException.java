package dev.kiln.runtime.train;

import java.util.List;

/** A configuration that cannot be used; the message names every offending key and, where known, the fix. */
public final class ConfigException extends IllegalArgumentException {
  private final List<String> problems;

  public ConfigException(String source, List<String> problems) {
    super(format(source, problems));
    this.problems = List.copyOf(problems);
  }

  public ConfigException(String source, String problem) {
    this(source, List.of(problem));
  }

  /** One line per problem, each starting with the key it concerns. */
  public List<String> problems() {
    return problems;
  }

  private static String format(String source, List<String> problems) {
    if (problems.size() == 1) {
      return source + ": " + problems.get(0);
    }
    StringBuilder b = new StringBuilder(source).append(": ").append(problems.size()).append(" problems:");
    for (String p : problems) {
      b.append("\n  - ").append(p);
    }
    return b.toString();
  }
}
