package dev.kiln.runtime.cpu;

import static dev.kiln.runtime.cpu.TestArrays.assertClose;
import static dev.kiln.runtime.cpu.TestArrays.describe;
import static dev.kiln.runtime.cpu.TestArrays.forEachIndex;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

class IndexingTest {
  private static NdArray randomIds(Random rnd, long[] shape, long bound, DType t) {
    NdArray ids = NdArray.zeros(t, shape);
    forEachIndex(shape, idx -> ids.setLong(rnd.nextLong(bound), idx));
    return ids;
  }

  @Test
  void embeddingGathersRowsAndBackwardScattersThem() {
    Random rnd = new Random(41);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16}) {
      for (int trial = 0; trial < 15; trial++) {
        long v = 1 + rnd.nextInt(9);
        long dm = 1 + rnd.nextInt(6);
        NdArray table = TestArrays.random(rnd, t, new long[] {v, dm}, 1,
            TestArrays.Layout.values()[rnd.nextInt(4)]);
        long[] ishape = TestArrays.randomShape(rnd, 0, 3, true);
        NdArray ids = randomIds(rnd, ishape, v, trial % 2 == 0 ? DType.I32 : DType.I64);
        NdArray out = Indexing.embedding(table, ids);
        long[] want = Arrays.copyOf(ishape, ishape.length + 1);
        want[ishape.length] = dm;
        assertArrayEquals(want, out.shape());
        forEachIndex(ishape, idx -> {
          long id = ids.getLong(idx);
          for (long j = 0; j < dm; j++) {
            long[] o = Arrays.copyOf(idx, idx.length + 1);
            o[idx.length] = j;
            assertEquals(table.getDouble(id, j), out.getDouble(o), 0.0, "a copy is exact");
          }
        });
        NdArray dOut = TestArrays.random(rnd, t, want, 1);
        NdArray g = Indexing.embeddingBackward(dOut, ids, v);
        double[][] ref = new double[(int) v][(int) dm];
        forEachIndex(ishape, idx -> {
          int id = (int) ids.getLong(idx);
          for (int j = 0; j < dm; j++) {
            long[] o = Arrays.copyOf(idx, idx.length + 1);
            o[idx.length] = j;
            ref[id][j] += dOut.getDouble(o);
          }
        });
        for (int r = 0; r < v; r++) {
          for (int j = 0; j < dm; j++) {
            // Sums of a few terms rounded into the dtype after each add: a few ulps of the dtype.
            assertClose(ref[r][j], g.getDouble(r, j), 4 * TestArrays.rtol(t), t == DType.BF16 ? 3e-2 : 1e-6,
                "embeddingBackward row " + r);
          }
        }
      }
    }
    NdArray table = NdArray.zeros(DType.F32, 5, 2);
    IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
        () -> Indexing.embedding(table, NdArray.fromInts(new int[] {1, 7})));
    assertTrue(e.getMessage().contains("id 7") && e.getMessage().contains("V=5"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> Indexing.embedding(table, NdArray.fromFloats(new float[] {1})));
  }

  @Test
  void indexSelectGatherScatterAddAgainstLoops() {
    Random rnd = new Random(43);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.I32, DType.I64}) {
      for (int trial = 0; trial < 25; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 1, 4, false);
        NdArray x = TestArrays.random(rnd, t, shape, 1);
        int d = rnd.nextInt(shape.length);
        int dimArg = rnd.nextBoolean() ? d : d - shape.length;
        // indexSelect
        NdArray sel = randomIds(rnd, new long[] {rnd.nextInt(5)}, shape[d], DType.I64);
        NdArray s = Indexing.indexSelect(x, dimArg, sel);
        forEachIndex(s.shape(), idx -> {
          long[] src = idx.clone();
          src[d] = sel.getLong(idx[d]);
          assertEquals(x.getDouble(src), s.getDouble(idx), 0.0, "indexSelect " + describe(x));
        });
        // gather: index no larger than x except along d
        long[] ishape = shape.clone();
        for (int k = 0; k < ishape.length; k++) {
          ishape[k] = k == d ? rnd.nextInt(4) : 1 + rnd.nextInt((int) shape[k]);
        }
        NdArray idx = randomIds(rnd, ishape, shape[d], DType.I64);
        NdArray g = Indexing.gather(x, dimArg, idx);
        assertEquals(t, g.dtype());
        forEachIndex(ishape, p -> {
          long[] src = p.clone();
          src[d] = idx.getLong(p);
          assertEquals(x.getDouble(src), g.getDouble(p), 0.0, "gather " + describe(x));
        });
        // scatterAdd into a copy; the reference adds in the same order in double / long.
        NdArray dst = TestArrays.random(rnd, t, shape, 1, TestArrays.Layout.CONTIGUOUS);
        double[] ref = dst.toDoubleArray();
        long[] dstr = NdArray.contiguousStrides(shape);
        NdArray src = TestArrays.random(rnd, t, ishape, 1);
        forEachIndex(ishape, p -> {
          long[] at = p.clone();
          at[d] = idx.getLong(p);
          int flat = 0;
          for (int k = 0; k < at.length; k++) {
            flat += (int) (at[k] * dstr[k]);
          }
          ref[flat] = t == DType.F32 ? (float) (ref[flat] + src.getDouble(p)) : ref[flat] + src.getDouble(p);
        });
        Indexing.scatterAdd(dst, dimArg, idx, src);
        double[] got = dst.toDoubleArray();
        for (int i = 0; i < got.length; i++) {
          // Same additions in the same order, rounded to the dtype after each: exact.
          assertEquals(ref[i], got[i], 0.0, "scatterAdd " + describe(x));
        }
      }
    }
    NdArray x = NdArray.zeros(DType.F32, 2, 3);
    IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
        () -> Indexing.gather(x, 1, NdArray.fromLongs(new long[] {0, 3}, 1, 2)));
    assertTrue(e.getMessage().contains("index 3") && e.getMessage().contains("size 3"), e.getMessage());
  }

  @Test
  void topkSortedWithStableTiesAndIndices() {
    Random rnd = new Random(47);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.I32}) {
      for (int trial = 0; trial < 30; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 1, 3, false);
        NdArray x = TestArrays.random(rnd, t, shape, 1);
        int d = rnd.nextInt(shape.length);
        int k = rnd.nextInt((int) shape[d] + 1);
        boolean largest = rnd.nextBoolean();
        Indexing.TopK r = Indexing.topk(x, k, d, largest);
        assertEquals(DType.I64, r.indices().dtype());
        long[] outer = shape.clone();
        outer[d] = 1;
        forEachIndex(outer, p -> {
          int n = (int) shape[d];
          Integer[] order = new Integer[n];
          double[] v = new double[n];
          for (int i = 0; i < n; i++) {
            long[] j = p.clone();
            j[d] = i;
            v[i] = x.getDouble(j);
            order[i] = i;
          }
          // Reference: stable sort by value (descending for largest), so ties stay in index order.
          Arrays.sort(order, (a, b) -> largest ? Double.compare(v[b], v[a]) : Double.compare(v[a], v[b]));
          for (int i = 0; i < k; i++) {
            long[] j = p.clone();
            j[d] = i;
            assertEquals(order[i].longValue(), r.indices().getLong(j), "topk index " + describe(x));
            assertEquals(v[order[i]], r.values().getDouble(j), 0.0, "topk value");
          }
        });
      }
    }
  }

  @Test
  void cumsumAlongAnyDim() {
    Random rnd = new Random(53);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.I32, DType.I64}) {
      for (int trial = 0; trial < 25; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 1, 4, true);
        NdArray x = TestArrays.random(rnd, t, shape, 1);
        int d = rnd.nextInt(shape.length);
        NdArray c = Indexing.cumsum(x, d - (rnd.nextBoolean() ? shape.length : 0));
        assertEquals(t.isFloating() ? t : DType.I64, c.dtype());
        forEachIndex(shape, p -> {
          double acc = 0;
          long[] j = p.clone();
          for (long i = 0; i <= p[d]; i++) {
            j[d] = i;
            acc += x.getDouble(j);
          }
          // Double accumulation like the reference, one rounding into the dtype.
          assertClose(acc, c.getDouble(p), TestArrays.rtol(t.isFloating() ? t : DType.I64), 1e-6,
              "cumsum " + describe(x));
        });
      }
    }
  }
}
