package dev.kiln.processor.emit.java;

import com.palantir.javapoet.ArrayTypeName;
import com.palantir.javapoet.ClassName;
import com.palantir.javapoet.MethodSpec;
import com.palantir.javapoet.TypeName;
import com.palantir.javapoet.TypeSpec;
import dev.kiln.processor.fuse.FusedKernel;
import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.fuse.KernelSchedule;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.lang.model.element.Modifier;

/**
 * The Java side of the fused kernels: one static method per kernel over contiguous {@code MemorySegment}s, plain
 * loops over a row's columns that the JIT vectorises. Elements are read as {@code double} and results rounded to the
 * kernel's dtype when written, so the float32 and float64 variants share one body.
 */
public final class KernelJavaEmitter {
  private static final ClassName SEGMENT = ClassName.get("java.lang.foreign", "MemorySegment");
  private static final ClassName DTYPE = ClassName.get("dev.kiln.dsl", "DType");

  private KernelJavaEmitter() {}

  /** The kernels class: {@code public static void <name>(DType, MemorySegment[], long rows, long cols, double[])}. */
  public static TypeSpec type(String name, List<FusedKernel> kernels) {
    TypeSpec.Builder t = TypeSpec.classBuilder(name).addModifiers(Modifier.PUBLIC, Modifier.FINAL)
        .addJavadoc("The fused kernels of this module, for the CPU. Each has a twin of the same name in the module's\n"
            + "CUDA C; {@code Device.launch} runs one or the other. Tensors are contiguous, inputs first, then\n"
            + "outputs (written with {@code =}).\n")
        .addMethod(MethodSpec.constructorBuilder().addModifiers(Modifier.PRIVATE).build());
    for (FusedKernel k : kernels) {
      t.addMethod(entry(k));
      t.addMethod(body(k, "f32", "JAVA_FLOAT", "(float) "));
      t.addMethod(body(k, "f64", "JAVA_DOUBLE", ""));
    }
    return t.build();
  }

  /** A comment listing what a kernel reads and writes. */
  public static String signatureComment(FusedKernel k) {
    StringBuilder b = new StringBuilder();
    b.append("Kernel ").append(k.name()).append(k.hasReduction() ? " (one row at a time)" : " (pointwise)")
        .append(" over '").append(k.domain()).append("': ").append(k.describe()).append('\n');
    int i = 0;
    for (var e : k.inputs().entrySet()) {
      b.append("  t").append(i++).append(" in  ").append(e.getValue().name().toLowerCase()).append(" v")
          .append(e.getKey().id()).append(" '").append(e.getKey().shape()).append("'")
          .append(k.bf16Inputs().contains(e.getKey()) ? " (a GEMM output: may come in bf16 in mixed precision)" : "")
          .append('\n');
    }
    for (var e : k.outputs().entrySet()) {
      b.append("  t").append(i++).append(" out ").append(e.getValue().name().toLowerCase()).append(" v")
          .append(e.getKey().id()).append(" '").append(e.getKey().shape()).append("'")
          .append(k.resultGemmOperands().contains(e.getKey())
              ? " (the result: bf16 in mixed precision when only the caller's GEMMs read it)"
              : k.gemmOperands().contains(e.getKey()) ? " (only GEMMs read it: bf16 in mixed precision)"
              : k.columnSums().contains(e.getKey()) ? " (summed over runs of rows: [partials, cols])" : "")
          .append('\n');
    }
    int s = 0;
    for (Value v : k.scalars()) {
      b.append("  s").append(s++).append(" scalar v").append(v.id()).append('\n');
    }
    return b.toString();
  }

