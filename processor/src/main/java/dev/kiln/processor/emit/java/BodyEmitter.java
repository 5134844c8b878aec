package dev.kiln.processor.emit.java;

import dev.kiln.processor.fuse.FusedKernel;
import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.fuse.GemmOperands;
import dev.kiln.processor.fuse.GemmPlan;
import dev.kiln.processor.fuse.Lowering;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Cond;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import dev.kiln.processor.ir.Value;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Writes the statements of one generated {@code forward} or {@code backward} method: one device call (or one fused
 * kernel launch, or one GEMM) per line, each local commented with its shape and the source it computes.
 */
final class BodyEmitter {
  /** What the emitter needs from the class it writes into. */
  interface Host {
    /** The name of a static {@code EinopsPlan} constant for {@code pattern}. */
    String plan(String pattern);

    /** The name of the static {@code Kernel} constant of {@code k}. */
    String kernel(FusedKernel k);

    /** The field holding the compiled class of a sub-module component. */
    String subField(String component);

    /** The Java type of the record of a component (the callee's record type). */
    String componentType(String component);

    /** Forward input names of the module a call goes to. */
    List<String> calleeInputs(Node.Call c);

    /** The Java type of the {@code Gradients} record of the module a call goes to. */
    String calleeGradients(Node.Call c);

    /** The Java expression of an enum hyper-parameter's constant. */
    /**
     * The test that enum hyper-parameter {@code component} (read as {@code params$.component()}) is {@code constant}:
     * a Java expression valid in a generated method, where the field {@code dev} hides a package named {@code dev}.
     */
    String enumIs(String component, String constant);

    /** The accessor of a hyper-parameter whose config key is {@code key} (for sizes), or null. */
    String hyperByKey(String key);
  }

  private final ModuleIr module;
  private final Lowering.Result plan;
  private final Host host;
  private final boolean backward;
  private final StringBuilder out = new StringBuilder();
  private final Map<Value, String> names = new HashMap<>();
  private final Deque<Set<Value>> scopes = new ArrayDeque<>();
  private final Map<Value, Node.Loop> forwardLoopOf = new IdentityHashMap<>();
  private final Set<Value> paramReads = new HashSet<>();
  private final Map<Value, Node.ParamRead> paramReadOf = new HashMap<>();
  /**
   * Context keys of sub-module calls, by the call's result: CSE rebuilds a forward {@code Call} record when it rewrites
   * inputs of its block, while the backward's {@code CallGrad} still holds the record from before, so the node itself
   * is no key; its result value is the same in both.
   */
  private final Map<Value, String> callKeys = new IdentityHashMap<>();
  private final Map<String, String> attentionGrads = new HashMap<>();
  private final Set<Value> constUsedOutsideKernels = new HashSet<>();
  private String indent = "";
  private String ctx = "ctx$";
  private String loopIndex;
  private int temps;

  BodyEmitter(ModuleIr module, Lowering.Result plan, Host host, boolean backward) {
    this.module = module;
    this.plan = plan;
    this.host = host;
    this.backward = backward;
    scopes.push(new HashSet<>());
    for (Graph.Input in : plan.graph.inputs()) {
      names.put(in.value(), in.name());
    }
    index(plan.graph.body(), null);
    callKeys(plan.graph.body(), new HashMap<>());
    constUses(plan.graph.body());
    constUses(plan.backward.block());
  }

  private void index(Block b, Node.Loop loop) {
    for (Node n : b.nodes()) {
      if (loop != null) {
        for (Value v : n.outputs()) {
          forwardLoopOf.put(v, loop);
        }
      }
      switch (n) {
        case Node.ParamRead r -> {
          paramReads.add(r.out());
          paramReadOf.put(r.out(), r);
        }
        case Node.Loop l -> {
          for (Value p : l.body().params()) {
            forwardLoopOf.put(p, l);
          }
          index(l.body(), l);
        }
        case Node.Branch br -> {
          index(br.then(), loop);
          index(br.otherwise(), loop);
        }
        default -> {}
      }
    }
  }

