package dev.kiln.processor.fuse;

import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A chain of pointwise primitives and last-dim reductions run as one kernel over a {@code [rows, cols]} domain
 * ({@code cols} the last dim of {@link #domain}). Every value in it is at one {@link Level}; tensor inputs are read at
 * their level, {@code CONST} inputs arrive as scalar arguments, outputs are written at theirs.
 */
public final class FusedKernel {
  /** Where a value of the kernel lives relative to the domain {@code [rows, cols]}. */
  public enum Level {
    /** One value per element ({@code row * cols + col}). */
    FULL,
    /** One value per row: the domain with its last dim 1 (row statistics). */
    ROW,
    /** A last-dim vector broadcast over the rows ({@code col}). */
    COL,
    /** One value. */
    SCALAR
  }

  String name;
  final Shape domain;
  final List<Node.Prim> members = new ArrayList<>();
  /** Tensor inputs in launch order, with their level. */
  final Map<Value, Level> inputs = new LinkedHashMap<>();
  /** CONST values used as scalar arguments, in order. */
  final List<Value> scalars = new ArrayList<>();
  /** Outputs in launch order (after the inputs), FULL or ROW. */
  final Map<Value, Level> outputs = new LinkedHashMap<>();
  final Map<Value, Level> levels = new LinkedHashMap<>();
  /** Full outputs that only GEMMs read ({@link GemmOperands}): a mixed-precision device may store them in bf16. */
  final java.util.Set<Value> gemmOperands = new java.util.LinkedHashSet<>();
  /** Those of {@link #gemmOperands} that are the forward's result: GEMM operands when the caller's reads are. */
  final java.util.Set<Value> resultGemmOperands = new java.util.LinkedHashSet<>();

  /** Inputs that may be GEMM outputs stored in bf16 ({@link GemmOperands}): read through a conversion. */
  final java.util.Set<Value> bf16Inputs = new java.util.LinkedHashSet<>();

  /**
   * Full outputs of a ROWS kernel that only a {@code SUM_TO} down to a last-dim vector reads ({@link ColumnSums}): the
   * kernel writes them summed over runs of rows, as {@code Kernel.columnSums} says.
   */
  final java.util.Set<Value> columnSums = new java.util.LinkedHashSet<>();

  /**
   * For each of {@link #gemmOperands}, the component (sub-module field) whose backward takes it as the gradient of
   * its result, where there is one ({@link GemmOperands}); the generated code orders such outputs by those
   * components' declaration ({@code Device.emptyGemmOperands}).
   */
  final Map<Value, String> gemmOperandReaders = new LinkedHashMap<>();

  /**
   * The output of a plain sum of inputs ({@link #sumOfInputs()}) whose every reader takes bf16, and when
   * ({@link GemmOperands}): the generated code allocates it with {@code Device.emptyGemmResult} under that
   * condition, and a device that computes the sum as one GEMM writes it rounded once (attention's input gradient,
   * which a norm's backward reads next). Null where there is none.
   */
  GemmOperands.Bf16When bf16SumOutput;

  FusedKernel(String name, Shape domain) {
    this.name = name;
    this.domain = domain;
  }

  public String name() {
    return name;
  }

  /**
   * Makes this kernel launch {@code twin}'s function: for a kernel whose generated code equals one already emitted
   * but for value numbering (another branch arm's, or the plain form's for the backward's adding form), so that the
   * code is emitted once.
   */
  public void launchAs(FusedKernel twin) {
    name = twin.name;
  }

  public Shape domain() {
    return domain;
  }

  public List<Node.Prim> members() {
    return members;
  }

  public Map<Value, Level> inputs() {
    return inputs;
  }

  public List<Value> scalars() {
    return scalars;
  }

  public Map<Value, Level> outputs() {
    return outputs;
  }

  /** The outputs only GEMMs read, in output order: a mixed-precision device may store them in bf16. */
  public java.util.Set<Value> gemmOperands() {
    return gemmOperands;
  }

  /**
   * The outputs of {@link #gemmOperands()} that are the module's forward result: stored in bf16 only when the caller
   * reads the result in GEMMs alone ({@code Context.resultForGemms}).
   */
  public java.util.Set<Value> resultGemmOperands() {
    return resultGemmOperands;
  }

  /** The inputs that may arrive as GEMM outputs stored in bf16, in input order. */
  public java.util.Set<Value> bf16Inputs() {
    return bf16Inputs;
  }

  /** {@link #bf16Inputs()} as a bit mask over the inputs (bit i: input i), as {@code Kernel} carries it. */
  public long bf16InputMask() {
    return mask(inputs.keySet(), bf16Inputs);
  }

  /** The outputs written as column sums over runs of rows, in output order ({@link ColumnSums}). */
  public java.util.Set<Value> columnSums() {
    return columnSums;
  }

  /** {@link #columnSums()} as a bit mask over the outputs (bit i: output i), as {@code Kernel} carries it. */
  public long columnSumMask() {
    return mask(outputs.keySet(), columnSums);
  }

  /**
   * The output that the kernel's {@code _tw} variants also write rounded to bf16, or -1: in a row kernel without
   * GEMM-only outputs, its one full output (not a column sum). A norm's backward writes the residual stream's
   * gradient that way, and the next module's backward reads it first in GEMMs, which a mixed-precision device would
   * otherwise cast in a pass of its own (Kernel.twinOutput).
   */
  public int twinOutput() {
    if (!hasReduction() || !gemmOperands.isEmpty()) {
      return -1;
    }
    int found = -1;
    int i = 0;
    for (var e : outputs.entrySet()) {
      if (e.getValue() == Level.FULL && !columnSums.contains(e.getKey())) {
        if (found >= 0) {
          return -1;
        }
        found = i;
      }
      i++;
    }
    return found;
  }

  /**
   * Whether the kernel is a plain sum of its inputs ({@code Kernel.sumOfInputs}): pointwise, no scalars, every input
   * and the one output full, every member an add of two full values, each input and each partial sum read once, the
   * last sum the output. A device may then produce the output another way, such as one GEMM over the stacked
   * operands of the GEMMs whose results the inputs are.
   */
  public boolean sumOfInputs() {
    if (hasReduction() || outputs.size() != 1 || !scalars.isEmpty() || inputs.size() < 2) {
      return false;
    }
    Value out = outputs.keySet().iterator().next();
    if (outputs.get(out) != Level.FULL || inputs.containsValue(Level.ROW) || inputs.containsValue(Level.COL)
        || inputs.containsValue(Level.SCALAR)) {
      return false;
    }
    Map<Value, Integer> reads = new java.util.HashMap<>();
    java.util.Set<Value> sums = new java.util.HashSet<>();
    for (Node.Prim p : members) {
      if (p.op() != dev.kiln.processor.ir.Primitive.ADD || p.inputs().size() != 2
          || levels.get(p.out()) != Level.FULL) {
        return false;
      }
      for (Value v : p.inputs()) {
        if (!inputs.containsKey(v) && !sums.contains(v)) {
          return false;
        }
        reads.merge(v, 1, Integer::sum);
      }
      sums.add(p.out());
    }
    for (Value v : inputs.keySet()) {
      if (reads.getOrDefault(v, 0) != 1) {
        return false;
      }
    }
    for (Value v : sums) {
      if (reads.getOrDefault(v, 0) != (v.equals(out) ? 0 : 1)) {
        return false;
      }
    }
    return sums.contains(out);
  }

  /** {@link #bf16SumOutput}: when the plain sum's output may be stored in bf16, or null. */
  public GemmOperands.Bf16When bf16SumOutput() {
    return bf16SumOutput;
  }

  /** {@link #gemmOperandReaders}: the sub-module whose backward reads each GEMM-only output, where one does. */
  public Map<Value, String> gemmOperandReaders() {
    return gemmOperandReaders;
  }

  /**
   * Whether the kernel takes its GEMM-only outputs' row stride ({@code Kernel.gemmOperandRowStride}): a pointwise
   * kernel of two or more of them, which the generated code allocates together ({@code Device.emptyGemmOperands})
   * and a device may lay side by side in the rows of one matrix. Not for the forward's results (their storage
   * depends on the caller).
   */
  public boolean gemmOperandRowStride() {
    return !hasReduction() && resultGemmOperands.isEmpty() && Long.bitCount(gemmOperandMask()) >= 2;
  }

  /** {@link #gemmOperands()} as a bit mask over the outputs (bit i: output i), as {@code Kernel} carries it. */
  public long gemmOperandMask() {
    return mask(outputs.keySet(), gemmOperands);
  }

  /** Bit i set where the i-th of {@code order} is one of {@code marked}; past the 64th none is (a mask is a long). */
  private static long mask(java.util.Collection<Value> order, java.util.Set<Value> marked) {
    long mask = 0;
    int i = 0;
    for (Value v : order) {
      if (i < 64 && marked.contains(v)) {
        mask |= 1L << i;
      }
      i++;
    }
    return mask;
  }

  /** The level of every member's result. */
  public Map<Value, Level> levels() {
    return levels;
  }

  /** Whether the kernel reduces over rows (a ROWS kernel: one CUDA block per row) rather than pointwise. */
  public boolean hasReduction() {
    for (Node.Prim p : members) {
      if (Fusion.isRowReduction(p)) {
        return true;
      }
    }
    return false;
  }

  /** The member the kernel is launched at: its last. */
  public Node.Prim anchor() {
    return members.get(members.size() - 1);
  }

  /** A full-size input, which gives the domain's actual shape at launch (every kernel starts from one). */
  public Value domainSource() {
    for (var e : inputs.entrySet()) {
      if (e.getValue() == Level.FULL) {
        return e.getKey();
      }
    }
    throw new IllegalStateException("kernel " + name + " has no full-size tensor");
  }

  /** Where the members came from, for the kernel's comment. */
  public String describe() {
    List<String> ops = new ArrayList<>();
    for (Node.Prim p : members) {
      ops.add(p.op().name().toLowerCase());
    }
    return String.join(" ", ops);
  }
}
