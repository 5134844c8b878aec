package dev.kiln.processor.step;

import com.sun.source.tree.MethodTree;
import com.sun.source.util.TreePath;
import com.sun.source.util.Trees;
import dev.kiln.processor.analyze.BodyWalker;
import dev.kiln.processor.analyze.ModuleReader;
import dev.kiln.processor.check.ShapeChecker;
import dev.kiln.processor.diag.Report;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import javax.annotation.processing.ProcessingEnvironment;
import javax.lang.model.element.Element;
import javax.lang.model.element.ExecutableElement;
import javax.lang.model.element.TypeElement;

/** Runs passes 1 and 2 over one module and prints its report; {@link CodegenStep} runs on the clean ones. */
final class ModuleStep {
  // Package-private: the step test drives it directly to inspect the IR.
  private final ProcessingEnvironment env;
  private final Trees trees;
  private final ModuleReader reader;

  ModuleStep(ProcessingEnvironment env, Trees trees, ModuleReader reader) {
    this.env = env;
    this.trees = trees;
    this.reader = reader;
  }

  /** The passes' result for one module: its IR and its report (already printed). */
  ModuleIr process(TypeElement type) {
    return check(type).module();
  }

  /** The checked module and whether it is free of errors (so code may be generated from it). */
  record Result(ModuleIr module, boolean clean) {}

  Result check(TypeElement type) {
    Report report = new Report();
    ModuleIr module = reader.read(type, report);
    if (!report.hasErrors()) {
      for (Element e : type.getEnclosedElements()) {
        if (!(e instanceof ExecutableElement m)) {
          continue;
        }
        ModuleIr.Signature sig = null;
        Graph.Kind kind = null;
        if (module.forward() != null && m.getSimpleName().contentEquals(module.forward().method())
            && m.getAnnotation(dev.kiln.dsl.Forward.class) != null) {
          sig = module.forward();
          kind = Graph.Kind.FORWARD;
        } else if (module.loss() != null && m.getSimpleName().contentEquals(module.loss().method())
            && m.getAnnotation(dev.kiln.dsl.Loss.class) != null) {
          sig = module.loss();
          kind = Graph.Kind.LOSS;
        }
        TreePath path = sig == null ? null : trees.getPath(m);
        if (path == null || !(path.getLeaf() instanceof MethodTree mt) || mt.getBody() == null) {
          continue; // a compiled class has no body to read
        }
        Graph g = new BodyWalker(module, type, path.getCompilationUnit(), report).walk(m, mt, sig, kind);
        if (g != null) {
          new ShapeChecker(module, g, report, reader, env.getElementUtils()).check();
          module.graphs().add(g);
        }
      }
    }
    report.printTo(env.getMessager(), trees);
    return new Result(module, !report.hasErrors());
  }
}
