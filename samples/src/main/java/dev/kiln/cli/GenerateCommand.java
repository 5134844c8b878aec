package dev.kiln.cli;

import dev.kiln.runtime.infer.Generator;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.infer.Sampler;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.infer.DeviceLmEngine;
import dev.kiln.runtime.infer.NextTokenModel;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.train.ModelConfig;
import java.io.PrintStream;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln generate}: loads a model folder (a Kiln run or checkpoint, or a CS336/PyTorch folder), prints the
 * prompt and then the continuation as it is produced, and reports the speed on stderr.
 */
@Command(
    name = "generate",
    description = "Generate text from a trained model, streaming it as it is produced.",
    footer = {
      "",
      "MODEL is a Kiln run folder, its checkpoints/ folder or one checkpoint (step-000123/), or a folder holding",
      "config.json (CS336 keys vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta at the",
      "top level) and model.safetensors. The tokenizer files (tokenizer.json, or vocab.json + merges.txt) are read",
      "from the model folder unless --tokenizer names another."
    })
public final class GenerateCommand implements Callable<Integer> {
  @Option(names = "--model", required = true, paramLabel = "DIR", description = "Model folder (see below).")
  Path model;

  @Option(names = "--prompt", defaultValue = "", paramLabel = "TEXT",
      description = "Text to continue; empty starts from <|endoftext|> (default: empty).")
  String prompt;

  @Option(names = "--max-tokens", defaultValue = "256", paramLabel = "N",
      description = "Most new tokens (default: ${DEFAULT-VALUE}); generation also stops at <|endoftext|> and at"
          + " the end of the context.")
  int maxTokens;

  @Option(names = "--temperature", defaultValue = "0.8", paramLabel = "T",
      description = "Softmax temperature; 0 is greedy (default: ${DEFAULT-VALUE}).")
  double temperature;

  @Option(names = "--top-k", defaultValue = "0", paramLabel = "K",
      description = "Keep the K most probable tokens; 0 keeps all (default: ${DEFAULT-VALUE}).")
  int topK;

  @Option(names = "--top-p", defaultValue = "1", paramLabel = "P",
      description = "Nucleus sampling: the smallest set of tokens with probability >= P; 1 keeps all"
          + " (default: ${DEFAULT-VALUE}).")
  double topP;

  @Option(names = "--seed", paramLabel = "S",
      description = "Random seed; the same seed, model and settings give the same text (default: a fresh one,"
          + " printed at the end).")
  Long seed;

  @Option(names = "--tokenizer", paramLabel = "DIR",
      description = "Tokenizer folder, when the model folder has no tokenizer files.")
  Path tokenizerDir;

  @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda",
      description = "cpu (default) or cuda: the KV-cache engine on the host, or on the GPU (weights and cache in"
          + " device memory, fp32).")
  String device;

  @Override
  public Integer call() throws Exception {
    if (maxTokens < 0) {
      throw new IllegalArgumentException("--max-tokens must be >= 0, got " + maxTokens);
    }
    long s = seed != null ? seed : new SecureRandom().nextLong() >>> 1;
    Sampler sampler = new Sampler(temperature, topK, topP, new Rng(s));
    PrintStream out = System.out;
    PrintStream err = System.err;

    long t0 = System.nanoTime();
    ModelFolder folder = ModelFolder.open(model);
    BpeTokenizer tokenizer = folder.loadTokenizer(tokenizerDir);
    NextTokenModel engine = switch (device) {
      case "cpu" -> folder.loadEngine();
      case "cuda" -> onCuda(folder);
      default -> throw new IllegalArgumentException("--device must be cpu or cuda, not '" + device + "'");
    };
    Generator generator = new Generator(engine, tokenizer);
    generator.encodePrompt(prompt); // a prompt that does not fit fails before anything is printed
    ModelConfig c = engine.config();
    err.printf(Locale.ROOT, "model %s: d_model %d, %d layers, %d heads, vocab %d, context %d (loaded in %.2f s)%n",
        folder.dir(), c.dModel(), c.numLayers(), c.numHeads(), c.vocabSize(), c.contextLength(),
        (System.nanoTime() - t0) / 1e9);

    out.print(prompt);
    out.flush();
    Generator.Result r = generator.generate(prompt, maxTokens, sampler, out);
    out.println();
    out.flush();

    String stop = switch (r.stop()) {
      case END_OF_TEXT -> "stopped at " + ModelFolder.END_OF_TEXT;
      case MAX_TOKENS -> "stopped at --max-tokens " + maxTokens;
      case CONTEXT_FULL -> "stopped: the context of " + c.contextLength() + " tokens is full";
    };
    err.printf(Locale.ROOT, "%d prompt tokens (prefill %.3f s), %d tokens generated, %.1f tokens/s decoding; %s;"
            + " seed %d%n", r.promptIds().length, r.prefillSeconds(), r.generatedIds().length,
        r.decodeSteps() == 0 ? 0.0 : r.decodeTokensPerSecond(), stop, s);
    return 0;
  }

  /** The folder's weights on the GPU (fp32), generating with a KV cache in device memory. */
  private static NextTokenModel onCuda(ModelFolder folder) throws java.io.IOException {
    return new DeviceLmEngine(folder.loadWeights(), new CudaModelDevice(0, CudaModelDevice.Precision.FP32));
  }
}
