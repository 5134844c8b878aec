package dev.kiln.runtime.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class BatchesTest {
  @TempDir Path tmp;

  private Path write(String name, int[] ids, long vocab) throws IOException {
    Path p = tmp.resolve(name);
    try (TokenFile.Writer w = TokenFile.writer(p, vocab)) {
      w.append(ids);
    }
    return p;
  }

  private static int[] corpus(int n, int vocab, long seed) {
    int[] ids = new int[n];
    NdArray r = new Rng(seed).integers(NdArray.zeros(DType.I64, n), 0, vocab);
    for (int i = 0; i < n; i++) {
      ids[i] = (int) r.getLong(i);
    }
    return ids;
  }

  @Test
  void randomBatchesAreGetBatchWindowsAtTheRngsOffsets() throws IOException {
    int[] ids = corpus(1000, 300, 1);
    try (TokenFile f = TokenSource.open(write("t.bin", ids, 300), null, 16, 300)) {
      RandomBatches batches = new RandomBatches(f, 4, 16, 300, new Rng(42), 0);
      Rng oracle = new Rng(42);
      for (int k = 0; k < 5; k++) {
        Batch b = batches.next();
        // CS336's get_batch: starts = randint(0, len - m, size=B); x = data[s:s+m]; y = data[s+1:s+m+1]
        NdArray starts = oracle.integers(NdArray.zeros(DType.I64, 4), 0, ids.length - 16);
        assertEquals(DType.I64, b.inputs().dtype());
        assertArrayEquals(new long[] {4, 16}, b.inputs().shape());
        for (int r = 0; r < 4; r++) {
          int s = (int) starts.getLong(r);
          for (int c = 0; c < 16; c++) {
            assertEquals(ids[s + c], b.inputs().getLong(r, c));
            assertEquals(ids[s + c + 1], b.targets().getLong(r, c));
          }
        }
      }
      assertEquals(5, batches.batchesDrawn());
    }
  }

  @Test
  void startsCoverExactlyTheValidRange() throws IOException {
    // len = m + 3: the valid starts are 0, 1, 2; 3 would need a target past the end.
    int[] ids = {0, 1, 2, 3, 4, 5, 6, 7};
    try (TokenFile f = TokenSource.open(write("s.bin", ids, 8), null, 5, 8)) {
      RandomBatches batches = new RandomBatches(f, 50, 5, 8, new Rng(3), 0);
      int[] seen = new int[8];
      for (int k = 0; k < 6; k++) {
        Batch b = batches.next();
        for (int r = 0; r < 50; r++) {
          seen[(int) b.inputs().getLong(r, 0)]++;
        }
      }
      // 300 draws over 3 values: each appears (probability of missing one is 3·(2/3)^300, nil), none beyond.
      assertTrue(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
      assertEquals(300, seen[0] + seen[1] + seen[2]);
    }
  }

  @Test
  void resumingFromTheRngStateContinuesTheSequence() throws IOException {
    int[] ids = corpus(500, 100, 2);
    try (TokenFile f = TokenSource.open(write("r.bin", ids, 100), null, 8, 100)) {
      RandomBatches straight = new RandomBatches(f, 3, 8, 100, new Rng(9), 0);
      for (int k = 0; k < 4; k++) {
        straight.next();
      }
      RandomBatches resumed = new RandomBatches(f, 3, 8, 100, new Rng(straight.rngState()), 4);
      for (int k = 0; k < 3; k++) {
        Batch a = straight.next();
        Batch b = resumed.next();
        assertArrayEquals(a.inputs().toLongArray(), b.inputs().toLongArray());
        assertArrayEquals(a.targets().toLongArray(), b.targets().toLongArray());
      }
      assertEquals(7, resumed.batchesDrawn());
    }
  }

  @Test
  void clearErrors() throws IOException {
    Path shortFile = write("short.bin", new int[] {1, 2, 3}, 10);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> TokenSource.open(shortFile, null, 3, 10));
    assertTrue(e.getMessage().contains("short.bin") && e.getMessage().contains("context_length + 1 = 4"),
        e.getMessage());

    Path big = write("big.bin", new int[] {1, 2, 3, 4, 5}, 1000);
    e = assertThrows(IllegalArgumentException.class, () -> TokenSource.open(big, null, 2, 10));
    assertTrue(e.getMessage().contains("vocabulary of 1000") && e.getMessage().contains("vocab_size is 10"),
        e.getMessage());

    // A raw file without a manifest, opened as uint16, with an id past the model's vocabulary at position 4.
    Path raw = tmp.resolve("raw.bin");
    Files.write(raw, new byte[] {1, 0, 2, 0, 3, 0, 4, 0, 50, 0, 5, 0});
    try (TokenFile f = TokenSource.open(raw, TokenFile.Width.UINT16, 5, 10)) {
      SequentialBatches seq = new SequentialBatches(f, 1, 5, 10, 0);
      e = assertThrows(IllegalArgumentException.class, () -> seq.batch(0));
      assertTrue(e.getMessage().contains("token id 50 at position 4"), e.getMessage());
      RandomBatches rb = new RandomBatches(f, 4, 5, 10, new Rng(1), 0);
      e = assertThrows(IllegalArgumentException.class, rb::next);
      assertTrue(e.getMessage().contains("token id 50"), e.getMessage());
    }
    assertThrows(NoSuchFileException.class, () -> TokenSource.open(tmp.resolve("missing.bin"), null, 2, 10));
  }

  @Test
  void sequentialPassCoversNonOverlappingWindows() throws IOException {
    int[] ids = corpus(103, 50, 4); // (103 - 1) / 10 = 10 windows; the last 2 tokens cannot fill one
    try (TokenFile f = TokenSource.open(write("v.bin", ids, 50), null, 10, 50)) {
      SequentialBatches all = new SequentialBatches(f, 4, 10, 50, 0);
      assertEquals(3, all.batchCount());
      assertEquals(10, all.windowCount());
      assertArrayEquals(new long[] {2, 10}, all.batch(2).inputs().shape()); // the last batch holds the rest
      for (int w = 0; w < 10; w++) {
        Batch b = all.batch(w / 4);
        for (int c = 0; c < 10; c++) {
          assertEquals(ids[w * 10 + c], b.inputs().getLong(w % 4, c));
          assertEquals(ids[w * 10 + c + 1], b.targets().getLong(w % 4, c));
        }
      }
      // Weighted mean: the "loss" of a batch is the mean of its target ids, so the pass's mean is the plain mean
      // of ids[1..100].
      double expect = 0;
      for (int i = 1; i <= 100; i++) {
        expect += ids[i];
      }
      expect /= 100;
      double got = all.meanLoss(b -> java.util.Arrays.stream(b.targets().toLongArray()).average().orElseThrow());
      assertEquals(expect, got, 1e-12); // sums of 100 small integers in double: exact but for the final division

      SequentialBatches capped = new SequentialBatches(f, 4, 10, 50, 2);
      assertEquals(2, capped.batchCount());
      assertEquals(8, capped.windowCount());
      assertThrows(IndexOutOfBoundsException.class, () -> capped.batch(2));
    }
  }
}
