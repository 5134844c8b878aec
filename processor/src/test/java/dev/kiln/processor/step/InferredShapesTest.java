package dev.kiln.processor.step;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.Compiler;
import com.google.testing.compile.JavaFileObjects;
import com.sun.source.util.Trees;
import dev.kiln.processor.analyze.ModuleReader;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.annotation.processing.AbstractProcessor;
import javax.annotation.processing.RoundEnvironment;
import javax.lang.model.SourceVersion;
import javax.lang.model.element.Element;
import javax.lang.model.element.TypeElement;
import javax.tools.JavaFileObject;
import org.junit.jupiter.api.Test;

/**
 * The check pass does more than stay quiet on correct code: it infers the shapes the CS336 modules compute. The
 * expected shapes are worked out by hand from the modules' declarations.
 */
class InferredShapesTest {
  /** Runs the passes and keeps the IR. */
  private static final class Capture extends AbstractProcessor {
    final Map<String, ModuleIr> modules = new LinkedHashMap<>();

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
          ModuleIr m = step.process((TypeElement) e);
          modules.put(m.simpleName(), m);
        }
      }
      return false;
    }
  }

  private static Map<String, ModuleIr> compileCs336() {
    List<JavaFileObject> sources = new ArrayList<>();
    for (String n : List.of("Linear", "Embedding", "RmsNorm", "SwiGlu", "Rope", "MultiHeadSelfAttention",
        "TransformerBlock", "TransformerLm", "Mlp")) {
      sources.add(JavaFileObjects.forResource("cs336/" + n + ".java"));
    }
    Capture capture = new Capture();
    Compilation c = Compiler.javac().withProcessors(capture).compile(sources);
    assertEquals(Compilation.Status.SUCCESS, c.status(), () -> c.diagnostics().toString());
    return capture.modules;
  }

  /** The shape of every sub-module call result in the forward graph, by source text. */
  private static Map<String, String> callShapes(ModuleIr m) {
    Map<String, String> out = new LinkedHashMap<>();
    collect(m.graphs().get(0).body(), out);
    return out;
  }

  private static void collect(Block b, Map<String, String> out) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Call c -> out.put(c.out().label(), String.valueOf(c.out().shape()));
        case Node.Loop l -> collect(l.body(), out);
        case Node.Branch br -> {
          collect(br.then(), out);
          collect(br.otherwise(), out);
        }
        default -> {}
      }
    }
  }

  @Test
  void inferredShapesOfTheCs336Modules() {
    Map<String, ModuleIr> ms = compileCs336();

    Map<String, String> swiglu = callShapes(ms.get("SwiGlu"));
    assertEquals("... d_ff", swiglu.get("w1.apply(x)"));
    assertEquals("... d_model", swiglu.get("w2.apply(silu(w1.apply(x)).mul(w3.apply(x)))"));

    // Labels are the source text, cut at 60 characters. Heads come from size("h", numHeads): the config key num_heads; d_head is what is left of d_model.
    Map<String, String> attn = callShapes(ms.get("MultiHeadSelfAttention"));
    assertEquals("... s d_model", attn.get("qProj.apply(x)"), attn::toString);
    assertEquals("... num_heads s (d_model/num_heads)",
        attn.get("rope.apply(rearrange(qProj.apply(x), SPLIT, size(\"h\", num..."), attn::toString);

    Map<String, String> lm = callShapes(ms.get("TransformerLm"));
    assertEquals("b s d_model", lm.get("tokenEmbeddings.apply(tokenIds)"));
    assertEquals("b s d_model", lm.get("layer.apply(x, positions)"));
    assertEquals("b s vocab_size", lm.get("lmHead.apply(lnFinal.apply(x))"));

    Graph loss = ms.get("TransformerLm").graphs().get(1);
    assertEquals(Graph.Kind.LOSS, loss.kind());
    assertEquals("", String.valueOf(loss.body().results().get(0).shape()));

    // Every module with a body produced a graph, and no check was left for run time in these modules.
    for (ModuleIr m : ms.values()) {
      assertTrue(!m.graphs().isEmpty(), m.simpleName());
      for (Graph g : m.graphs()) {
        assertEquals(List.of(), g.checks().stream().filter(k -> !k.message().contains("divisible")).toList(),
            m.simpleName());
      }
    }
  }
}
