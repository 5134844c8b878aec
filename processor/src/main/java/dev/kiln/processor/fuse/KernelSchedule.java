package dev.kiln.processor.fuse;

import dev.kiln.processor.fuse.FusedKernel.Level;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Value;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * The order in which one row of a {@link FusedKernel} is computed, shared by the Java and the CUDA emitter: per-row
 * values, then a pass over the row's columns computing the per-element values that the next reductions and outputs
 * need (recomputing a per-element value in a later pass rather than keeping the row), and so on. Softmax is three
 * passes (max, sum of exponentials, output); RMSNorm two (sum of squares, output).
 */
public final class KernelSchedule {
  /** One step of the schedule. */
  public sealed interface Step {}

  /** Per-row members computed once per row, in order. */
  public record RowValues(List<Node.Prim> members) implements Step {}

  /**
   * A pass over the columns: computes {@code members} (per-element, in order) and accumulates {@code reductions}
   * (whose results are per-row values after the pass), and writes {@code outputs}.
   */
  public record Pass(List<Node.Prim> members, List<Node.Prim> reductions, List<Value> outputs) implements Step {}

  /** Writes per-row outputs. */
  public record RowOutputs(List<Value> outputs) implements Step {}

  private KernelSchedule() {}

  public static List<Step> of(FusedKernel k) {
    List<Step> steps = new ArrayList<>();
    Set<Value> rowReady = new HashSet<>();
    for (var e : k.inputs().entrySet()) {
      if (e.getValue() != Level.FULL && e.getValue() != Level.COL) {
        rowReady.add(e.getKey());
      }
    }
    rowReady.addAll(k.scalars());
    Set<Value> members = new HashSet<>();
    for (Node.Prim p : k.members()) {
      members.add(p.out());
    }
    List<Node.Prim> pendingReductions = new ArrayList<>();
    List<Node.Prim> rowMembers = new ArrayList<>();
    for (Node.Prim p : k.members()) {
      if (Fusion.isRowReduction(p)) {
        pendingReductions.add(p);
      } else if (k.levels().get(p.out()) == Level.ROW) {
        rowMembers.add(p);
      }
    }
    List<Value> pendingFull = new ArrayList<>();
    List<Value> pendingRow = new ArrayList<>();
    for (var e : k.outputs().entrySet()) {
      (e.getValue() == Level.FULL ? pendingFull : pendingRow).add(e.getKey());
    }
    int guard = 0;
    while (!pendingReductions.isEmpty() || !pendingFull.isEmpty() || !pendingRow.isEmpty()) {
      if (guard++ > 4 * k.members().size() + 4) {
        throw new IllegalStateException("kernel " + k.name() + " cannot be scheduled");
      }
      List<Node.Prim> rowNow = new ArrayList<>();
      boolean progress = true;
      while (progress) {
        progress = false;
        for (Node.Prim p : rowMembers) {
          if (!rowReady.contains(p.out()) && rowReady.containsAll(p.inputs())) {
            rowNow.add(p);
            rowReady.add(p.out());
            progress = true;
          }
        }
      }
      if (!rowNow.isEmpty()) {
        steps.add(new RowValues(rowNow));
      }
      List<Value> rowOut = new ArrayList<>();
      for (Value v : pendingRow) {
        if (rowReady.contains(v)) {
          rowOut.add(v);
        }
      }
      if (!rowOut.isEmpty()) {
        pendingRow.removeAll(rowOut);
        steps.add(new RowOutputs(rowOut));
      }
      List<Node.Prim> reductions = new ArrayList<>();
      Set<Value> cone = new LinkedHashSet<>();
      for (Node.Prim r : pendingReductions) {
        Set<Value> c = new LinkedHashSet<>();
        if (coneReady(k, r.inputs().get(0), members, rowReady, c)) {
          reductions.add(r);
          cone.addAll(c);
        }
      }
      List<Value> outs = new ArrayList<>();
      for (Value v : pendingFull) {
        Set<Value> c = new LinkedHashSet<>();
        if (coneReady(k, v, members, rowReady, c)) {
          outs.add(v);
          cone.addAll(c);
        }
      }
      if (reductions.isEmpty() && outs.isEmpty()) {
        continue;
      }
      List<Node.Prim> passMembers = new ArrayList<>();
      for (Node.Prim p : k.members()) {
        if (cone.contains(p.out())) {
          passMembers.add(p);
        }
      }
      steps.add(new Pass(passMembers, reductions, outs));
      pendingReductions.removeAll(reductions);
      pendingFull.removeAll(outs);
      for (Node.Prim r : reductions) {
        rowReady.add(r.out());
      }
    }
    return steps;
  }

  /** The per-element members {@code v} needs, when every per-row value it needs is ready. */
  private static boolean coneReady(FusedKernel k, Value v, Set<Value> members, Set<Value> rowReady, Set<Value> cone) {
    if (!members.contains(v)) {
      return true; // an input or a scalar
    }
    Level l = k.levels().get(v);
    if (l != Level.FULL) {
      return rowReady.contains(v);
    }
    if (cone.contains(v)) {
      return true;
    }
    Node.Prim def = null;
    for (Node.Prim p : k.members()) {
      if (p.out() == v) {
        def = p;
      }
    }
    for (Value in : def.inputs()) {
      if (!coneReady(k, in, members, rowReady, cone)) {
        return false;
      }
    }
    cone.add(v);
    return true;
  }
}
