package dev.kiln.processor.ir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.ShapeParser;
import org.junit.jupiter.api.Test;

/** The normal form of symbolic dims: equal sizes compare equal, whatever way they were written. */
class DimTest {
  private static Dim parse(String s) {
    return Dim.of((Axis.DimExpr) ShapeParser.parseShape(s).axes().get(0), Dim::sym);
  }

  @Test
  void groupsAndQuotientsCancel() {
    Dim heads = Dim.sym("heads");
    assertEquals(Dim.sym("d_model"), heads.times(parse("d_model/heads")));
    assertEquals(parse("d"), parse("2*d/2"));
    assertEquals(parse("d+1"), parse("1+d"));
    assertEquals(Dim.of(6), parse("2*3"));
    assertNotEquals(parse("d_model"), parse("d_ff"));
    assertEquals("d_model/heads", parse("d_model/heads").toString());
    assertEquals("2*d+1", parse("2*d+1").toString());
  }

  @Test
  void solvesOneUnknownOfAProduct() {
    Dim product = Dim.sym("h").times(Dim.sym("'d"));
    assertEquals(parse("d_model/h"), product.solveFor("'d", Dim.sym("d_model")));
    assertNull(parse("a+b").solveFor("a", Dim.of(3)));
  }

  @Test
  void substitutionRenormalises() {
    Dim d = parse("d_model/heads");
    assertEquals(Dim.of(64), d.subst(s -> s.equals("d_model") ? Dim.of(512) : s.equals("heads") ? Dim.of(8) : null));
    assertEquals(Dim.sym("x"), Dim.sym("x").subst(s -> null));
  }
}
