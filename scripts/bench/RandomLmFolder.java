// Writes a CS336-style model folder with random weights, for measuring `kiln generate` speed (the text is noise; the
// arithmetic per token is that of a trained model of the same shape).
//
//   java --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector \
//     -cp "samples/target/kiln-samples-0.1.0-SNAPSHOT.jar:samples/target/lib/*" \
//     scripts/bench/RandomLmFolder.java OUT_DIR [vocab context d_model layers heads d_ff]
//
// Defaults: vocab 10000, context 256, d_model 512, 4 layers, 16 heads, d_ff 1344. Put tokenizer files of the same
// vocabulary size in OUT_DIR (kiln tokenizer train --vocab-size 10000 --out OUT_DIR ...).

import dev.kiln.dsl.DType;
import dev.kiln.runtime.infer.LmWeights;
import dev.kiln.runtime.infer.ModelFolder;
import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

public class RandomLmFolder {
  public static void main(String[] args) throws Exception {
    Path out = Path.of(args[0]);
    long[] v = {10_000, 256, 512, 4, 16, 1344};
    for (int i = 1; i < args.length; i++) {
      v[i - 1] = Long.parseLong(args[i]);
    }
    Map<String, Object> cfg = new LinkedHashMap<>();
    String[] keys = {"vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"};
    for (int i = 0; i < keys.length; i++) {
      cfg.put(keys[i], v[i]);
    }
    cfg.put("rope_theta", 10000.0);
    Files.createDirectories(out);
    AtomicFiles.writeString(out.resolve("config.json"), Json.writePretty(cfg));
    Map<String, NdArray> sd = new LinkedHashMap<>();
    Rng rng = new Rng(0);
    int stream = 0;
    for (var e : LmWeights.expectedShapes(ModelFolder.configFromTree(cfg, "config.json")).entrySet()) {
      long[] s = e.getValue();
      NdArray a = NdArray.zeros(DType.F32, s);
      if (s.length == 1) {
        a.fill(1);
      } else {
        rng.stream(stream).truncNormal(a, 0, Math.sqrt(2.0 / (s[0] + s[1])));
      }
      stream++;
      sd.put(e.getKey(), a);
    }
    Safetensors.write(out.resolve("model.safetensors"), sd, Map.of("format", "pt"));
    System.out.println("wrote " + out + ": " + cfg);
  }
}
