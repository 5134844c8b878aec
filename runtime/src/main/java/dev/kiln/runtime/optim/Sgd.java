package dev.kiln.runtime.optim;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Stochastic gradient descent as {@code torch.optim.SGD} computes it (dampening 0):
 *
 * <pre>
 *   g ← g + λ·θ                                (coupled weight decay, when λ > 0)
 *   b ← g on the first step, else μ·b + g      (when momentum μ > 0)
 *   θ ← θ − lr·b                               (θ − lr·(g + μ·b) with Nesterov)
 * </pre>
 *
 * State: {@code momentum_buffer} per parameter (kept, as zeros, also when μ = 0, so the file layout never depends on
 * a hyper-parameter).
 */
public final class Sgd extends Optimizer {
  private final double momentum;
  private final double weightDecay;
  private final boolean nesterov;
  private final ParameterSet buffers;

  public Sgd(ParameterSet params, double momentum, double weightDecay, boolean nesterov) {
    super(params);
    if (!(momentum >= 0 && momentum < 1) || !(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
      throw new IllegalArgumentException(
          "SGD needs momentum in [0, 1) and a finite weight decay >= 0, got momentum " + momentum + ", weight decay "
              + weightDecay);
    }
    if (nesterov && momentum == 0) {
      throw new IllegalArgumentException("Nesterov SGD needs momentum > 0");
    }
    this.momentum = momentum;
    this.weightDecay = weightDecay;
    this.nesterov = nesterov;
    this.buffers = ParameterSet.zerosLike(params);
  }

  @Override
  public String kind() {
    return "sgd";
  }

  @Override
  protected String[] slots() {
    return new String[] {"momentum_buffer"};
  }

  @Override
  protected NdArray slot(String slot, String param) {
    return buffers.get(param);
  }

  @Override
  protected Map<String, String> hyperParameters() {
    Map<String, String> m = new LinkedHashMap<>();
    m.put("momentum", Double.toString(momentum));
    m.put("weight_decay", Double.toString(weightDecay));
    m.put("nesterov", Boolean.toString(nesterov));
    return m;
  }

  @Override
  protected void update(String name, NdArray param, NdArray grad, double lr) {
    boolean first = steps == 1;
    boolean useMomentum = momentum > 0;
    MemorySegment p = param.segment();
    MemorySegment g = grad.segment();
    MemorySegment b = buffers.get(name).segment();
    long p0 = param.offset();
    long g0 = grad.offset();
    long n = param.numel();
    if (param.dtype() == DType.F32) {
      float mu = (float) momentum;
      float wd = (float) weightDecay;
      float lf = (float) lr;
      Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
        for (long i = lo; i < hi; i++) {
          long pi = (p0 + i) * 4;
          float th = p.get(Layouts.F32, pi);
          float gv = g.get(Layouts.F32, (g0 + i) * 4);
          if (wd != 0) {
            gv = gv + wd * th;
          }
          if (useMomentum) {
            float bv = first ? gv : mu * b.get(Layouts.F32, i * 4) + gv;
            b.set(Layouts.F32, i * 4, bv);
            gv = nesterov ? gv + mu * bv : bv;
          }
          p.set(Layouts.F32, pi, th - lf * gv);
        }
      });
    } else {
      Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
        for (long i = lo; i < hi; i++) {
          long pi = (p0 + i) * 8;
          double th = p.get(Layouts.F64, pi);
          double gv = g.get(Layouts.F64, (g0 + i) * 8);
          if (weightDecay != 0) {
            gv = gv + weightDecay * th;
          }
          if (useMomentum) {
            double bv = first ? gv : momentum * b.get(Layouts.F64, i * 8) + gv;
            b.set(Layouts.F64, i * 8, bv);
            gv = nesterov ? gv + momentum * bv : bv;
          }
          p.set(Layouts.F64, pi, th - lr * gv);
        }
      });
    }
  }
}
