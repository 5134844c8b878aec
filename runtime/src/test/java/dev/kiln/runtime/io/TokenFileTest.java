package dev.kiln.runtime.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TokenFileTest {
  @TempDir Path dir;

  /** The oracle: the bytes numpy's {@code np.array(ids, dtype=uint16/uint32).tofile()} writes, packed by hand. */
  static byte[] packed(int[] ids, int width) {
    ByteBuffer b = ByteBuffer.allocate(ids.length * width).order(ByteOrder.LITTLE_ENDIAN);
    for (int id : ids) {
      if (width == 2) {
        b.putShort((short) id);
      } else {
        b.putInt(id);
      }
    }
    return b.array();
  }

  @Test
  void writesAndReadsBothWidths() throws IOException {
    Random rnd = new Random(1);
    for (int vocab : new int[] {256, 50_257, 65_536, 65_537, 100_277}) {
      int[] ids = new int[600_000 + rnd.nextInt(1000)];
      for (int k = 0; k < ids.length; k++) {
        ids[k] = rnd.nextInt(vocab);
      }
      ids[0] = vocab - 1; // the largest legal id, 65535 for a 65,536 vocabulary
      Path p = dir.resolve("v" + vocab + ".bin");
      try (TokenFile.Writer w = TokenFile.writer(p, vocab)) {
        int at = 0;
        while (at < ids.length) { // uneven batches, and single ids, across the 1 MiB buffer
          int n = Math.min(ids.length - at, rnd.nextInt(700));
          if (n == 1) {
            w.append(ids[at]);
          } else {
            w.append(ids, at, n);
          }
          at += n;
        }
      }
      int width = vocab <= 65_536 ? 2 : 4;
      assertArrayEquals(packed(ids, width), Files.readAllBytes(p), "raw .bin bytes for vocab " + vocab);
      Map<String, Object> manifest = Json.parseObject(Files.readString(TokenFile.manifestOf(p)));
      assertEquals(width == 2 ? "uint16" : "uint32", manifest.get("dtype"));
      assertEquals((long) ids.length, manifest.get("count"));
      assertEquals((long) vocab, manifest.get("vocab_size"));
      try (TokenFile t = TokenFile.open(p)) {
        assertEquals(ids.length, t.length());
        assertEquals(vocab, t.vocabSize());
        for (int k = 0; k < ids.length; k += 97) {
          assertEquals(ids[k], t.get(k));
        }
        int[] window = new int[500];
        long start = rnd.nextInt(ids.length - window.length);
        t.read(start, window);
        for (int k = 0; k < window.length; k++) {
          assertEquals(ids[(int) start + k], window[k]);
        }
        NdArray s = t.slice(start, 10);
        assertEquals(DType.I32, s.dtype());
        assertEquals(ids[(int) start + 9], s.getLong(9));
        assertThrows(IndexOutOfBoundsException.class, () -> t.get(ids.length));
        assertThrows(IndexOutOfBoundsException.class, () -> t.read(ids.length - 2, new int[3]));
      }
    }
  }

  @Test
  void refusesIdsOutsideTheVocabularyAndKeepsTheOldFile() throws IOException {
    Path p = dir.resolve("t.bin");
    try (TokenFile.Writer w = TokenFile.writer(p, 10)) {
      w.append(new int[] {1, 2, 3});
    }
    byte[] before = Files.readAllBytes(p);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
      try (TokenFile.Writer w = TokenFile.writer(p, 1000)) {
        w.append(new int[] {5, 6});
        w.append(new int[] {7, 70_000, 8});
      }
    });
    assertTrue(e.getMessage().contains("70000") && e.getMessage().contains("position 3"), e.getMessage());
    assertTrue(e.getMessage().contains("[0, 1000)") && e.getMessage().contains("uint16"), e.getMessage());
    assertArrayEquals(before, Files.readAllBytes(p), "failed write left the old file alone");
    try (var files = Files.list(dir)) {
      assertEquals(2, files.count(), "no temporary file left behind (t.bin, t.bin.json)");
    }
    IllegalArgumentException neg = assertThrows(IllegalArgumentException.class, () -> {
      try (TokenFile.Writer w = TokenFile.writer(dir.resolve("n.bin"), 1 << 20)) {
        w.append(-1);
      }
    });
    assertTrue(neg.getMessage().contains("token id -1 at position 0"), neg.getMessage());
    assertFalse(Files.exists(dir.resolve("n.bin")));
  }

  @Test
  void rawBinWithoutManifestNeedsAWidth() throws IOException {
    Path p = dir.resolve("nanogpt.bin");
    int[] ids = {50256, 0, 42, 65535};
    Files.write(p, packed(ids, 2));
    IOException e = assertThrows(IOException.class, () -> TokenFile.open(p));
    assertTrue(e.getMessage().contains("Width.UINT16") && e.getMessage().contains("nanogpt.bin"), e.getMessage());
    try (TokenFile t = TokenFile.open(p, TokenFile.Width.UINT16)) {
      int[] got = new int[4];
      t.read(0, got);
      assertArrayEquals(ids, got);
      assertEquals(-1, t.vocabSize());
    }
    Files.write(dir.resolve("odd.bin"), new byte[5]);
    IOException odd = assertThrows(IOException.class, () -> TokenFile.open(dir.resolve("odd.bin"), TokenFile.Width.UINT32));
    assertTrue(odd.getMessage().contains("not a whole number of uint32"), odd.getMessage());
  }

  @Test
  void manifestMustAgreeWithTheFile() throws IOException {
    Path p = dir.resolve("m.bin");
    try (TokenFile.Writer w = TokenFile.writer(p, 100)) {
      w.append(new int[] {1, 2, 3, 4});
    }
    IOException width = assertThrows(IOException.class, () -> TokenFile.open(p, TokenFile.Width.UINT32));
    assertTrue(width.getMessage().contains("manifest says uint16"), width.getMessage());
    Files.write(p, packed(new int[] {1, 2, 3}, 2)); // file replaced behind the manifest's back
    IOException count = assertThrows(IOException.class, () -> TokenFile.open(p));
    assertTrue(count.getMessage().contains("holds 3 ids but its manifest says 4"), count.getMessage());
    Files.writeString(TokenFile.manifestOf(p), "{\"dtype\": \"int8\", \"count\": 3}");
    IOException dtype = assertThrows(IOException.class, () -> TokenFile.open(p));
    assertTrue(dtype.getMessage().contains("expected \"uint16\" or \"uint32\""), dtype.getMessage());
  }

  /**
   * Indexing past 2^31 tokens (4 GiB of uint16), on a sparse file so it costs no disk: ids planted on both sides
   * of the 2^31 boundary must come back through get and a read that straddles it.
   */
  @Test
  void indexesPast2To31Tokens() throws IOException {
    long n = (1L << 31) + 16;
    Path p = dir.resolve("huge.bin");
    try (RandomAccessFile raf = new RandomAccessFile(p.toFile(), "rw")) {
      raf.setLength(n * 2);
      plant(raf, (1L << 31) - 1, 777);
      plant(raf, (1L << 31) + 3, 65_000);
      plant(raf, n - 1, 12_345);
    }
    try (TokenFile t = TokenFile.open(p, TokenFile.Width.UINT16)) {
      assertEquals(n, t.length());
      assertEquals(777, t.get((1L << 31) - 1));
      assertEquals(65_000, t.get((1L << 31) + 3));
      assertEquals(12_345, t.get(n - 1));
      int[] w = new int[6];
      t.read((1L << 31) - 2, w);
      assertArrayEquals(new int[] {0, 777, 0, 0, 0, 65_000}, w);
    }
  }

  private static void plant(RandomAccessFile raf, long index, int id) throws IOException {
    raf.seek(index * 2);
    raf.write(id & 0xff);
    raf.write(id >>> 8);
  }
}
