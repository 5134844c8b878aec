package dev.kiln.runtime.data;

import dev.kiln.runtime.io.TokenFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** Opening a token file for training, with the checks every batch source needs. */
public final class TokenSource {
  private TokenSource() {}

  /**
   * Opens {@code path} through its manifest, or as {@code width} when it has none ({@code width} may be null when a
   * manifest exists). Fails when the file is too short for one window of {@code contextLength + 1} tokens, or when
   * its manifest declares a vocabulary larger than the model's.
   */
  public static TokenFile open(Path path, TokenFile.Width width, int contextLength, long vocabSize)
      throws IOException {
    if (!Files.isRegularFile(path)) {
      throw new NoSuchFileException(path.toString(), null, "token file not found");
    }
    TokenFile f = width == null ? TokenFile.open(path) : TokenFile.open(path, width);
    try {
      if (f.length() < contextLength + 1L) {
        throw new IllegalArgumentException(
            "token file " + path + " holds " + f.length() + " tokens, fewer than context_length + 1 = "
                + (contextLength + 1) + " needed for one input window and its targets");
      }
      if (f.vocabSize() > vocabSize) {
        throw new IllegalArgumentException(
            "token file " + path + " was written for a vocabulary of " + f.vocabSize() + " ids, but the model's"
                + " vocab_size is " + vocabSize + " (set model.vocab_size to the tokenizer's size)");
      }
      return f;
    } catch (RuntimeException e) {
      f.close();
      throw e;
    }
  }

  /** Throws naming the file and position when a token id is outside {@code [0, vocabSize)}. */
  static void checkIds(TokenFile f, long start, int[] ids, long vocabSize) {
    for (int k = 0; k < ids.length; k++) {
      if (ids[k] < 0 || ids[k] >= vocabSize) {
        throw new IllegalArgumentException(
            "token id " + Integer.toUnsignedLong(ids[k]) + " at position " + (start + k) + " of " + f.path()
                + " is outside the model's vocabulary [0, " + vocabSize + ") (was the file encoded with another"
                + " tokenizer?)");
      }
    }
  }
}
