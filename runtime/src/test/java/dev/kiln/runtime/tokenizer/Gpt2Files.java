package dev.kiln.runtime.tokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;

/** The GPT-2 tokenizer from the shared data folder, loaded once per test JVM. */
final class Gpt2Files {
  private static BpeTokenizer gpt2;

  private Gpt2Files() {}

  static synchronized BpeTokenizer gpt2() {
    if (gpt2 == null) {
      try {
        gpt2 =
            TokenizerFiles.loadGpt2(
                TestData.dir().resolve("tokenizer/gpt2_vocab.json"),
                TestData.dir().resolve("tokenizer/gpt2_merges.txt"),
                List.of("<|endoftext|>"));
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    return gpt2;
  }
}
