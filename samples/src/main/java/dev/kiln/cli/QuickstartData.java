package dev.kiln.cli;

import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.FileEncoder;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

/**
 * The data half of {@code kiln quickstart}: bundled stories → a train/validation split by whole stories → a BPE
 * tokenizer trained on the training stories only → both splits encoded into token files.
 *
 * <p>The split is by document so no story is half in each; every {@code holdoutEvery}-th story (in file order) is
 * held out, which spreads the validation set over all three source files instead of taking one file's tail.
 */
final class QuickstartData {
  static final String END_OF_TEXT = "<|endoftext|>";

  /** What the preparation produced, for the training config and the summary. */
  record Prepared(
      Path tokenizerDir, Path trainTokens, Path validationTokens, int vocabSize, long trainTokenCount,
      long validationTokenCount, int trainStories, int validationStories) {}

  private QuickstartData() {}

  /** Finds the bundled stories: {@code --data}, else {@code <kiln.home>/data/tinystories}, else {@code ./data/...}. */
  static Path locate(Path explicit) {
    if (explicit != null) {
      return requireStories(explicit);
    }
    String home = System.getProperty("kiln.home");
    Path candidate = home != null ? Path.of(home, "data", "tinystories") : Path.of("data", "tinystories");
    return requireStories(candidate);
  }

  private static Path requireStories(Path dir) {
    if (!Files.isDirectory(dir)) {
      throw new IllegalArgumentException(
          dir + ": no such folder; pass --data DIR with the TinyStories .txt files (Kiln ships them in data/tinystories)");
    }
    return dir;
  }

  static Prepared prepare(Path storiesDir, Path outDir, int vocabSize, int holdoutEvery, PrintStream log)
      throws IOException {
    List<Path> files;
    try (Stream<Path> s = Files.list(storiesDir)) {
      files = s.filter(p -> p.getFileName().toString().endsWith(".txt")).sorted().toList();
    }
    if (files.isEmpty()) {
      throw new IllegalArgumentException(storiesDir + " holds no .txt files");
    }
    StringBuilder train = new StringBuilder();
    StringBuilder validation = new StringBuilder();
    int index = 0;
    int trainStories = 0;
    int validationStories = 0;
    for (Path f : files) {
      for (String story : stories(Files.readString(f, StandardCharsets.UTF_8))) {
        boolean held = index++ % holdoutEvery == holdoutEvery - 1;
        (held ? validation : train).append(story).append('\n').append(END_OF_TEXT).append('\n');
        if (held) {
          validationStories++;
        } else {
          trainStories++;
        }
      }
    }
    Path dataDir = outDir.resolve("data");
    Path trainText = dataDir.resolve("train.txt");
    Path validationText = dataDir.resolve("validation.txt");
    AtomicFiles.writeString(trainText, train.toString());
    AtomicFiles.writeString(validationText, validation.toString());
    log.printf("data: %,d training and %,d validation stories (every %dth held out) from %s%n",
        trainStories, validationStories, holdoutEvery, storiesDir);

    long t0 = System.nanoTime();
    BpeTrainer.Result trained = BpeTrainer.train(List.of(trainText), vocabSize, List.of(END_OF_TEXT));
    Path tokenizerDir = outDir.resolve("tokenizer");
    TokenizerFiles.save(trained.tokenizer(), tokenizerDir);
    log.printf("tokenizer: byte-level BPE, vocabulary %,d, trained in %.1f s%n",
        trained.tokenizer().vocabSize(), (System.nanoTime() - t0) / 1e9);

    BpeTokenizer tok = trained.tokenizer();
    Path trainTokens = dataDir.resolve("train.bin");
    Path validationTokens = dataDir.resolve("validation.bin");
    long trainCount = encode(tok, trainText, trainTokens);
    long validationCount = encode(tok, validationText, validationTokens);
    log.printf("encoded: %,d training and %,d validation tokens%n", trainCount, validationCount);
    return new Prepared(tokenizerDir, trainTokens, validationTokens, tok.vocabSize(), trainCount, validationCount,
        trainStories, validationStories);
  }

  /** Splits on lines holding only the end-of-text marker; drops empty pieces and surrounding blank lines. */
  static List<String> stories(String text) {
    List<String> out = new ArrayList<>();
    for (String piece : text.split("\\R" + java.util.regex.Pattern.quote(END_OF_TEXT) + "(\\R|$)")) {
      String story = piece.strip();
      if (story.startsWith(END_OF_TEXT)) {
        story = story.substring(END_OF_TEXT.length()).strip();
      }
      if (!story.isEmpty()) {
        out.add(story);
      }
    }
    return out;
  }

  private static long encode(BpeTokenizer tok, Path text, Path tokens) throws IOException {
    try (TokenFile.Writer w = TokenFile.writer(tokens, tok.vocabSize())) {
      return FileEncoder.encode(
              tok, text, Runtime.getRuntime().availableProcessors(), (ids, n) -> w.append(ids, 0, n), null)
          .tokens();
    }
  }
}
