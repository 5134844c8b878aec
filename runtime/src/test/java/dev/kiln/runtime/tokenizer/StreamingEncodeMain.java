package dev.kiln.runtime.tokenizer;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.List;
import java.util.PrimitiveIterator;

/**
 * Child-process side of {@link StreamingMemoryTest}: encodes a large file under a small heap, either with {@link
 * FileEncoder} ("file") or with {@link BpeTokenizer#encodeIterable} over lazily read lines ("lines"), and prints
 * {@code tokens checksum peakHeapBytes}.
 */
public final class StreamingEncodeMain {
  private StreamingEncodeMain() {}

  public static void main(String[] args) throws IOException {
    Path data = Path.of(args[0]);
    Path file = Path.of(args[1]);
    BpeTokenizer tok = TokenizerFiles.loadGpt2(
        data.resolve("tokenizer/gpt2_vocab.json"), data.resolve("tokenizer/gpt2_merges.txt"), List.of("<|endoftext|>"));
    long[] acc = new long[2];
    if (args[2].equals("file")) {
      FileEncoder.encode(tok, file, 2, (ids, n) -> {
        for (int k = 0; k < n; k++) {
          acc[1] = StreamingMemoryTest.mix(acc[1], ids[k]);
        }
        acc[0] += n;
      }, null);
    } else {
      try (BufferedReader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
        Iterable<String> lines = () -> new Iterator<>() {
          private String next = read();

          private String read() {
            try {
              String l = r.readLine();
              // The file uses \n only, so re-adding it restores the text exactly.
              return l == null ? null : l + "\n";
            } catch (IOException e) {
              throw new UncheckedIOException(e);
            }
          }

          @Override
          public boolean hasNext() {
            return next != null;
          }

          @Override
          public String next() {
            String s = next;
            next = read();
            return s;
          }
        };
        PrimitiveIterator.OfInt it = tok.encodeIterable(lines);
        while (it.hasNext()) {
          acc[1] = StreamingMemoryTest.mix(acc[1], it.nextInt());
          acc[0]++;
        }
      }
    }
    long peak = ManagementFactory.getMemoryPoolMXBeans().stream()
        .filter(p -> p.getType() == MemoryType.HEAP).mapToLong(p -> p.getPeakUsage().getUsed()).sum();
    System.out.println(acc[0] + " " + acc[1] + " " + peak);
  }
}
