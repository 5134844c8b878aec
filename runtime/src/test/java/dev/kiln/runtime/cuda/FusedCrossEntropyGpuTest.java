package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Softmax;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The fused kernel against the CPU path's log-softmax and softmax (dev.kiln.runtime.cpu.Softmax) in float64. */
class FusedCrossEntropyGpuTest {
  private static final int IGNORE = -100;

  private static void run(DType dtype, int rows, int vocab, double rtol, double atolGrad) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(rows * 31L + vocab);
    NdArray logits = GpuTesting.randn(rnd, dtype, 3, rows, vocab);
    int[] targets = new int[rows];
    for (int r = 0; r < rows; r++) {
      targets[r] = r == 1 ? IGNORE : rnd.nextInt(vocab);
    }
    NdArray x64 = logits.to(DType.F64);
    double[] logp = Softmax.logSoftmax(x64, 1).toDoubleArray();
    double[] p = Softmax.softmax(x64, 1).toDoubleArray();
    int counted = rows - 1;
    double scale = 1.0 / counted;
    double[] loss = new double[rows];
    double[] grad = new double[rows * vocab];
    for (int r = 0; r < rows; r++) {
      if (targets[r] == IGNORE) {
        continue;
      }
      loss[r] = -logp[r * vocab + targets[r]];
      for (int j = 0; j < vocab; j++) {
        grad[r * vocab + j] = scale * (p[r * vocab + j] - (j == targets[r] ? 1 : 0));
      }
    }
    String name = dtype + " " + rows + "x" + vocab;
    try (CudaArray dl = CudaArray.fromHost(dev, logits);
        CudaArray dt = CudaArray.fromHost(dev, NdArray.fromInts(targets, rows));
        FusedCrossEntropy.Result res = new FusedCrossEntropy(dev).apply(dl, dt, (float) scale, IGNORE, true)) {
      // The loss is an fp32 log-sum-exp of (dtype-exact) logits: rtol relative to the loss plus rtol absolute.
      GpuTesting.assertClose(name + " loss", loss, GpuTesting.doubles(res.loss().toHost()), rtol, rtol);
      GpuTesting.assertClose(name + " dlogits", grad, GpuTesting.doubles(res.dLogits().toHost()), rtol,
          atolGrad * GpuTesting.maxAbs(grad));
      try (FusedCrossEntropy.Result lossOnly = new FusedCrossEntropy(dev).apply(dl, dt, 1f, IGNORE, false)) {
        GpuTesting.assertClose(name + " loss without gradient", loss, GpuTesting.doubles(lossOnly.loss().toHost()),
            rtol, rtol);
      }
    }
  }

  @Test
  void fp32RowsCachedInSharedMemory() {
    // fp32 throughout: 1e-5 relative (expf/logf are within a few ulp; sums over 1000 terms).
    run(DType.F32, 7, 1000, 1e-5, 1e-5);
  }

  @Test
  void fp32RowsTooLongForSharedMemoryAreReadTwice() {
    // 70,000 fp32 logits (280 KB) exceed any GPU's shared memory per block: the uncached path.
    run(DType.F32, 3, 70_000, 1e-5, 1e-5);
  }

  @Test
  void bf16LogitsAndGradient() {
    // Loss in fp32 from exact bf16 inputs: 1e-5. Gradient stored as bf16 (8 significant bits): 1e-2 of its largest
    // magnitude plus 1e-2 relative.
    run(DType.BF16, 5, 5000, 1e-5, 1e-2);
  }
}
