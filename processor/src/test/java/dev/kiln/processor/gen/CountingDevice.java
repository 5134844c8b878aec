package dev.kiln.processor.gen;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.Device;
import dev.kiln.dsl.spi.Kernel;
import java.util.ArrayList;
import java.util.List;

/**
 * A device that records every compute call (a fused kernel launch, a GEMM, an unfused primitive, attention) before
 * passing it to the CPU device, so tests can count kernels. Memory and view calls are not kernels and are not
 * recorded.
 */
final class CountingDevice implements Device {
  private final Device d;
  final List<String> calls = new ArrayList<>();
  final List<Kernel> launches = new ArrayList<>();

  CountingDevice(Device d) {
    this.d = d;
  }

  void reset() {
    calls.clear();
    launches.clear();
    gemmOperands = 0;
    gemmResults = 0;
    paramGradients = 0;
    bf16Results = 0;
    ropesForGemms = 0;
    ropesOverwriting = 0;
    constants = 0;
  }

  @Override
  public String name() {
    return "counting(" + d.name() + ")";
  }

  @Override
  public Tensor empty(DType dtype, long... shape) {
    return d.empty(dtype, shape);
  }

  /** Partial rows of column-sum outputs ({@link Device#columnSumRows}): 0 for the wrapped device's choice. */
  long partialRows;

  @Override
  public long columnSumRows(Kernel kernel, long rows, long cols) {
    return partialRows > 0 ? Math.min(rows, partialRows) : d.columnSumRows(kernel, rows, cols);
  }

  /** Kernel outputs allocated as GEMM-only operands (see {@link Device#emptyGemmOperand}). */
  int gemmOperands;

  @Override
  public Tensor emptyGemmOperand(DType dtype, long... shape) {
    gemmOperands++;
    return d.emptyGemmOperand(dtype, shape);
  }

  /** GEMM outputs allocated as ones whose readers all take bf16 (see {@link Device#emptyGemmResult}). */
  int gemmResults;

  @Override
  public Tensor emptyGemmResult(DType dtype, long... shape) {
    gemmResults++;
    return d.emptyGemmResult(dtype, shape);
  }

  /** GEMM outputs allocated as parameter gradients (see {@link Device#emptyParamGradient}). */
  int paramGradients;

  @Override
  public Tensor emptyParamGradient(DType dtype, long... shape) {
    paramGradients++;
    return d.emptyParamGradient(dtype, shape);
  }

