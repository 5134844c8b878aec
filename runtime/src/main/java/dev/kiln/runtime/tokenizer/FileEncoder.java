package dev.kiln.runtime.tokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayDeque;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Encodes a file of any size in parallel: one thread reads chunks cut at safe points ({@link TextChunker}), worker
 * threads encode them, and the ids are handed to the sink in file order. At most {@code 2 × threads} chunks are in
 * flight, so memory is bounded by the chunk size, not the file size; the ids equal {@code encode} of the whole text.
 */
public final class FileEncoder {
  private FileEncoder() {}

  /** Receives ids in order; {@code ids[0, count)} is valid only during the call. */
  @FunctionalInterface
  public interface IdSink {
    void accept(int[] ids, int count) throws IOException;
  }

  /** Told how many input bytes have been encoded so far (called from the reading thread). */
  @FunctionalInterface
  public interface Progress {
    void update(long bytesDone, long bytesTotal);
  }

  /** What an encoding run did. */
  public record Summary(long bytes, long tokens, double seconds) {
    public double megabytesPerSecond() {
      return bytes / 1e6 / Math.max(seconds, 1e-9);
    }
  }

  /** Default chunk size: large enough that per-chunk overhead vanishes, small enough to keep memory flat. */
  public static final int DEFAULT_CHUNK = 1 << 20;

  public static Summary encode(BpeTokenizer tok, Path input, int threads, IdSink sink, Progress progress)
      throws IOException {
    return encode(tok, input, threads, DEFAULT_CHUNK, sink, progress);
  }

  public static Summary encode(
      BpeTokenizer tok, Path input, int threads, int chunkBytes, IdSink sink, Progress progress) throws IOException {
    if (!Files.isRegularFile(input)) {
      throw new NoSuchFileException(input.toString(), null, "input file not found");
    }
    if (!Files.isReadable(input)) {
      throw new IOException(input + ": cannot read the input file (permissions?)");
    }
    long total = Files.size(input);
    long t0 = System.nanoTime();
    long tokens = 0;
    long done = 0;
    try (FileChannel ch = FileChannel.open(input, StandardOpenOption.READ)) {
      TextChunker chunker = new TextChunker(TextChunker.of(ch), tok.specialTokens(), chunkBytes);
      if (threads <= 1) {
        Encoder enc = tok.newEncoder();
        IntList ids = new IntList(chunkBytes / 2);
        for (byte[] chunk = chunker.next(); chunk != null; chunk = chunker.next()) {
          ids.clear();
          enc.encode(chunk, 0, chunk.length, ids);
          sink.accept(ids.array(), ids.size());
          tokens += ids.size();
          done += chunk.length;
          if (progress != null) {
            progress.update(done, total);
          }
        }
      } else {
        ExecutorService pool = Executors.newFixedThreadPool(threads, r -> {
          Thread t = new Thread(r, "kiln-encode");
          t.setDaemon(true);
          return t;
        });
        ThreadLocal<Encoder> encoders = ThreadLocal.withInitial(tok::newEncoder);
        ArrayDeque<Future<IntList>> inFlight = new ArrayDeque<>();
        ArrayDeque<Integer> sizes = new ArrayDeque<>();
        try {
          while (true) {
            byte[] chunk = chunker.next();
            if (chunk == null) {
              break;
            }
            inFlight.add(pool.submit(() -> {
              IntList ids = new IntList(chunk.length / 3 + 16);
              encoders.get().encode(chunk, 0, chunk.length, ids);
              return ids;
            }));
            sizes.add(chunk.length);
            while (inFlight.size() >= 2 * threads) {
              IntList ids = await(inFlight.poll());
              sink.accept(ids.array(), ids.size());
              tokens += ids.size();
              done += sizes.poll();
              if (progress != null) {
                progress.update(done, total);
              }
            }
          }
          while (!inFlight.isEmpty()) {
            IntList ids = await(inFlight.poll());
            sink.accept(ids.array(), ids.size());
            tokens += ids.size();
            done += sizes.poll();
            if (progress != null) {
              progress.update(done, total);
            }
          }
        } finally {
          pool.shutdownNow();
        }
      }
    } catch (UncheckedIOException e) {
      throw e.getCause();
    }
    return new Summary(done, tokens, (System.nanoTime() - t0) / 1e9);
  }

  private static <T> T await(Future<T> f) throws IOException {
    try {
      return f.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while encoding", e);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof RuntimeException r) {
        throw r;
      }
      throw new IOException(e.getCause());
    }
  }
}
