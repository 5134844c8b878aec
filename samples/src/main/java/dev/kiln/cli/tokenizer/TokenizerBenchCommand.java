package dev.kiln.cli.tokenizer;

import com.knuddels.jtokkit.Encodings;
import com.knuddels.jtokkit.api.Encoding;
import com.knuddels.jtokkit.api.EncodingType;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.FileEncoder;
import dev.kiln.runtime.tokenizer.TieBreak;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln bench tokenizer}: BPE training time (corpus.en, TinyStories) and GPT-2 encoding throughput against
 * jtokkit (Java port of tiktoken) in the same JVM and the tiktoken npm package (timed by node itself).
 */
@Command(name = "tokenizer", description = "BPE training and GPT-2 encoding figures, next to jtokkit and tiktoken.")
public final class TokenizerBenchCommand implements Callable<Integer> {
  @CommandLine.Spec CommandLine.Model.CommandSpec spec;

  @Option(names = "--data", paramLabel = "DIR",
      description = "Shared data folder holding tokenizer/ and text/tinystories/ (default: ${DEFAULT-VALUE}).")
  Path data = Path.of("../shared/data");

  @Option(names = "--repeats", paramLabel = "N", description = "Timed runs per measurement (default: ${DEFAULT-VALUE}).")
  int repeats = 5;

  @Option(names = "--threads", paramLabel = "N", description = "Threads for the parallel runs (default: all cores).")
  int threads = Runtime.getRuntime().availableProcessors();

  @Option(names = "--skip-node", description = "Do not run the tiktoken (npm) peer.")
  boolean skipNode;

  private PrintWriter out;

  private Path need(Path p) throws NoSuchFileException {
    if (!Files.isRegularFile(p)) {
      throw new NoSuchFileException(p.toAbsolutePath().normalize().toString(), null,
          "benchmark data not found; point --data at the folder holding tokenizer/ and text/tinystories/");
    }
    return p;
  }

