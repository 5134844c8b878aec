package dev.kiln.runtime.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.PrimitiveIterator;
import java.util.Random;
import org.junit.jupiter.api.Test;

class EncoderTest {
  private static String show(int[] ids) {
    return Arrays.toString(ids);
  }

  private static void assertSameAsTiktoken(List<String> texts) {
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    List<int[]> withSpecial = TiktokenPeer.encode(texts, true);
    List<int[]> ordinary = TiktokenPeer.encode(texts, false);
    for (int k = 0; k < texts.size(); k++) {
      String t = texts.get(k);
      String what = "text " + k + ": \"" + (t.length() > 200 ? t.substring(0, 200) + "…" : t) + "\"";
      assertSameIds(gpt2, withSpecial.get(k), gpt2.encode(t), what + " (special tokens allowed)");
      assertSameIds(gpt2, ordinary.get(k), gpt2.encodeOrdinary(t), what + " (ordinary)");
    }
  }

  /** Equal ids, or a message naming the first difference and the text around it (not two huge arrays). */
  static void assertSameIds(BpeTokenizer tok, int[] expected, int[] actual, String what) {
    int n = Math.min(expected.length, actual.length);
    int k = 0;
    while (k < n && expected[k] == actual[k]) {
      k++;
    }
    if (k == n && expected.length == actual.length) {
      return;
    }
    int from = Math.max(0, k - 3);
    String exp = show(Arrays.copyOfRange(expected, from, Math.min(expected.length, k + 4)));
    String act = show(Arrays.copyOfRange(actual, from, Math.min(actual.length, k + 4)));
    throw new AssertionError(what + ": ids differ at position " + k + " (of " + expected.length + " expected, "
        + actual.length + " actual); expected " + exp + " = \"" + tok.decode(Arrays.copyOfRange(expected, from,
        Math.min(expected.length, k + 4))) + "\", actual " + act + " = \"" + tok.decode(Arrays.copyOfRange(actual,
        from, Math.min(actual.length, k + 4))) + "\"");
  }

  @Test
  void gpt2MatchesTiktokenOnTheSharedTexts() throws Exception {
    List<String> texts = new ArrayList<>();
    for (String f : List.of("address.txt", "german.txt", "tinystories_sample.txt", "corpus.en")) {
      texts.add(Files.readString(TestData.dir().resolve("tokenizer").resolve(f)));
    }
    assertSameAsTiktoken(texts);
  }

  @Test
  void gpt2MatchesTiktokenOnRandomMixedScriptText() {
    Random rnd = new Random(11);
    List<String> texts = new ArrayList<>();
    for (int k = 0; k < 400; k++) {
      String s = k % 4 == 3 ? RandomText.codePoints(rnd, 1 + rnd.nextInt(40)) : RandomText.mixed(rnd, 1 + rnd.nextInt(60));
      if (k % 5 == 0) {
        s = s + "<|endoftext|>" + RandomText.mixed(rnd, 5) + (k % 10 == 0 ? "<|endoftext|><|endoftext|>" : "");
      }
      texts.add(s);
    }
    texts.add(" ".repeat(1000) + "x" + "\n".repeat(700) + "a".repeat(600) + " " + "ab".repeat(400));
    texts.add("");
    assertSameAsTiktoken(texts);
  }

