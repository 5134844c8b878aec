package dev.kiln.cli.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.cli.KilnCommand;
import dev.kiln.runtime.io.Npy;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code kiln tokenizer ...} end to end through {@link KilnCommand#execute}, in temporary folders. */
class TokenizerCommandTest {
  record Run(int code, String out, String err) {}

  static synchronized Run kiln(String... args) {
    PrintStream oldOut = System.out;
    PrintStream oldErr = System.err;
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    try {
      System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
      System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
      int code = KilnCommand.execute(args);
      System.out.flush();
      System.err.flush();
      return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    } finally {
      System.setOut(oldOut);
      System.setErr(oldErr);
    }
  }

  static Path data() {
    for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
      Path cand = p.resolve("../shared/data").normalize();
      if (Files.isDirectory(cand.resolve("tokenizer"))) {
        return cand;
      }
    }
    throw new IllegalStateException("../shared/data not found above " + Path.of("").toAbsolutePath());
  }

  private static void assertFails(Run r, String... fragments) {
    assertEquals(1, r.code(), "exit code; stderr: " + r.err());
    assertTrue(r.err().startsWith("kiln: "), r.err());
    for (String f : fragments) {
      assertTrue(r.err().contains(f), "stderr should mention \"" + f + "\": " + r.err());
    }
  }

  @Test
  void trainEncodeDecodeRoundTrip(@TempDir Path tmp) throws Exception {
    Path text = data().resolve("tokenizer/tinystories_sample.txt");
    Path dir = tmp.resolve("tok");
    Run train = kiln("tokenizer", "train", "--input", text.toString(), "--vocab-size", "400", "--special-tokens",
        "<|endoftext|>", "--out", dir.toString());
    assertEquals(0, train.code(), train.err());
    assertTrue(train.out().contains("143 merges"), train.out());
    assertTrue(train.out().contains("longest token: id"), train.out());
    for (String f : List.of("vocab.json", "merges.txt", "tokenizer.json")) {
      assertTrue(Files.isRegularFile(dir.resolve(f)), f);
    }
    String original = Files.readString(text);
    BpeTokenizer tok = BpeTokenizer.load(dir, List.of());
    int[] expected = tok.encode(original);
    for (String ext : List.of(".bin", ".npy")) {
      Path out = tmp.resolve("ids" + ext);
      Run enc = kiln("tokenizer", "encode", "--tokenizer", dir.toString(), "--input", text.toString(), "--output",
          out.toString(), "--threads", "2");
      assertEquals(0, enc.code(), enc.err());
      assertTrue(enc.err().contains("encoded ") && enc.err().contains(String.format("%,d tokens", expected.length)), enc.err());
      int[] got;
      if (ext.equals(".bin")) {
        try (TokenFile tf = TokenFile.open(out)) {
          assertEquals(TokenFile.Width.UINT16, tf.width());
          got = new int[(int) tf.length()];
          tf.read(0, got);
        }
      } else {
        NdArray a = Npy.read(out);
        got = new int[(int) a.shape()[0]];
        for (int k = 0; k < got.length; k++) {
          got[k] = (int) a.getLong(k);
        }
      }
      assertArrayEquals(expected, got, ext);
      Run dec = kiln("tokenizer", "decode", "--tokenizer", dir.toString(), "--input", out.toString());
      assertEquals(0, dec.code(), dec.err());
      assertEquals(original, dec.out(), "decode of " + ext);
    }
  }

  @Test
  void encodesWithGpt2FilesAndSpecialTokensFromTheOption(@TempDir Path tmp) throws Exception {
    Path dir = tmp.resolve("gpt2");
    Files.createDirectories(dir);
    Files.copy(data().resolve("tokenizer/gpt2_vocab.json"), dir.resolve("vocab.json"));
    Files.copy(data().resolve("tokenizer/gpt2_merges.txt"), dir.resolve("merges.txt"));
    Path in = tmp.resolve("in.txt");
    Files.writeString(in, "Hello world<|endoftext|>");
    Path out = tmp.resolve("ids.bin");
    Run r = kiln("tokenizer", "encode", "--tokenizer", dir.toString(), "--special-tokens", "<|endoftext|>",
        "--input", in.toString(), "--output", out.toString());
    assertEquals(0, r.code(), r.err());
    try (TokenFile tf = TokenFile.open(out)) {
      int[] ids = new int[(int) tf.length()];
      tf.read(0, ids);
      // tiktoken's gpt2 ids for the same text with <|endoftext|> allowed.
      assertArrayEquals(new int[] {15496, 995, 50256}, ids);
    }
  }

  @Test
  void badInputIsOneClearLine(@TempDir Path tmp) throws Exception {
    Path text = data().resolve("tokenizer/german.txt");
    assertFails(kiln("tokenizer", "train", "--input", tmp.resolve("nope.txt").toString(), "--vocab-size", "300",
        "--out", tmp.resolve("o").toString()), "nope.txt");
    assertFails(kiln("tokenizer", "train", "--input", text.toString(), "--vocab-size", "256", "--special-tokens",
        "<|endoftext|>", "--out", tmp.resolve("o").toString()), "256 bytes + 1 special", "257");
    Path empty = tmp.resolve("empty.txt");
    Files.writeString(empty, "");
    assertFails(kiln("tokenizer", "train", "--input", empty.toString(), "--vocab-size", "300", "--out",
        tmp.resolve("o").toString()), "nothing to train on");

    Path dir = tmp.resolve("tok");
    assertEquals(0, kiln("tokenizer", "train", "--input", text.toString(), "--vocab-size", "300", "--out",
        dir.toString()).code());
    assertFails(kiln("tokenizer", "encode", "--tokenizer", dir.toString(), "--input", empty.toString(), "--output",
        tmp.resolve("x.bin").toString()), "is empty");
    assertFails(kiln("tokenizer", "encode", "--tokenizer", dir.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.txt").toString()), ".bin", ".npy");
    assertFails(kiln("tokenizer", "encode", "--tokenizer", tmp.resolve("none").toString(), "--input",
        text.toString(), "--output", tmp.resolve("x.bin").toString()), "tokenizer folder not found");

    // GPT-2 files with faults: the message names the file and line.
    Path bad = tmp.resolve("bad");
    Files.createDirectories(bad);
    Files.delete(dir.resolve("tokenizer.json"));
    Files.copy(dir.resolve("vocab.json"), bad.resolve("vocab.json"));
    List<String> merges = Files.readAllLines(dir.resolve("merges.txt"));
    merges.set(3, "a b c");
    Files.write(bad.resolve("merges.txt"), merges);
    assertFails(kiln("tokenizer", "encode", "--tokenizer", bad.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.bin").toString()), "merges.txt line 4", "two tokens");
    merges.set(3, "zzzq Ġ");
    Files.write(bad.resolve("merges.txt"), merges);
    assertFails(kiln("tokenizer", "encode", "--tokenizer", bad.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.bin").toString()), "merges.txt line 4", "\"zzzq\" is not in vocab.json");
    merges.set(3, "Ġ Ġ");
    Files.write(bad.resolve("merges.txt"), merges);
    assertFails(kiln("tokenizer", "encode", "--tokenizer", bad.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.bin").toString()), "merges.txt line 4", "which is not in vocab.json");
    Files.writeString(bad.resolve("vocab.json"), "{\"a\": 0,\n \"b\": }");
    assertFails(kiln("tokenizer", "encode", "--tokenizer", bad.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.bin").toString()), "vocab.json", "malformed JSON", "line 2");
    Files.writeString(bad.resolve("vocab.json"), "{\"a\": 0}");
    assertFails(kiln("tokenizer", "encode", "--tokenizer", bad.toString(), "--input", text.toString(), "--output",
        tmp.resolve("x.bin").toString()), "no token for byte 0x00");
  }
}
