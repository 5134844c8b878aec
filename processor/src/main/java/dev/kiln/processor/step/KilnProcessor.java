package dev.kiln.processor.step;

import com.google.auto.service.AutoService;
import com.sun.source.util.Trees;
import dev.kiln.processor.analyze.Deferred;
import dev.kiln.processor.analyze.ModuleReader;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import javax.annotation.processing.AbstractProcessor;
import javax.annotation.processing.Processor;
import javax.annotation.processing.RoundEnvironment;
import javax.lang.model.SourceVersion;
import javax.lang.model.element.Element;
import javax.lang.model.element.TypeElement;
import javax.tools.Diagnostic;

/**
 * Kiln's annotation processor: checks every {@code @Module} record (pass 1 {@code analyze}, pass 2 {@code check}) and
 * generates its {@code Compiled<Module>} class, fused kernels and CUDA C (passes 3-5, {@link CodegenStep}).
 *
 * <p>Round discipline as AutoValue's: a module whose component types are not generated yet is deferred by name to
 * the next round; a module with errors is given up and the others are still processed; an internal crash is
 * reported with its stack trace on the module, then rethrown; the annotations are never claimed, so other
 * processors see them too.
 */
@AutoService(Processor.class)
public final class KilnProcessor extends AbstractProcessor {
  private static final String MODULE = "dev.kiln.dsl.Module";

  private final Set<String> deferred = new LinkedHashSet<>();
  private final Set<String> done = new LinkedHashSet<>();
  private ModuleReader reader;
  private Trees trees;
  private final java.util.Map<String, boolean[]> differentiable = CodegenStep.newCache();
  private final java.util.Map<String, CodegenStep.GemmFacts> gemmOperands = CodegenStep.newGemmCache();

  @Override
  public Set<String> getSupportedAnnotationTypes() {
    return Set.of(MODULE);
  }

  @Override
  public Set<String> getSupportedOptions() {
    return Set.of(TIMING);
  }

  /** {@code -Akiln.timing} prints, as a note, the time the processor itself took (all rounds). */
  static final String TIMING = "kiln.timing";

  private long nanos;
  private int modules;

  @Override
  public SourceVersion getSupportedSourceVersion() {
    return SourceVersion.latestSupported();
  }

  @Override
  public synchronized void init(javax.annotation.processing.ProcessingEnvironment env) {
    super.init(env);
    reader = new ModuleReader();
    trees = Trees.instance(env);
  }

  @Override
  public boolean process(Set<? extends TypeElement> annotations, RoundEnvironment round) {
    long start = System.nanoTime();
    try {
      return processTimed(round);
    } finally {
      nanos += System.nanoTime() - start;
      if (round.processingOver() && processingEnv.getOptions().containsKey(TIMING)) {
        processingEnv.getMessager().printMessage(Diagnostic.Kind.NOTE, String.format(
            "Kiln: %d module(s) checked and generated in %.0f ms", modules, nanos / 1e6));
      }
    }
  }

  private boolean processTimed(RoundEnvironment round) {
    List<TypeElement> todo = new ArrayList<>();
    for (String name : deferred) {
      TypeElement t = processingEnv.getElementUtils().getTypeElement(name);
      if (t != null) {
        todo.add(t);
      }
    }
    deferred.clear();
    TypeElement module = processingEnv.getElementUtils().getTypeElement(MODULE);
    if (module != null) {
      for (Element e : round.getElementsAnnotatedWith(module)) {
        if (e instanceof TypeElement t) {
          todo.add(t);
        }
      }
    }
    List<CodegenStep.Checked> clean = new ArrayList<>();
    for (TypeElement t : todo) {
      String name = t.getQualifiedName().toString();
      if (done.contains(name)) {
        continue;
      }
      try {
        ModuleStep.Result r = new ModuleStep(processingEnv, trees, reader).check(t);
        if (r.clean()) {
          clean.add(new CodegenStep.Checked(r.module(), t));
        }
        modules++;
        done.add(name);
      } catch (Deferred d) {
        deferred.add(name);
      } catch (RuntimeException | Error crash) {
        StringWriter w = new StringWriter();
        crash.printStackTrace(new PrintWriter(w));
        processingEnv.getMessager().printMessage(Diagnostic.Kind.ERROR,
            "[InternalError] Kiln's processor crashed while checking " + name + ": " + w, t);
        throw crash;
      }
    }
    try {
      new CodegenStep(processingEnv, reader, differentiable, gemmOperands).generate(clean);
    } catch (RuntimeException | Error crash) {
      StringWriter w = new StringWriter();
      crash.printStackTrace(new PrintWriter(w));
      processingEnv.getMessager().printMessage(Diagnostic.Kind.ERROR,
          "[InternalError] Kiln's processor crashed while generating code: " + w);
      throw crash;
    }
    if (round.processingOver() && !deferred.isEmpty()) {
      for (String name : deferred) {
        TypeElement t = processingEnv.getElementUtils().getTypeElement(name);
        processingEnv.getMessager().printMessage(Diagnostic.Kind.WARNING,
            "Kiln did not check " + name + " because it refers to types that were never generated", t);
      }
    }
    return false;
  }
}