  @Test
  @SuppressWarnings("unchecked")
  void huggingFaceTokenizerJsonWithPairMergesEncodesLikeTheGpt2Files(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp)
      throws Exception {
    java.nio.file.Path dir = TestData.dir().resolve("tokenizer");
    java.util.Map<String, Object> vocab =
        dev.kiln.runtime.io.Json.parseObject(Files.readString(dir.resolve("gpt2_vocab.json")));
    List<Object> merges = new ArrayList<>();
    for (String line : Files.readAllLines(dir.resolve("gpt2_merges.txt"))) {
      if (!line.isEmpty()) {
        merges.add(List.of(line.split(" ")));
      }
    }
    java.util.Map<String, Object> model = new java.util.LinkedHashMap<>();
    model.put("type", "BPE");
    model.put("vocab", vocab);
    model.put("merges", merges);
    java.util.Map<String, Object> root = new java.util.LinkedHashMap<>();
    root.put("added_tokens", List.of(java.util.Map.of("id", 50256, "content", "<|endoftext|>", "special", true)));
    root.put("normalizer", null);
    root.put("pre_tokenizer", java.util.Map.of("type", "ByteLevel", "add_prefix_space", false));
    root.put("model", model);
    Files.writeString(tmp.resolve("tokenizer.json"), dev.kiln.runtime.io.Json.write(root));
    BpeTokenizer hf = BpeTokenizer.load(tmp, List.of());
    assertEquals(List.of("<|endoftext|>"), hf.specialTokenList());
    String text = Files.readString(dir.resolve("corpus.en")) + "<|endoftext|>" + RandomText.mixed(new Random(3), 300);
    assertSameIds(hf, Gpt2Files.gpt2().encode(text), hf.encode(text), "tokenizer.json vs GPT-2 files");
    // A model this loader cannot run exactly is refused with the reason.
    root.put("pre_tokenizer", java.util.Map.of("type", "Metaspace"));
    Files.writeString(tmp.resolve("tokenizer.json"), dev.kiln.runtime.io.Json.write(root));
    IllegalArgumentException e =
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> BpeTokenizer.load(tmp, List.of()));
    org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("pre_tokenizer must be"), e.getMessage());
  }

  @Test
  void longPieceMergeEqualsShortPieceMerge() {
    Encoder enc = Gpt2Files.gpt2().newEncoder();
    Random rnd = new Random(5);
    for (int t = 0; t < 200; t++) {
      String s = t % 2 == 0 ? RandomText.codePoints(rnd, 2 + rnd.nextInt(120)) : RandomText.mixed(rnd, 1 + rnd.nextInt(40));
      byte[] b = s.getBytes(StandardCharsets.UTF_8);
      if (b.length > Encoder.LONG_PIECE) {
        b = Arrays.copyOf(b, Encoder.LONG_PIECE);
      }
      int nLong = enc.mergeLong(b, 0, b.length);
      int[] viaHeap = Arrays.copyOf(enc.scratch(), nLong);
      int nShort = enc.mergeShort(b, 0, b.length);
      assertArrayEquals(viaHeap, Arrays.copyOf(enc.scratch(), nShort), "pre-token bytes of \"" + s + "\"");
    }
  }

  @Test
  void overlappingSpecialTokensMatchLongestFirst() throws Exception {
    BpeTokenizer tok =
        BpeTrainer.train("some text to train on", 270, List.of("<|endoftext|>", "<|endoftext|><|endoftext|>"))
            .tokenizer();
    int e1 = tok.specialId("<|endoftext|>");
    int e2 = tok.specialId("<|endoftext|><|endoftext|>");
    int[] ids = tok.encode("a<|endoftext|><|endoftext|><|endoftext|>b");
    assertArrayEquals(new int[] {'a', e2, e1, 'b'}, ids);
    // Given the other way round, the longer one still wins.
    BpeTokenizer rev =
        BpeTrainer.train("some text", 260, List.of("<|endoftext|><|endoftext|>", "<|endoftext|>")).tokenizer();
    assertArrayEquals(
        new int[] {rev.specialId("<|endoftext|><|endoftext|>")}, rev.encode("<|endoftext|><|endoftext|>"));
  }

  @Test
  void decodeInvertsEncodeOnRandomValidText() {
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    Random rnd = new Random(13);
    for (int t = 0; t < 2000; t++) {
      String s = t % 2 == 0 ? RandomText.codePoints(rnd, rnd.nextInt(50)) : RandomText.mixed(rnd, rnd.nextInt(50));
      assertEquals(s, gpt2.decode(gpt2.encode(s)));
    }
  }

  @Test
  void decodeReplacesInvalidUtf8AndNeverThrows() {
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    int ff = gpt2.byteId(0xFF);
    int e2 = gpt2.byteId(0xE2);
    int x82 = gpt2.byteId(0x82);
    int a = gpt2.byteId('a');
    assertEquals("\uFFFDa", gpt2.decode(new int[] {ff, a}));
    // A truncated 3-byte sequence (E2 82, then 'a') is one malformed sequence: one U+FFFD.
    assertEquals("\uFFFDa", gpt2.decode(new int[] {e2, x82, a}));
    assertEquals("\uFFFD", gpt2.decode(new int[] {e2}));
    // "€" is E2 82 AC: split over three single-byte tokens it still decodes.
    assertEquals("€", gpt2.decode(new int[] {e2, x82, gpt2.byteId(0xAC)}));
  }

  @Test
  void streamingEncodeEqualsWholeTextEncode() {
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    Random rnd = new Random(17);
    for (int t = 0; t < 60; t++) {
      List<String> lines = new ArrayList<>();
      StringBuilder whole = new StringBuilder();
      int n = 1 + rnd.nextInt(80);
      for (int k = 0; k < n; k++) {
        String line = RandomText.mixed(rnd, rnd.nextInt(12)) + (rnd.nextInt(6) == 0 ? "<|endoftext|>" : "")
            + (rnd.nextInt(4) == 0 ? "" : "\n");
        lines.add(line);
        whole.append(line);
      }
      int[] expected = gpt2.encode(whole.toString());
      assertArrayEquals(expected, drain(gpt2.encodeIterable(lines)), "encodeIterable, trial " + t);
      // Tiny chunks force a cut at nearly every safe point, including the letter/punctuation fallback.
      byte[] bytes = whole.toString().getBytes(StandardCharsets.UTF_8);
      for (int chunk : new int[] {16, 40, 333}) {
        java.io.ByteArrayInputStream in = new java.io.ByteArrayInputStream(bytes);
        assertArrayEquals(expected, drain(gpt2.encodeStream(in::read, chunk)), "chunk " + chunk + ", trial " + t);
      }
    }
  }

  @Test
  void everyCutTheChunkerChoosesIsSafe() {
    BpeTokenizer gpt2 = Gpt2Files.gpt2();
    SpecialTokens sp = new SpecialTokens(List.of("<|endoftext|>", "<|endoftext|><|endoftext|>", "\n\n"));
    Random rnd = new Random(19);
    int cuts = 0;
    for (int t = 0; t < 300; t++) {
      String s = RandomText.mixed(rnd, 5 + rnd.nextInt(40)) + (t % 3 == 0 ? "<|endoftext|><|endoftext|>x" : "");
      byte[] b = s.getBytes(StandardCharsets.UTF_8);
      for (int target = 1; target < b.length; target += 1 + rnd.nextInt(7)) {
        int cut = ChunkBoundaries.findCut(b, 0, b.length, target, sp, rnd.nextInt(3) == 0 ? 0 : 8);
        if (cut < 0) {
          continue;
        }
        cuts++;
        Encoder enc = new Encoder(withSpecials(gpt2, sp), 64);
        IntList whole = new IntList();
        enc.encode(b, 0, b.length, whole);
        IntList parts = new IntList();
        enc.encode(b, 0, cut, parts);
        enc.encode(b, cut, b.length, parts);
        assertEquals(show(whole.toArray()), show(parts.toArray()), "cut at byte " + cut + " of \"" + s + "\"");
      }
    }
    assertEquals(true, cuts > 1000, "only " + cuts + " cuts were tried");
  }

  private static BpeTokenizer cached;

  private static BpeTokenizer withSpecials(BpeTokenizer gpt2, SpecialTokens sp) {
    if (cached == null) {
      try {
        cached =
            TokenizerFiles.loadGpt2(
                TestData.dir().resolve("tokenizer/gpt2_vocab.json"),
                TestData.dir().resolve("tokenizer/gpt2_merges.txt"),
                sp.tokens());
      } catch (java.io.IOException e) {
        throw new java.io.UncheckedIOException(e);
      }
    }
    return cached;
  }

  static int[] drain(PrimitiveIterator.OfInt it) {
    IntList l = new IntList();
    while (it.hasNext()) {
      l.add(it.nextInt());
    }
    return l.toArray();
  }
}
