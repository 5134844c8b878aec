package dev.kiln.runtime.optim;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * AdamW (Loshchilov and Hutter, 2019) as CS336 assignment 1 writes it (Algorithm 1), with state {@code exp_avg}
 * ({@code m}), {@code exp_avg_sq} ({@code v}) per parameter and one step count {@code t}:
 *
 * <pre>
 *   m ← β1·m + (1−β1)·g
 *   v ← β2·v + (1−β2)·g²
 *   α_t ← lr·sqrt(1−β2^t) / (1−β1^t)
 *   θ ← θ − α_t·m / (sqrt(v) + ε)
 *   θ ← θ − lr·λ·θ
 * </pre>
 *
 * <p><b>PyTorch's {@code torch.optim.AdamW} differs in two places</b> ({@link Formula#PYTORCH} reproduces it): it
 * decays first ({@code θ ← θ·(1 − lr·λ)}, then the Adam step), and adds ε to the bias-corrected root,
 * {@code θ ← θ − lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + ε)}, which equals CS336's update with ε replaced by
 * {@code ε·sqrt(1−β2^t)}. Both differences shrink with ε and λ·lr; they matter when comparing runs bit for bit.
 *
 * <p>F32 parameters compute in float32 (as PyTorch does on CPU), F64 in float64; the step scalars are computed in
 * double and rounded once.
 */
public final class AdamW extends Optimizer {
  /** Which published form of the update to apply. */
  public enum Formula {
    /** CS336 assignment 1, Algorithm 1: Adam step, then decoupled decay; ε added to sqrt(v). */
    CS336,
    /** {@code torch.optim.AdamW}: decay first; ε added to sqrt(v)/sqrt(1−β2^t). */
    PYTORCH
  }

  private final double beta1;
  private final double beta2;
  private final double eps;
  private final double weightDecay;
  private final Formula formula;
  private final ParameterSet expAvg;
  private final ParameterSet expAvgSq;

  /** CS336's AdamW. */
  public AdamW(ParameterSet params, double beta1, double beta2, double eps, double weightDecay) {
    this(params, beta1, beta2, eps, weightDecay, Formula.CS336);
  }

  public AdamW(ParameterSet params, double beta1, double beta2, double eps, double weightDecay, Formula formula) {
    super(params);
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
      throw new IllegalArgumentException("AdamW betas must lie in [0, 1), got (" + beta1 + ", " + beta2 + ")");
    }
    if (!(eps >= 0) || !(weightDecay >= 0) || Double.isInfinite(eps) || Double.isInfinite(weightDecay)) {
      throw new IllegalArgumentException(
          "AdamW eps and weight decay must be finite and >= 0, got eps " + eps + ", weight decay " + weightDecay);
    }
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.formula = formula;
    this.expAvg = ParameterSet.zerosLike(params);
    this.expAvgSq = ParameterSet.zerosLike(params);
  }

  @Override
  public String kind() {
    return "adamw";
  }

  @Override
  protected String[] slots() {
    return new String[] {"exp_avg", "exp_avg_sq"};
  }

  @Override
  protected NdArray slot(String slot, String param) {
    return slot.equals("exp_avg") ? expAvg.get(param) : expAvgSq.get(param);
  }

  @Override
  protected Map<String, String> hyperParameters() {
    Map<String, String> m = new LinkedHashMap<>();
    m.put("beta1", Double.toString(beta1));
    m.put("beta2", Double.toString(beta2));
    m.put("eps", Double.toString(eps));
    m.put("weight_decay", Double.toString(weightDecay));
    m.put("formula", formula.name().toLowerCase());
    return m;
  }

  @Override
  protected void update(String name, NdArray param, NdArray grad, double lr) {
    long t = steps;
    double bc1 = 1 - Math.pow(beta1, t);
    double bc2 = 1 - Math.pow(beta2, t);
    // CS336: θ -= a·m/(sqrt(v)+e); θ -= d·θ.   PyTorch: θ *= (1-d); θ -= a·m/(sqrt(v)+e) with e = ε·sqrt(bc2).
    double a = lr * Math.sqrt(bc2) / bc1;
    double e = formula == Formula.CS336 ? eps : eps * Math.sqrt(bc2);
    double d = lr * weightDecay;
    boolean decayFirst = formula == Formula.PYTORCH;
    MemorySegment p = param.segment();
    MemorySegment g = grad.segment();
    MemorySegment m = expAvg.get(name).segment();
    MemorySegment v = expAvgSq.get(name).segment();
    long p0 = param.offset();
    long g0 = grad.offset();
    long n = param.numel();
    if (param.dtype() == DType.F32) {
      float b1 = (float) beta1;
      float c1 = (float) (1 - beta1);
      float b2 = (float) beta2;
      float c2 = (float) (1 - beta2);
      float af = (float) a;
      float ef = (float) e;
      float keep = (float) (1 - d);
      float df = (float) d;
      Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
        for (long i = lo; i < hi; i++) {
          long pi = (p0 + i) * 4;
          long gi = (g0 + i) * 4;
          float gv = g.get(Layouts.F32, gi);
          float mv = b1 * m.get(Layouts.F32, i * 4) + c1 * gv;
          float vv = b2 * v.get(Layouts.F32, i * 4) + c2 * gv * gv;
          m.set(Layouts.F32, i * 4, mv);
          v.set(Layouts.F32, i * 4, vv);
          float th = p.get(Layouts.F32, pi);
          if (decayFirst) {
            th = th * keep;
            th = th - af * mv / ((float) Math.sqrt(vv) + ef);
          } else {
            th = th - af * mv / ((float) Math.sqrt(vv) + ef);
            th = th - df * th;
          }
          p.set(Layouts.F32, pi, th);
        }
      });
    } else {
      double c1 = 1 - beta1;
      double c2 = 1 - beta2;
      Parallel.forChunks(n, GRAIN, n, (c, lo, hi) -> {
        for (long i = lo; i < hi; i++) {
          long pi = (p0 + i) * 8;
          long gi = (g0 + i) * 8;
          double gv = g.get(Layouts.F64, gi);
          double mv = beta1 * m.get(Layouts.F64, i * 8) + c1 * gv;
          double vv = beta2 * v.get(Layouts.F64, i * 8) + c2 * gv * gv;
          m.set(Layouts.F64, i * 8, mv);
          v.set(Layouts.F64, i * 8, vv);
          double th = p.get(Layouts.F64, pi);
          if (decayFirst) {
            th = th * (1 - d);
            th = th - a * mv / (Math.sqrt(vv) + e);
          } else {
            th = th - a * mv / (Math.sqrt(vv) + e);
            th = th - d * th;
          }
          p.set(Layouts.F64, pi, th);
        }
      });
    }
  }
}