  @Override
  public Integer call() throws Exception {
    out = spec.commandLine().getOut();
    Path corpus = need(data.resolve("tokenizer/corpus.en"));
    Path vocab = need(data.resolve("tokenizer/gpt2_vocab.json"));
    Path merges = need(data.resolve("tokenizer/gpt2_merges.txt"));
    Path tsDir = data.resolve("text/tinystories");
    List<Path> stories = new ArrayList<>();
    if (Files.isDirectory(tsDir)) {
      try (var s = Files.list(tsDir)) {
        s.filter(p -> p.toString().endsWith(".txt")).sorted().forEach(stories::add);
      }
    }
    if (stories.isEmpty()) {
      throw new NoSuchFileException(tsDir.toAbsolutePath().normalize().toString(), null, "no TinyStories *.txt files");
    }
    long storyBytes = 0;
    for (Path p : stories) {
      storyBytes += Files.size(p);
    }
    out.printf(Locale.ROOT, "kiln bench tokenizer — Java %s, %d processors, max heap %d MB%n",
        Runtime.version(), Runtime.getRuntime().availableProcessors(), Runtime.getRuntime().maxMemory() >> 20);

    // 1. CS336's speed test: corpus.en, vocabulary 500.
    List<String> eot = List.of("<|endoftext|>");
    double first = 0;
    double best = Double.MAX_VALUE;
    for (int r = 0; r < Math.max(repeats, 3); r++) {
      long t0 = System.nanoTime();
      BpeTrainer.train(List.of(corpus), 500, eot, threads, TieBreak.BYTES);
      double s = (System.nanoTime() - t0) / 1e9;
      if (r == 0) {
        first = s;
      }
      best = Math.min(best, s);
    }
    out.printf(Locale.ROOT, "%ntrain corpus.en (%.0f kB), vocab 500: first %.3f s, best %.3f s (CS336 reference"
        + " implementation: 0.38 s on a laptop; ratio %.1fx)%n", Files.size(corpus) / 1e3, first, best, 0.38 / best);

    // 2. TinyStories, vocabulary 10,000: throughput and peak heap.
    System.gc();
    List<MemoryPoolMXBean> heapPools = ManagementFactory.getMemoryPoolMXBeans().stream()
        .filter(p -> p.getType() == MemoryType.HEAP).toList();
    heapPools.forEach(MemoryPoolMXBean::resetPeakUsage);
    long baseline = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
    long t0 = System.nanoTime();
    BpeTrainer.Result ts = BpeTrainer.train(stories, 10_000, eot, threads, TieBreak.BYTES);
    double tsSecs = (System.nanoTime() - t0) / 1e9;
    long peak = heapPools.stream().mapToLong(p -> p.getPeakUsage().getUsed()).sum();
    BpeTokenizer tok = ts.tokenizer();
    int longest = tok.longestTokenId();
    out.printf(Locale.ROOT, "train TinyStories (%d files, %.1f MB), vocab 10000: %.2f s, %.2f MB/s, %,d unique"
            + " pre-tokens, %d merges%n", stories.size(), storyBytes / 1e6, tsSecs, storyBytes / 1e6 / tsSecs,
        ts.stats().uniquePreTokens(), ts.stats().merges());
    out.printf(Locale.ROOT, "  peak heap used %.0f MB (sum of heap pool peaks; %.0f MB in use before)%n",
        peak / 1e6, baseline / 1e6);
    out.printf("  longest token: id %d, %d bytes, %s%n", longest, tok.tokenBytes(longest).length,
        TokenizerCommand.showToken(tok.tokenBytes(longest)));

    // 3. Encoding throughput, GPT-2, on the same text.
    BpeTokenizer gpt2 = TokenizerFiles.loadGpt2(vocab, merges, eot);
    StringBuilder sb = new StringBuilder();
    for (Path p : stories) {
      sb.append(Files.readString(p));
    }
    String text = sb.toString();
    double mb = text.getBytes(StandardCharsets.UTF_8).length / 1e6;
    Encoding jtokkit = Encodings.newDefaultEncodingRegistry().getEncoding(EncodingType.R50K_BASE);
    int[] kilnIds = gpt2.encodeOrdinary(text);
    int[] jtIds = jtokkit.encodeOrdinary(text).toArray();
    out.printf(Locale.ROOT, "%nencode TinyStories (%.1f MB) with GPT-2: %,d tokens; Kiln and jtokkit ids %s%n",
        mb, kilnIds.length, Arrays.equals(kilnIds, jtIds) ? "identical" : "DIFFER (" + jtIds.length + " jtokkit ids)");
    double parBest = Double.MAX_VALUE;
    // Interleave the runs so that load from other processes on a shared machine hits both alike.
    double kilnBest = Double.MAX_VALUE;
    double jtBest = Double.MAX_VALUE;
    for (int r = 0; r < Math.max(repeats, 3); r++) {
      long a = System.nanoTime();
      gpt2.newEncoder().encode(text);
      kilnBest = Math.min(kilnBest, (System.nanoTime() - a) / 1e9);
      a = System.nanoTime();
      jtokkit.encodeOrdinary(text);
      jtBest = Math.min(jtBest, (System.nanoTime() - a) / 1e9);
      a = System.nanoTime();
      for (Path p : stories) {
        FileEncoder.encode(gpt2, p, threads, 1 << 18, (ids, n) -> {}, null);
      }
      parBest = Math.min(parBest, (System.nanoTime() - a) / 1e9);
    }
    double kilnMbps = mb / kilnBest;
    double jtMbps = mb / jtBest;
    double parMbps = mb / parBest;
    out.printf(Locale.ROOT, "  Kiln, 1 thread (fresh cache each run) %7.1f MB/s%n", kilnMbps);
    out.printf(Locale.ROOT, "  jtokkit 1.1.0 R50K_BASE, 1 thread     %7.1f MB/s   Kiln/jtokkit = %.2fx%n", jtMbps,
        kilnMbps / jtMbps);
    out.printf(Locale.ROOT, "  Kiln, %d threads (file, 256 kB chunks) %6.1f MB/s   vs 1 thread = %.2fx%n",
        threads, parMbps, parMbps / kilnMbps);
    if (!skipNode) {
      try {
        Path tmp = Files.createTempFile("kiln-bench-tinystories", ".txt");
        try {
          Files.writeString(tmp, text);
          Map<String, Object> res = Json.parseObject(runNode(tmp));
          double secs = ((Number) res.get("seconds")).doubleValue();
          double nodeMbps = ((Number) res.get("bytes")).doubleValue() / 1e6 / secs;
          out.printf(Locale.ROOT, "  tiktoken (npm, node), 1 thread         %7.1f MB/s   Kiln/tiktoken = %.2fx"
              + " (%s tokens)%n", nodeMbps, kilnMbps / nodeMbps, res.get("tokens"));
        } finally {
          Files.deleteIfExists(tmp);
        }
      } catch (IOException | IllegalStateException e) {
        out.println("  tiktoken (npm): not measured: " + e.getMessage());
      }
    }
    out.flush();
    return 0;
  }

  /** Runs scripts/test-peers/tiktoken-encode.js in bench mode, installing tiktoken as the tests do if needed. */
  private String runNode(Path file) throws IOException {
    Path root = null;
    for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
      if (Files.isRegularFile(p.resolve("scripts/test-peers/tiktoken-encode.js"))) {
        root = p;
        break;
      }
    }
    if (root == null) {
      throw new IllegalStateException("run from the project folder (scripts/test-peers/tiktoken-encode.js not found)");
    }
    Path prefix = root.resolve("target/test-peers");
    if (!Files.isRegularFile(prefix.resolve("node_modules/tiktoken/package.json"))) {
      exec(List.of("npm", "install", "--no-audit", "--no-fund", "--prefix", prefix.toString(), "tiktoken@1.0.22"),
          null, prefix.getParent());
    }
    String req = Json.write(Map.of("encoding", "gpt2", "bench", file.toString(), "repeats", Math.max(repeats, 3)));
    return exec(List.of("node", root.resolve("scripts/test-peers/tiktoken-encode.js").toString()), req, prefix);
  }

  private static String exec(List<String> cmd, String stdin, Path dir) throws IOException {
    Files.createDirectories(dir);
    ProcessBuilder pb = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true);
    pb.environment().put("NODE_PATH", dir.resolve("node_modules").toString());
    Process p = pb.start();
    try (var os = p.getOutputStream()) {
      if (stdin != null) {
        os.write(stdin.getBytes(StandardCharsets.UTF_8));
      }
    }
    String s = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    try {
      if (!p.waitFor(600, TimeUnit.SECONDS) || p.exitValue() != 0) {
        throw new IllegalStateException(String.join(" ", cmd) + " failed: " + s.strip());
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted", e);
    }
    return s;
  }
}
