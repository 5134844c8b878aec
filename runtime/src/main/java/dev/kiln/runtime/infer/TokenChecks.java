package dev.kiln.runtime.infer;

import dev.kiln.runtime.train.ModelConfig;

/** The input rules every KV-cache engine enforces, with the same messages: prompts, ids, and room in the context. */
final class TokenChecks {
  private TokenChecks() {}

  /** A prompt must have at least one token and fit the context. */
  static void requirePrompt(int[] promptIds, ModelConfig c) {
    if (promptIds.length == 0) {
      throw new IllegalArgumentException("the prompt is empty: prefill needs at least one token");
    }
    if (promptIds.length > c.contextLength()) {
      throw new IllegalArgumentException("the prompt has " + promptIds.length + " tokens but the model's"
          + " context_length is " + c.contextLength() + "; shorten the prompt");
    }
  }

  /** {@code ids} (at least one) must fit after the {@code cached} positions, and every id must be in the vocabulary. */
  static void requireAppendable(int[] ids, int cached, ModelConfig c) {
    if (ids.length == 0) {
      throw new IllegalArgumentException("append needs at least one token");
    }
    if (cached + ids.length > c.contextLength()) {
      throw new IllegalStateException("the context is full: " + cached + " tokens are cached and "
          + ids.length + " more would pass the model's context_length of " + c.contextLength()
          + " (Kiln does not slide the window; start a new generation with a shorter prompt)");
    }
    requireIds(ids, c);
  }

  static void requireIds(int[] ids, ModelConfig c) {
    for (int i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] >= c.vocabSize()) {
        throw new IllegalArgumentException("token id " + ids[i] + " at index " + i + " is outside the model's"
            + " vocabulary [0, " + c.vocabSize() + ")");
      }
    }
  }
}
