package dev.kiln.dsl.shape;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The one parser of Kiln's shape strings, shared by the annotation processor and the runtime.
 *
 * <h2>Grammar</h2>
 *
 * <pre>
 * shape    := axis*                          axes are separated by whitespace
 * axis     := '...' | group | expr
 * group    := '(' member* ')'                one level only; '()' is a unit axis
 * member   := '...' | expr
 * expr     := term (('+' | '-') term)*       no spaces inside: d+1, d_model/heads, 2*d
 * term     := atom (('*' | '/') atom)*
 * atom     := name | size
 * name     := [A-Za-z_][A-Za-z0-9_]*
 * size     := [0-9]+                         1 is einops' anonymous unit axis
 * pattern  := shape '->' shape
 * einsum   := shape (',' shape)* '->' shape  axes are names or '...'
 * </pre>
 *
 * <p>Because whitespace separates axes, arithmetic is written without spaces, and because parentheses always mean
 * a group, arithmetic has no parentheses: {@code d-1} is one axis, {@code d - 1} is three tokens and an error
 * ({@code '-'} cannot start an axis), {@code (d-1)} is a group of one member. Two axes must be separated by
 * whitespace ({@code (a b)(c)} is an error) so that a typo cannot silently join them.
 *
 * <p>A name may appear twice in a single shape ({@code s s} for a square mask: both dims have the same size), but not
 * twice on one side of a pattern, nor twice in an einsum output. Every error is a {@link ShapeSyntaxException} with
 * the offset of the problem; no other exception escapes.
 */
public final class ShapeParser {
  private enum Mode {
    SHAPE("a shape"),
    PATTERN("an einops pattern"),
    EINSUM("an einsum spec");

    final String what;

    Mode(String what) {
      this.what = what;
    }
  }

  private final String src;
  private final Mode mode;
  private int pos;

  private ShapeParser(String src, Mode mode) {
    this.src = src;
    this.mode = mode;
  }

  /** Parses one shape, e.g. {@code ... d_model} or {@code b s (h d)}. */
  public static ShapeSpec parseShape(String shape) {
    ShapeParser p = new ShapeParser(requireNonNull(shape), Mode.SHAPE);
    ShapeSpec s = p.side();
    p.expectEnd("a shape has no '->'; only a pattern (rearrange, repeat, reduce, einsum) does");
    return s;
  }

  /** Parses an einops pattern, e.g. {@code b s (h d) -> b h s d}. */
  public static EinopsPattern parsePattern(String pattern) {
    ShapeParser p = new ShapeParser(requireNonNull(pattern), Mode.PATTERN);
    ShapeSpec left = p.side();
    if (p.atEnd()) {
      throw p.error(p.pos, "missing '->' between the input and output shapes");
    }
    if (p.src.charAt(p.pos) == ',') {
      throw p.error(p.pos, "unexpected ',' in an einops pattern (commas separate einsum operands)");
    }
    int arrow = p.pos;
    p.pos += 2;
    ShapeSpec right = p.side();
    p.expectEnd("second '->' in the pattern");
    checkNoDuplicates(p, left, "on the left side of the pattern");
    checkNoDuplicates(p, right, "on the right side of the pattern");
    Axis.Ellipsis le = left.ellipsis();
    Axis.Ellipsis re = right.ellipsis();
    if (re != null && le == null) {
      throw p.error(re.start(), "'...' on the right side of the pattern but not on the left");
    }
    if (le != null && !left.axes().contains(le)) {
      throw p.error(le.start(), "'...' inside a group is only allowed on the right side of a pattern");
    }
    return new EinopsPattern(p.src, left, right, arrow);
  }

  /** Parses an einsum spec in einops style, e.g. {@code ... d_in, d_out d_in -> ... d_out}. */
  public static EinsumSpec parseEinsum(String spec) {
    ShapeParser p = new ShapeParser(requireNonNull(spec), Mode.EINSUM);
    List<ShapeSpec> inputs = new ArrayList<>();
    while (true) {
      inputs.add(p.side());
      if (p.atEnd()) {
        throw p.error(p.pos, "missing '->' between the operands and the output");
      }
      if (p.src.charAt(p.pos) == ',') {
        p.pos++;
        continue;
      }
      break;
    }
    int arrow = p.pos;
    p.pos += 2;
    ShapeSpec output = p.side();
    if (!p.atEnd()) {
      throw p.error(
          p.pos,
          p.src.charAt(p.pos) == ',' ? "the output is one shape; unexpected ','" : "second '->' in the einsum spec");
    }
    boolean anyEllipsis = false;
    Map<String, Axis.Name> inputNames = new HashMap<>();
    for (ShapeSpec in : inputs) {
      checkEinsumAxes(p, in);
      anyEllipsis |= in.hasEllipsis();
      for (Axis.Name n : in.axisNames()) {
        inputNames.putIfAbsent(n.name(), n);
      }
    }
    checkEinsumAxes(p, output);
    checkNoDuplicates(p, output, "in the einsum output");
    for (Axis.Name n : output.axisNames()) {
      if (!inputNames.containsKey(n.name())) {
        throw p.error(n.start(), "output dim '" + n.name() + "' appears in no operand");
      }
    }
    if (output.hasEllipsis() && !anyEllipsis) {
      throw p.error(output.ellipsis().start(), "'...' in the output but in no operand");
    }
    if (anyEllipsis && !output.hasEllipsis()) {
      throw p.error(arrow, "'...' in an operand but not in the output; name the dims to sum them over");
    }
    return new EinsumSpec(p.src, inputs, output);
  }