  private static MethodSpec entry(FusedKernel k) {
    int n = k.inputs().size() + k.outputs().size();
    List<String> args = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      args.add("t[" + i + "]");
    }
    String call = String.join(", ", args) + ", rows, cols, s";
    return MethodSpec.methodBuilder(k.name()).addModifiers(Modifier.PUBLIC, Modifier.STATIC)
        .addJavadoc("$L", signatureComment(k))
        .addParameter(DTYPE, "dtype").addParameter(ArrayTypeName.of(SEGMENT), "t")
        .addParameter(TypeName.LONG, "rows").addParameter(TypeName.LONG, "cols")
        .addParameter(ArrayTypeName.of(TypeName.DOUBLE), "s")
        .beginControlFlow("switch (dtype)")
        .addStatement("case F32 -> $L", k.name() + "_f32(" + call + ")")
        .addStatement("case F64 -> $L", k.name() + "_f64(" + call + ")")
        .addStatement("default -> throw new IllegalArgumentException($S + dtype)",
            "kernel " + k.name() + " runs on F32 or F64 tensors, not ")
        .endControlFlow()
        .build();
  }

  private static MethodSpec body(FusedKernel k, String suffix, String layout, String narrow) {
    MethodSpec.Builder m = MethodSpec.methodBuilder(k.name() + "_" + suffix).addModifiers(Modifier.PRIVATE,
        Modifier.STATIC);
    int n = 0;
    Map<Value, String> tensor = new HashMap<>();
    for (Value v : k.inputs().keySet()) {
      tensor.put(v, "t" + n);
      m.addParameter(SEGMENT, "t" + n++);
    }
    Map<Value, String> outTensor = new HashMap<>();
    for (Value v : k.outputs().keySet()) {
      outTensor.put(v, "t" + n);
      m.addParameter(SEGMENT, "t" + n++);
    }
    m.addParameter(TypeName.LONG, "rows").addParameter(TypeName.LONG, "cols")
        .addParameter(ArrayTypeName.of(TypeName.DOUBLE), "s");
    String L = "java.lang.foreign.ValueLayout." + layout;
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < k.scalars().size(); i++) {
      b.append("final double v").append(k.scalars().get(i).id()).append(" = s[").append(i).append("];\n");
    }
    List<KernelSchedule.Step> steps = KernelSchedule.of(k);
    Map<Value, String> kept = keptAcrossPasses(steps);
    for (var e : kept.entrySet()) {
      b.append("final double[] ").append(e.getValue()).append(" = new double[Math.toIntExact(cols)];\n");
    }
    Set<Value> stored = new HashSet<>();
    // A column-sum output has partials = size / cols rows; row r adds into partial row r / per, the first row of a run
    // writes it (Kernel.columnSums).
    for (Value v : k.columnSums()) {
      String t = outTensor.get(v);
      b.append("final long per").append(t).append(" = cols == 0 ? 1 : Math.max(1L, (rows + ").append(t)
          .append(".byteSize() / ").append(L).append(".byteSize() / cols - 1) / Math.max(1L, ").append(t)
          .append(".byteSize() / ").append(L).append(".byteSize() / cols));\n");
    }
    b.append("for (long r = 0; r < rows; r++) {\n");
    for (var e : k.inputs().entrySet()) {
      if (e.getValue() == Level.ROW || e.getValue() == Level.SCALAR) {
        b.append("  final double v").append(e.getKey().id()).append(" = ").append(tensor.get(e.getKey()))
            .append(".getAtIndex(").append(L).append(", ").append(e.getValue() == Level.ROW ? "r" : "0").append(");\n");
      }
    }
    for (KernelSchedule.Step st : steps) {
      switch (st) {
        case KernelSchedule.RowValues rv -> {
          for (Node.Prim p : rv.members()) {
            b.append("  final double v").append(p.out().id()).append(" = ").append(expr(p)).append(";\n");
          }
        }
        case KernelSchedule.RowOutputs ro -> {
          for (Value v : ro.outputs()) {
            b.append("  ").append(outTensor.get(v)).append(".setAtIndex(").append(L).append(", r, ").append(narrow)
                .append('v').append(v.id()).append(");\n");
          }
        }
        case KernelSchedule.Pass pass -> {
          for (Node.Prim red : pass.reductions()) {
            b.append("  double acc").append(red.out().id()).append(" = ")
                .append(red.op() == Primitive.SUM ? "0.0" : "Double.NEGATIVE_INFINITY").append(";\n");
          }
          b.append("  for (long c = 0, i = r * cols; c < cols; c++, i++) {\n");
          List<Value> loaded = new ArrayList<>();
          List<Value> storedHere = new ArrayList<>();
          for (Node.Prim p : pass.members()) {
            String keep = kept.get(p.out());
            if (keep != null && stored.contains(p.out())) {
              b.append("    final double v").append(p.out().id()).append(" = ").append(keep).append("[(int) c];\n");
              continue;
            }
            for (Value in : p.inputs()) {
              Level l = k.inputs().get(in);
              if ((l == Level.FULL || l == Level.COL) && !loaded.contains(in)) {
                loaded.add(in);
                b.append("    final double v").append(in.id()).append(" = ").append(tensor.get(in))
                    .append(".getAtIndex(").append(L).append(", ").append(l == Level.FULL ? "i" : "c").append(");\n");
              }
            }
            b.append("    final double v").append(p.out().id()).append(" = ").append(expr(p)).append(";\n");
            if (keep != null) {
              b.append("    ").append(keep).append("[(int) c] = v").append(p.out().id()).append(";\n");
              storedHere.add(p.out());
            }
          }
          for (Node.Prim red : pass.reductions()) {
            String x = "v" + red.inputs().get(0).id();
            Level l = k.inputs().get(red.inputs().get(0));
            if (l != null && !loaded.contains(red.inputs().get(0))) {
              b.append("    final double ").append(x).append(" = ").append(tensor.get(red.inputs().get(0)))
                  .append(".getAtIndex(").append(L).append(", i);\n");
              loaded.add(red.inputs().get(0));
            }
            String acc = "acc" + red.out().id();
            b.append("    ").append(acc).append(red.op() == Primitive.SUM ? " += " + x : " = Math.max(" + acc + ", " + x
                + ")").append(";\n");
          }
          for (Value v : pass.outputs()) {
            String t = outTensor.get(v);
            if (k.columnSums().contains(v)) {
              String at = "(r / per" + t + ") * cols + c";
              b.append("    ").append(t).append(".setAtIndex(").append(L).append(", ").append(at).append(", ")
                  .append(narrow).append("(r % per").append(t).append(" == 0 ? v").append(v.id()).append(" : ")
                  .append(t).append(".getAtIndex(").append(L).append(", ").append(at).append(") + v").append(v.id())
                  .append("));\n");
              continue;
            }
            b.append("    ").append(t).append(".setAtIndex(").append(L).append(", i, ").append(narrow)
                .append('v').append(v.id()).append(");\n");
          }
          b.append("  }\n");
          stored.addAll(storedHere);
          for (Node.Prim red : pass.reductions()) {
            b.append("  final double v").append(red.out().id()).append(" = acc").append(red.out().id()).append(";\n");
          }
        }
      }
    }
    b.append("}\n");
    m.addCode("$L", b.toString());
    return m.build();
  }

  /**
   * Per-element transcendental values ({@code exp}, {@code log}, ...) that more than one pass of a row computes,
   * each with the name of a row-long scratch array: the first pass stores them and later passes read them back
   * instead of calling the math function again (same doubles, so the results do not change). Cheap arithmetic is
   * still recomputed, as the schedule intends; only the Java emitter keeps rows (a CUDA thread's row would not fit).
   */
  private static Map<Value, String> keptAcrossPasses(List<KernelSchedule.Step> steps) {
    Map<Value, String> kept = new LinkedHashMap<>();
    Set<Value> seen = new HashSet<>();
    for (KernelSchedule.Step st : steps) {
      if (st instanceof KernelSchedule.Pass pass) {
        for (Node.Prim p : pass.members()) {
          if (!seen.add(p.out()) && COSTLY.contains(p.op())) {
            kept.putIfAbsent(p.out(), "row" + p.out().id());
          }
        }
      }
    }
    return kept;
  }

  private static final Set<Primitive> COSTLY = EnumSet.of(Primitive.EXP, Primitive.LOG, Primitive.TANH,
      Primitive.SIGMOID, Primitive.COS, Primitive.SIN);

  /** The Java expression of one pointwise member over its inputs' locals. */
  static String expr(Node.Prim p) {
    Object[] args = new Object[p.inputs().size()];
    for (int i = 0; i < args.length; i++) {
      args[i] = "v" + p.inputs().get(i).id();
    }
    String f = p.op().rules().cpu();
    if (f == null) {
      throw new IllegalStateException(p.op() + " has no CPU expression");
    }
    return String.format(f, args);
  }
}
