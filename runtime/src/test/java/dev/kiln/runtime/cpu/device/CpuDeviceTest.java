package dev.kiln.runtime.cpu.device;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Ops;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.EinopsPlan;
import dev.kiln.dsl.spi.Kernel;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Reduce;
import dev.kiln.runtime.eager.GradCheck;
import dev.kiln.runtime.tensor.Einops;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The CPU device against naive double loops written here. Tolerances, relative to {@code max(1, |expected|)}: F64
 * 1e-12 (the same sums in another order); F32 1e-5 (float32 rounding of a few ulps accumulated over the at most ~50
 * terms of these sizes).
 */
class CpuDeviceTest {
  private final Device dev = CpuDevice.find("cpu");
  private final Random rnd = new Random(5);

  private NdArray random(DType t, long... shape) {
    double[] v = new double[Math.toIntExact(NdArray.numel(shape))];
    for (int i = 0; i < v.length; i++) {
      v[i] = rnd.nextGaussian();
    }
    return (NdArray) dev.upload(t, shape, v);
  }

  private static void close(double[] expected, Tensor actual, double tol, String what) {
    double[] a = ((NdArray) actual).toDoubleArray();
    assertEquals(expected.length, a.length, what + ": element count");
    for (int i = 0; i < a.length; i++) {
      if (!(Math.abs(a[i] - expected[i]) <= tol * Math.max(1, Math.abs(expected[i])))) {
        fail(what + ": element " + i + " is " + a[i] + ", expected " + expected[i] + " (tolerance " + tol + ")");
      }
    }
  }

  private static double tol(DType t) {
    return t == DType.F64 ? 1e-12 : 1e-5;
  }

