package dev.kiln.processor.emit.java;

import com.palantir.javapoet.ClassName;
import com.palantir.javapoet.FieldSpec;
import com.palantir.javapoet.MethodSpec;
import com.palantir.javapoet.ParameterizedTypeName;
import com.palantir.javapoet.TypeName;
import com.palantir.javapoet.TypeSpec;
import dev.kiln.dsl.Init;
import dev.kiln.processor.emit.cuda.CudaEmitter;
import dev.kiln.processor.fuse.FusedKernel;
import dev.kiln.processor.fuse.Lowering;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.lang.model.element.Modifier;
import javax.lang.model.element.RecordComponentElement;
import javax.lang.model.element.TypeElement;

/**
 * Writes {@code Compiled<Module>}: the parameter table, {@code init}, {@code stateDict}, and per analysed method a
 * {@code forward}/{@code backward} pair (for {@code @Loss}: {@code loss}/{@code lossBackward}) whose gradients are a
 * record of the module's own type.
 */
public final class ModuleEmitter {
  static final ClassName TENSOR = ClassName.get("dev.kiln.dsl", "Tensor");
  static final ClassName DTYPE = ClassName.get("dev.kiln.dsl", "DType");
  static final ClassName DEVICE = ClassName.get("dev.kiln.dsl.spi", "Device");
  static final ClassName CONTEXT = ClassName.get("dev.kiln.dsl.spi", "Context");
  static final ClassName CONFIG = ClassName.get("dev.kiln.dsl.spi", "Config");
  static final ClassName KERNEL = ClassName.get("dev.kiln.dsl.spi", "Kernel");
  /** The constant naming the forward inputs only GEMMs read (for the processor of modules that call this one). */
  public static final String GEMM_OPERAND_INPUTS = "GEMM_OPERAND_INPUTS";
  /** The constant saying whether backward reads the result's gradient only in GEMMs. */
  public static final String GEMM_OPERAND_GRADIENT = "GEMM_OPERAND_GRADIENT";
  /** The constant saying whether backward takes the result's gradient in bf16 as it is. */
  public static final String BF16_GRADIENT = "BF16_GRADIENT";
  /** The constant saying whether backward has the form that adds to the input gradients itself. */
  public static final String ADDS_TO_INPUT_GRADIENTS = "ADDS_TO_INPUT_GRADIENTS";
  static final ClassName PLAN = ClassName.get("dev.kiln.dsl.spi", "EinopsPlan");
  static final ClassName PARAM_INFO = ClassName.get("dev.kiln.dsl.spi", "ParamInfo");

  /** What the emitter needs to know about a callee module. */
  public interface Callees {
    /** The callee's analysed IR (its signature). */
    ModuleIr module(String qualifiedType);

    /** The class name of a module record type. */
    ClassName className(String qualifiedType);
  }

  private final ModuleIr module;
  private final TypeElement type;
  private final List<Lowering.Result> graphs;
  /** The forward's backward with an addend per differentiable input, or null where it is not worth a method. */
  private final Lowering.Result adding;
  private final Callees callees;
  private final ClassName record;
  private final ClassName compiled;
  private final ClassName kernels;
  private final String cudaResource;
  private final Map<String, String> plans = new LinkedHashMap<>();
  private final List<FusedKernel> allKernels = new ArrayList<>();

  public ModuleEmitter(ModuleIr module, TypeElement type, List<Lowering.Result> graphs, Lowering.Result adding,
      Callees callees) {
    this.module = module;
    this.type = type;
    this.graphs = graphs;
    this.adding = adding;
    this.callees = callees;
    this.record = ClassName.get(type);
    this.compiled = compiledName(module.type(), record);
    this.kernels = ClassName.get(compiled.packageName(), compiled.simpleName() + "Kernels");
    this.cudaResource = "META-INF/kiln/cuda/" + module.type() + ".cu";
    for (Lowering.Result r : graphs) {
      r.forwardKernels.forEach(this::emitOnce);
      r.backwardKernels.forEach(this::emitOnce);
    }
    if (adding != null) {
      adding.backwardKernels.forEach(this::emitOnce);
    }
  }

