package dev.kiln.processor.step;

import com.palantir.javapoet.ClassName;
import dev.kiln.processor.analyze.ModuleReader;
import dev.kiln.processor.diag.Id;
import dev.kiln.processor.diag.Pos;
import dev.kiln.processor.diag.Report;
import dev.kiln.processor.emit.GeneratedFiles;
import dev.kiln.processor.emit.cuda.CudaEmitter;
import dev.kiln.processor.emit.java.KernelJavaEmitter;
import dev.kiln.processor.emit.java.ModuleEmitter;
import dev.kiln.processor.fuse.AttentionLowering;
import dev.kiln.processor.fuse.CallGradAddends;
import dev.kiln.processor.fuse.ColumnSums;
import dev.kiln.processor.fuse.GemmOperands;
import dev.kiln.processor.fuse.Lowering;
import dev.kiln.processor.fuse.LoweringException;
import dev.kiln.processor.grad.Differentiator;
import dev.kiln.processor.grad.GradException;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.annotation.processing.ProcessingEnvironment;
import javax.lang.model.element.Element;
import javax.lang.model.element.TypeElement;
import javax.lang.model.element.VariableElement;

/**
 * Passes 3 to 5 for the modules of one round that checked clean, callees before callers (a caller's gradient needs
 * to know which inputs of its callees are differentiable): grad, lower/fuse, emit.
 */
final class CodegenStep {
  /** A module that passed the checks. */
  record Checked(ModuleIr module, TypeElement type) {}

  private final ProcessingEnvironment env;
  private final ModuleReader reader;
  private final Map<String, boolean[]> differentiable;
  private final Map<String, GemmFacts> gemmOperands;
  /** Per module of this round: whether its backward has the form that adds to its input gradients. */
  private final Map<String, Boolean> addsGradients = new HashMap<>();
  private final GeneratedFiles files;

  /** What a module's GEMMs read: which forward inputs only GEMMs read, and whether only GEMMs read dOut. */
  record GemmFacts(boolean[] inputs, boolean gradient, boolean bf16Gradient) {}

  CodegenStep(ProcessingEnvironment env, ModuleReader reader, Map<String, boolean[]> differentiable,
      Map<String, GemmFacts> gemmOperands) {
    this.env = env;
    this.reader = reader;
    this.differentiable = differentiable;
    this.gemmOperands = gemmOperands;
    this.files = new GeneratedFiles(env.getFiler());
  }

  void generate(List<Checked> modules) {
    Map<String, Checked> byName = new LinkedHashMap<>();
    for (Checked c : modules) {
      byName.put(c.module().type(), c);
    }
    Set<String> done = new LinkedHashSet<>();
    for (Checked c : modules) {
      visit(c, byName, done, new LinkedHashSet<>());
    }
  }

  private void visit(Checked c, Map<String, Checked> byName, Set<String> done, Set<String> path) {
    String name = c.module().type();
    if (done.contains(name) || !path.add(name)) {
      return;
    }
    for (String callee : callees(c.module())) {
      Checked d = byName.get(callee);
      if (d != null) {
        visit(d, byName, done, path);
      }
    }
    done.add(name);
    one(c);
  }

  private static Set<String> callees(ModuleIr m) {
    Set<String> out = new LinkedHashSet<>();
    for (Graph g : m.graphs()) {
      callees(g.body(), m, out);
    }
    return out;
  }

