package dev.kiln.dsl.shape;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class ShapeParserTest {

  // ---------------------------------------------------------------- valid strings round-trip

  @ParameterizedTest
  @ValueSource(
      strings = {
        "",
        "d_model",
        "... d_model",
        "b s (h d)",
        "b 1 s",
        "b 3 (h 1 w)",
        "()",
        "b (...)",
        "d_model/heads",
        "2*d d+1 d-1",
        "a*b+c*d-e/f",
        "s s",
        "B_2 x_y_z9"
      })
  void canonicalShapesRoundTrip(String s) {
    ShapeSpec spec = ShapeParser.parseShape(s);
    assertEquals(s, spec.toString());
    assertEquals(spec.toString(), ShapeParser.parseShape(spec.toString()).toString());
  }

  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "  b   s  |b s",
        "\tb\t(h  d )|b (h d)",
        "( ... )  x|(...) x",
        "b s (h d)->b h s d|b s (h d) -> b h s d"
      })
  void whitespaceIsNormalised(String in, String canonical) {
    String out =
        in.contains("->") ? ShapeParser.parsePattern(in).toString() : ShapeParser.parseShape(in).toString();
    assertEquals(canonical, out);
  }

  @Test
  void shapeTreeAndOffsets() {
    ShapeSpec s = ShapeParser.parseShape("... b (h d_model/h) 1");
    List<Axis> a = s.axes();
    assertEquals(4, a.size());
    assertEquals(new Axis.Ellipsis(0, 3), a.get(0));
    assertEquals(new Axis.Name("b", 4, 5), a.get(1));
    Axis.Group g = assertInstanceOf(Axis.Group.class, a.get(2));
    assertEquals(6, g.start());
    assertEquals(19, g.end());
    assertEquals(new Axis.Name("h", 7, 8), g.members().get(0));
    Axis.BinOp div = assertInstanceOf(Axis.BinOp.class, g.members().get(1));
    assertEquals(Axis.Op.DIV, div.op());
    assertEquals(new Axis.Name("d_model", 9, 16), div.left());
    assertEquals(new Axis.Name("h", 17, 18), div.right());
    assertEquals(9, div.start());
    assertEquals(18, div.end());
    assertEquals(new Axis.Literal(1, 20, 21), a.get(3));
    assertEquals(0, s.start());
    assertEquals(21, s.end());
    // Names inside arithmetic are not axes.
    assertEquals(List.of("b", "h"), s.axisNames().stream().map(Axis.Name::name).toList());
  }

  @Test
  void arithmeticPrecedenceAndEvaluation() {
    Axis.DimExpr e = (Axis.DimExpr) ShapeParser.parseShape("a+b*c-d/e").axes().getFirst();
    // ((a + (b*c)) - (d/e))
    Axis.BinOp sub = assertInstanceOf(Axis.BinOp.class, e);
    assertEquals(Axis.Op.SUB, sub.op());
    assertEquals(Axis.Op.ADD, ((Axis.BinOp) sub.left()).op());
    assertEquals(Axis.Op.MUL, ((Axis.BinOp) ((Axis.BinOp) sub.left()).right()).op());
    assertEquals(Axis.Op.DIV, ((Axis.BinOp) sub.right()).op());
    Map<String, Long> v = Map.of("a", 1L, "b", 2L, "c", 3L, "d", 8L, "e", 4L);
    assertEquals(1 + 2 * 3 - 8 / 4, e.evaluate(v::get));
    assertEquals(List.of("a", "b", "c", "d", "e"), List.copyOf(e.names()));
    assertNull(e.evaluate(Map.of("a", 1L)::get));
    Axis.DimExpr div = (Axis.DimExpr) ShapeParser.parseShape("d_model/heads").axes().getFirst();
    IllegalArgumentException x =
        assertThrows(IllegalArgumentException.class, () -> div.evaluate(Map.of("d_model", 10L, "heads", 3L)::get));
    assertEquals("'d_model/heads': 10 is not divisible by 3 (dim arithmetic must be exact)", x.getMessage());
  }

  @Test
  void binOpRejectsTreesThatWouldNeedParentheses() {
    Axis.Name a = new Axis.Name("a", 0, 1);
    Axis.Name b = new Axis.Name("b", 0, 1);
    Axis.Name c = new Axis.Name("c", 0, 1);
    Axis.BinOp bc = new Axis.BinOp(Axis.Op.SUB, b, c, 0, 1);
    assertThrows(IllegalArgumentException.class, () -> new Axis.BinOp(Axis.Op.SUB, a, bc, 0, 1));
    assertThrows(IllegalArgumentException.class, () -> new Axis.BinOp(Axis.Op.MUL, bc, a, 0, 1));
  }

  @Test
  void patternTreeAndOffsets() {
    EinopsPattern p = ShapeParser.parsePattern("b s (h d) -> b h s d");
    assertEquals(10, p.arrow());
    assertEquals("b s (h d)", p.left().toString());
    assertEquals("b h s d", p.right().toString());
    assertEquals(0, p.left().start());
    assertEquals(9, p.left().end());
    assertEquals(13, p.right().start());
    assertEquals(20, p.right().end());
    assertEquals(new Axis.Name("d", 19, 20), p.right().axes().get(3));
    assertEquals("b s (h d) -> b h s d", p.toString());
    assertEquals("... -> (...)", ShapeParser.parsePattern("... -> (...)").toString());
    assertEquals(" -> ", ShapeParser.parsePattern("->").toString());
  }

  @Test
  void einsumTreeAndRoundTrip() {
    EinsumSpec e = ShapeParser.parseEinsum("... d_in, d_out d_in -> ... d_out");
    assertEquals(2, e.inputs().size());
    assertEquals("... d_in", e.inputs().get(0).toString());
    assertEquals("d_out d_in", e.inputs().get(1).toString());
    assertEquals("... d_out", e.output().toString());
    assertEquals(new Axis.Name("d_out", 10, 15), e.inputs().get(1).axes().get(0));
    assertEquals("... d_in, d_out d_in -> ... d_out", e.toString());
    assertEquals("a b, b c -> a c", ShapeParser.parseEinsum("a b,b c->a c").toString());
    // A repeated name in one operand is a diagonal; a scalar operand is an empty shape.
    assertEquals("i i -> i", ShapeParser.parseEinsum("i i -> i").toString());
    assertEquals("i,  -> i", ShapeParser.parseEinsum("i, -> i").toString());
    assertEquals("b i j, b j k, b k -> b i", ShapeParser.parseEinsum("b i j, b j k, b k -> b i").toString());
  }

  // ---------------------------------------------------------------- errors: exact offsets and messages

  private static void assertError(Consumer<String> parse, String src, int offset, String problem) {
    ShapeSyntaxException e = assertThrows(ShapeSyntaxException.class, () -> parse.accept(src), src);
    assertEquals(problem, e.problem(), src);
    assertEquals(offset, e.offset(), src);
    assertEquals(src, e.source());
  }

  private static void shapeError(String src, int offset, String problem) {
    assertError(ShapeParser::parseShape, src, offset, problem);
  }

  private static void patternError(String src, int offset, String problem) {
    assertError(ShapeParser::parsePattern, src, offset, problem);
  }

  private static void einsumError(String src, int offset, String problem) {
    assertError(ShapeParser::parseEinsum, src, offset, problem);
  }

  @Test
  void messageHasColumnAndCaret() {
    ShapeSyntaxException e = assertThrows(ShapeSyntaxException.class, () -> ShapeParser.parseShape("b (h d"));
    assertEquals("unclosed '(' at column 3\n  b (h d\n    ^", e.getMessage());
    assertEquals(3, e.column());
    ShapeSyntaxException t = assertThrows(ShapeSyntaxException.class, () -> ShapeParser.parseShape("\tb #"));
    assertEquals("unexpected character '#' at column 4\n  \tb #\n  \t  ^", t.getMessage());
  }

  @Test
  void shapeErrors() {
    shapeError("b (h d", 2, "unclosed '('");
    shapeError("b h d)", 5, "unmatched ')'");
    shapeError(") b", 0, "unmatched ')'");
    shapeError("... b ...", 6, "'...' appears twice in one shape (first at column 1)");
    shapeError("... (b ...)", 7, "'...' appears twice in one shape (first at column 1)");
    shapeError("(... b ...)", 7, "'...' appears twice in one shape (first at column 2)");
    shapeError("b (h (d))", 5, "groups do not nest: '(' inside a group (einops allows one level of parentheses)");
    shapeError("b .. d", 2, "expected '...' (three dots), found 2");
    shapeError("b ....", 2, "expected '...' (three dots), found 4");
    shapeError("b # d", 2, "unexpected character '#'");
    shapeError("b\u00e9", 1, "unexpected character U+00E9");
    shapeError("d+", 2, "expected a dim name or size after '+'");
    shapeError("d/ h", 2, "expected a dim name or size after '/'");
    shapeError("d - 1", 2, "'-' needs a dim name or size before it (write arithmetic without spaces: d+1)");
    shapeError("*d", 0, "'*' needs a dim name or size before it (write arithmetic without spaces: d+1)");
    shapeError("b 2d", 2, "a dim name cannot start with a digit: '2d'");
    shapeError("(a b)(c)", 5, "missing space between axes");
    shapeError("a...", 1, "missing space between axes");
    shapeError("99999999999999999999", 0, "size 99999999999999999999 is too large");
    shapeError("b -> c", 2, "a shape has no '->'; only a pattern (rearrange, repeat, reduce, einsum) does");
    shapeError("b, c", 1, "unexpected ',' in a shape (commas separate einsum operands)");
  }

  @Test
  void patternErrors() {
    patternError("b s d", 5, "missing '->' between the input and output shapes");
    patternError("a -> b -> c", 7, "second '->' in the pattern");
    patternError("a, b -> c", 1, "unexpected ',' in an einops pattern (commas separate einsum operands)");
    patternError("a -> b, c", 6, "unexpected ',' in an einops pattern (commas separate einsum operands)");
    patternError("b (h d -> b h d", 2, "unclosed '('");
    patternError("b h h -> b h", 4, "duplicate dim 'h' on the left side of the pattern (first at column 3)");
    patternError("b h -> b (h b)", 12, "duplicate dim 'b' on the right side of the pattern (first at column 8)");
    patternError("b -> b ...", 7, "'...' on the right side of the pattern but not on the left");
    patternError("b (...) -> b ...", 3, "'...' inside a group is only allowed on the right side of a pattern");
  }

  @Test
  void einsumErrors() {
    einsumError("a b, b c", 8, "missing '->' between the operands and the output");
    einsumError("a b -> a -> b", 9, "second '->' in the einsum spec");
    einsumError("a b -> a, b", 8, "the output is one shape; unexpected ','");
    einsumError("a (b c) -> a", 2, "groups are not allowed in an einsum spec; rearrange first");
    einsumError("a 1 -> a", 2, "einsum axes are names; got the size '1' (use rearrange for unit axes)");
    einsumError("a d/h -> a", 2, "einsum axes are names; got the arithmetic 'd/h'");
    einsumError("a b, b c -> a d", 14, "output dim 'd' appears in no operand");
    einsumError("a b -> a a", 9, "duplicate dim 'a' in the einsum output (first at column 8)");
    einsumError("a b -> ... a", 7, "'...' in the output but in no operand");
    einsumError("... a, a -> a", 9, "'...' in an operand but not in the output; name the dims to sum them over");
    einsumError("... a ..., a -> ... a", 6, "'...' appears twice in one shape (first at column 1)");
  }

  // ---------------------------------------------------------------- fuzz: parse or ShapeSyntaxException, nothing else

  @Test
  void randomStringsParseOrThrowShapeSyntaxException() {
    String alphabet = "ab_19 ().,->*/+-\t#é";
    Random rnd = new Random(20260501);
    int parsed = 0;
    for (int i = 0; i < 30_000; i++) {
      int len = rnd.nextInt(16);
      StringBuilder b = new StringBuilder();
      for (int j = 0; j < len; j++) {
        b.append(alphabet.charAt(rnd.nextInt(alphabet.length())));
      }
      String s = b.toString();
      for (int mode = 0; mode < 3; mode++) {
        try {
          String canonical =
              switch (mode) {
                case 0 -> ShapeParser.parseShape(s).toString();
                case 1 -> ShapeParser.parsePattern(s).toString();
                default -> ShapeParser.parseEinsum(s).toString();
              };
          parsed++;
          // Whatever parses must print to something that parses to the same text.
          String again =
              switch (mode) {
                case 0 -> ShapeParser.parseShape(canonical).toString();
                case 1 -> ShapeParser.parsePattern(canonical).toString();
                default -> ShapeParser.parseEinsum(canonical).toString();
              };
          assertEquals(canonical, again, "round trip of \"" + s + "\"");
        } catch (ShapeSyntaxException e) {
          assertTrue(e.offset() >= 0 && e.offset() <= s.length(), "offset in range for \"" + s + "\"");
          assertFalse(e.problem().isEmpty());
        } catch (RuntimeException e) {
          fail("\"" + s + "\" (mode " + mode + ") threw " + e, e);
        }
      }
    }
    // The alphabet is chosen so a fair share parses; a fuzz test where nothing parses would test only errors.
    assertTrue(parsed > 1000, "only " + parsed + " random strings parsed");
  }
}
