package dev.kiln.runtime.infer;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import java.io.Flushable;
import java.io.IOException;
import java.util.Arrays;

/**
 * Text generation: prompt → tokenizer → {@link NextTokenModel#prefill} → {@link Sampler} → one {@link
 * NextTokenModel#decode} per new token, the text streamed to an {@link Appendable} as soon as it forms
 * complete UTF-8 characters (the tokenizer's {@link BpeTokenizer.StreamDecoder}; a sink that is {@link Flushable},
 * such as {@code System.out}, is flushed after every token).
 *
 * <p>Generation stops at the first of: the tokenizer's {@code <|endoftext|>} (not printed, not counted), {@code
 * maxTokens} new tokens, or a full context: after a prompt of {@code P} tokens a model with context length {@code C}
 * can produce {@code C − P + 1} tokens (the last one is sampled but never fed back).
 *
 * <p>Ids the model has but the tokenizer lacks (a vocabulary padded for speed, holes in a loaded vocabulary) get
 * probability 0, so every sampled id can be printed.
 */
public final class Generator {
  /** Why a generation ended. */
  public enum StopReason {
    END_OF_TEXT,
    MAX_TOKENS,
    CONTEXT_FULL
  }

  /**
   * What a generation produced and how long it took.
   *
   * @param promptIds the prompt's token ids
   * @param generatedIds the new ids, without the end-of-text token
   * @param decodeSteps tokens fed back through {@link NextTokenModel#decode}
   * @param prefillSeconds time of the prompt's forward pass
   * @param decodeSeconds time of the decode steps, sampling included
   */
  public record Result(
      int[] promptIds, int[] generatedIds, StopReason stop, int decodeSteps, double prefillSeconds,
      double decodeSeconds) {
    /** Decode steps per second: the speed of producing one token at a time. */
    public double decodeTokensPerSecond() {
      return decodeSteps / decodeSeconds;
    }
  }

  private final NextTokenModel engine;
  private final BpeTokenizer tokenizer;
  private final int endOfText;
  private final boolean[] unprintable;

  /**
   * @throws IllegalArgumentException when the tokenizer has more ids than the model's vocabulary
   */
  public Generator(NextTokenModel engine, BpeTokenizer tokenizer) {
    int v = engine.config().vocabSize();
    if (tokenizer.vocabSize() > v) {
      throw new IllegalArgumentException("the tokenizer has " + tokenizer.vocabSize() + " tokens but the model's"
          + " vocab_size is " + v + "; they were not trained together");
    }
    this.engine = engine;
    this.tokenizer = tokenizer;
    this.endOfText = tokenizer.specialId(ModelFolder.END_OF_TEXT);
    this.unprintable = new boolean[v];
    for (int id = 0; id < v; id++) {
      unprintable[id] = !tokenizer.hasToken(id);
    }
  }

  /** The id that ends a generation, or -1 when the tokenizer has no {@code <|endoftext|>}. */
  public int endOfTextId() {
    return endOfText;
  }

  /**
   * The prompt's ids (special tokens matched). An empty prompt starts from {@code <|endoftext|>}, as GPT-2 samples
   * unconditionally.
   *
   * @throws IllegalArgumentException for an empty prompt without {@code <|endoftext|>}, or a prompt longer than the
   *     context
   */
  public int[] encodePrompt(String prompt) {
    int[] ids = tokenizer.encode(prompt);
    if (ids.length == 0) {
      if (endOfText < 0) {
        throw new IllegalArgumentException("the prompt is empty and the tokenizer has no " + ModelFolder.END_OF_TEXT
            + " to start from; give a prompt");
      }
      ids = new int[] {endOfText};
    }
    int ctx = engine.config().contextLength();
    if (ids.length > ctx) {
      throw new IllegalArgumentException("the prompt is " + ids.length + " tokens long but the model's"
          + " context_length is " + ctx + "; shorten it by at least " + (ids.length - ctx) + " tokens");
    }
    return ids;
  }

  /**
   * Generates up to {@code maxTokens} tokens after {@code prompt}, appending their text to {@code out} as it is
   * produced (the prompt itself is not written).
   */
  public Result generate(String prompt, int maxTokens, Sampler sampler, Appendable out) throws IOException {
    if (maxTokens < 0) {
      throw new IllegalArgumentException("max tokens must be >= 0, got " + maxTokens);
    }
    int[] promptIds = encodePrompt(prompt);
    int ctx = engine.config().contextLength();
    BpeTokenizer.StreamDecoder text = tokenizer.streamDecoder(out);
    int[] generated = new int[Math.min(maxTokens, ctx - promptIds.length + 1)];
    int n = 0;
    int steps = 0;
    StopReason stop = StopReason.MAX_TOKENS;

    long t0 = System.nanoTime();
    NdArray logits = engine.prefill(promptIds);
    long t1 = System.nanoTime();
    while (n < maxTokens) {
      int next = sampler.sample(printable(logits));
      if (next == endOfText) {
        stop = StopReason.END_OF_TEXT;
        break;
      }
      generated[n++] = next;
      text.write(generated, n - 1, n);
      if (out instanceof Flushable f) {
        f.flush();
      }
      if (n == maxTokens) {
        break;
      }
      if (engine.position() == ctx) {
        stop = StopReason.CONTEXT_FULL;
        break;
      }
      logits = engine.decode(next);
      steps++;
    }
    long t2 = System.nanoTime();
    text.finish();
    if (out instanceof Flushable f) {
      f.flush();
    }
    return new Result(promptIds, Arrays.copyOf(generated, n), stop, steps, (t1 - t0) / 1e9, (t2 - t1) / 1e9);
  }

  private double[] printable(NdArray logits) {
    double[] x = logits.toDoubleArray();
    for (int i = 0; i < x.length; i++) {
      if (unprintable[i]) {
        x[i] = Double.NEGATIVE_INFINITY;
      }
    }
    return x;
  }
}