  /** Whether {@code s} is a valid dim name. */
  public static boolean isName(String s) {
    if (s == null || s.isEmpty() || !isNameStart(s.charAt(0))) {
      return false;
    }
    for (int i = 1; i < s.length(); i++) {
      if (!isNamePart(s.charAt(i))) {
        return false;
      }
    }
    return true;
  }

  // ---------------------------------------------------------------- checks after parsing

  private static void checkNoDuplicates(ShapeParser p, ShapeSpec s, String where) {
    Map<String, Axis.Name> seen = new HashMap<>();
    for (Axis.Name n : s.axisNames()) {
      Axis.Name first = seen.putIfAbsent(n.name(), n);
      if (first != null) {
        throw p.error(
            n.start(), "duplicate dim '" + n.name() + "' " + where + " (first at column " + (first.start() + 1) + ")");
      }
    }
  }

  private static void checkEinsumAxes(ShapeParser p, ShapeSpec s) {
    for (Axis a : s.axes()) {
      switch (a) {
        case Axis.Name n -> {}
        case Axis.Ellipsis e -> {}
        case Axis.Group g -> throw p.error(g.start(), "groups are not allowed in an einsum spec; rearrange first");
        case Axis.Literal l ->
            throw p.error(l.start(), "einsum axes are names; got the size '" + l + "' (use rearrange for unit axes)");
        case Axis.BinOp b -> throw p.error(b.start(), "einsum axes are names; got the arithmetic '" + b + "'");
      }
    }
  }

  // ---------------------------------------------------------------- recursive descent

  /** Axes up to the end, a ',' or a '->'. */
  private ShapeSpec side() {
    skipSpace();
    int start = pos;
    List<Axis> axes = new ArrayList<>();
    Axis.Ellipsis ellipsis = null;
    while (true) {
      skipSpace();
      if (atSideEnd()) {
        break;
      }
      Axis a = axis(false);
      axes.add(a);
      Axis.Ellipsis e = a instanceof Axis.Ellipsis x ? x : a instanceof Axis.Group g ? groupEllipsis(g) : null;
      if (e != null) {
        if (ellipsis != null) {
          throw error(
              e.start(), "'...' appears twice in one shape (first at column " + (ellipsis.start() + 1) + ")");
        }
        ellipsis = e;
      }
      expectSeparator();
    }
    int end = axes.isEmpty() ? start : axes.getLast().end();
    return new ShapeSpec(src, axes, start, end);
  }

  private static Axis.Ellipsis groupEllipsis(Axis.Group g) {
    Axis.Ellipsis found = null;
    for (Axis m : g.members()) {
      if (m instanceof Axis.Ellipsis e) {
        found = e;
      }
    }
    return found;
  }

  private Axis axis(boolean inGroup) {
    char c = src.charAt(pos);
    if (c == '(') {
      if (inGroup) {
        throw error(pos, "groups do not nest: '(' inside a group (einops allows one level of parentheses)");
      }
      return group();
    }
    if (c == ')') {
      throw error(pos, "unmatched ')'");
    }
    if (c == '.') {
      return ellipsisToken();
    }
    if (isNamePart(c)) {
      return expr();
    }
    if (c == '+' || c == '-' || c == '*' || c == '/') {
      throw error(pos, "'" + c + "' needs a dim name or size before it (write arithmetic without spaces: d+1)");
    }
    throw error(pos, "unexpected character " + describe(c));
  }

  private Axis.Group group() {
    int open = pos++;
    List<Axis> members = new ArrayList<>();
    Axis.Ellipsis ellipsis = null;
    while (true) {
      skipSpace();
      if (atEnd() || atArrow() || src.charAt(pos) == ',') {
        throw error(open, "unclosed '('");
      }
      if (src.charAt(pos) == ')') {
        pos++;
        return new Axis.Group(members, open, pos);
      }
      Axis m = axis(true);
      if (m instanceof Axis.Ellipsis e) {
        if (ellipsis != null) {
          throw error(
              e.start(), "'...' appears twice in one shape (first at column " + (ellipsis.start() + 1) + ")");
        }
        ellipsis = e;
      }
      members.add(m);
      if (!atEnd() && src.charAt(pos) != ')') {
        expectSeparator();
      }
    }
  }

