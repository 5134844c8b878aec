package dev.kiln.runtime.tokenizer;

import dev.kiln.runtime.io.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The reference GPT-2 encoder for tests: OpenAI's tiktoken (npm package, pinned in scripts/test-peers/package.json),
 * installed on first use into {@code <project>/target/test-peers} and run through node. Without node, npm or the
 * registry, tests that use it fail with the reason: a tokenizer that was never compared is not a passing one.
 */
final class TiktokenPeer {
  static final String VERSION = "1.0.22";

  private TiktokenPeer() {}

  static Path projectRoot() {
    for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
      if (Files.isRegularFile(p.resolve("mvnw")) && Files.isDirectory(p.resolve("scripts/test-peers"))) {
        return p;
      }
    }
    throw new IllegalStateException("project root (with mvnw and scripts/test-peers) not found above "
        + Path.of("").toAbsolutePath());
  }

  static synchronized Path install() {
    Path root = projectRoot();
    Path prefix = root.resolve("target/test-peers");
    if (Files.isRegularFile(prefix.resolve("node_modules/tiktoken/package.json"))) {
      return prefix;
    }
    run(List.of("npm", "install", "--no-audit", "--no-fund", "--prefix", prefix.toString(), "tiktoken@" + VERSION),
        null, root, 300);
    if (!Files.isRegularFile(prefix.resolve("node_modules/tiktoken/package.json"))) {
      throw new IllegalStateException("npm install finished but " + prefix + "/node_modules/tiktoken is missing");
    }
    return prefix;
  }

  /** GPT-2 ids of each text; {@code allowSpecial} makes {@code <|endoftext|>} the special token 50256. */
  @SuppressWarnings("unchecked")
  static List<int[]> encode(List<String> texts, boolean allowSpecial) {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("encoding", "gpt2");
    req.put("texts", texts);
    req.put("allowedSpecial", allowSpecial ? "all" : "none");
    String out = node(Json.write(req));
    List<Object> all = (List<Object>) Json.parse(out);
    List<int[]> res = new ArrayList<>();
    for (Object o : all) {
      List<Object> ids = (List<Object>) o;
      res.add(ids.stream().mapToInt(x -> ((Long) x).intValue()).toArray());
    }
    return res;
  }

  /** Runs the peer script with a JSON request on stdin and returns its stdout. */
  static String node(String requestJson) {
    Path prefix = install();
    Path script = projectRoot().resolve("scripts/test-peers/tiktoken-encode.js");
    return run(List.of("node", script.toString()), requestJson, prefix, 300);
  }

  private static String run(List<String> cmd, String stdin, Path dir, int timeoutSeconds) {
    try {
      ProcessBuilder pb = new ProcessBuilder(cmd).directory(dir.toFile());
      pb.environment().put("NODE_PATH", dir.resolve("node_modules").toString());
      Path err = Files.createTempFile("kiln-peer", ".err");
      pb.redirectError(err.toFile());
      Process p = pb.start();
      Thread feeder =
          Thread.ofVirtual()
              .start(
                  () -> {
                    try (var os = p.getOutputStream()) {
                      if (stdin != null) {
                        os.write(stdin.getBytes(StandardCharsets.UTF_8));
                      }
                    } catch (IOException ignored) {
                      // The process died; its exit code and stderr say why.
                    }
                  });
      byte[] out = p.getInputStream().readAllBytes();
      if (!p.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        throw new IllegalStateException(String.join(" ", cmd) + " timed out after " + timeoutSeconds + " s");
      }
      feeder.join();
      String errText = Files.readString(err);
      Files.deleteIfExists(err);
      if (p.exitValue() != 0) {
        throw new IllegalStateException(
            String.join(" ", cmd) + " failed (exit " + p.exitValue() + "): " + errText.strip()
                + "\nThe tokenizer tests need node and npm with access to the npm registry (tiktoken@" + VERSION
                + " is the reference GPT-2 encoder).");
      }
      return new String(out, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new IllegalStateException("cannot run " + String.join(" ", cmd) + ": " + e.getMessage()
          + ". The tokenizer tests need node and npm on the PATH (tiktoken@" + VERSION
          + " from the npm registry is the reference GPT-2 encoder).", e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted", e);
    }
  }
}
