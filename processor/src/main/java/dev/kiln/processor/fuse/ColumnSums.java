package dev.kiln.processor.fuse;

import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Pass 7, after {@link GemmOperands}: finds the full outputs of row kernels that nothing reads but one {@code SUM_TO}
 * down to a vector of the last dim. A norm's backward is the case: its kernel writes {@code dy · x̂} for every
 * element, and the weight's gradient is that summed over the rows. Written in full, that is a second
 * {@code rows × cols} array, written once and read once by the sum (on TinyStories, 64 MB each way per norm). Marked
 * here ({@link FusedKernel#columnSums()}), the kernel sums its rows itself, one partial row per run of rows
 * ({@code Kernel.columnSums}, {@code Device.columnSumRows}), and the {@code SUM_TO} adds up the few partial rows.
 */
public final class ColumnSums {
  private ColumnSums() {}

  /** Marks the column-sum outputs of {@code plan}'s row kernels. */
  public static void run(Lowering.Result plan) {
    Map<Value, List<Node.Prim>> sums = new HashMap<>();
    Map<Value, Integer> reads = new HashMap<>();
    scan(plan.graph.body(), plan, sums, reads);
    scan(plan.backward.block(), plan, sums, reads);
    List<FusedKernel> kernels = new ArrayList<>(plan.forwardKernels);
    kernels.addAll(plan.backwardKernels);
    for (FusedKernel k : kernels) {
      if (!k.hasReduction()) {
        continue; // a pointwise kernel has no rows of its own to sum over
      }
      int index = 0;
      for (var e : k.outputs().entrySet()) {
        Value v = e.getKey();
        List<Node.Prim> by = sums.getOrDefault(v, List.of());
        // Kernel.columnSums is a 64-bit mask over the outputs: those past the 64th stay full.
        if (index++ < 64 && e.getValue() == Level.FULL && !k.gemmOperands().contains(v) && !plan.saved.containsKey(v)
            && by.size() == 1 && reads.getOrDefault(v, 0) == 1
            && Fusion.level(by.get(0).out().shape(), k.domain()) == Level.COL) {
          k.columnSums.add(v);
        }
      }
    }
  }

  /**
   * Counts every read of every value in {@code b} (nested blocks included; a kernel member reading what its own
   * kernel computed reads a register, not counted), and lists the {@code SUM_TO}s outside kernels by their input.
   */
  private static void scan(Block b, Lowering.Result plan, Map<Value, List<Node.Prim>> sums,
      Map<Value, Integer> reads) {
    for (Node n : b.nodes()) {
      switch (n) {
        case Node.Prim p -> {
          FusedKernel k = plan.kernelOf.get(p);
          for (Value v : p.inputs()) {
            if (k == null || !k.levels().containsKey(v) || k.inputs().containsKey(v)) {
              read(v, reads);
            }
          }
          if (p.op() == Primitive.SUM_TO && k == null) {
            sums.computeIfAbsent(p.inputs().get(0), x -> new ArrayList<>()).add(p);
          }
        }
        case Node.ParamRead r -> {}
        case Node.Call c -> c.args().forEach(v -> read(v, reads));
        case Node.CallGrad g -> {
          g.reads().forEach(v -> read(v, reads));
          g.call().args().forEach(v -> read(v, reads));
        }
        case Node.ParamGrad g -> read(g.grad(), reads);
        case Node.Loop l -> {
          l.init().forEach(v -> read(v, reads));
          scan(l.body(), plan, sums, reads);
        }
        case Node.LoopGrad l -> {
          l.init().forEach(v -> read(v, reads));
          l.externals().forEach(v -> read(v, reads));
          scan(l.body(), plan, sums, reads);
        }
        case Node.Branch br -> {
          scan(br.then(), plan, sums, reads);
          scan(br.otherwise(), plan, sums, reads);
        }
      }
    }
    b.results().forEach(v -> read(v, reads));
  }

  private static void read(Value v, Map<Value, Integer> reads) {
    if (v != null) {
      reads.merge(v, 1, Integer::sum);
    }
  }
}