  /** RoPE calls whose result only GEMMs and attention read ({@code forGemms}). */
  int ropesForGemms;

  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse) {
    calls.add("rope");
    return d.rope(x, positions, theta, inverse);
  }

  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse, boolean forGemms) {
    calls.add("rope");
    ropesForGemms += forGemms ? 1 : 0;
    return d.rope(x, positions, theta, inverse, forGemms);
  }

  /** RoPE calls that may write their result over their input ({@code overwrite}). */
  int ropesOverwriting;

  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta, boolean inverse, boolean forGemms,
      boolean overwrite) {
    calls.add("rope");
    ropesForGemms += forGemms ? 1 : 0;
    ropesOverwriting += overwrite ? 1 : 0;
    return d.rope(x, positions, theta, inverse, forGemms, overwrite);
  }

  @Override
  public Tensor zeros(DType dtype, long... shape) {
    return d.zeros(dtype, shape);
  }

  /** 0-d tensors made by {@code full}: constants materialised (a fill kernel each on a GPU). */
  int constants;

  @Override
  public Tensor full(DType dtype, double value, long... shape) {
    constants += shape.length == 0 ? 1 : 0;
    return d.full(dtype, value, shape);
  }

  @Override
  public Tensor upload(DType dtype, long[] shape, double[] values) {
    return d.upload(dtype, shape, values);
  }

  @Override
  public double[] download(Tensor x) {
    return d.download(x);
  }

  @Override
  public Tensor iota(DType dtype, long n) {
    return d.iota(dtype, n);
  }

  @Override
  public void fill(Tensor out, double value) {
    d.fill(out, value);
  }

  @Override
  public void fillTruncatedNormal(Tensor out, double std, double bound, long seed, long stream) {
    d.fillTruncatedNormal(out, std, bound, seed, stream);
  }

  @Override
  public void copy(Tensor src, Tensor dst) {
    calls.add("copy");
    d.copy(src, dst);
  }

  @Override
  public Tensor cast(Tensor x, DType dtype) {
    calls.add("cast");
    return d.cast(x, dtype);
  }

  @Override
  public Tensor reshape(Tensor x, long... shape) {
    return d.reshape(x, shape);
  }

  @Override
  public Tensor permute(Tensor x, int... order) {
    return d.permute(x, order);
  }

  @Override
  public Tensor expand(Tensor x, long... shape) {
    return d.expand(x, shape);
  }

  @Override
  public Tensor narrow(Tensor x, int dim, long start, long length) {
    return d.narrow(x, dim, start, length);
  }

  @Override
  public Tensor contiguous(Tensor x) {
    Tensor c = d.contiguous(x);
    if (c != x) {
      calls.add("contiguous copy"); // a view (a broadcast, a permutation) materialised
    }
    return c;
  }

  @Override
  public void gemm(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, double alpha, double beta) {
    calls.add("gemm");
    d.gemm(a, transA, b, transB, c, alpha, beta);
  }

  @Override
  public Tensor unary(Unary op, Tensor x) {
    calls.add("unary " + op);
    return d.unary(op, x);
  }

  @Override
  public Tensor binary(Binary op, Tensor a, Tensor b) {
    calls.add("binary " + op);
    return d.binary(op, a, b);
  }

  /** Primitive calls told that every reader of their result takes bf16 (the {@code bf16Result} overloads). */
  int bf16Results;

  @Override
  public Tensor binary(Binary op, Tensor a, Tensor b, boolean bf16Result) {
    bf16Results += bf16Result ? 1 : 0;
    return binary(op, a, b);
  }

  @Override
  public Tensor crossEntropyBackward(Tensor logits, Tensor targets, Tensor dLoss, boolean bf16Result) {
    bf16Results += bf16Result ? 1 : 0;
    calls.add("crossEntropyBackward");
    return d.crossEntropyBackward(logits, targets, dLoss);
  }

  @Override
  public Tensor compare(Compare op, Tensor a, Tensor b) {
    calls.add("compare " + op);
    return d.compare(op, a, b);
  }

  @Override
  public Tensor where(Tensor cond, Tensor a, Tensor b) {
    calls.add("where");
    return d.where(cond, a, b);
  }

  @Override
  public Tensor reduce(Reduction how, Tensor x, int[] axes, boolean keepDims) {
    calls.add("reduce " + how);
    return d.reduce(how, x, axes, keepDims);
  }

  @Override
  public Tensor sumTo(Tensor x, long... shape) {
    calls.add("sumTo");
    return d.sumTo(x, shape);
  }

  @Override
  public Tensor gather(Tensor table, Tensor ids) {
    calls.add("gather");
    return d.gather(table, ids);
  }

  @Override
  public void scatterAddRows(Tensor dTable, Tensor ids, Tensor src) {
    calls.add("scatterAddRows");
    d.scatterAddRows(dTable, ids, src);
  }

  @Override
  public Tensor pick(Tensor x, Tensor idx) {
    calls.add("pick");
    return d.pick(x, idx);
  }

  @Override
  public void scatterAddLast(Tensor dx, Tensor idx, Tensor src) {
    calls.add("scatterAddLast");
    d.scatterAddLast(dx, idx, src);
  }

  @Override
  public TopK topk(Tensor x, int k) {
    calls.add("topk");
    return d.topk(x, k);
  }

  @Override
  public void launch(Kernel kernel, Tensor[] tensors, long[] sizes, double[] scalars) {
    calls.add("launch " + kernel.name());
    launches.add(kernel);
    d.launch(kernel, tensors, sizes, scalars);
  }

  @Override
  public AttentionOut attention(Tensor q, Tensor k, Tensor v, Mask mask, double scale) {
    calls.add("attention");
    return d.attention(q, k, v, mask, scale);
  }

  @Override
  public AttentionGrads attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, Mask mask,
      double scale) {
    calls.add("attentionBackward");
    return d.attentionBackward(q, k, v, out, lse, dOut, mask, scale);
  }

  @Override
  public AttentionOut attention(Tensor q, Tensor k, Tensor v, Mask mask, double scale, boolean bf16Out) {
    bf16Results += bf16Out ? 1 : 0;
    return attention(q, k, v, mask, scale);
  }

  @Override
  public AttentionGrads attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, Mask mask,
      double scale, boolean dqBf16, boolean dkBf16, boolean dvBf16) {
    bf16Results += (dqBf16 ? 1 : 0) + (dkBf16 ? 1 : 0) + (dvBf16 ? 1 : 0);
    return attentionBackward(q, k, v, out, lse, dOut, mask, scale);
  }
}
