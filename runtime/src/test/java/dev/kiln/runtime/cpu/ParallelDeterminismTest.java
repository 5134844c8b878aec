package dev.kiln.runtime.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Reduce.Op;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Results must be bit-identical for 1 thread and for N threads: chunk boundaries never depend on the count. */
class ParallelDeterminismTest {
  private final int threadsBefore = Parallel.threads();
  private final boolean simdBefore = Simd.enabled();

  @AfterEach
  void restore() {
    Parallel.setThreads(threadsBefore);
    Simd.setEnabled(simdBefore);
  }

  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void everyOpIsBitIdenticalForOneAndManyThreads(boolean simd) {
    Simd.setEnabled(simd);
    Random rnd = new Random(61);
    // Sizes above Parallel.MIN_PARALLEL_ELEMENTS (checked below) and spanning many chunks; strided views on purpose.
    NdArray big = TestArrays.fill(rnd, NdArray.zeros(DType.F32, 800, 1200), 3).slice(1, 0, 1200, 3); // [800, 400]
    NdArray row = TestArrays.fill(rnd, NdArray.zeros(DType.F32, 400), 1);
    NdArray bigD = TestArrays.fill(rnd, NdArray.zeros(DType.F64, 600, 500), 1).transpose(0, 1);
    NdArray bf = TestArrays.fill(rnd, NdArray.zeros(DType.BF16, 600, 500), 1);
    NdArray ids = NdArray.zeros(DType.I64, 5000);
    for (int i = 0; i < 5000; i++) {
      ids.setLong(rnd.nextInt(700), i); // 5000 x 64 = 320K elements looked up
    }
    NdArray table = TestArrays.fill(rnd, NdArray.zeros(DType.F32, 700, 64), 1);
    for (NdArray a : new NdArray[] {big, bigD, bf}) {
      assertTrue(a.numel() >= Parallel.MIN_PARALLEL_ELEMENTS, "test arrays must be large enough to go parallel");
    }
    List<Supplier<NdArray>> ops = new ArrayList<>();
    ops.add(() -> Elementwise.exp(big));
    ops.add(() -> Elementwise.silu(big));
    ops.add(() -> Elementwise.gelu(big));
    ops.add(() -> Elementwise.add(big, row));
    ops.add(() -> Elementwise.add(big.contiguous(), big.contiguous()));
    ops.add(() -> Elementwise.mul(bigD, 0.5));
    ops.add(() -> Elementwise.add(bf, bf));
    ops.add(() -> Reduce.sum(big));
    ops.add(() -> Reduce.reduce(big, Op.MEAN, new int[] {0}, false));
    ops.add(() -> Reduce.reduce(bigD, Op.SUM, new int[] {1}, true));
    ops.add(() -> Reduce.sum(NdArray.full(DType.F32, 0.1, 1 << 19)));
    ops.add(() -> Reduce.argmax(big, 1, false));
    ops.add(() -> Softmax.softmax(big, -1));
    ops.add(() -> Softmax.logSoftmax(big, 0));
    ops.add(() -> Indexing.cumsum(big, 1));
    ops.add(() -> Indexing.embedding(table, ids));
    ops.add(() -> Elementwise.axpyInto(big.contiguous(), 0.3, row));
    for (int k = 0; k < ops.size(); k++) {
      Parallel.setThreads(1);
      NdArray one = ops.get(k).get();
      Parallel.setThreads(4);
      NdArray many = ops.get(k).get();
      assertEquals(one.byteSize(), many.byteSize());
      long mismatch = one.segment().asSlice(one.offset() * one.dtype().byteSize(), one.byteSize())
          .mismatch(many.segment().asSlice(many.offset() * many.dtype().byteSize(), many.byteSize()));
      assertEquals(-1, mismatch, "op #" + k + " differs between 1 and 4 threads at byte " + mismatch);
    }
  }

  @Test
  void usesSeveralThreadsAndPropagatesFailures() {
    Parallel.setThreads(3);
    Set<Thread> seen = ConcurrentHashMap.newKeySet();
    Parallel.forChunks(64, 1, Parallel.MIN_PARALLEL_ELEMENTS, (c, s, e) -> {
      seen.add(Thread.currentThread());
      try {
        Thread.sleep(2);
      } catch (InterruptedException ex) {
        Thread.currentThread().interrupt();
      }
    });
    assertTrue(seen.size() > 1, "64 sleeping chunks on 3 threads ran on " + seen.size() + " thread(s)");
    IllegalStateException e = assertThrows(IllegalStateException.class,
        () -> Parallel.forChunks(64, 1, Parallel.MIN_PARALLEL_ELEMENTS, (c, s, en) -> {
          if (c == 40) {
            throw new IllegalStateException("chunk 40 failed");
          }
        }));
    assertTrue(e.getMessage().contains("chunk 40"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> Parallel.setThreads(0));
  }
}
