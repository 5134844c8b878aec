package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Npy;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code kiln forward} end to end on PyTorch-made CS336 model folders ({@code scripts/reference/
 * cs336_forward_reference.py}): logits, loss and the gradient of every weight equal PyTorch's.
 */
class ForwardCommandTest {
  @TempDir Path tmp;

  static Path fixture(String name) throws Exception {
    return Path.of(ForwardCommandTest.class.getResource("/reference/forward/" + name).toURI());
  }

  /** Relative L2 error ‖a − b‖ / ‖b‖. */
  static double relError(NdArray a, NdArray b) {
    return relError(a, b, 0);
  }

  static double norm(NdArray a) {
    double n = 0;
    for (double x : a.toDoubleArray()) {
      n += x * x;
    }
    return Math.sqrt(n);
  }

  /** ‖a − b‖ / max(‖b‖, floor). */
  static double relError(NdArray a, NdArray b, double floor) {
    double[] x = a.toDoubleArray();
    double[] y = b.toDoubleArray();
    assertEquals(y.length, x.length);
    double d = 0;
    double n = 0;
    for (int i = 0; i < x.length; i++) {
      d += (x[i] - y[i]) * (x[i] - y[i]);
      n += y[i] * y[i];
    }
    return Math.sqrt(d) / Math.max(Math.sqrt(n), Math.max(floor, 1e-300));
  }

  @ParameterizedTest
  @ValueSource(strings = {"cs336_tiny", "variant_tiny"})
  void matchesPyTorchLogitsLossAndGradients(String name) throws Exception {
    Path dir = fixture(name);
    Path logits = tmp.resolve("logits.npy");
    Path loss = tmp.resolve("loss.json");
    Path grads = tmp.resolve("grads.safetensors");
    var r = CliTestSupport.run("forward", "--model", dir.toString(), "--input", dir.resolve("tokens.npy").toString(),
        "--output", logits.toString(), "--targets", dir.resolve("targets.npy").toString(), "--loss-out",
        loss.toString(), "--grads", grads.toString());
    assertEquals(0, r.exitCode(), r.err());

    try (SafetensorsFile expected = Safetensors.open(dir.resolve("expected.safetensors"));
        SafetensorsFile got = Safetensors.open(grads)) {
      NdArray kilnLogits = Npy.read(logits);
      assertEquals(DType.F32, kilnLogits.dtype());
      // Kiln computes in float32 like PyTorch's float32 run, with other summation orders: both sit within a few
      // float32 roundings (~1e-7 relative) per op of the float64 answer; 1e-5 relative (L2) bounds that over the
      // two-layer model with room to spare and is far below any real mistake (a wrong op is off by O(1)).
      assertTrue(relError(kilnLogits, expected.get("logits_f64")) < 1e-5, name + " logits vs float64 "
          + relError(kilnLogits, expected.get("logits_f64")));
      assertTrue(relError(kilnLogits, expected.get("logits_f32")) < 1e-5, name + " logits vs PyTorch float32");

      double kilnLoss = ((Number) Json.parseObject(Files.readString(loss)).get("loss")).doubleValue();
      assertEquals(expected.get("loss_f64").item(), kilnLoss, 1e-5 * expected.get("loss_f64").item(), name);
      assertEquals(expected.get("loss_f32").item(), kilnLoss, 1e-5 * expected.get("loss_f32").item(), name);

      List<String> weights = Safetensors.open(dir.resolve("model.safetensors")).names();
      assertEquals(weights, got.names(), "a gradient for every weight, by state-dict name, in the model's order");
      double largest = 0;
      for (String w : weights) {
        largest = Math.max(largest, norm(expected.get("grad_f64." + w)));
      }
      for (String w : weights) {
        NdArray g = got.get(w);
        assertEquals(DType.F32, g.dtype());
        // Gradients pass through the whole backward in float32: 1e-4 relative (L2) per tensor. The denominator is
        // floored at 1e-3 of the largest gradient's norm: the keys' QK-norm bias shifts all scores of a query
        // equally, which the softmax ignores, so its exact gradient is 0 and both sides hold only rounding noise.
        double floor = 1e-3 * largest;
        double err = relError(g, expected.get("grad_f64." + w), floor);
        assertTrue(err < 1e-4, name + " gradient " + w + " relative error " + err);
        assertTrue(relError(g, expected.get("grad_f32." + w), floor) < 1e-4, name + " gradient " + w
            + " vs PyTorch f32");
      }
    }
  }

