package dev.kiln.processor.step;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.Compiler;
import com.google.testing.compile.JavaFileObjects;
import com.sun.source.util.Trees;
import dev.kiln.processor.analyze.ModuleReader;
import dev.kiln.processor.fuse.AttentionLowering;
import dev.kiln.processor.gen.Generated;
import dev.kiln.processor.grad.Differentiator;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import javax.annotation.processing.AbstractProcessor;
import javax.annotation.processing.RoundEnvironment;
import javax.lang.model.SourceVersion;
import javax.lang.model.element.Element;
import javax.lang.model.element.TypeElement;
import javax.tools.JavaFileObject;
import org.junit.jupiter.api.Test;

/**
 * Fails when a primitive has no gradient test: every primitive must occur in the forward graph (after attention is
 * lowered) of a module whose generated backward {@code GeneratedModulesTest} checks against finite differences, and
 * every primitive only VJP rules make must occur in one of their backward graphs.
 */
class GradientCoverageTest {
  private static final Set<Primitive> BACKWARD_ONLY = EnumSet.of(Primitive.SUM_TO, Primitive.EXPAND,
      Primitive.SCATTER_ROWS, Primitive.SCATTER_LAST, Primitive.CROSS_ENTROPY_GRAD, Primitive.ATTENTION_DQ,
      Primitive.ATTENTION_DK,
      Primitive.ATTENTION_DV);

  private static final class Collect extends AbstractProcessor {
    final Set<Primitive> forward = EnumSet.noneOf(Primitive.class);
    final Set<Primitive> backward = EnumSet.noneOf(Primitive.class);

    @Override
    public Set<String> getSupportedAnnotationTypes() {
      return Set.of("dev.kiln.dsl.Module");
    }

    @Override
    public SourceVersion getSupportedSourceVersion() {
      return SourceVersion.latestSupported();
    }

    @Override
    public boolean process(Set<? extends TypeElement> annotations, RoundEnvironment round) {
      ModuleStep step = new ModuleStep(processingEnv, Trees.instance(processingEnv), new ModuleReader());
      for (TypeElement a : annotations) {
        for (Element e : round.getElementsAnnotatedWith(a)) {
          for (Graph g : step.check((TypeElement) e).module().graphs()) {
            AttentionLowering.run(g);
            collect(g.body(), forward);
            collect(new Differentiator(g.values(), c -> {
              boolean[] all = new boolean[c.args().size()];
              Arrays.fill(all, true);
              return all;
            }).run(g).block(), backward);
          }
        }
      }
      return false;
    }

    private static void collect(Block b, Set<Primitive> out) {
      for (Node n : b.nodes()) {
        switch (n) {
          case Node.Prim p -> out.add(p.op());
          case Node.Loop l -> collect(l.body(), out);
          case Node.LoopGrad l -> collect(l.body(), out);
          case Node.Branch br -> {
            collect(br.then(), out);
            collect(br.otherwise(), out);
          }
          default -> {}
        }
      }
    }
  }

  @Test
  void everyPrimitiveHasAGradientTest() {
    List<JavaFileObject> sources = new ArrayList<>();
    for (String f : Generated.FIXTURES) {
      sources.add(JavaFileObjects.forResource(f));
    }
    Collect c = new Collect();
    Compilation comp = Compiler.javac().withProcessors(c).compile(sources);
    assertEquals(Compilation.Status.SUCCESS, comp.status(), comp.diagnostics()::toString);
    Set<Primitive> missing = EnumSet.allOf(Primitive.class);
    missing.removeAll(BACKWARD_ONLY);
    // IOTA builds the causal mask inside the attention composite, which lowering always replaces by ATTENTION before
    // differentiation: it never reaches gradients or generated code.
    missing.remove(Primitive.IOTA);
    missing.removeAll(c.forward);
    assertEquals(Set.of(), missing, "primitives that no gradient-checked fixture uses; add one to prims/");
    Set<Primitive> missingBackward = EnumSet.copyOf(BACKWARD_ONLY);
    missingBackward.removeAll(c.backward);
    assertEquals(Set.of(), missingBackward, "backward-only primitives that no checked backward uses");
  }
}