  private Axis.Ellipsis ellipsisToken() {
    int start = pos;
    while (pos < src.length() && src.charAt(pos) == '.') {
      pos++;
    }
    if (pos - start != 3) {
      throw error(start, "expected '...' (three dots), found " + (pos - start));
    }
    return new Axis.Ellipsis(start, pos);
  }

  private Axis.DimExpr expr() {
    Axis.DimExpr left = term();
    while (!atEnd() && (src.charAt(pos) == '+' || (src.charAt(pos) == '-' && !atArrow()))) {
      Axis.Op op = src.charAt(pos) == '+' ? Axis.Op.ADD : Axis.Op.SUB;
      pos++;
      Axis.DimExpr right = term();
      left = new Axis.BinOp(op, left, right, left.start(), right.end());
    }
    return left;
  }

  private Axis.DimExpr term() {
    Axis.DimExpr left = atom();
    while (!atEnd() && (src.charAt(pos) == '*' || src.charAt(pos) == '/')) {
      Axis.Op op = src.charAt(pos) == '*' ? Axis.Op.MUL : Axis.Op.DIV;
      pos++;
      Axis.DimExpr right = atom();
      left = new Axis.BinOp(op, left, right, left.start(), right.end());
    }
    return left;
  }

  private Axis.DimExpr atom() {
    int start = pos;
    if (atEnd() || !isNamePart(src.charAt(pos))) {
      char op = src.charAt(pos - 1);
      throw error(pos, "expected a dim name or size after '" + op + "'");
    }
    if (isNameStart(src.charAt(pos))) {
      while (pos < src.length() && isNamePart(src.charAt(pos))) {
        pos++;
      }
      return new Axis.Name(src.substring(start, pos), start, pos);
    }
    while (pos < src.length() && isDigit(src.charAt(pos))) {
      pos++;
    }
    if (pos < src.length() && isNameStart(src.charAt(pos))) {
      while (pos < src.length() && isNamePart(src.charAt(pos))) {
        pos++;
      }
      throw error(start, "a dim name cannot start with a digit: '" + src.substring(start, pos) + "'");
    }
    String digits = src.substring(start, pos);
    try {
      return new Axis.Literal(Long.parseLong(digits), start, pos);
    } catch (NumberFormatException e) {
      throw error(start, "size " + digits + " is too large");
    }
  }

  // ---------------------------------------------------------------- lexing helpers

  /** After an axis: whitespace, the end of the side or a ')' must follow. */
  private void expectSeparator() {
    if (atEnd() || atSideEnd() || Character.isWhitespace(src.charAt(pos))) {
      return;
    }
    char c = src.charAt(pos);
    if (c == ')') {
      throw error(pos, "unmatched ')'");
    }
    if (c == '(' || c == '.' || isNamePart(c)) {
      throw error(pos, "missing space between axes");
    }
    if (c == '+' || c == '-' || c == '*' || c == '/') {
      throw error(pos, "'" + c + "' needs a dim name or size before it (write arithmetic without spaces: d+1)");
    }
    throw error(pos, "unexpected character " + describe(c));
  }

  private void expectEnd(String arrowProblem) {
    if (atEnd()) {
      return;
    }
    if (src.charAt(pos) == ',') {
      throw error(pos, "unexpected ',' in " + mode.what + " (commas separate einsum operands)");
    }
    throw error(pos, arrowProblem);
  }

  private boolean atSideEnd() {
    return atEnd() || src.charAt(pos) == ',' || atArrow();
  }

  private boolean atArrow() {
    return pos + 1 < src.length() && src.charAt(pos) == '-' && src.charAt(pos + 1) == '>';
  }

  private boolean atEnd() {
    return pos >= src.length();
  }

  private void skipSpace() {
    while (pos < src.length() && Character.isWhitespace(src.charAt(pos))) {
      pos++;
    }
  }

  private ShapeSyntaxException error(int at, String problem) {
    return new ShapeSyntaxException(src, at, problem);
  }

  private static String describe(char c) {
    return c >= 0x20 && c < 0x7f ? "'" + c + "'" : String.format("U+%04X", (int) c);
  }

  private static boolean isNameStart(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }

  private static boolean isNamePart(char c) {
    return isNameStart(c) || isDigit(c);
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  private static String requireNonNull(String s) {
    if (s == null) {
      throw new NullPointerException("shape string is null");
    }
    return s;
  }
}
