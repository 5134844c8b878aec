package dev.kiln.cli;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Npy;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.CompiledModel;
import dev.kiln.runtime.train.ModelConfig;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kiln forward}: one forward pass of a model folder on token ids from a {@code .npy} file, writing the logits;
 * with targets also the mean cross-entropy and the gradient of every parameter. How a user checks a port against
 * PyTorch ({@code scripts/reference/cs336_forward_reference.py} makes such a folder and the expected outputs).
 */
@Command(
    name = "forward",
    description = "Run a model's forward (and backward) pass on token ids; write logits, loss and gradients.",
    footer = {
      "",
      "MODEL is a Kiln run folder or checkpoint, or a PyTorch/CS336 folder: config.json with vocab_size,",
      "context_length, d_model, num_layers, num_heads, d_ff, rope_theta at the top level, and model.safetensors",
      "with the CS336 state-dict names (token_embeddings.weight, layers.0.attn.q_proj.weight, ...).",
      "Token files are .npy arrays of int32 or int64, shape (batch, seq) with seq <= context_length."
    })
public final class ForwardCommand implements Callable<Integer> {
  @Option(names = "--model", required = true, paramLabel = "DIR", description = "Model folder (see below).")
  Path model;

  @Option(names = "--input", required = true, paramLabel = "FILE", description = "Token ids, .npy (batch, seq).")
  Path input;

  @Option(names = "--output", required = true, paramLabel = "FILE",
      description = "Logits, written as float32 .npy (batch, seq, vocab_size).")
  Path output;

  @Option(names = "--targets", paramLabel = "FILE",
      description = "Next-token ids, .npy of the input's shape: enables the loss and the gradients.")
  Path targets;

  @Option(names = "--loss-out", paramLabel = "FILE",
      description = "With --targets: write {\"loss\": mean cross-entropy (plus z-loss), \"tokens\": n} as JSON.")
  Path lossOut;

  @Option(names = "--grads", paramLabel = "FILE",
      description = "With --targets: write the loss's gradient of every parameter, by state-dict name, as float32"
          + " safetensors.")
  Path gradsOut;

  @Option(names = "--precision", defaultValue = "float32", paramLabel = "P",
      description = "Compute in float32 or float64 (default: ${DEFAULT-VALUE}); outputs are float32 either way.")
  String precision;

  @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda",
      description = "Where to compute (default: ${DEFAULT-VALUE}); cuda runs the same generated code on the GPU, in"
          + " float32.")
  String device;

  @Override
  public Integer call() throws Exception {
    DType dtype = switch (precision.toLowerCase(Locale.ROOT)) {
      case "float32", "f32" -> DType.F32;
      case "float64", "f64" -> DType.F64;
      default -> throw new IllegalArgumentException("--precision must be float32 or float64, not '" + precision + "'");
    };
    boolean cuda = switch (device) {
      case "cpu" -> false;
      case "cuda" -> true;
      default -> throw new IllegalArgumentException("--device must be cpu or cuda, not '" + device + "'");
    };
    if (cuda && dtype != DType.F32) {
      throw new IllegalArgumentException("--device cuda computes in float32; use --device cpu for --precision"
          + " float64");
    }
    if (targets == null && (lossOut != null || gradsOut != null)) {
      throw new IllegalArgumentException("--loss-out and --grads need --targets (the next-token ids)");
    }
    ModelFolder folder = ModelFolder.open(model);
    ModelConfig c = folder.config();
    NdArray ids = readIds(input, "--input", c, null);
    NdArray next = targets == null ? null : readIds(targets, "--targets", c, ids.shape());

    Cs336Lm lm = Cs336Lm.load(folder, dtype);

    Cs336Lm.OnCuda gpu = cuda ? lm.onCuda(new CudaModelDevice(0, CudaModelDevice.Precision.FP32)) : null;
    NdArray logits = gpu != null ? gpu.logits(ids) : lm.logits(ids);
    Npy.write(output, logits.to(DType.F32));
    System.err.printf(Locale.ROOT, "logits %s -> %s%n", Arrays.toString(logits.shape()), output);
    if (next != null) {
      CompiledModel.LossAndGradients lg = gpu != null ? gpu.lossAndGradients(ids, next)
          : lm.trainable().lossAndGradients(ids, next);
      System.err.printf(Locale.ROOT, "loss %.8f over %d tokens%n", lg.loss(), ids.numel());
      if (lossOut != null) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("loss", lg.loss());
        j.put("tokens", ids.numel());
        AtomicFiles.writeString(lossOut, Json.writePretty(j) + "\n");
      }
      if (gradsOut != null) {
        Map<String, NdArray> g = new LinkedHashMap<>();
        lg.gradients().forEach((n, a) -> g.put(n, a.to(DType.F32)));
        Safetensors.write(gradsOut, g, Map.of("format", "pt", "loss", Double.toString(lg.loss())));
        System.err.println(g.size() + " gradients -> " + gradsOut);
      }
    }
    return 0;
  }

  /** Token ids as I64 {@code [batch, seq]}, checked against the model (and the input's shape, for targets). */
  private static NdArray readIds(Path file, String option, ModelConfig c, long[] sameShapeAs) throws Exception {
    NdArray a = Npy.read(file);
    if (a.dtype() != DType.I32 && a.dtype() != DType.I64) {
      throw new IllegalArgumentException(option + " " + file + " holds " + a.dtype() + "; token ids must be int32 or"
          + " int64 (numpy: ids.astype(np.int64))");
    }
    if (a.rank() != 2) {
      throw new IllegalArgumentException(option + " " + file + " has shape " + Arrays.toString(a.shape())
          + "; token ids must be (batch, seq) (numpy: ids.reshape(1, -1) for one sequence)");
    }
    if (sameShapeAs != null && !Arrays.equals(a.shape(), sameShapeAs)) {
      throw new IllegalArgumentException(option + " " + file + " has shape " + Arrays.toString(a.shape())
          + " but --input has " + Arrays.toString(sameShapeAs) + "; targets[b, s] is the token after input[b, s]");
    }
    if (a.shape(1) > c.contextLength()) {
      throw new IllegalArgumentException(option + " " + file + " has sequences of " + a.shape(1) + " tokens, more"
          + " than the model's context_length " + c.contextLength());
    }
    NdArray ids = a.to(DType.I64);
    long[] flat = ids.toLongArray();
    for (int i = 0; i < flat.length; i++) {
      if (flat[i] < 0 || flat[i] >= c.vocabSize()) {
        throw new IllegalArgumentException(option + " " + file + ": id " + flat[i] + " at flat index " + i
            + " is outside the vocabulary [0, " + c.vocabSize() + ")");
      }
    }
    return ids;
  }
}