  @Test
  void float64PrecisionMatchesPyTorchFloat64() throws Exception {
    Path dir = fixture("variant_tiny");
    Path logits = tmp.resolve("logits.npy");
    var r = CliTestSupport.run("forward", "--model", dir.toString(), "--input", dir.resolve("tokens.npy").toString(),
        "--output", logits.toString(), "--precision", "float64");
    assertEquals(0, r.exitCode(), r.err());
    try (SafetensorsFile expected = Safetensors.open(dir.resolve("expected.safetensors"))) {
      // Computed in float64, written as float32: only the final rounding (6e-8 relative) separates them.
      double err = relError(Npy.read(logits), expected.get("logits_f64"));
      assertTrue(err < 2e-7, "float64 logits " + err);
    }
  }

  /** A copy of the fixture folder whose weights are {@code edit}ed. */
  private Path editedCopy(String name, java.util.function.Consumer<Map<String, NdArray>> edit) throws Exception {
    Path src = fixture(name);
    Path dst = tmp.resolve("model-" + name);
    Files.createDirectories(dst);
    Files.copy(src.resolve("config.json"), dst.resolve("config.json"));
    Map<String, NdArray> sd = new LinkedHashMap<>();
    try (SafetensorsFile f = Safetensors.open(src.resolve("model.safetensors"))) {
      for (String n : f.names()) {
        sd.put(n, f.get(n).copy());
      }
    }
    edit.accept(sd);
    Safetensors.write(dst.resolve("model.safetensors"), sd, Map.of());
    return dst;
  }

  @Test
  void misshapenAndMissingTensorsAreNamedWithTheirShapes() throws Exception {
    Path model = editedCopy("cs336_tiny", sd -> {
      sd.put("layers.1.ffn.w2.weight", NdArray.zeros(DType.F32, 16, 31));
      sd.remove("ln_final.weight");
    });
    Path dir = fixture("cs336_tiny");
    var r = CliTestSupport.run("forward", "--model", model.toString(), "--input",
        dir.resolve("tokens.npy").toString(), "--output", tmp.resolve("l.npy").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("tensor layers.1.ffn.w2.weight has shape [16, 31] but the config needs [16, 32]"),
        r.err());
    assertTrue(r.err().contains("missing tensor ln_final.weight (expected shape [16])"), r.err());
    assertTrue(!Files.exists(tmp.resolve("l.npy")), "no output after a failed load");
  }

  @Test
  void anUntiedHeadInATiedFolderIsNamed() throws Exception {
    Path model = editedCopy("variant_tiny", sd -> sd.put("lm_head.weight", NdArray.zeros(DType.F32, 32, 16)));
    Path dir = fixture("variant_tiny");
    var r = CliTestSupport.run("forward", "--model", model.toString(), "--input",
        dir.resolve("tokens.npy").toString(), "--output", tmp.resolve("l.npy").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("unexpected tensor lm_head.weight [32, 16]"), r.err());
  }

  @Test
  void badTokenFilesAreRefusedWithTheReason() throws Exception {
    Path dir = fixture("cs336_tiny");
    Path floats = tmp.resolve("floats.npy");
    Npy.write(floats, NdArray.zeros(DType.F32, 1, 4));
    var r = CliTestSupport.run("forward", "--model", dir.toString(), "--input", floats.toString(), "--output",
        tmp.resolve("l.npy").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("token ids must be int32 or int64"), r.err());

    Path outside = tmp.resolve("outside.npy");
    Npy.write(outside, NdArray.fromLongs(new long[] {1, 2, 32}, 1, 3));
    r = CliTestSupport.run("forward", "--model", dir.toString(), "--input", outside.toString(), "--output",
        tmp.resolve("l.npy").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("id 32 at flat index 2 is outside the vocabulary [0, 32)"), r.err());

    Path tooLong = tmp.resolve("long.npy");
    Npy.write(tooLong, NdArray.zeros(DType.I64, 1, 17));
    r = CliTestSupport.run("forward", "--model", dir.toString(), "--input", tooLong.toString(), "--output",
        tmp.resolve("l.npy").toString());
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("more than the model's context_length 16"), r.err());
  }
}