  /** Each call site gets its own child context: a component called twice ({@code rope} on q and k) saves twice. */
  private void callKeys(Block b, Map<String, Integer> seen) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Call c -> {
          String base = c.component() == null ? "self" : toSnake(c.component());
          int k = seen.merge(base, 1, Integer::sum) - 1;
          callKeys.put(c.out(), k == 0 ? base : base + "#" + k);
        }
        case Node.Loop l -> callKeys(l.body(), seen);
        case Node.Branch br -> {
          // Both branches may call the same component; only one runs, so they may share keys.
          callKeys(br.then(), new HashMap<>(seen));
          callKeys(br.otherwise(), new HashMap<>(seen));
        }
        default -> {}
      }
    }
  }

  private void constUses(Block b) {
    for (Node n : b.nodes()) {
      boolean inKernel = n instanceof Node.Prim p && plan.kernelOf.containsKey(p);
      if (!inKernel) {
        for (Value v : inputsOf(n)) {
          constUsedOutsideKernels.add(v);
        }
      }
      switch (n) {
        case Node.Loop l -> constUses(l.body());
        case Node.LoopGrad l -> constUses(l.body());
        case Node.Branch br -> {
          constUses(br.then());
          constUses(br.otherwise());
        }
        default -> {}
      }
    }
    constUsedOutsideKernels.addAll(b.results());
  }

  private static List<Value> inputsOf(Node n) {
    return switch (n) {
      case Node.Prim p -> p.inputs();
      case Node.Call c -> c.args();
      case Node.Loop l -> l.init();
      case Node.CallGrad g -> g.reads();
      case Node.LoopGrad l -> l.init();
      case Node.ParamGrad g -> List.of(g.grad());
      default -> List.of();
    };
  }

  static String toSnake(String camel) {
    StringBuilder b = new StringBuilder();
    for (char ch : camel.toCharArray()) {
      if (Character.isUpperCase(ch)) {
        b.append('_').append(Character.toLowerCase(ch));
      } else {
        b.append(ch);
      }
    }
    return b.toString();
  }

  // ---- output

  String code() {
    return out.toString();
  }

  private void line(String s) {
    out.append(indent).append(s).append('\n');
  }

  void name(Value v, String n) {
    names.put(v, n);
    declare(v);
  }

  private String nameOf(Value v) {
    return names.computeIfAbsent(v, x -> "v" + x.id() + "$");
  }

  private void declare(Value v) {
    scopes.peek().add(v);
  }

  private boolean declared(Value v) {
    for (Set<Value> s : scopes) {
      if (s.contains(v)) {
        return true;
      }
    }
    return false;
  }

  private static String comment(Value v) {
    String label = v.label().replace('\n', ' ');
    return " // '" + v.shape() + "'  " + (label.length() > 70 ? label.substring(0, 67) + "..." : label);
  }

  // ---- reading values: forward values in backward come from the context

  /** The code reading {@code v}'s contents, loading it first when backward reads a forward value. */
  String ref(Value v) {
    if (declared(v)) {
      return nameOf(v);
    }
    if (paramReads.contains(v)) {
      return "params$." + paramReadOf.get(v).component() + "()";
    }
    if (!backward) {
      throw new IllegalStateException("value " + v + " (" + v.label() + ") is used before it is defined");
    }
    Lowering.Save how = plan.saved.get(v);
    if (how != Lowering.Save.TENSOR) {
      throw new IllegalStateException("backward reads " + v + " (" + v.label() + ") that forward did not save");
    }
    line("Tensor " + nameOf(v) + " = " + savedContext(v) + ".saved(\"" + key(v) + "\");" + comment(v));
    declare(v);
    return nameOf(v);
  }

  /** The code of {@code v}'s shape ({@code long[]}). */
  String shapeOf(Value v) {
    FusedKernel k = internal(v);
    if (k != null && !declared(v)) {
      return kernelShape(k, k.levels().get(v));
    }
    if (declared(v) || paramReads.contains(v) || !backward) {
      return ref(v) + ".shape()";
    }
    if (plan.saved.get(v) == Lowering.Save.TENSOR) {
      return ref(v) + ".shape()";
    }
    String n = "s" + v.id() + "$";
    if (!shapeLoaded.contains(v)) {
      line("long[] " + n + " = " + savedContext(v) + ".savedShape(\"" + key(v) + "\");" + comment(v));
      shapeLoaded.add(v);
    }
    return n;
  }

  private final Set<Value> shapeLoaded = new HashSet<>();

  /** The kernel of this method that computes {@code v} without writing it out, or null. */
  private FusedKernel internal(Value v) {
    for (FusedKernel k : backward ? plan.backwardKernels : plan.forwardKernels) {
      if (k.levels().containsKey(v) && !k.outputs().containsKey(v)) {
        return k;
      }
    }
    return null;
  }

  /** The shape of a value at {@code level} of kernel {@code k}: its domain's, or the domain's rows. */
  private String kernelShape(FusedKernel k, Level level) {
    String s = shapeOf(k.domainSource());
    return level == Level.ROW ? "Sizes.cat(Sizes.range(" + s + ", 0, " + s + ".length - 1), new long[] {1})" : s;
  }

  private String savedContext(Value v) {
    Node.Loop l = forwardLoopOf.get(v);
    return l == null ? "ctx$" : "lctx$";
  }

  private static String key(Value v) {
    return "v" + v.id();
  }

  /** In forward, saves what backward reads right after it is made. */
  private void save(Value v) {
    if (backward) {
      return;
    }
    Lowering.Save how = plan.saved.get(v);
    if (how == Lowering.Save.TENSOR && !paramReads.contains(v)) {
      line(ctx + ".save(\"" + key(v) + "\", " + nameOf(v) + ");");
    } else if (how == Lowering.Save.SHAPE) {
      line(ctx + ".saveShape(\"" + key(v) + "\", " + nameOf(v) + ".shape());");
    }
  }

  /**
   * The shape facts the check pass could not prove, checked with its message before anything runs. A fact is
   * checked when every dim it names can be read here: from an input's shape, a parameter's shape or an int
   * hyper-parameter; the others (dims inside a {@code ...} of unknown length) are left to the device's own checks.
   */
  int checks(List<dev.kiln.processor.ir.RuntimeCheck> checks) {
    Map<String, String> env = new HashMap<>();
    for (Graph.Input in : plan.graph.inputs()) {
      dev.kiln.processor.ir.Shape s = in.declared();
      int after = s.hasRest() ? s.dims().size() - s.restAt() : 0;
      for (int j = 0; j < s.dims().size(); j++) {
        String sym = s.dims().get(j).asSymbol();
        if (sym != null && !env.containsKey(sym)) {
          boolean before = !s.hasRest() || j < s.restAt();
          env.put(sym, before ? in.name() + ".shape()[" + j + "]"
              : "Sizes.size(" + in.name() + ".shape(), " + (j - s.restAt() - after) + ")");
        }
      }
    }
    for (ModuleIr.Component c : module.components().values()) {
      if (c instanceof ModuleIr.ParamTensor p) {
        for (int j = 0; j < p.shape().dims().size(); j++) {
          String sym = p.shape().dims().get(j).asSymbol();
          if (sym != null) {
            env.putIfAbsent(sym, "params$." + p.name() + "().shape()[" + j + "]");
          }
        }
      }
      if (c instanceof ModuleIr.Hyper h && h.kind() == ModuleIr.HyperKind.INT) {
        env.putIfAbsent(h.configKey(), "params$." + h.name() + "()");
      }
    }
    int emitted = 0;
    for (dev.kiln.processor.ir.RuntimeCheck k : checks) {
      if (k.kind() == dev.kiln.processor.ir.RuntimeCheck.Kind.RANK || !env.keySet().containsAll(k.left().symbols())
          || !env.keySet().containsAll(k.right().symbols())) {
        continue;
      }
      String l = k.left().toJava(env::get);
      String r = k.right().toJava(env::get);
      String msg = "\"[RuntimeCheck] " + k.message().replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")
          + "\"";
      line(k.kind() == dev.kiln.processor.ir.RuntimeCheck.Kind.EQUAL ? "Sizes.check(" + l + ", " + r + ", " + msg + ");"
          : "Sizes.checkDivides(" + l + ", " + r + ", " + msg + ");");
      emitted++;
    }
    return emitted;
  }

  void saveInputs() {
    for (Graph.Input in : plan.graph.inputs()) {
      declare(in.value());
      save(in.value());
    }
  }

  // ---- scalars, dims, conditions

  String scalar(Scalar s) {
    return switch (s) {
      case Scalar.Lit l -> literal(l.value());
      case Scalar.Hyper h -> "params$." + h.component() + "()";
      case Scalar.AxisSize a -> "(double) Sizes.size(" + shapeOf(a.value()) + ", " + a.axis() + ")";
      case Scalar.Count c -> "(double) Sizes.count(" + shapeOf(c.value()) + ")";
      case Scalar.Op o -> switch (o.op()) {
        case "ln" -> "Math.log(" + scalar(o.left()) + ")";
        case "sqrt" -> "Math.sqrt(" + scalar(o.left()) + ")";
        case "/" -> "Sizes.div(" + scalar(o.left()) + ", " + scalar(o.right()) + ")";
        default -> "(" + scalar(o.left()) + " " + o.op() + " " + scalar(o.right()) + ")";
      };
    };
  }

  private static String literal(double v) {
    if (Double.isInfinite(v)) {
      return v > 0 ? "Double.POSITIVE_INFINITY" : "Double.NEGATIVE_INFINITY";
    }
    return Double.toString(v);
  }

  String dim(Dim d) {
    return d.toJava(sym -> {
      String h = host.hyperByKey(sym);
      if (h == null) {
        throw new IllegalStateException("the size '" + sym + "' is not an int hyper-parameter of " + module.type());
      }
      return "Sizes.dim(params$." + h + "(), \"" + sym + "\")";
    });
  }

  String sizes(Map<String, Dim> sizes) {
    if (sizes.isEmpty()) {
      return "Map.of()";
    }
    List<String> parts = new ArrayList<>();
    for (var e : new java.util.TreeMap<>(sizes).entrySet()) {
      parts.add("\"" + e.getKey() + "\", " + dim(e.getValue()));
    }
    return "Map.of(" + String.join(", ", parts) + ")";
  }

  /** {@code ", <condition>"} for a primitive whose readers take a bf16 result ({@code Lowering.Result.bf16Prims}). */
  private String bf16Hint(Node.Prim p) {
    GemmOperands.Bf16When w = plan.bf16Prims.get(p);
    return w == null ? "" : ", " + when(w);
  }

  /**
   * {@code ", dq, dk, dv"}: the conditions under which attention's backward, on inputs {@code in}, may write each
   * gradient in bf16 ({@code false} for one that is not marked or not computed); empty when none is marked.
   */
  private String attentionGradHints(List<Value> in) {
    Map<Primitive, String> hints = new java.util.EnumMap<>(Primitive.class);
    for (var e : plan.bf16Prims.entrySet()) {
      Node.Prim g = e.getKey();
      boolean same = g.inputs().size() == in.size();
      for (int i = 0; same && i < in.size(); i++) {
        same = g.inputs().get(i) == in.get(i);
      }
      if (same && (g.op() == Primitive.ATTENTION_DQ || g.op() == Primitive.ATTENTION_DK
          || g.op() == Primitive.ATTENTION_DV)) {
        hints.put(g.op(), when(e.getValue()));
      }
    }
    if (hints.isEmpty()) {
      return "";
    }
    return ", " + hints.getOrDefault(Primitive.ATTENTION_DQ, "false") + ", "
        + hints.getOrDefault(Primitive.ATTENTION_DK, "false") + ", "
        + hints.getOrDefault(Primitive.ATTENTION_DV, "false");
  }

  /** The Java condition under which a GEMM output is stored in bf16 ({@link GemmOperands.Bf16When}). */
  private String when(GemmOperands.Bf16When w) {
    List<String> parts = new ArrayList<>();
    if (!(w.guard() instanceof Cond.Const k && k.value())) {
      parts.add(cond(w.guard()));
    }
    switch (w.consent()) {
      case RESULT -> parts.add("ctx$.resultInBf16()");
      case GRADIENT -> parts.add("ctx$.inputGradientInBf16(" + w.input() + ")");
      default -> {}
    }
    return parts.isEmpty() ? "true" : String.join(" && ", parts);
  }

  String cond(Cond c) {
    return switch (c) {
      case Cond.Flag f -> "params$." + f.component() + "()";
      case Cond.Is i -> host.enumIs(i.component(), i.constant());
      case Cond.Compare k -> "(" + scalar(k.left()) + " " + k.op() + " " + scalar(k.right()) + ")";
      case Cond.Not n -> "!(" + cond(n.c()) + ")";
      case Cond.And a -> "(" + cond(a.a()) + " && " + cond(a.b()) + ")";
      case Cond.Or o -> "(" + cond(o.a()) + " || " + cond(o.b()) + ")";
      case Cond.Const k -> Boolean.toString(k.value());
    };
  }

  // ---- blocks

  void block(Block b) {
    for (Node n : b.nodes()) {
      node(n);
    }
  }

  private void node(Node n) {
    switch (n) {
      case Node.Prim p -> prim(p);
      case Node.ParamRead r -> {
        // A parameter is read where it is used (params$.weight()), so nothing to declare.
      }
      case Node.Call c -> call(c);
      case Node.Loop l -> loop(l);
      case Node.Branch br -> branch(br);
      case Node.CallGrad g -> callGrad(g);
      case Node.LoopGrad l -> loopGrad(l);
      case Node.ParamGrad g -> line(g.component() + "$g = Sizes.plus(dev, " + g.component() + "$g, " + ref(g.grad())
          + ");");
    }
  }

  private void define(Value v, String expr) {
    String type = "Tensor";
    line(type + " " + nameOf(v) + " = " + expr + ";" + comment(v));
    declare(v);
    save(v);
  }

  private String elementVar(String list) {
    return list + "$e";
  }

  private void call(Node.Call c) {
    List<String> args = new ArrayList<>();
    for (Value a : c.args()) {
      args.add(ref(a));
    }
    String key = callKeys.get(c.out());
    String target;
    String params;
    String context;
    ModuleIr.Component comp = c.component() == null ? null : module.components().get(c.component());
    // A result only GEMMs read: the callee may store it as their bf16 operand (Context.resultForGemms). A result or
    // argument gradients this module takes in bf16: the callee may keep its GEMM outputs so (GemmOperands).
    boolean gemmsOnly = plan.gemmOperandCallResults.contains(c.out());
    GemmOperands.Bf16When resultBf16 = plan.bf16CallResults.get(c);
    var gradientsBf16 = plan.bf16CallGradients.getOrDefault(c.out(), new java.util.TreeMap<>());
    List<String> mask = new ArrayList<>();
    gradientsBf16.forEach((i, guard) -> mask.add(guard instanceof Cond.Const k && k.value() ? (1L << i) + "L"
        : "(" + cond(guard) + " ? " + (1L << i) + "L : 0L)"));
    String forGemms = resultBf16 != null || !mask.isEmpty()
        ? ", " + gemmsOnly + ", " + (resultBf16 == null ? "false" : when(resultBf16)) + ", "
            + (mask.isEmpty() ? "0L" : String.join(" | ", mask))
        : gemmsOnly ? ", true" : "";
    if (comp == null) {
      target = "this";
      params = "params$";
      context = ctx + ".child(\"" + key + "\"" + forGemms + ")";
    } else if (comp instanceof ModuleIr.ModuleList) {
      target = host.subField(c.component());
      params = elementVar(c.component());
      context = "ctx$.child(\"" + toSnake(c.component()) + ".\" + " + loopIndex + forGemms + ")";
    } else {
      target = host.subField(c.component());
      params = "params$." + c.component() + "()";
      context = ctx + ".child(\"" + key + "\"" + forGemms + ")";
    }
    define(c.out(), target + ".forward(" + context + ", " + params + (args.isEmpty() ? "" : ", ")
        + String.join(", ", args) + ")");
  }

  private void loop(Node.Loop l) {
    List<String> init = new ArrayList<>();
    for (Value v : l.init()) {
      init.add(ref(v));
    }
    for (int i = 0; i < l.body().params().size(); i++) {
      Value p = l.body().params().get(i);
      line("Tensor " + nameOf(p) + " = " + init.get(i) + ";" + comment(p));
      declare(p);
    }
    String i$ = "i" + l.listComponent() + "$";
    String type = host.componentType(l.listComponent());
    line("for (int " + i$ + " = 0; " + i$ + " < params$." + l.listComponent() + "().size(); " + i$ + "++) {");
    String oldIndent = indent;
    String oldCtx = ctx;
    String oldIndex = loopIndex;
    indent += "  ";
    loopIndex = i$;
    scopes.push(new HashSet<>(l.body().params()));
    line(type + " " + elementVar(l.listComponent()) + " = params$." + l.listComponent() + "().get(" + i$ + ");");
    line("Context lctx$ = ctx$.child(\"" + toSnake(l.listComponent()) + ".\" + " + i$ + " + \"$\");");
    ctx = "lctx$";
    for (Value p : l.body().params()) {
      save(p);
    }
    block(l.body());
    for (int i = 0; i < l.body().results().size(); i++) {
      String r = ref(l.body().results().get(i));
      if (!r.equals(nameOf(l.body().params().get(i)))) {
        line(nameOf(l.body().params().get(i)) + " = " + r + ";");
      }
    }
    scopes.pop();
    indent = oldIndent;
    ctx = oldCtx;
    loopIndex = oldIndex;
    line("}");
    for (int i = 0; i < l.out().size(); i++) {
      define(l.out().get(i), nameOf(l.body().params().get(i)));
    }
  }

  private void branch(Node.Branch br) {
    for (Value v : br.out()) {
      line("Tensor " + nameOf(v) + ";" + comment(v));
    }
    line("if (" + cond(br.cond()) + ") {");
    arm(br.then(), br.out());
    line("} else {");
    arm(br.otherwise(), br.out());
    line("}");
    for (Value v : br.out()) {
      declare(v);
      save(v);
    }
  }

  private void arm(Block b, List<Value> outs) {
    String old = indent;
    indent += "  ";
    scopes.push(new HashSet<>());
    block(b);
    for (int i = 0; i < outs.size(); i++) {
      line(nameOf(outs.get(i)) + " = " + ref(b.results().get(i)) + ";");
    }
    scopes.pop();
    indent = old;
  }

  // ---- backward control

  private void callGrad(Node.CallGrad g) {
    Node.Call c = g.call();
    StringBuilder args = new StringBuilder(ref(g.dOut()));
    for (Value p : g.plus()) {
      if (p != null) {
        args.append(", ").append(ref(p));
      }
    }
    String dOut = args.toString();
    String r = "r" + (temps++) + "$";
    ModuleIr.Component comp = c.component() == null ? null : module.components().get(c.component());
    String key = callKeys.get(c.out());
    if (comp == null) {
      line("Gradients " + r + " = backward(ctx$.child(\"" + key + "\"), params$, " + dOut + ");");
      for (ModuleIr.Component each : module.components().values()) {
        switch (each) {
          case ModuleIr.ParamTensor p -> line(p.name() + "$g = Sizes.plus(dev, " + p.name() + "$g, " + r
              + ".params()." + p.name() + "());");
          case ModuleIr.SubModule s -> line(s.name() + "$g = " + host.subField(s.name()) + ".plus(" + s.name()
              + "$g, " + r + ".params()." + s.name() + "());");
          case ModuleIr.ModuleList l -> line("for (int j$ = 0; j$ < " + l.name() + "$g.size(); j$++) "
              + l.name() + "$g.set(j$, " + host.subField(l.name()) + ".plus(" + l.name() + "$g.get(j$), " + r
              + ".params()." + l.name() + "().get(j$)));");
          default -> {}
        }
      }
    } else if (comp instanceof ModuleIr.ModuleList) {
      String f = host.subField(c.component());
      line(host.calleeGradients(c) + " " + r + " = " + f + ".backward(ctx$.child(\"" + toSnake(c.component()) + ".\" + "
          + loopIndex + "), " + elementVar(c.component()) + ", " + dOut + ");");
      line(c.component() + "$g.set(" + loopIndex + ", " + f + ".plus(" + c.component() + "$g.get(" + loopIndex
          + "), " + r + ".params()));");
    } else {
      String f = host.subField(c.component());
      line(host.calleeGradients(c) + " " + r + " = " + f + ".backward(" + ctx + ".child(\"" + key + "\"), params$."
          + c.component() + "(), " + dOut + ");");
      line(c.component() + "$g = " + f + ".plus(" + c.component() + "$g, " + r + ".params());");
    }
    List<String> inputs = host.calleeInputs(c);
    for (int i = 0; i < g.dArgs().size(); i++) {
      Value d = g.dArgs().get(i);
      if (d != null) {
        define(d, "java.util.Objects.requireNonNull(" + r + "." + inputs.get(i) + "(), \"" + c.display()
            + " returned no gradient for " + inputs.get(i) + "\")");
      }
    }
  }

  private void loopGrad(Node.LoopGrad lg) {
    Node.Loop l = lg.loop();
    List<String> init = new ArrayList<>();
    for (Value v : lg.init()) {
      init.add(ref(v));
    }
    for (int i = 0; i < lg.body().params().size(); i++) {
      Value p = lg.body().params().get(i);
      line("Tensor " + nameOf(p) + " = " + init.get(i) + ";" + comment(p));
      declare(p);
    }
    String i$ = "i" + l.listComponent() + "$";
    String type = host.componentType(l.listComponent());
    line("for (int " + i$ + " = params$." + l.listComponent() + "().size() - 1; " + i$ + " >= 0; " + i$ + "--) {");
    String oldIndent = indent;
    String oldCtx = ctx;
    String oldIndex = loopIndex;
    indent += "  ";
    loopIndex = i$;
    scopes.push(new HashSet<>(lg.body().params()));
    Set<Value> oldShapes = new HashSet<>(shapeLoaded);
    line(type + " " + elementVar(l.listComponent()) + " = params$." + l.listComponent() + "().get(" + i$ + ");");
    line("Context lctx$ = ctx$.child(\"" + toSnake(l.listComponent()) + ".\" + " + i$ + " + \"$\");");
    ctx = "lctx$";
    block(lg.body());
    for (int i = 0; i < lg.body().results().size(); i++) {
      String r = ref(lg.body().results().get(i));
      if (!r.equals(nameOf(lg.body().params().get(i)))) {
        line(nameOf(lg.body().params().get(i)) + " = " + r + ";");
      }
    }
    scopes.pop();
    shapeLoaded.retainAll(oldShapes);
    indent = oldIndent;
    ctx = oldCtx;
    loopIndex = oldIndex;
    line("}");
    for (int i = 0; i < lg.out().size(); i++) {
      define(lg.out().get(i), nameOf(lg.body().params().get(i)));
    }
  }

  void result(String code) {
    line(code);
  }

  // ---- primitives

  private void prim(Node.Prim p) {
    FusedKernel k = plan.kernelOf.get(p);
    if (k != null) {
      if (k.anchor() == p) {
        launch(k);
      }
      return;
    }
    if (p.op() == Primitive.CONST && !constUsedOutsideKernels.contains(p.out())
        && plan.saved.get(p.out()) == null) {
      return; // only fused kernels read it, as a scalar argument
    }
    List<Value> in = p.inputs();
    String dev = "dev";
    switch (p.op()) {
      case NEG, EXP, LOG, SQRT, RSQRT, TANH, SIGMOID, COS, SIN ->
          define(p.out(), dev + ".unary(Device.Unary." + p.op() + ", " + ref(in.get(0)) + ")");
      case CAST_FLOAT -> define(p.out(), dev + ".cast(" + ref(in.get(0)) + ", dtype)");
      case ADD, SUB, MUL, DIV, MAXIMUM -> define(p.out(), dev + ".binary(Device.Binary." + p.op() + ", "
          + ref(in.get(0)) + ", " + ref(in.get(1)) + bf16Hint(p) + ")");
      case GREATER, LESS -> define(p.out(), dev + ".compare(Device.Compare." + p.op() + ", " + ref(in.get(0)) + ", "
          + ref(in.get(1)) + ")");
      case WHERE -> define(p.out(), dev + ".where(" + ref(in.get(0)) + ", " + ref(in.get(1)) + ", " + ref(in.get(2))
          + ")");
      case SUM, MAX -> {
        Attr.Axes a = (Attr.Axes) p.attr();
        String x = ref(in.get(0));
        String how = p.op() == Primitive.SUM ? "Reduction.SUM" : "Reduction.MAX";
        define(p.out(), a.all() ? dev + ".reduce(" + how + ", " + x + ", Sizes.all(" + x + ".rank()), false)"
            : dev + ".reduce(" + how + ", " + x + ", new int[] {" + x + ".rank() - 1}, " + a.keep() + ")");
      }
      case EINSUM -> einsum(p);
      case REARRANGE, REPEAT, REDUCE_PATTERN -> pattern(p);
      case GATHER -> define(p.out(), dev + ".gather(" + ref(in.get(0)) + ", " + ref(in.get(1)) + ")");
      case CROSS_ENTROPY -> define(p.out(), dev + ".crossEntropy(" + ref(in.get(0)) + ", " + ref(in.get(1)) + ")");
      case CROSS_ENTROPY_GRAD -> define(p.out(), dev + ".crossEntropyBackward(" + ref(in.get(0)) + ", "
          + ref(in.get(1)) + ", " + ref(in.get(2)) + bf16Hint(p) + ")");
      case TOPK_VALUES -> define(p.out(), dev + ".topk(" + ref(in.get(0)) + ", Math.toIntExact("
          + dim(((Attr.TopK) p.attr()).k()) + ")).values()");
      case TOPK_INDICES -> define(p.out(), dev + ".topk(" + ref(in.get(0)) + ", Math.toIntExact("
          + dim(((Attr.TopK) p.attr()).k()) + ")).indices()");
      case IOTA -> define(p.out(), dev + ".iota(DType.I64, Sizes.size(" + shapeOf(in.get(0)) + ", "
          + ((Attr.Axis) p.attr()).fromEnd() + "))");
      case CONST -> define(p.out(), dev + ".full(dtype, " + scalar(((Attr.Const) p.attr()).value()) + ")");
      case ATTENTION -> {
        Attr.Attention a = (Attr.Attention) p.attr();
        String r = "att" + p.out().id() + "$";
        line("Device.AttentionOut " + r + " = " + dev + ".attention(" + ref(in.get(0)) + ", " + ref(in.get(1)) + ", "
            + ref(in.get(2)) + ", Mask." + a.mask() + ", " + scalar(a.scale()) + bf16Hint(p) + ");");
        define(p.out(), r + ".out()");
        if (plan.attentionLse.contains(p.out())) {
          line(ctx + ".save(\"lse" + p.out().id() + "\", " + r + ".lse());");
        }
      }
      case ROPE -> {
        Attr.Rope r = (Attr.Rope) p.attr();
        // forGemms: only GEMMs and attention read the result; overwrite: nothing else reads the input (GemmOperands).
        boolean forGemms = plan.gemmOperandPrims.contains(p);
        boolean overwrite = plan.ropeOverwrites.contains(p);
        define(p.out(), dev + ".rope(" + ref(in.get(0)) + ", " + ref(in.get(1)) + ", " + scalar(r.theta()) + ", "
            + r.inverse() + (forGemms || overwrite ? ", " + forGemms : "") + (overwrite ? ", true" : "") + ")");
      }
      case SUM_TO -> define(p.out(), dev + ".sumTo(" + ref(in.get(0)) + ", " + shapeOf(in.get(1)) + ")");
      case EXPAND -> define(p.out(), dev + ".expand(" + ref(in.get(0)) + ", " + shapeOf(in.get(1)) + ")");
      case SCATTER_ROWS -> {
        String d = "z" + p.out().id() + "$";
        line("Tensor " + d + " = " + dev + ".zeros(dtype, " + shapeOf(in.get(2)) + ");");
        line(dev + ".scatterAddRows(" + d + ", " + ref(in.get(0)) + ", " + ref(in.get(1)) + ");");
        define(p.out(), d);
      }
      case SCATTER_LAST -> {
        String d = "z" + p.out().id() + "$";
        line("Tensor " + d + " = " + dev + ".zeros(dtype, " + shapeOf(in.get(2)) + ");");
        line(dev + ".scatterAddLast(" + d + ", Sizes.withUnitLast(dev, " + ref(in.get(0)) + ", " + d
            + ".rank()), Sizes.withUnitLast(dev, " + ref(in.get(1)) + ", " + d + ".rank()));");
        define(p.out(), d);
      }
      case ATTENTION_DQ, ATTENTION_DK, ATTENTION_DV -> {
        Attr.Attention a = (Attr.Attention) p.attr();
        StringBuilder keyB = new StringBuilder();
        for (Value v : in) {
          keyB.append(v.id()).append(',');
        }
        String r = attentionGrads.get(keyB.toString());
        if (r == null) {
          r = "attg" + p.out().id() + "$";
          Value out = in.get(3);
          String lse = savedContext(out) + ".saved(\"lse" + out.id() + "\")";
          line("Device.AttentionGrads " + r + " = " + dev + ".attentionBackward(" + ref(in.get(0)) + ", "
              + ref(in.get(1)) + ", " + ref(in.get(2)) + ", " + ref(out) + ", " + lse + ", " + ref(in.get(4))
              + ", Mask." + a.mask() + ", " + scalar(a.scale()) + attentionGradHints(in) + ");");
          attentionGrads.put(keyB.toString(), r);
        }
        String part = switch (p.op()) {
          case ATTENTION_DQ -> "dq";
          case ATTENTION_DK -> "dk";
          default -> "dv";
        };
        define(p.out(), r + "." + part + "()");
      }
    }
  }

  private void einsum(Node.Prim p) {
    GemmPlan g = plan.gemms.get(p);
    List<String> ops = new ArrayList<>();
    for (Value v : p.inputs()) {
      ops.add(ref(v));
    }
    line("// " + g.describe());
    String id = Integer.toString(p.out().id());
    GemmOperands.Bf16When bf16 = plan.bf16GemmResults.get(p);
    List<String> lines = g.code(ops, nameOf(p.out()), id, host::plan, bf16 == null ? null : when(bf16),
        !plan.paramGradientGemms.containsKey(p) ? null
            : plan.paramGradientGemms.get(p) == null ? "" : "params$." + plan.paramGradientGemms.get(p) + "()");
    for (int i = 0; i < lines.size(); i++) {
      line(lines.get(i) + (i == lines.size() - 1 ? comment(p.out()).replaceFirst("^ ", " ") : ""));
    }
    declare(p.out());
    save(p.out());
  }

  private void pattern(Node.Prim p) {
    String x = ref(p.inputs().get(0));
    switch (p.attr()) {
      case Attr.Pattern a -> {
        String plan0 = host.plan(a.pattern().source());
        String call = switch (p.op()) {
          case REARRANGE -> ".rearrange(dev, " + x + ", " + sizes(a.sizes()) + ")";
          case REPEAT -> ".repeat(dev, " + x + ", " + sizes(a.sizes()) + ")";
          default -> ".reduce(dev, " + x + ", Reduction." + a.how() + ", " + sizes(a.sizes()) + ")";
        };
        define(p.out(), plan0 + call);
      }
      case Attr.Inverse inv -> {
        String fwd = host.plan(inv.forward().source());
        String back = host.plan(inv.inverse().toString());
        String sz = fwd + ".bindSizes(" + shapeOf(p.inputs().get(1)) + ", " + sizes(inv.sizes()) + ")";
        String call = switch (p.op()) {
          case REARRANGE -> ".rearrange(dev, " + x + ", " + sz + ")";
          case REPEAT -> ".repeat(dev, " + x + ", " + sz + ")";
          default -> ".reduce(dev, " + x + ", Reduction.SUM, " + sz + ")";
        };
        define(p.out(), back + call);
      }
      default -> throw new IllegalStateException(p.op() + " without a pattern");
    }
  }

  private void launch(FusedKernel k) {
    line("// " + KernelJavaEmitter.signatureComment(k).strip().replace("\n", "\n" + indent + "// "));
    Value src = k.domainSource();
    String shape = "shape" + (temps++) + "$";
    List<String> tensors = new ArrayList<>();
    for (Value v : k.inputs().keySet()) {
      tensors.add("dev.contiguous(" + ref(v) + ")");
    }
    line("long[] " + shape + " = " + ref(src) + ".shape();");
    List<Value> outs = new ArrayList<>(k.outputs().keySet());
    String together = null;
    List<Value> stacked = new ArrayList<>(k.gemmOperands());
    if (k.gemmOperandRowStride()) {
      // Allocated together, in the order of the sub-modules whose backward reads them (declaration order, as a
      // device lays out those sub-modules' weights): a device may place them side by side in one matrix's rows.
      List<String> order = new ArrayList<>(module.components().keySet());
      stacked.sort(java.util.Comparator.comparingInt(v -> {
        int at = order.indexOf(k.gemmOperandReaders().getOrDefault(v, ""));
        return at < 0 ? Integer.MAX_VALUE : at;
      }));
      together = shape.replace("shape", "gemmOperands");
      List<String> readers = new ArrayList<>();
      for (Value v : stacked) {
        readers.add(k.gemmOperandReaders().getOrDefault(v, "?"));
      }
      line("Tensor[] " + together + " = dev.emptyGemmOperands(dtype, " + stacked.size() + ", " + shape
          + "); // read by the backward of " + String.join(", ", readers) + ", in that order");
    }
    for (Value v : outs) {
      if (together != null && stacked.contains(v)) {
        line("Tensor " + nameOf(v) + " = " + together + "[" + stacked.indexOf(v) + "];" + comment(v));
        tensors.add(nameOf(v));
        continue;
      }
      String s = k.outputs().get(v) == Level.FULL ? shape
          : "Sizes.cat(Sizes.range(" + shape + ", 0, " + shape + ".length - 1), new long[] {1})";
      if (k.columnSums().contains(v)) {
        // Summed over runs of rows by the kernel (ColumnSums): the SUM_TO that reads it adds up the partial rows.
        s = "dev.columnSumRows(" + host.kernel(k) + ", Sizes.rows(" + shape + "), Sizes.cols(" + shape + ")), Sizes.cols("
            + shape + ")";
      }
      // An output only GEMMs read may be stored in their input precision (GemmOperands); the forward's result so
      // only when the caller's reads of it are GEMMs too.
      String alloc = k.gemmOperands().contains(v) ? "dev.emptyGemmOperand(dtype, " + s + ")" : "dev.empty(dtype, " + s
          + ")";
      if (k.resultGemmOperands().contains(v)) {
        alloc = "ctx$.resultForGemms() ? " + alloc + " : dev.empty(dtype, " + s + ")";
      }
      if (k.bf16SumOutput() != null) {
        // A plain sum whose readers take bf16: a device that sums by one GEMM may write it so.
        String when = when(k.bf16SumOutput());
        alloc = (when.equals("true") ? "" : when + " ? ") + "dev.emptyGemmResult(dtype, " + s + ")"
            + (when.equals("true") ? "" : " : dev.empty(dtype, " + s + ")");
      }
      line("Tensor " + nameOf(v) + " = " + alloc + ";" + comment(v));
      tensors.add(nameOf(v));
    }
    List<String> scalars = new ArrayList<>();
    for (Value v : k.scalars()) {
      Node.Prim c = constOf(v);
      scalars.add(scalar(((Attr.Const) c.attr()).value()));
    }
    line("dev.launch(" + host.kernel(k) + ", new Tensor[] {" + String.join(", ", tensors) + "}, new long[] {Sizes.rows("
        + shape + "), Sizes.cols(" + shape + ")}, new double[] {" + String.join(", ", scalars) + "});");
    for (Value v : outs) {
      declare(v);
      save(v);
    }
    // Values the kernel keeps to itself whose shape backward needs.
    for (var e : k.levels().entrySet()) {
      if (!k.outputs().containsKey(e.getKey()) && !backward && plan.saved.get(e.getKey()) == Lowering.Save.SHAPE) {
        line(ctx + ".saveShape(\"" + key(e.getKey()) + "\", " + kernelShape(k, e.getValue()) + ");");
      }
    }
  }

  private final Map<Value, Node.Prim> consts = new HashMap<>();

  private Node.Prim constOf(Value v) {
    if (consts.isEmpty()) {
      collectConsts(plan.graph.body());
      collectConsts(plan.backward.block());
    }
    Node.Prim c = consts.get(v);
    if (c == null) {
      throw new IllegalStateException("scalar argument " + v + " is not a constant");
    }
    return c;
  }

  private void collectConsts(Block b) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p when p.op() == Primitive.CONST -> consts.put(p.out(), p);
        case Node.Loop l -> collectConsts(l.body());
        case Node.LoopGrad l -> collectConsts(l.body());
        case Node.Branch br -> {
          collectConsts(br.then());
          collectConsts(br.otherwise());
        }
        default -> {}
      }
    }
  }

}