  /** Adds {@code k} to the kernels to emit, or makes it launch an equal kernel already there ({@link #twinOf}). */
  private void emitOnce(FusedKernel k) {
    FusedKernel twin = twinOf(k, allKernels);
    if (twin != null) {
      k.launchAs(twin);
    } else {
      allKernels.add(k);
    }
  }

  /**
   * The kernel of {@code among} whose generated code (CUDA and Java) and launch description equal {@code k}'s, but for
   * its name and value numbers, or null. The two arms of a branch can lower to the same kernel (a norm's per-row
   * factor before its RMS and its LayerNorm arms), and the adding form's backward shares the plain form's kernels
   * before the add: each would otherwise be emitted twice.
   */
  private static FusedKernel twinOf(FusedKernel k, List<FusedKernel> among) {
    String code = canonical(k);
    for (FusedKernel other : among) {
      if (other.hasReduction() == k.hasReduction() && other.inputs().size() == k.inputs().size()
          && other.outputs().size() == k.outputs().size() && other.gemmOperandMask() == k.gemmOperandMask()
          && other.bf16InputMask() == k.bf16InputMask() && other.columnSumMask() == k.columnSumMask()
          && canonical(other).equals(code)) {
        return other;
      }
    }
    return null;
  }

  /**
   * A kernel's CUDA and Java code with its name and its values' numbers ({@code v12} in code, {@code %12} in the
   * comments that show where a value came from) replaced by placeholders.
   */
  private static String canonical(FusedKernel k) {
    String code = CudaEmitter.source("", List.of(k)) + KernelJavaEmitter.type("K", List.of(k));
    // Spaces collapsed: JavaPoet wraps lines by their length, which the name changes.
    code = code.replace(k.name(), "@kernel").replaceAll("\\s+", " ");
    java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?:\\bv|%)(\\d+)\\b").matcher(code);
    Map<String, String> numbers = new java.util.HashMap<>();
    StringBuilder out = new StringBuilder();
    while (m.find()) {
      m.appendReplacement(out, "v#" + numbers.computeIfAbsent(m.group(1), x -> String.valueOf(numbers.size())));
    }
    return m.appendTail(out).toString();
  }

  /** {@code Compiled<Outer_Inner>} in the record's package. */
  public static ClassName compiledName(String qualified, ClassName record) {
    return ClassName.get(record.packageName(), "Compiled" + String.join("_", record.simpleNames()));
  }

  private ClassName compiledOf(String qualifiedType) {
    return compiledName(qualifiedType, callees.className(qualifiedType));
  }

  public ClassName compiledClass() {
    return compiled;
  }

  public ClassName kernelsClass() {
    return kernels;
  }

  public String cudaResource() {
    return cudaResource;
  }

  public List<FusedKernel> kernels() {
    return allKernels;
  }

  // ---- the class

  public TypeSpec type() {
    TypeSpec.Builder t = TypeSpec.classBuilder(compiled).addModifiers(Modifier.PUBLIC, Modifier.FINAL)
        .addJavadoc("Generated forward and backward code of {@link $T}, for any {@link $T}.\n\n"
            + "<p>Use: {@code var m = new $T(device, DType.F32); var params = m.init(config, seed);}\n"
            + "{@code var y = m.forward(ctx, params, ...); var grads = m.backward(ctx, params, dY);}\n"
            + "Gradients come back as a {@code $L} record, parameter for parameter.\n", record, DEVICE, compiled,
            record.simpleName());
    t.addField(FieldSpec.builder(DEVICE, "dev", Modifier.PRIVATE, Modifier.FINAL).build());
    t.addField(FieldSpec.builder(DTYPE, "dtype", Modifier.PRIVATE, Modifier.FINAL).build());
    MethodSpec.Builder ctor = MethodSpec.constructorBuilder().addModifiers(Modifier.PUBLIC)
        .addJavadoc("Runs on {@code dev}, with activations and parameters of {@code dtype} (F32 or F64).\n")
        .addParameter(DEVICE, "dev").addParameter(DTYPE, "dtype")
        .addStatement("this.dev = dev").addStatement("this.dtype = dtype");
    for (ModuleIr.Component c : module.components().values()) {
      String typeName = switch (c) {
        case ModuleIr.SubModule s -> s.type();
        case ModuleIr.ModuleList l -> l.elementType();
        default -> null;
      };
      if (typeName != null) {
        ClassName sub = compiledOf(typeName);
        t.addField(FieldSpec.builder(sub, c.name() + "$", Modifier.PRIVATE, Modifier.FINAL).build());
        ctor.addStatement("this.$L = new $T(dev, dtype)", c.name() + "$", sub);
      }
    }
    t.addMethod(ctor.build());
    t.addField(FieldSpec.builder(String.class, "DIFFERENTIABLE_INPUTS", Modifier.PUBLIC, Modifier.STATIC,
        Modifier.FINAL).addJavadoc("The forward inputs that get a gradient (read by the processor of modules that"
        + " call this one).\n").initializer("$S", differentiableInputs()).build());
    t.addField(FieldSpec.builder(String.class, GEMM_OPERAND_INPUTS, Modifier.PUBLIC, Modifier.STATIC,
        Modifier.FINAL).addJavadoc("The forward inputs that only GEMMs read, in forward and backward: a caller may"
        + " store them in the GEMMs' input precision (read by the processor of modules that call this one).\n")
        .initializer("$S", gemmOperandInputs()).build());
    t.addField(FieldSpec.builder(boolean.class, GEMM_OPERAND_GRADIENT, Modifier.PUBLIC, Modifier.STATIC,
        Modifier.FINAL).addJavadoc("Whether backward reads {@code dOut} only in GEMMs (read by the processor of"
        + " modules that call this one).\n").initializer("$L", forwardGraph().gemmOperandGradient).build());
    t.addField(FieldSpec.builder(boolean.class, BF16_GRADIENT, Modifier.PUBLIC, Modifier.STATIC, Modifier.FINAL)
        .addJavadoc("Whether backward takes {@code dOut} in bf16 as it is: every read of it a GEMM, attention's or a"
            + " fused kernel's, so a mixed-precision caller may store it in bf16 (read by the processor of modules"
            + " that call this one).\n").initializer("$L", forwardGraph().bf16Gradient).build());
    t.addField(FieldSpec.builder(boolean.class, ADDS_TO_INPUT_GRADIENTS, Modifier.PUBLIC, Modifier.STATIC,
        Modifier.FINAL).addJavadoc("Whether {@code backward} has a form with an addend per differentiable input,"
        + " added inside the kernels that compute the input gradients (read by the processor of modules that call"
        + " this one).\n").initializer("$L", adding != null).build());
    t.addType(gradientsRecord("Gradients", forwardGraph()));
    Lowering.Result loss = lossGraph();
    if (loss != null) {
      t.addType(gradientsRecord("LossGradients", loss));
    }
    addInit(t);
    addStateDict(t);
    addParameters(t);
    addPlusAndZeros(t);
    for (Lowering.Result r : graphs) {
      boolean isLoss = r.graph.kind() == Graph.Kind.LOSS;
      t.addMethod(forward(r, isLoss ? "loss" : "forward"));
      t.addMethod(backward(r, isLoss ? "lossBackward" : "backward", isLoss ? "LossGradients" : "Gradients"));
    }
    if (adding != null) {
      t.addMethod(backward(adding, "backward", "Gradients"));
    }
    for (var e : plans.entrySet()) {
      t.addField(FieldSpec.builder(PLAN, e.getValue(), Modifier.PRIVATE, Modifier.STATIC, Modifier.FINAL)
          .initializer("$T.of($S)", PLAN, e.getKey()).build());
    }
    for (FusedKernel k : allKernels) {
      t.addField(FieldSpec.builder(KERNEL, kernelField(k), Modifier.PRIVATE, Modifier.STATIC, Modifier.FINAL)
          .initializer("new $T($S, $T.Kind.$L, $L, $L, $S, $T::$L, $LL, $L, $LL, $LL, $L, $L, $L)", KERNEL,
              k.name(), KERNEL, k.hasReduction() ? "ROWS" : "POINTWISE", k.inputs().size(), k.outputs().size(),
              cudaResource, kernels, k.name(), k.gemmOperandMask(), k.hasReduction() ? 1 : CudaEmitter.PER_THREAD,
              k.bf16InputMask(), k.columnSumMask(), k.twinOutput(), k.sumOfInputs(), k.gemmOperandRowStride())
          .build());
    }
    return t.build();
  }

  private Lowering.Result forwardGraph() {
    for (Lowering.Result r : graphs) {
      if (r.graph.kind() == Graph.Kind.FORWARD) {
        return r;
      }
    }
    throw new IllegalStateException(module.type() + " has no analysed forward");
  }

  private Lowering.Result lossGraph() {
    for (Lowering.Result r : graphs) {
      if (r.graph.kind() == Graph.Kind.LOSS) {
        return r;
      }
    }
    return null;
  }

  private String differentiableInputs() {
    Lowering.Result f = forwardGraph();
    List<String> out = new ArrayList<>();
    for (int i = 0; i < f.graph.inputs().size(); i++) {
      if (f.backward.inputGrads().get(i) != null) {
        out.add(f.graph.inputs().get(i).name());
      }
    }
    return String.join(",", out);
  }

  private String gemmOperandInputs() {
    Lowering.Result f = forwardGraph();
    List<String> out = new ArrayList<>();
    for (int i = 0; i < f.graph.inputs().size(); i++) {
      if (f.gemmOperandInputs[i]) {
        out.add(f.graph.inputs().get(i).name());
      }
    }
    return String.join(",", out);
  }

  private static String kernelField(FusedKernel k) {
    return "K_" + k.name();
  }

  private TypeSpec gradientsRecord(String name, Lowering.Result r) {
    MethodSpec.Builder ctor = MethodSpec.constructorBuilder().addParameter(record, "params");
    StringBuilder doc = new StringBuilder("What {@code " + (name.equals("Gradients") ? "backward" : "lossBackward")
        + "} returns: the gradient of every parameter (a {@code " + record.simpleName() + "} record, hyper-parameters"
        + " copied) and of every input, null for an input without one (" + "integer ids, positions).\n");
    for (Graph.Input in : r.graph.inputs()) {
      ctor.addParameter(TENSOR, in.name());
    }
    return TypeSpec.recordBuilder(name).addModifiers(Modifier.PUBLIC, Modifier.STATIC).recordConstructor(ctor.build())
        .addJavadoc("$L", doc.toString()).build();
  }

  // ---- init, state dict, parameter table

  private String configDim(Dim d) {
    return d.toJava(s -> "config.dim(\"" + s + "\")");
  }

  private TypeName componentType(String name) {
    for (RecordComponentElement c : type.getRecordComponents()) {
      if (c.getSimpleName().contentEquals(name)) {
        return TypeName.get(c.asType());
      }
    }
    throw new IllegalStateException("no component " + name);
  }

  private void addInit(TypeSpec.Builder t) {
    t.addMethod(MethodSpec.methodBuilder("init").addModifiers(Modifier.PUBLIC).returns(record)
        .addJavadoc("New parameters for {@code config}: the parameter with state-dict key {@code k} drawn from"
            + " Philox({@code seed}) stream {@code Sizes.stream(k)} (as the eager interpreter's {@code Eager.init}, so"
            + " the order of components does not matter), ones and zeros as each {@code @Param} says; hyper-parameters"
            + " read from the config.\n")
        .addParameter(CONFIG, "config").addParameter(TypeName.LONG, "seed")
        .addStatement("return init(config, seed, $S)", "").build());
    MethodSpec.Builder m = MethodSpec.methodBuilder("init").addModifiers(Modifier.PUBLIC).returns(record)
        .addJavadoc("{@link #init(Config, long)} for a module whose state-dict keys start with {@code prefix}.\n")
        .addParameter(CONFIG, "config").addParameter(TypeName.LONG, "seed").addParameter(String.class, "prefix");
    List<String> args = new ArrayList<>();
    for (ModuleIr.Component c : module.components().values()) {
      String local = c.name() + "$v";
      args.add(local);
      switch (c) {
        case ModuleIr.ParamTensor p -> {
          List<String> dims = new ArrayList<>();
          for (Dim d : p.shape().dims()) {
            dims.add(configDim(d));
          }
          m.addStatement("$T $L = dev.empty(dtype, $L)", TENSOR, local, String.join(", ", dims));
          String key = "prefix + \"" + BodyEmitter.toSnake(p.name()) + "\"";
          switch (p.init()) {
            case TRUNC_NORMAL_FAN_IN_OUT -> {
              List<Dim> ds = p.shape().dims();
              String fanIn = configDim(ds.get(ds.size() - 1));
              String fanOut = ds.size() == 1 ? "1L" : configDim(Dim.product(ds.subList(0, ds.size() - 1)));
              m.addStatement("double $L = Math.sqrt(2.0 / ($L + $L))", p.name() + "$std", fanIn, fanOut);
              m.addStatement("dev.fillTruncatedNormal($L, $L, 3 * $L, seed, $T.stream($L))", local, p.name() + "$std",
                  p.name() + "$std", SIZES, key);
            }
            case TRUNC_NORMAL_UNIT -> m.addStatement("dev.fillTruncatedNormal($L, 1.0, 3.0, seed, $T.stream($L))",
                local, SIZES, key);
            case ONES -> m.addStatement("dev.fill($L, 1.0)", local);
            case ZEROS -> m.addStatement("dev.fill($L, 0.0)", local);
          }
        }
        case ModuleIr.SubModule s -> m.addStatement("$T $L = $L.init($L, seed, prefix + $S)", callees.className(s.type()), local,
            s.name() + "$", bind("config", s.bindings()), BodyEmitter.toSnake(s.name()) + ".");
        case ModuleIr.ModuleList l -> {
          TypeName elem = callees.className(l.elementType());
          m.addStatement("$T<$T> $L = new $T<>()", List.class, elem, local, ArrayList.class);
          m.beginControlFlow("for (long i$$ = 0; i$$ < config.dim($S); i$$++)", l.countKey());
          m.addStatement("$L.add($L.init($L, seed, prefix + $S + i$$ + $S))", local, l.name() + "$",
              bind("config", l.bindings()), BodyEmitter.toSnake(l.name()) + ".", ".");
          m.endControlFlow();
          args.set(args.size() - 1, "List.copyOf(" + local + ")");
        }
        case ModuleIr.Hyper h -> {
          TypeName ht = componentType(h.name());
          String read = switch (h.kind()) {
            case FLOAT -> (ht.equals(TypeName.DOUBLE) ? "" : "(" + ht + ") ") + "config.real(\"" + h.configKey() + "\")";
            case INT -> (ht.equals(TypeName.LONG) ? "" : "(" + ht + ") ") + "config.integer(\"" + h.configKey() + "\")";
            case BOOL -> "config.flag(\"" + h.configKey() + "\")";
            case ENUM -> "config.choice(\"" + h.configKey() + "\", " + ht + ".class)";
          };
          m.addStatement("$T $L = $L", ht, local, read);
        }
      }
    }
    m.addStatement("return new $T($L)", record, String.join(", ", args));
    t.addMethod(m.build());
  }

  static final ClassName SIZES = ClassName.get("dev.kiln.dsl.spi", "Sizes");

  /** The canonical (dotted) name of a type the reader names in binary or canonical form. */
  private static String canonical(String type) {
    return type.replace('$', '.');
  }

  private String bind(String config, Map<String, Dim> bindings) {
    if (bindings.isEmpty()) {
      return config;
    }
    List<String> parts = new ArrayList<>();
    for (var e : new java.util.TreeMap<>(bindings).entrySet()) {
      parts.add("\"" + e.getKey() + "\", " + configDim(e.getValue()));
    }
    return config + ".bind(Map.of(" + String.join(", ", parts) + "))";
  }

  private void addStateDict(TypeSpec.Builder t) {
    TypeName map = ParameterizedTypeName.get(ClassName.get(Map.class), ClassName.get(String.class), TENSOR);
    t.addMethod(MethodSpec.methodBuilder("stateDict").addModifiers(Modifier.PUBLIC).returns(map)
        .addJavadoc("The parameters by state-dict key ({@code layers.0.attn.q_proj.weight}), in declaration order.\n")
        .addParameter(record, "params")
        .addStatement("$T out = new $T<>()", map, LinkedHashMap.class)
        .addStatement("stateDict(params, $S, out)", "").addStatement("return out").build());
    MethodSpec.Builder m = MethodSpec.methodBuilder("stateDict").addModifiers(Modifier.PUBLIC)
        .addParameter(record, "params").addParameter(String.class, "prefix").addParameter(map, "out");
    for (ModuleIr.Component c : module.components().values()) {
      String key = BodyEmitter.toSnake(c.name());
      switch (c) {
        case ModuleIr.ParamTensor p -> m.addStatement("out.put(prefix + $S, params.$L())", key, p.name());
        case ModuleIr.SubModule s -> m.addStatement("$L.stateDict(params.$L(), prefix + $S, out)", s.name() + "$",
            s.name(), key + ".");
        case ModuleIr.ModuleList l -> m.beginControlFlow("for (int i$$ = 0; i$$ < params.$L().size(); i$$++)", l.name())
            .addStatement("$L.stateDict(params.$L().get(i$$), prefix + $S + i$$ + $S, out)", l.name() + "$", l.name(),
                key + ".", ".")
            .endControlFlow();
        default -> {}
      }
    }
    t.addMethod(m.build());
  }

  private void addParameters(TypeSpec.Builder t) {
    TypeName list = ParameterizedTypeName.get(ClassName.get(List.class), PARAM_INFO);
    TypeName names = ParameterizedTypeName.get(ClassName.get(Map.class), ClassName.get(String.class),
        ClassName.get(String.class));
    t.addMethod(MethodSpec.methodBuilder("parameters").addModifiers(Modifier.PUBLIC).returns(list)
        .addJavadoc("The parameter table under {@code config}: state-dict key, shape in this module's dim names,"
            + " sizes, initialiser.\n")
        .addParameter(CONFIG, "config")
        .addStatement("$T out = new $T<>()", list, ArrayList.class)
        .addStatement("parameters(config, $S, $T.of(), out)", "", Map.class).addStatement("return out").build());
    MethodSpec.Builder m = MethodSpec.methodBuilder("parameters").addModifiers(Modifier.PUBLIC)
        .addParameter(CONFIG, "config").addParameter(String.class, "prefix").addParameter(names, "names")
        .addParameter(list, "out");
    for (ModuleIr.Component c : module.components().values()) {
      String key = BodyEmitter.toSnake(c.name());
      switch (c) {
        case ModuleIr.ParamTensor p -> {
          List<String> dims = new ArrayList<>();
          for (Dim d : p.shape().dims()) {
            dims.add(configDim(d));
          }
          m.addStatement("out.add(new $T(prefix + $S, $T.renameDims($S, names), new long[] {$L}, $T.$L))",
              PARAM_INFO, key, PARAM_INFO, p.shape().toString(), String.join(", ", dims), Init.class, p.init());
        }
        case ModuleIr.SubModule s -> m.addStatement("$L.parameters($L, prefix + $S, $L, out)", s.name() + "$",
            bind("config", s.bindings()), key + ".", childNames(s.bindings()));
        case ModuleIr.ModuleList l -> m.beginControlFlow("for (long i$$ = 0; i$$ < config.dim($S); i$$++)",
                l.countKey())
            .addStatement("$L.parameters($L, prefix + $S + i$$ + $S, $L, out)", l.name() + "$",
                bind("config", l.bindings()), key + ".", ".", childNames(l.bindings()))
            .endControlFlow();
        default -> {}
      }
    }
    t.addMethod(m.build());
  }

  private String childNames(Map<String, Dim> bindings) {
    if (bindings.isEmpty()) {
      return "names";
    }
    List<String> parts = new ArrayList<>();
    for (var e : new java.util.TreeMap<>(bindings).entrySet()) {
      parts.add("\"" + e.getKey() + "\", ParamInfo.renameDims(\"" + e.getValue() + "\", names)");
    }
    return "withNames(names, Map.of(" + String.join(", ", parts) + "))";
  }

  private void addPlusAndZeros(TypeSpec.Builder t) {
    MethodSpec.Builder plus = MethodSpec.methodBuilder("plus").addModifiers(Modifier.PUBLIC).returns(record)
        .addJavadoc("{@code a + b} parameter for parameter (a null record counts as zero): gradients of a module"
            + " used twice add up.\n")
        .addParameter(record, "a").addParameter(record, "b")
        .beginControlFlow("if (a == null || b == null)").addStatement("return a == null ? b : a").endControlFlow();
    MethodSpec.Builder zeros = MethodSpec.methodBuilder("zerosLike").addModifiers(Modifier.PUBLIC).returns(record)
        .addJavadoc("Zero gradients shaped as {@code p} (hyper-parameters copied).\n").addParameter(record, "p");
    List<String> sum = new ArrayList<>();
    List<String> zero = new ArrayList<>();
    for (ModuleIr.Component c : module.components().values()) {
      String n = c.name();
      switch (c) {
        case ModuleIr.ParamTensor p -> {
          sum.add("Sizes.plus(dev, a." + n + "(), b." + n + "())");
          zero.add("dev.zeros(dtype, p." + n + "().shape())");
        }
        case ModuleIr.SubModule s -> {
          sum.add(n + "$.plus(a." + n + "(), b." + n + "())");
          zero.add(n + "$.zerosLike(p." + n + "())");
        }
        case ModuleIr.ModuleList l -> {
          sum.add("java.util.stream.IntStream.range(0, a." + n + "().size()).mapToObj(i$ -> " + n + "$.plus(a." + n
              + "().get(i$), b." + n + "().get(i$))).toList()");
          zero.add("p." + n + "().stream().map(" + n + "$::zerosLike).toList()");
        }
        case ModuleIr.Hyper h -> {
          sum.add("a." + n + "()");
          zero.add("p." + n + "()");
        }
      }
    }
    plus.addStatement("return new $T($L)", record, String.join(", ", sum));
    zeros.addStatement("return new $T($L)", record, String.join(", ", zero));
    t.addMethod(plus.build());
    t.addMethod(zeros.build());
    TypeName names = ParameterizedTypeName.get(ClassName.get(Map.class), ClassName.get(String.class),
        ClassName.get(String.class));
    t.addMethod(MethodSpec.methodBuilder("withNames").addModifiers(Modifier.PRIVATE, Modifier.STATIC).returns(names)
        .addParameter(names, "names").addParameter(names, "bound")
        .addStatement("$T out = new $T<>(names)", names, LinkedHashMap.class).addStatement("out.putAll(bound)")
        .addStatement("return out").build());
  }

  // ---- forward and backward

  private BodyEmitter.Host host() {
    return new BodyEmitter.Host() {
      @Override
      public String plan(String pattern) {
        return plans.computeIfAbsent(pattern, p -> "P" + plans.size());
      }

      @Override
      public String kernel(FusedKernel k) {
        return kernelField(k);
      }

      @Override
      public String subField(String component) {
        return component + "$";
      }

      @Override
      public String componentType(String component) {
        ModuleIr.Component c = module.components().get(component);
        if (c instanceof ModuleIr.ModuleList l) {
          return canonical(l.elementType());
        }
        return componentType(component).toString();
      }

      @Override
      public List<String> calleeInputs(Node.Call c) {
        ModuleIr callee = c.component() == null ? module : callees.module(c.calleeType());
        return callee.forward().paramNames();
      }

      @Override
      public String calleeGradients(Node.Call c) {
        return c.component() == null ? "Gradients" : compiledOf(c.calleeType()).canonicalName() + ".Gradients";
      }

      @Override
      public String enumIs(String component, String constant) {
        String type = canonical(((ModuleIr.Hyper) module.components().get(component)).enumType());
        String pkg = compiled.packageName();
        if (!pkg.isEmpty() && type.startsWith(pkg + ".")) {
          // Same package as the generated class: the simple (or Outer.Inner) name resolves, and reads best.
          return "params$." + component + "() == " + type.substring(pkg.length() + 1) + "." + constant;
        }
        // A qualified name would start with a package that a field may hide (the field 'dev' hides 'dev.kiln...').
        return "params$." + component + "().name().equals(\"" + constant + "\")";
      }

      @Override
      public String hyperByKey(String key) {
        for (ModuleIr.Component c : module.components().values()) {
          if (c instanceof ModuleIr.Hyper h && h.configKey().equals(key)) {
            return h.name();
          }
        }
        return null;
      }
    };
  }

  private MethodSpec forward(Lowering.Result r, String name) {
    MethodSpec.Builder m = MethodSpec.methodBuilder(name).addModifiers(Modifier.PUBLIC).returns(TENSOR)
        .addJavadoc("The generated {@code $L}: saves in {@code ctx$$} what {@link #$L} needs.\n", r.graph.method(),
            name.equals("forward") ? "backward" : "lossBackward")
        .addParameter(CONTEXT, "ctx$").addParameter(record, "params$");
    for (Graph.Input in : r.graph.inputs()) {
      m.addParameter(TENSOR, in.name());
    }
    BodyEmitter e = new BodyEmitter(module, r, host(), false);
    StringBuilder sig = new StringBuilder();
    for (Graph.Input in : r.graph.inputs()) {
      sig.append(sig.isEmpty() ? "" : ", ").append(in.name()).append(": '").append(in.declared()).append("'");
    }
    e.result("// " + sig + " -> '" + r.graph.result() + "'");
    e.checks(r.graph.checks());
    e.saveInputs();
    e.block(r.graph.body());
    e.result("return " + e.ref(r.graph.body().results().get(0)) + ";");
    m.addCode("$L", e.code());
    return m.build();
  }

  private MethodSpec backward(Lowering.Result r, String name, String gradients) {
    ClassName g = compiled.nestedClass(gradients);
    MethodSpec.Builder m = MethodSpec.methodBuilder(name).addModifiers(Modifier.PUBLIC).returns(g)
        .addParameter(CONTEXT, "ctx$").addParameter(record, "params$").addParameter(TENSOR, "dOut");
    BodyEmitter e = new BodyEmitter(module, r, host(), true);
    e.name(r.backward.dOut(), "dOut");
    List<String> plus = new ArrayList<>();
    for (int i = 0; i < r.backward.seeds().size(); i++) {
      Value seed = r.backward.seeds().get(i);
      if (seed != null) {
        String n = r.graph.inputs().get(i).name() + "Plus";
        m.addParameter(TENSOR, n);
        e.name(seed, n);
        plus.add("{@code " + n + "}");
      }
    }
    if (plus.isEmpty()) {
      m.addJavadoc("The gradient of {@code $L} given the gradient {@code dOut} of its result, from what it saved in"
          + " {@code ctx$$}.\n", r.graph.method());
    } else {
      m.addJavadoc("{@link #backward(Context, $T, Tensor)}, with $L added to the gradient$L of the input$L of the same"
          + " name (not changed), inside the kernel$L that compute$L $L: a caller that would add the gradient to one"
          + " of its own passes that instead, and saves the add's pass over memory.\n", record,
          String.join(", ", plus), plus.size() > 1 ? "s" : "", plus.size() > 1 ? "s" : "", plus.size() > 1 ? "s" : "",
          plus.size() > 1 ? "" : "s", plus.size() > 1 ? "them" : "it");
    }
    for (ModuleIr.Component c : module.components().values()) {
      switch (c) {
        case ModuleIr.ParamTensor p -> e.result("Tensor " + p.name() + "$g = null;");
        case ModuleIr.SubModule s -> e.result(canonical(s.type()) + " " + s.name() + "$g = null;");
        case ModuleIr.ModuleList l -> e.result("List<" + canonical(l.elementType()) + "> " + l.name()
            + "$g = new ArrayList<>(Collections.nCopies(params$." + l.name() + "().size(), null));");
        default -> {}
      }
    }
    e.block(r.backward.block());
    List<String> comps = new ArrayList<>();
    for (ModuleIr.Component c : module.components().values()) {
      String n = c.name();
      switch (c) {
        case ModuleIr.ParamTensor p -> comps.add(n + "$g != null ? " + n + "$g : dev.zeros(dtype, params$." + n
            + "().shape())");
        case ModuleIr.SubModule s -> comps.add(n + "$g != null ? " + n + "$g : " + n + "$.zerosLike(params$." + n
            + "())");
        case ModuleIr.ModuleList l -> {
          e.result("for (int j$ = 0; j$ < " + n + "$g.size(); j$++) {");
          e.result("  if (" + n + "$g.get(j$) == null) " + n + "$g.set(j$, " + n + "$.zerosLike(params$." + n
              + "().get(j$)));");
          e.result("}");
          comps.add("List.copyOf(" + n + "$g)");
        }
        case ModuleIr.Hyper h -> comps.add("params$." + n + "()");
      }
    }
    List<String> inputs = new ArrayList<>();
    for (Value v : r.backward.inputGrads()) {
      inputs.add(v == null ? "null" : e.ref(v));
    }
    e.result("return new " + gradients + "(new " + String.join(".", record.simpleNames()) + "(" + String.join(", ", comps) + ")"
        + (inputs.isEmpty() ? "" : ", ") + String.join(", ", inputs) + ");");
    m.addCode("$L", e.code());
    return m.build();
  }
}