  @Test
  void foundByName() {
    assertInstanceOf(CpuDevice.class, dev);
    assertEquals("cpu", dev.name());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CpuDevice.find("tpu"));
    assertTrue(e.getMessage().contains("no Kiln device named 'tpu'") && e.getMessage().contains("cpu"), e.getMessage());
  }

  @Test
  void memoryAndViews() {
    Tensor a = dev.upload(DType.F32, new long[] {2, 3}, new double[] {1, 2, 3, 4, 5, 6});
    assertArrayEquals(new double[] {1, 2, 3, 4, 5, 6}, dev.download(a));
    assertArrayEquals(new double[] {1, 4, 2, 5, 3, 6}, dev.download(dev.contiguous(dev.permute(a, 1, 0))));
    assertArrayEquals(new double[] {0, 1, 2, 3}, dev.download(dev.iota(DType.I64, 4)));
    assertArrayEquals(new double[] {2.5, 2.5}, dev.download(dev.full(DType.F64, 2.5, 2)));
    assertArrayEquals(new long[0], dev.full(DType.F32, 1, new long[0]).shape(), "a scalar");
    Tensor z = dev.zeros(DType.F32, 2, 3);
    dev.copy(dev.upload(DType.F64, new long[] {3}, new double[] {7, 8, 9}), z);
    assertArrayEquals(new double[] {7, 8, 9, 7, 8, 9}, dev.download(z), "copy broadcasts and converts");
    dev.fill(z, -1);
    assertArrayEquals(new double[] {-1, -1, -1, -1, -1, -1}, dev.download(z));
    assertEquals(DType.BOOL, dev.cast(a, DType.BOOL).dtype());
    assertArrayEquals(new double[] {1, 1, 1, 1, 1, 1}, dev.download(dev.cast(a, DType.BOOL)));
    assertArrayEquals(new double[] {1, 2, 3, 4, 5, 6}, dev.download(dev.reshape(a, 3, 2)));
    assertArrayEquals(new double[] {1, 2, 3, 1, 2, 3}, dev.download(dev.contiguous(dev.expand(
        dev.reshape(dev.upload(DType.F32, new long[] {3}, new double[] {1, 2, 3}), 1, 3), 2, 3))));
    assertThrows(IllegalArgumentException.class, () -> dev.fill(dev.expand(dev.zeros(DType.F32, 1), 4), 1),
        "writing into a broadcast view");
    assertThrows(IllegalArgumentException.class, () -> dev.upload(DType.F32, new long[] {2}, new double[3]));
  }

  @Test
  void truncatedNormalIsTheRuntimesPhiloxStream() {
    NdArray out = (NdArray) dev.empty(DType.F32, 64, 32);
    dev.fillTruncatedNormal(out, 0.02, 0.06, 1234, 7);
    NdArray expected = new Rng(1234).stream(7).truncNormal(NdArray.zeros(DType.F32, 64, 32), 0, 0.02, -0.06, 0.06);
    assertArrayEquals(expected.toFloatArray(), out.toFloatArray(), "bit for bit the same draws");
  }

  /** c = alpha op(a) op(b) + beta c with every layout, batched, shared weights; naive triple loop. */
  @Test
  void gemmWithLayoutFlags() {
    for (DType t : new DType[] {DType.F64, DType.F32}) {
      for (int trial = 0; trial < 16; trial++) {
        boolean ta = (trial & 1) != 0;
        boolean tb = (trial & 2) != 0;
        boolean batched = (trial & 4) != 0;
        boolean sharedB = (trial & 8) != 0 && batched;
        int batch = batched ? 3 : 1;
        int m = 1 + rnd.nextInt(6);
        int k = 1 + rnd.nextInt(6);
        int n = 1 + rnd.nextInt(6);
        NdArray a = batched ? random(t, batch, ta ? k : m, ta ? m : k) : random(t, ta ? k : m, ta ? m : k);
        NdArray b = batched && !sharedB ? random(t, batch, tb ? n : k, tb ? k : n) : random(t, tb ? n : k, tb ? k : n);
        NdArray c = batched ? random(t, batch, m, n) : random(t, m, n);
        double[] av = a.toDoubleArray();
        double[] bv = b.toDoubleArray();
        double[] cv = c.toDoubleArray();
        double alpha = 0.5;
        double beta = trial % 3 == 0 ? 0 : 1;
        double[] expected = new double[cv.length];
        for (int p = 0; p < batch; p++) {
          int ao = batched ? p * m * k : 0;
          int bo = batched && !sharedB ? p * k * n : 0;
          for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
              double acc = 0;
              for (int x = 0; x < k; x++) {
                double ai = ta ? av[ao + x * m + i] : av[ao + i * k + x];
                double bj = tb ? bv[bo + j * k + x] : bv[bo + x * n + j];
                acc += ai * bj;
              }
              int ci = p * m * n + i * n + j;
              expected[ci] = alpha * acc + beta * cv[ci];
            }
          }
        }
        long copies = Gemm.operandCopies();
        dev.gemm(a, ta, b, tb, c, alpha, beta);
        assertEquals(copies, Gemm.operandCopies(), "transposes are flags, not copies");
        close(expected, c, tol(t), "gemm " + t + " ta=" + ta + " tb=" + tb + " batched=" + batched + " shared="
            + sharedB);
      }
    }
    NdArray a = NdArray.zeros(DType.F32, 2, 3);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> dev.gemm(a, false, NdArray.zeros(DType.F32, 4, 5), false, NdArray.zeros(DType.F32, 2, 5), 1, 0));
    assertTrue(e.getMessage().contains("op(a) is [2, 3]") && e.getMessage().contains("op(b) is [4, 5]"),
        e.getMessage());
  }

  @Test
  void pointwiseAndReductions() {
    for (DType t : new DType[] {DType.F64, DType.F32}) {
      NdArray x = random(t, 3, 4);
      NdArray y = random(t, 4);
      double[] xv = x.toDoubleArray();
      double[] yv = y.toDoubleArray();
      for (Device.Unary op : Device.Unary.values()) {
        NdArray in = op == Device.Unary.LOG || op == Device.Unary.SQRT || op == Device.Unary.RSQRT
            ? (NdArray) dev.unary(Device.Unary.EXP, x) : x;
        double[] iv = in.toDoubleArray();
        double[] expected = new double[iv.length];
        for (int i = 0; i < iv.length; i++) {
          double v = iv[i];
          expected[i] = switch (op) {
            case NEG -> -v;
            case EXP -> Math.exp(v);
            case LOG -> Math.log(v);
            case SQRT -> Math.sqrt(v);
            case RSQRT -> 1 / Math.sqrt(v);
            case TANH -> Math.tanh(v);
            case SIGMOID -> 1 / (1 + Math.exp(-v));
            case COS -> Math.cos(v);
            case SIN -> Math.sin(v);
          };
        }
        close(expected, dev.unary(op, in), tol(t), "unary " + op + " " + t);
      }
      for (Device.Binary op : Device.Binary.values()) {
        double[] expected = new double[xv.length];
        for (int i = 0; i < xv.length; i++) {
          double a = xv[i];
          double b = yv[i % 4];
          expected[i] = switch (op) {
            case ADD -> a + b;
            case SUB -> a - b;
            case MUL -> a * b;
            case DIV -> a / b;
            case MAXIMUM -> Math.max(a, b);
          };
        }
        close(expected, dev.binary(op, x, y), tol(t), "binary " + op + " " + t);
      }
      Tensor gt = dev.compare(Device.Compare.GREATER, x, y);
      Tensor lt = dev.compare(Device.Compare.LESS, x, y);
      double[] expGt = new double[xv.length];
      double[] expLt = new double[xv.length];
      double[] expWhere = new double[xv.length];
      for (int i = 0; i < xv.length; i++) {
        expGt[i] = xv[i] > yv[i % 4] ? 1 : 0;
        expLt[i] = xv[i] < yv[i % 4] ? 1 : 0;
        expWhere[i] = xv[i] > yv[i % 4] ? xv[i] : yv[i % 4];
      }
      close(expGt, gt, 0, "greater");
      close(expLt, lt, 0, "less");
      close(expWhere, dev.where(gt, x, y), 0, "where");
      double[] rowSum = new double[3];
      double[] colMax = new double[4];
      Arrays.fill(colMax, Double.NEGATIVE_INFINITY);
      double[] allMin = {Double.POSITIVE_INFINITY};
      for (int i = 0; i < xv.length; i++) {
        rowSum[i / 4] += xv[i];
        colMax[i % 4] = Math.max(colMax[i % 4], xv[i]);
        allMin[0] = Math.min(allMin[0], xv[i]);
      }
      Tensor s = dev.reduce(Reduction.SUM, x, new int[] {1}, true);
      assertArrayEquals(new long[] {3, 1}, s.shape());
      close(rowSum, s, tol(t), "sum over cols");
      close(colMax, dev.reduce(Reduction.MAX, x, new int[] {0}, false), 0, "max over rows");
      close(allMin, dev.reduce(Reduction.MIN, x, new int[] {0, 1}, false), 0, "min over all");
      close(xv, dev.reduce(Reduction.SUM, x, new int[0], false), 0, "no axes copies");
      close(new double[] {rowSum[0] + rowSum[1] + rowSum[2]}, dev.sumTo(x, 1, 1), tol(t), "sumTo");
      assertThrows(IllegalArgumentException.class, () -> dev.reduce(Reduction.MEAN, x, new int[] {0}, false));
    }
    assertThrows(IllegalArgumentException.class,
        () -> dev.binary(Device.Binary.ADD, NdArray.zeros(DType.F32, 2), NdArray.zeros(DType.F64, 2)),
        "mixed float dtypes are rejected");
  }

  @Test
  void gathersAndScatters() {
    NdArray table = random(DType.F32, 5, 3);
    NdArray ids = NdArray.fromLongs(new long[] {4, 0, 4, 2}, 2, 2);
    double[] tv = table.toDoubleArray();
    long[] iv = ids.toLongArray();
    double[] expected = new double[12];
    for (int p = 0; p < 4; p++) {
      System.arraycopy(tv, (int) iv[p] * 3, expected, p * 3, 3);
    }
    close(expected, dev.gather(table, ids), 0, "gather");
    // Rows hit twice (id 4) accumulate both contributions into what was there.
    NdArray dTable = random(DType.F32, 5, 3);
    NdArray src = random(DType.F32, 2, 2, 3);
    double[] want = dTable.toDoubleArray();
    double[] sv = src.toDoubleArray();
    for (int p = 0; p < 4; p++) {
      for (int x = 0; x < 3; x++) {
        want[(int) iv[p] * 3 + x] += sv[p * 3 + x];
      }
    }
    dev.scatterAddRows(dTable, ids, src);
    close(want, dTable, 1e-6, "scatterAddRows (two float32 additions per element at most)");
    NdArray x = random(DType.F64, 2, 3, 6);
    NdArray idx = NdArray.fromLongs(new long[] {5, 0, 2, 2, 1, 3}, 2, 3);
    double[] xv = x.toDoubleArray();
    long[] jv = idx.toLongArray();
    double[] picked = new double[6];
    for (int r = 0; r < 6; r++) {
      picked[r] = xv[r * 6 + (int) jv[r]];
    }
    close(picked, dev.pick(x, idx), 0, "pick");
    NdArray dx = NdArray.zeros(DType.F64, 2, 6);
    NdArray k2 = NdArray.fromLongs(new long[] {1, 1, 0, 5}, 2, 2);
    dev.scatterAddLast(dx, k2, dev.upload(DType.F64, new long[] {2, 2}, new double[] {1, 2, 3, 4}));
    assertArrayEquals(new double[] {0, 3, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4}, dev.download(dx));
    TopK top = dev.topk(dev.upload(DType.F32, new long[] {1, 4}, new double[] {0.5, 3, -1, 2}), 2);
    assertArrayEquals(new double[] {3, 2}, dev.download(top.values()));
    assertArrayEquals(new double[] {1, 3}, dev.download(top.indices()));
    assertThrows(IndexOutOfBoundsException.class, () -> dev.gather(table, NdArray.fromLongs(new long[] {5})));
  }

  @Test
  void launchRunsTheJavaKernelOnTheTensorsMemory() {
    // y[r, c] = s0 * x[r, c] + b[c]: a POINTWISE kernel as the processor would generate it.
    Kernel.Cpu body = (dtype, t, rows, cols, s) -> {
      assertEquals(DType.F32, dtype);
      for (long r = 0; r < rows; r++) {
        for (long c = 0; c < cols; c++) {
          float x = t[0].getAtIndex(Layouts.F32, r * cols + c);
          float b = t[1].getAtIndex(Layouts.F32, c);
          t[2].setAtIndex(Layouts.F32, r * cols + c, (float) (s[0] * x + b));
        }
      }
    };
    Kernel k = new Kernel("test_forward_0", Kernel.Kind.POINTWISE, 2, 1, "none.cu", body);
    NdArray big = random(DType.F32, 5, 4);
    NdArray x = big.narrow(0, 2, 3); // contiguous, but at an offset into its storage
    NdArray b = random(DType.F32, 4);
    NdArray y = (NdArray) dev.empty(DType.F32, 3, 4);
    dev.launch(k, new Tensor[] {x, b, y}, new long[] {3, 4}, new double[] {2});
    double[] xv = x.toDoubleArray();
    double[] bv = b.toDoubleArray();
    double[] expected = new double[12];
    for (int i = 0; i < 12; i++) {
      expected[i] = (float) (2 * xv[i] + bv[i % 4]);
    }
    close(expected, y, 0, "kernel output");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> dev.launch(k, new Tensor[] {big.transpose(0, 1), b, y}, new long[] {3, 4}, new double[] {2}));
    assertTrue(e.getMessage().contains("must be contiguous"), e.getMessage());
  }

  /** Naive attention over [heads, s, d] with an explicit score row; returns out and log-sum-exp. */
  private static double[][] naiveAttention(double[] q, double[] k, double[] v, int heads, int s, int t, int d, int e,
      boolean causal, double scale) {
    double[] out = new double[heads * s * e];
    double[] lse = new double[heads * s];
    for (int h = 0; h < heads; h++) {
      for (int i = 0; i < s; i++) {
        double[] sc = new double[t];
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < t; j++) {
          double acc = 0;
          for (int x = 0; x < d; x++) {
            acc += q[(h * s + i) * d + x] * k[(h * t + j) * d + x];
          }
          sc[j] = causal && j > i ? Double.NEGATIVE_INFINITY : acc * scale;
          max = Math.max(max, sc[j]);
        }
        double z = 0;
        for (int j = 0; j < t; j++) {
          z += Math.exp(sc[j] - max);
        }
        lse[h * s + i] = max + Math.log(z);
        for (int x = 0; x < e; x++) {
          double acc = 0;
          for (int j = 0; j < t; j++) {
            acc += Math.exp(sc[j] - max) / z * v[(h * t + j) * e + x];
          }
          out[(h * s + i) * e + x] = acc;
        }
      }
    }
    return new double[][] {out, lse};
  }

  @Test
  void attentionForwardAgainstNaiveLoops() {
    for (DType t : new DType[] {DType.F64, DType.F32}) {
      for (int trial = 0; trial < 6; trial++) {
        int b = 1 + rnd.nextInt(2);
        int h = 1 + rnd.nextInt(3);
        int s = 1 + rnd.nextInt(7);
        int tk = trial % 2 == 0 ? s : 1 + rnd.nextInt(7);
        int d = 1 + rnd.nextInt(6);
        int e = 1 + rnd.nextInt(5);
        double scale = trial % 3 == 0 ? 0.3 : 1 / Math.sqrt(d);
        NdArray q = random(t, b, h, s, d);
        NdArray k = random(t, b, h, tk, d);
        NdArray v = random(t, b, h, tk, e);
        for (Mask m : Mask.values()) {
          double[][] want = naiveAttention(q.toDoubleArray(), k.toDoubleArray(), v.toDoubleArray(), b * h, s, tk, d, e,
              m == Mask.CAUSAL, scale);
          Device.AttentionOut r = dev.attention(q, k, v, m, scale);
          assertArrayEquals(new long[] {b, h, s, e}, r.out().shape());
          assertArrayEquals(new long[] {b, h, s}, r.lse().shape());
          close(want[0], r.out(), tol(t), "attention out " + m + " " + t);
          close(want[1], r.lse(), tol(t), "attention lse " + m + " " + t);
        }
      }
    }
  }

  /**
   * Several heads and several 64-row query blocks (the small cases above fit in one block): forward against the
   * naive loops, and the backward of all heads at once bit-for-bit against each head run alone (the heads are
   * independent and each accumulates its blocks in the same order; the formulas are checked by the test below).
   */
  @Test
  void attentionOverManyBlocksAndHeads() {
    for (DType t : new DType[] {DType.F64, DType.F32}) {
      for (Mask m : Mask.values()) {
        int h = 3;
        int s = 150;
        int tk = m == Mask.CAUSAL ? s : 131;
        int d = 4;
        int e = 3;
        double scale = 1 / Math.sqrt(d);
        NdArray q = random(t, h, s, d);
        NdArray k = random(t, h, tk, d);
        NdArray v = random(t, h, tk, e);
        NdArray g = random(t, h, s, e);
        double[][] want = naiveAttention(q.toDoubleArray(), k.toDoubleArray(), v.toDoubleArray(), h, s, tk, d, e,
            m == Mask.CAUSAL, scale);
        Device.AttentionOut fwd = dev.attention(q, k, v, m, scale);
        close(want[0], fwd.out(), tol(t), "attention out " + m + " " + t);
        close(want[1], fwd.lse(), tol(t), "attention lse " + m + " " + t);
        Device.AttentionGrads all = dev.attentionBackward(q, k, v, fwd.out(), fwd.lse(), g, m, scale);
        for (int x = 0; x < h; x++) {
          NdArray qx = q.narrow(0, x, 1).contiguous();
          NdArray kx = k.narrow(0, x, 1).contiguous();
          NdArray vx = v.narrow(0, x, 1).contiguous();
          Device.AttentionOut one = dev.attention(qx, kx, vx, m, scale);
          Device.AttentionGrads gx = dev.attentionBackward(qx, kx, vx, one.out(), one.lse(),
              g.narrow(0, x, 1).contiguous(), m, scale);
          String what = m + " " + t + " head " + x;
          assertArrayEquals(((NdArray) one.out()).toDoubleArray(),
              ((NdArray) fwd.out()).narrow(0, x, 1).toDoubleArray(), 0, "out " + what);
          assertArrayEquals(((NdArray) gx.dq()).toDoubleArray(), ((NdArray) all.dq()).narrow(0, x, 1).toDoubleArray(),
              0, "dq " + what);
          assertArrayEquals(((NdArray) gx.dk()).toDoubleArray(), ((NdArray) all.dk()).narrow(0, x, 1).toDoubleArray(),
              0, "dk " + what);
          assertArrayEquals(((NdArray) gx.dv()).toDoubleArray(), ((NdArray) all.dv()).narrow(0, x, 1).toDoubleArray(),
              0, "dv " + what);
        }
      }
    }
  }

  /**
   * The backward against central finite differences of the eager interpreter's attention in float64 (GradCheck):
   * L = sum(g * attention(q, k, v)), so dOut = g. Relative error below 1e-6, the bar for generated backward.
   */
  @Test
  void attentionBackwardAgainstFiniteDifferences() {
    for (Mask m : Mask.values()) {
      int s = 5;
      int tk = m == Mask.CAUSAL ? 5 : 4;
      int d = 3;
      NdArray q = random(DType.F64, 2, s, d);
      NdArray k = random(DType.F64, 2, tk, d);
      NdArray v = random(DType.F64, 2, tk, 2);
      NdArray g = random(DType.F64, 2, s, 2);
      double scale = 1 / Math.sqrt(d);
      Device.AttentionOut fwd = dev.attention(q, k, v, m, scale);
      Device.AttentionGrads grads = dev.attentionBackward(q, k, v, fwd.out(), fwd.lse(), g, m, scale);
      Map<String, NdArray> in = new LinkedHashMap<>();
      in.put("q", q);
      in.put("k", k);
      in.put("v", v);
      GradCheck.Result r = GradCheck.check(in,
          x -> Ops.einsum("h s e, h s e ->", Ops.attention(x.get("q"), x.get("k"), x.get("v"), m), g),
          Map.of("q", grads.dq(), "k", grads.dk(), "v", grads.dv()));
      r.assertBelow(1e-6);
      // float32 backward: the same arithmetic in double on float32-rounded inputs, rounded once at the end.
      Device.AttentionOut f32 = dev.attention(q.to(DType.F32), k.to(DType.F32), v.to(DType.F32), m, scale);
      Device.AttentionGrads g32 = dev.attentionBackward(q.to(DType.F32), k.to(DType.F32), v.to(DType.F32), f32.out(),
          f32.lse(), g.to(DType.F32), m, scale);
      close(((NdArray) grads.dq()).toDoubleArray(), g32.dq(), 1e-5, "float32 dq");
      close(((NdArray) grads.dk()).toDoubleArray(), g32.dk(), 1e-5, "float32 dk");
      close(((NdArray) grads.dv()).toDoubleArray(), g32.dv(), 1e-5, "float32 dv");
    }
  }

  @Test
  void einopsPlansRunOnTheDevice() {
    NdArray x = random(DType.F32, 2, 3, 8);
    NdArray viaPlan = (NdArray) EinopsPlan.of("b s (h d) -> b h s d").rearrange(dev, x, Map.of("h", 2L));
    close(Einops.rearrange(x, "b s (h d) -> b h s d", Map.of("h", 2)).toDoubleArray(), viaPlan, 0, "rearrange");
    NdArray summed = (NdArray) EinopsPlan.of("b s d -> b d").reduce(dev, x, Reduction.SUM, Map.of());
    close(Einops.reduce(x, "b s d -> b d", Reduce.Op.SUM, Map.of()).toDoubleArray(), summed,
        1e-6, "reduce");
    NdArray tiled = (NdArray) EinopsPlan.of("b s d -> b s r d").repeat(dev, x, Map.of("r", 3L));
    close(Einops.repeat(x, "b s d -> b s r d", Map.of("r", 3)).toDoubleArray(), tiled, 0, "repeat");
  }

  @Test
  void foreignTensorsAreRejected() {
    Tensor foreign = new Tensor() {
      @Override
      public long[] shape() {
        return new long[] {1};
      }

      @Override
      public DType dtype() {
        return DType.F32;
      }
    };
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> dev.download(foreign));
    assertTrue(e.getMessage().contains("computes on dev.kiln.runtime.tensor.NdArray"), e.getMessage());
  }
}
