package dev.kiln.runtime.tokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.PriorityQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Trains a byte-level BPE tokenizer as CS336 (assignment 1) specifies it.
 *
 * <ul>
 *   <li>Initial vocabulary: the 256 byte values at ids 0..255, then the special tokens at 256.., then one id per
 *       merge in the order learned. (CS336's test compares the sets of ids and of byte strings, so either order of
 *       bytes and specials passes it; putting bytes first makes a byte's id the byte itself.)
 *   <li>Text is split on special tokens first (they are never counted or merged), then pre-tokenized with GPT-2's
 *       pattern ({@link PreTokenizer}); merges never cross a pre-token.
 *   <li>Each step merges the most frequent adjacent pair (overlapping occurrences counted, as in the reference);
 *       ties go to the lexicographically greatest pair: compare the left byte strings, then the right ones, as
 *       unsigned bytes, a proper prefix being smaller ({@link TieBreak#BYTES}; {@link TieBreak#GPT2_ALPHABET}
 *       reproduces the spring-2024 CS336 reference merges).
 *   <li>Stops when the vocabulary reaches the requested size, or earlier if no pair is left.
 * </ul>
 *
 * <p>Efficiency: inputs are read in chunks cut at safe points ({@link TextChunker}) and pre-tokenized in parallel;
 * only counts of unique pre-tokens are kept. Pair counts are built once and then updated incrementally: a merge
 * visits only the words that contain the pair (a pair → words index) and a max-heap with lazy invalidation yields
 * the next pair, so no step recounts the corpus.
 */
public final class BpeTrainer {
  private BpeTrainer() {}

  /** Statistics of a training run, for reports. */
  public record Stats(long inputBytes, int uniquePreTokens, int merges, double seconds) {}

  /** A trained tokenizer and its statistics. */
  public record Result(BpeTokenizer tokenizer, Stats stats) {}

  /** Trains on files with all available processors; see {@link #train(List, int, List, int, TieBreak)}. */
  public static Result train(List<Path> inputs, int vocabSize, List<String> specials) throws IOException {
    return train(inputs, vocabSize, specials, Runtime.getRuntime().availableProcessors(), TieBreak.BYTES);
  }

  /**
   * Trains on the UTF-8 text of {@code inputs} (each file is its own text: no pre-token spans two files).
   *
   * @param vocabSize the final vocabulary size: 256 bytes + specials + merges
   * @param threads threads for pre-tokenization
   * @param tieBreak how equal counts are ordered ({@link TieBreak#BYTES} is CS336's stated rule)
   */
  public static Result train(List<Path> inputs, int vocabSize, List<String> specials, int threads, TieBreak tieBreak)
      throws IOException {
    long t0 = System.nanoTime();
    SpecialTokens sp = new SpecialTokens(specials);
    checkVocabSize(vocabSize, sp);
    if (inputs.isEmpty()) {
      throw new IllegalArgumentException("no input files to train on");
    }
    for (Path p : inputs) {
      if (!Files.isRegularFile(p)) {
        throw new NoSuchFileException(p.toString(), null, "training input not found");
      }
      if (!Files.isReadable(p)) {
        throw new IOException(p + ": cannot read the training input (permissions?)");
      }
    }
    PreTokenCounts counts = new PreTokenCounts();
    long bytes = 0;
    ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, threads));
    try {
      for (Path p : inputs) {
        long size = Files.size(p);
        bytes += size;
        int chunk = (int) Math.clamp(size / (4L * Math.max(1, threads)), 1 << 16, 1 << 24);
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ)) {
          countAll(new TextChunker(TextChunker.of(ch), sp, chunk), sp, pool, threads, counts);
        }
      }
    } finally {
      pool.shutdownNow();
    }
    return finish(counts, vocabSize, sp, bytes, t0, String.valueOf(inputs), tieBreak);
  }

  /** Trains on an in-memory text (tests, small corpora), single-threaded. */
  public static Result train(String text, int vocabSize, List<String> specials) {
    return train(text, vocabSize, specials, TieBreak.BYTES);
  }

  /** Trains on an in-memory text with the given tie-break rule. */
  public static Result train(String text, int vocabSize, List<String> specials, TieBreak tieBreak) {
    long t0 = System.nanoTime();
    SpecialTokens sp = new SpecialTokens(specials);
    checkVocabSize(vocabSize, sp);
    byte[] b = text.getBytes(StandardCharsets.UTF_8);
    PreTokenCounts counts = new PreTokenCounts();
    counts.countChunk(b, 0, b.length, sp);
    return finish(counts, vocabSize, sp, b.length, t0, "the text", tieBreak);
  }

  private static void checkVocabSize(int vocabSize, SpecialTokens sp) {
    if (vocabSize < 256 + sp.size()) {
      throw new IllegalArgumentException("vocabulary size " + vocabSize + " is below 256 bytes + " + sp.size()
          + " special token(s) = " + (256 + sp.size()) + "; ask for at least that many");
    }
  }

  private static void countAll(
      TextChunker chunker, SpecialTokens sp, ExecutorService pool, int threads, PreTokenCounts into) {
    ArrayDeque<Future<PreTokenCounts>> inFlight = new ArrayDeque<>();
    while (true) {
      byte[] chunk = chunker.next();
      if (chunk == null) {
        break;
      }
      inFlight.add(
          pool.submit(
              () -> {
                PreTokenCounts c = new PreTokenCounts();
                c.countChunk(chunk, 0, chunk.length, sp);
                return c;
              }));
      // Bound memory: at most two chunks per thread are read ahead.
      while (inFlight.size() > 2 * threads) {
        into.addAll(await(inFlight.poll()));
      }
    }
    while (!inFlight.isEmpty()) {
      into.addAll(await(inFlight.poll()));
    }
  }

  private static <T> T await(Future<T> f) {
    try {
      return f.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while training", e);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof UncheckedIOException u) {
        throw u;
      }
      if (e.getCause() instanceof RuntimeException r) {
        throw r;
      }
      throw new IllegalStateException(e.getCause());
    }
  }

  private static Result finish(
      PreTokenCounts counts, int vocabSize, SpecialTokens sp, long bytes, long t0, String what, TieBreak tieBreak) {
    if (counts.size() == 0) {
      throw new IllegalArgumentException(
          "nothing to train on: " + what + " holds no text" + (sp.isEmpty() ? "" : " outside special tokens"));
    }
    Merger m = new Merger(counts, tieBreak);
    m.run(vocabSize - 256 - sp.size());
    BpeTokenizer tok = m.build(sp);
    double secs = (System.nanoTime() - t0) / 1e9;
    return new Result(tok, new Stats(bytes, counts.size(), tok.mergeCount(), secs));
  }

  /** The merge loop, over training ids: bytes 0..255, then 256 + r for merge r. */
  private static final class Merger {
    private final int[][] words;
    private final long[] freq;
    private final int[] seenAt;
    private final List<byte[]> tokenBytes = new ArrayList<>();
    private final PairTable pairs = new PairTable();
    private final PriorityQueue<Candidate> heap;
    private final List<int[]> merges = new ArrayList<>();

    private record Candidate(long count, int left, int right) {}

    Merger(PreTokenCounts counts, TieBreak tieBreak) {
      int n = counts.size();
      words = new int[n][];
      freq = new long[n];
      seenAt = new int[n];
      int[] w = {0};
      counts.forEach(
          (arena, off, len, count) -> {
            int[] s = new int[len];
            for (int k = 0; k < len; k++) {
              s[k] = arena[off + k] & 0xFF;
            }
            words[w[0]] = s;
            freq[w[0]] = count;
            w[0]++;
          });
      for (int b = 0; b < 256; b++) {
        tokenBytes.add(new byte[] {(byte) b});
      }
      heap =
          new PriorityQueue<>(
              (x, y) -> {
                int c = Long.compare(y.count, x.count);
                if (c != 0) {
                  return c;
                }
                c = tieBreak.compare(tokenBytes.get(y.left), tokenBytes.get(x.left));
                if (c != 0) {
                  return c;
                }
                return tieBreak.compare(tokenBytes.get(y.right), tokenBytes.get(x.right));
              });
      PairTable.LongList unused = new PairTable.LongList();
      for (int i = 0; i < words.length; i++) {
        int[] s = words[i];
        for (int k = 0; k + 1 < s.length; k++) {
          long key = MergeTable.key(s[k], s[k + 1]);
          pairs.add(key, freq[i], 0, unused);
          pairs.index(key, i);
        }
      }
      pairs.forEachPositive(key -> heap.add(new Candidate(pairs.count(key), (int) (key >>> 32), (int) key)));
    }

    void run(int maxMerges) {
      PairTable.LongList touched = new PairTable.LongList();
      for (int step = 1; merges.size() < maxMerges; step++) {
        Candidate top = null;
        while (!heap.isEmpty()) {
          Candidate c = heap.poll();
          long now = pairs.count(MergeTable.key(c.left, c.right));
          if (now == c.count && now > 0) {
            top = c;
            break;
          }
        }
        if (top == null) {
          return;
        }
        int a = top.left;
        int b = top.right;
        int merged = tokenBytes.size();
        byte[] ab = Arrays.copyOf(tokenBytes.get(a), tokenBytes.get(a).length + tokenBytes.get(b).length);
        System.arraycopy(tokenBytes.get(b), 0, ab, tokenBytes.get(a).length, tokenBytes.get(b).length);
        tokenBytes.add(ab);
        merges.add(new int[] {a, b});
        touched.n = 0;
        for (int w : pairs.takeWords(MergeTable.key(a, b))) {
          if (seenAt[w] == step) {
            continue;
          }
          seenAt[w] = step;
          int[] s = words[w];
          int[] t = apply(s, a, b, merged);
          if (t == s) {
            continue;
          }
          long f = freq[w];
          for (int k = 0; k + 1 < s.length; k++) {
            pairs.add(MergeTable.key(s[k], s[k + 1]), -f, step, touched);
          }
          for (int k = 0; k + 1 < t.length; k++) {
            long key = MergeTable.key(t[k], t[k + 1]);
            pairs.add(key, f, step, touched);
            if (t[k] == merged || t[k + 1] == merged) {
              pairs.index(key, w);
            }
          }
          words[w] = t;
        }
        for (int k = 0; k < touched.n; k++) {
          long key = touched.a[k];
          long now = pairs.count(key);
          if (now > 0 && now != pairs.countBefore(key)) {
            heap.add(new Candidate(now, (int) (key >>> 32), (int) key));
          }
        }
      }
    }

    /** Merges (a, b) left to right without overlap; returns {@code s} itself when the pair does not occur. */
    private static int[] apply(int[] s, int a, int b, int merged) {
      int n = s.length;
      int hits = 0;
      for (int k = 0; k + 1 < n; k++) {
        if (s[k] == a && s[k + 1] == b) {
          hits++;
          k++;
        }
      }
      if (hits == 0) {
        return s;
      }
      int[] t = new int[n - hits];
      int j = 0;
      for (int k = 0; k < n; k++) {
        if (k + 1 < n && s[k] == a && s[k + 1] == b) {
          t[j++] = merged;
          k++;
        } else {
          t[j++] = s[k];
        }
      }
      return t;
    }

    /** Final ids: bytes 0..255, specials 256..256+k-1, merged tokens after. */
    BpeTokenizer build(SpecialTokens sp) {
      int k = sp.size();
      int total = tokenBytes.size() + k;
      byte[][] bytes = new byte[total][];
      int[] byteToId = new int[256];
      for (int b = 0; b < 256; b++) {
        bytes[b] = tokenBytes.get(b);
        byteToId[b] = b;
      }
      int[] specialIds = new int[k];
      for (int s = 0; s < k; s++) {
        specialIds[s] = 256 + s;
        bytes[256 + s] = sp.bytes(s).clone();
      }
      int n = merges.size();
      int[] left = new int[n];
      int[] right = new int[n];
      int[] result = new int[n];
      for (int r = 0; r < n; r++) {
        left[r] = finalId(merges.get(r)[0], k);
        right[r] = finalId(merges.get(r)[1], k);
        result[r] = 256 + k + r;
        bytes[256 + k + r] = tokenBytes.get(256 + r);
      }
      return new BpeTokenizer(bytes, byteToId, left, right, result, sp.tokens(), specialIds);
    }

    private static int finalId(int trainingId, int specials) {
      return trainingId < 256 ? trainingId : trainingId + specials;
    }
  }
}
