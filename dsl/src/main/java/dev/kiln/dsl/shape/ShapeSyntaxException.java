package dev.kiln.dsl.shape;

/**
 * A shape string, einops pattern or einsum spec that does not parse, or that breaks a rule of the grammar.
 *
 * <p>Carries the source text, the 0-based character offset of the problem and the bare problem text, so the
 * annotation processor can point a diagnostic at the column inside an annotation value, and the runtime can print
 * the message as is. {@link #getMessage()} reads
 *
 * <pre>
 * unclosed '(' at column 3
 *   b (h d
 *     ^
 * </pre>
 */
public final class ShapeSyntaxException extends IllegalArgumentException {
  private final String source;
  private final int offset;
  private final String problem;

  public ShapeSyntaxException(String source, int offset, String problem) {
    super(format(source, offset, problem));
    this.source = source;
    this.offset = offset;
    this.problem = problem;
  }

  /** The whole string that was parsed. */
  public String source() {
    return source;
  }

  /** 0-based character offset of the problem in {@link #source()} ({@code source().length()} for "at the end"). */
  public int offset() {
    return offset;
  }

  /** 1-based column, as printed. */
  public int column() {
    return offset + 1;
  }

  /** The problem without position or caret, e.g. {@code unclosed '('}. */
  public String problem() {
    return problem;
  }

  /** The source line followed by a line with a caret under the offending character, each indented by two spaces. */
  public String caretLines() {
    return caretLines(source, offset);
  }

  private static String format(String source, int offset, String problem) {
    return problem + " at column " + (offset + 1) + "\n" + caretLines(source, offset);
  }

  private static String caretLines(String source, int offset) {
    StringBuilder caret = new StringBuilder("  ");
    // Keep tabs as tabs so the caret lines up under the character however the terminal renders them.
    for (int i = 0; i < offset && i < source.length(); i++) {
      caret.append(source.charAt(i) == '\t' ? '\t' : ' ');
    }
    return "  " + source.replace('\n', ' ').replace('\r', ' ') + "\n" + caret.append('^');
  }
}