  private static void callees(Block b, ModuleIr m, Set<String> out) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Call c when c.component() != null -> out.add(c.calleeType());
        case Node.Loop l -> callees(l.body(), m, out);
        case Node.Branch br -> {
          callees(br.then(), m, out);
          callees(br.otherwise(), m, out);
        }
        default -> {}
      }
    }
  }

  /** Which inputs a callee's backward returns a gradient for. */
  private boolean[] differentiableArgs(Node.Call c, ModuleIr self) {
    String type = c.component() == null ? self.type() : c.calleeType();
    boolean[] known = differentiable.get(type);
    if (known != null) {
      return known;
    }
    CompiledCallee compiled = compiledCallee(type);
    boolean[] all = compiled == null ? null : compiled.namedInputs("DIFFERENTIABLE_INPUTS", c.args().size());
    if (all == null) {
      all = new boolean[c.args().size()];
      Arrays.fill(all, true);
    }
    return all;
  }

  /**
   * What a callee's GEMMs read: from this round's analysis, else from the constants of its compiled class (a module
   * of another compilation), else nothing (every read counts as a read in full precision).
   */
  private GemmFacts gemmFacts(Node.Call c) {
    GemmFacts known = gemmOperands.get(c.calleeType());
    if (known != null) {
      return known;
    }
    CompiledCallee compiled = compiledCallee(c.calleeType());
    boolean[] inputs = compiled == null ? null : compiled.namedInputs(ModuleEmitter.GEMM_OPERAND_INPUTS,
        c.args().size());
    return new GemmFacts(inputs == null ? new boolean[c.args().size()] : inputs,
        compiled != null && compiled.constant(ModuleEmitter.GEMM_OPERAND_GRADIENT) instanceof Boolean b && b,
        compiled != null && compiled.constant(ModuleEmitter.BF16_GRADIENT) instanceof Boolean b16 && b16);
  }

  /** A callee compiled in an earlier compilation: its forward's parameter names and its generated class. */
  private record CompiledCallee(List<String> paramNames, TypeElement compiled) {
    /** The value of the generated class's constant {@code name}, or null. */
    Object constant(String name) {
      for (Element e : compiled.getEnclosedElements()) {
        if (e instanceof VariableElement v && v.getSimpleName().contentEquals(name)) {
          return v.getConstantValue();
        }
      }
      return null;
    }

    /** Per argument, whether the constant {@code name} (comma-separated input names) lists it; null without it. */
    boolean[] namedInputs(String name, int args) {
      if (!(constant(name) instanceof String s)) {
        return null;
      }
      List<String> names = Arrays.asList(s.split(","));
      boolean[] out = new boolean[args];
      for (int i = 0; i < args && i < paramNames.size(); i++) {
        out[i] = names.contains(paramNames.get(i));
      }
      return out;
    }
  }

  private CompiledCallee compiledCallee(String type) {
    TypeElement te = env.getElementUtils().getTypeElement(type);
    ModuleIr callee = te == null ? null : reader.callee(te);
    TypeElement compiled = te == null ? null : env.getElementUtils().getTypeElement(
        ModuleEmitter.compiledName(type, ClassName.get(te)).canonicalName());
    return compiled != null && callee != null && callee.forward() != null
        ? new CompiledCallee(callee.forward().paramNames(), compiled) : null;
  }

  private void one(Checked c) {
    ModuleIr m = c.module();
    Report report = new Report();
    try {
      List<Graph> graphs = new ArrayList<>(m.graphs());
      graphs.sort(Comparator.comparing(Graph::kind));
      if (graphs.isEmpty() || graphs.get(0).kind() != Graph.Kind.FORWARD) {
        return; // no body to compile (a module from a class file)
      }
      List<Lowering.Result> lowered = new ArrayList<>();
      Lowering.Result adding = null;
      for (Graph g : graphs) {
        AttentionLowering.run(g);
        Differentiator.Backward b = new Differentiator(g.values(), call -> differentiableArgs(call, m)).run(g);
        Differentiator.Backward plus = null;
        Graph plusGraph = null;
        if (g.kind() == Graph.Kind.FORWARD) {
          boolean[] diff = new boolean[g.inputs().size()];
          for (int i = 0; i < diff.length; i++) {
            diff[i] = b.inputGrads().get(i) != null;
          }
          differentiable.put(m.type(), diff);
          if (b.inputGrads().stream().anyMatch(java.util.Objects::nonNull)) {
            // On a copy of the forward, differentiated before it is lowered: lowering rewrites the graph's blocks,
            // and only the plain lowering's forward is emitted.
            plusGraph = g.copy();
            plus = new Differentiator(g.values(), call -> differentiableArgs(call, m)).run(plusGraph, diff);
          }
        }
        CallGradAddends.run(b.block(), call -> addsToGradients(call) ? differentiableArgs(call, m) : null);
        Lowering.Result r = lower(m.simpleName() + "_" + g.method(), g, b);
        if (g.kind() == Graph.Kind.FORWARD) {
          gemmOperands.put(m.type(), new GemmFacts(r.gemmOperandInputs, r.gemmOperandGradient, r.bf16Gradient));
        }
        lowered.add(r);
        if (plus != null) {
          CallGradAddends.run(plus.block(), call -> addsToGradients(call) ? differentiableArgs(call, m) : null);
          Lowering.Result rp = lower(m.simpleName() + "_" + g.method() + "Plus", plusGraph, plus);
          // Worth a method only where every add fused into a kernel the plain backward runs anyway, and the
          // forward saves all that it reads.
          if (rp.backwardKernels.size() == r.backwardKernels.size() && rp.saved.equals(r.saved)
              && addsFused(rp, plus.block())) {
            adding = rp;
          }
        }
      }
      addsGradients.put(m.type(), adding != null);
      ModuleEmitter emitter = new ModuleEmitter(m, c.type(), lowered, adding, new ModuleEmitter.Callees() {
        @Override
        public ModuleIr module(String qualifiedType) {
          return reader.callee(env.getElementUtils().getTypeElement(qualifiedType));
        }

        @Override
        public ClassName className(String qualifiedType) {
          TypeElement te = env.getElementUtils().getTypeElement(qualifiedType.replace('$', '.'));
          return te == null ? ClassName.bestGuess(qualifiedType) : ClassName.get(te);
        }
      });
      String pkg = emitter.compiledClass().packageName();
      files.writeJava(pkg, emitter.type(), c.type());
      if (!emitter.kernels().isEmpty()) {
        files.writeJava(pkg, KernelJavaEmitter.type(emitter.kernelsClass().simpleName(), emitter.kernels()), c.type());
        files.writeResource(emitter.cudaResource(), CudaEmitter.source(m.type(), emitter.kernels()), c.type());
      }
    } catch (GradException | LoweringException e) {
      report.add(Id.UnsupportedConstruct, new Pos.OnElement(c.type()), e.getMessage());
    }
    report.printTo(env.getMessager(), com.sun.source.util.Trees.instance(env));
  }

  /** Whether every node of {@code b} (nested blocks too) that reads a seed belongs to one of {@code r}'s kernels. */
  private static boolean addsFused(Lowering.Result r, Block b) {
    Set<dev.kiln.processor.ir.Value> seeds = new java.util.HashSet<>(r.backward.seeds());
    seeds.remove(null);
    for (Node n : b.nodes()) {
      boolean ok = switch (n) {
        case Node.Prim p -> p.inputs().stream().noneMatch(seeds::contains) || r.kernelOf.containsKey(p);
        case Node.Branch br -> addsFused(r, br.then()) && addsFused(r, br.otherwise());
        case Node.LoopGrad l -> l.init().stream().noneMatch(seeds::contains) && addsFused(r, l.body());
        case Node.CallGrad g -> g.reads().stream().noneMatch(seeds::contains);
        case Node.ParamGrad g -> !seeds.contains(g.grad());
        default -> true;
      };
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  private Lowering.Result lower(String prefix, Graph g, Differentiator.Backward b) {
    Lowering.Result r = Lowering.run(prefix, g, b);
    GemmOperands.run(r, new GemmOperands.Callees() {
      @Override
      public boolean[] arguments(Node.Call call) {
        return gemmFacts(call).inputs();
      }

      @Override
      public boolean resultGradient(Node.Call call) {
        return gemmFacts(call).gradient();
      }

      @Override
      public boolean bf16Gradient(Node.Call call) {
        return gemmFacts(call).bf16Gradient();
      }
    });
    ColumnSums.run(r);
    return r;
  }

  /**
   * Whether a callee's backward has the form that adds to its arguments' gradients itself ({@code backward(ctx,
   * params, dOut, plus...)}, one addend per differentiable input): from this round, else from its compiled class.
   */
  private boolean addsToGradients(Node.Call c) {
    if (c.component() == null) {
      return false; // a call of this module's own forward (the loss's): its backward is emitted alongside
    }
    Boolean known = addsGradients.get(c.calleeType());
    if (known != null) {
      return known;
    }
    CompiledCallee compiled = compiledCallee(c.calleeType());
    return compiled != null && compiled.constant(ModuleEmitter.ADDS_TO_INPUT_GRADIENTS) instanceof Boolean b && b;
  }

  static Map<String, boolean[]> newCache() {
    return new HashMap<>();
  }

  static Map<String, GemmFacts> newGemmCache() {
    return new HashMap<>();
  }
}
