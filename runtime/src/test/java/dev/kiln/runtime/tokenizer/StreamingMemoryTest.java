package dev.kiln.runtime.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedOutputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Encoding a file uses constant memory: a child JVM with a 32 MB heap encodes a file four times that size, with the
 * parallel file encoder and with encodeIterable over lines, and must produce exactly the ids expected.
 */
class StreamingMemoryTest {
  static final String HEAP = "-Xmx32m";
  static final long FILE_BYTES = 128L << 20;

  /** An order-sensitive checksum of an id sequence. */
  static long mix(long h, int id) {
    return (h ^ id) * 0x100000001B3L + 0x9E3779B97F4A7C15L;
  }

  @Test
  void encodesAFileFourTimesTheHeapInConstantMemory(@TempDir Path tmp) throws Exception {
    // A block that ends in a special token: every repeat is then its own segment, so the file's ids are the
    // block's ids repeated, which the parent can check without encoding 160 MB itself.
    Random rnd = new Random(23);
    StringBuilder b = new StringBuilder(Files.readString(TestData.dir().resolve("tokenizer/tinystories_sample.txt")));
    for (int k = 0; k < 200; k++) {
      b.append(RandomText.mixed(rnd, 10)).append(k % 7 == 0 ? "\n\n" : "\n");
    }
    b.append("<|endoftext|>\n");
    String block = b.toString().replace("\r", "").replace("\u2028", " ").replace("\u2029", " ").replace("\u0085", " ");
    byte[] blockBytes = block.getBytes(StandardCharsets.UTF_8);
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    int[] blockIds = gpt2.encode(block);
    // The newline after <|endoftext|> starts the next repeat; encode two repeats to get the steady-state ids.
    int[] twice = gpt2.encode(block + block);
    int[] steady = java.util.Arrays.copyOfRange(twice, blockIds.length, twice.length);
    long reps = FILE_BYTES / blockBytes.length;
    Path file = tmp.resolve("big.txt");
    try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(file), 1 << 20)) {
      for (long r = 0; r < reps; r++) {
        out.write(blockBytes);
      }
    }
    long tokens = blockIds.length + (reps - 1) * steady.length;
    long sum = 0;
    for (int id : blockIds) {
      sum = mix(sum, id);
    }
    for (long r = 1; r < reps; r++) {
      for (int id : steady) {
        sum = mix(sum, id);
      }
    }
    for (String mode : List.of("file", "lines")) {
      String[] res = runChild(file, mode).trim().split(" ");
      assertEquals(tokens, Long.parseLong(res[0]), mode + ": token count");
      assertEquals(sum, Long.parseLong(res[1]), mode + ": checksum of the ids in order");
      long peak = Long.parseLong(res[2]);
      assertTrue(peak < (32L << 20), mode + ": peak heap " + peak + " within the 32 MB limit");
      assertTrue(Files.size(file) >= 3.9 * (32L << 20), "the file dwarfs the heap");
    }
  }

  private static String runChild(Path file, String mode) throws Exception {
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    List<String> cmd = new ArrayList<>(List.of(java, HEAP, "-XX:+UseSerialGC", "-cp",
        System.getProperty("java.class.path"), StreamingEncodeMain.class.getName(), TestData.dir().toString(),
        file.toString(), mode));
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue(p.waitFor(120, TimeUnit.SECONDS), "child timed out");
    assertEquals(0, p.exitValue(), "child JVM (" + HEAP + ", " + mode + ") failed:\n" + out);
    return out;
  }
}
