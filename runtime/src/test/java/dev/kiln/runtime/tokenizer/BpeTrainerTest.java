package dev.kiln.runtime.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class BpeTrainerTest {
  static final Path DATA = TestData.dir();

  private static List<String> show(List<String[]> merges) {
    return merges.stream().map(m -> ByteLevelAlphabet.encode(m[0].getBytes(StandardCharsets.ISO_8859_1)) + " "
        + ByteLevelAlphabet.encode(m[1].getBytes(StandardCharsets.ISO_8859_1))).toList();
  }

  @Test
  void tieBreakPrefersTheGreatestLeftThenRightByteString() {
    // Every pair occurs once. Left bytes: 'c' > 'a' > ' ', so (c,d) then (a,b) then (' ',cd).
    assertEquals(List.of("c d", "a b", "Ġ cd"), show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("ab cd", 259, List.of()).tokenizer())));
    // Equal left 'a': the greater right byte wins, (a,c) before (a,b); then 'a' > ' '.
    assertEquals(List.of("a c", "a b", "Ġ ac"), show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("ab ac", 259, List.of()).tokenizer())));
    // Bytes compare unsigned: é is C3 A9 and 0xC3 > 'z', so (C3, A9) comes first although signed bytes say otherwise.
    assertEquals("Ã ©", show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("zy é", 257, List.of()).tokenizer())).get(0));
    // A proper prefix is smaller: once "ab" exists, (ab, c) and (a, c) tie at 1 and "ab" > "a" decides.
    // Newlines keep the words apart without adding pairs.
    List<String> m = show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("ab\nab\nab\nabc\nac", 259, List.of()).tokenizer()));
    assertEquals(List.of("a b", "ab c", "a c"), m);
  }

  @Test
  void gpt2AlphabetTieBreakOrdersSpaceTokensAfterLetters() {
    // Bytes: 't' (0x74) > ' ' (0x20), so (t,h) first. Spelled: 'Ġ' (U+0120) > 't', so (Ġ,c) first.
    assertEquals(List.of("t h", "Ġ c"), show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("th c", 258, List.of()).tokenizer())));
    assertEquals(List.of("Ġ c", "t h"), show(NaiveBpeTrainer.mergesOf(
        BpeTrainer.train("th c", 258, List.of(), TieBreak.GPT2_ALPHABET).tokenizer())));
  }

  @Test
  void frequencyWinsOverTieBreak() {
    assertEquals(List.of("a a"), show(NaiveBpeTrainer.mergesOf(BpeTrainer.train("aa aa zz", 257, List.of()).tokenizer())));
  }

  @Test
  void matchesTheNaiveTrainerOnCorpusEn() throws Exception {
    Path corpus = DATA.resolve("tokenizer/corpus.en");
    String text = Files.readString(corpus);
    List<String> specials = List.of("<|endoftext|>");
    BpeTrainer.Result fast = BpeTrainer.train(List.of(corpus), 500, specials, 2, TieBreak.BYTES);
    List<String[]> expected = NaiveBpeTrainer.merges(text, 500, specials);
    assertEquals(243, expected.size());
    assertEquals(show(NaiveBpeTrainer.merges(text, 500, specials, true)), show(NaiveBpeTrainer.mergesOf(
        BpeTrainer.train(List.of(corpus), 500, specials, 2, TieBreak.GPT2_ALPHABET).tokenizer())));
    assertEquals(show(expected), show(NaiveBpeTrainer.mergesOf(fast.tokenizer())));
    BpeTokenizer tok = fast.tokenizer();
    assertEquals(500, tok.vocabSize());
    assertEquals(256, tok.specialId("<|endoftext|>"));
    // The vocabulary is the 256 bytes, the special token, and one token per merge: all distinct.
    Set<String> values = new HashSet<>();
    for (int id = 0; id < 500; id++) {
      values.add(ByteLevelAlphabet.encode(tok.tokenBytes(id)));
    }
    assertEquals(500, values.size());
    for (int id = 0; id < 500; id++) {
      if (id != 256) {
        assertFalse(new String(tok.tokenBytes(id), StandardCharsets.ISO_8859_1).contains("<|"), "token " + id);
      }
    }
  }

  @Test
  void matchesTheNaiveTrainerOnRandomCorporaFullOfTies() {
    Random rnd = new Random(7);
    for (int trial = 0; trial < 60; trial++) {
      StringBuilder b = new StringBuilder();
      String alphabet = trial % 3 == 0 ? "ab" : trial % 3 == 1 ? "abc é" : "xyz中\n";
      int words = 5 + rnd.nextInt(60);
      for (int w = 0; w < words; w++) {
        int len = 1 + rnd.nextInt(6);
        for (int k = 0; k < len; k++) {
          b.append(alphabet.charAt(rnd.nextInt(alphabet.length())));
        }
        int sep = rnd.nextInt(8);
        b.append(sep == 0 ? "<|s|>" : sep == 1 ? "<|s|><|s|>" : sep < 4 ? " " : sep < 6 ? "  " : ", ");
      }
      List<String> specials = trial % 2 == 0 ? List.of("<|s|>") : List.of("<|s|>", "<|s|><|s|>");
      int vocab = 256 + specials.size() + 1 + rnd.nextInt(60);
      String text = b.toString();
      boolean spelled = trial % 4 == 1;
      List<String[]> expected = NaiveBpeTrainer.merges(text, vocab, specials, spelled);
      BpeTokenizer tok =
          BpeTrainer.train(text, vocab, specials, spelled ? TieBreak.GPT2_ALPHABET : TieBreak.BYTES).tokenizer();
      assertEquals(show(expected), show(NaiveBpeTrainer.mergesOf(tok)), "trial " + trial + " on \"" + text + "\"");
      assertEquals(256 + specials.size() + expected.size(), tok.vocabSize(), "stops early when pairs run out");
    }
  }

  @Test
  void parallelChunkedFileTrainingEqualsInMemoryTraining(@TempDir Path tmp) throws Exception {
    Random rnd = new Random(3);
    StringBuilder b = new StringBuilder();
    while (b.length() < 400_000) {
      b.append(RandomText.mixed(rnd, 20));
      b.append(rnd.nextInt(5) == 0 ? "<|endoftext|>" : "\n");
    }
    Path f = tmp.resolve("corpus.txt");
    Files.writeString(f, b);
    List<String> specials = List.of("<|endoftext|>");
    BpeTokenizer whole = BpeTrainer.train(b.toString(), 700, specials).tokenizer();
    // 400 kB over 4 threads gives 64 kB chunks: several cuts.
    BpeTokenizer chunked = BpeTrainer.train(List.of(f), 700, specials, 4, TieBreak.BYTES).tokenizer();
    assertEquals(show(NaiveBpeTrainer.mergesOf(whole)), show(NaiveBpeTrainer.mergesOf(chunked)));
  }

  @Test
  void badInputsAreClearErrors(@TempDir Path tmp) throws Exception {
    IllegalArgumentException small =
        assertThrows(IllegalArgumentException.class, () -> BpeTrainer.train("abc", 256, List.of("<|eot|>")));
    assertTrue(small.getMessage().contains("below 256 bytes + 1 special"), small.getMessage());
    Path empty = tmp.resolve("empty.txt");
    Files.writeString(empty, "");
    IllegalArgumentException none =
        assertThrows(IllegalArgumentException.class, () -> BpeTrainer.train(List.of(empty), 300, List.of(), 1, TieBreak.BYTES));
    assertTrue(none.getMessage().contains("nothing to train on"), none.getMessage());
    Files.writeString(empty, "<|eot|><|eot|>");
    assertThrows(IllegalArgumentException.class, () -> BpeTrainer.train(List.of(empty), 300, List.of("<|eot|>"), 1, TieBreak.BYTES));
    assertThrows(java.nio.file.NoSuchFileException.class,
        () -> BpeTrainer.train(List.of(tmp.resolve("missing.txt")), 300, List.of(), 1, TieBreak.BYTES));
  }

  @Test
  void savedFilesLoadBackToTheSameTokenizer(@TempDir Path tmp) throws Exception {
    String text = Files.readString(DATA.resolve("tokenizer/tinystories_sample.txt"));
    BpeTokenizer tok = BpeTrainer.train(text, 400, List.of("<|endoftext|>", "<|pad|>")).tokenizer();
    TokenizerFiles.save(tok, tmp);
    assertTrue(Files.readString(tmp.resolve("merges.txt")).startsWith("#version: 0.2\n"));
    BpeTokenizer hf = TokenizerFiles.load(tmp, List.of());
    assertEquals(List.of("<|endoftext|>", "<|pad|>"), hf.specialTokenList());
    Files.delete(tmp.resolve("tokenizer.json"));
    BpeTokenizer gpt2 = TokenizerFiles.load(tmp, List.of("<|endoftext|>", "<|pad|>"));
    List<int[]> ids = new ArrayList<>();
    for (BpeTokenizer t : List.of(tok, hf, gpt2)) {
      assertEquals(400, t.vocabSize());
      assertEquals(257, t.specialId("<|pad|>"));
      ids.add(t.encode(text + "<|pad|>"));
    }
    assertArrayEquals(ids.get(0), ids.get(1));
    assertArrayEquals(ids.get(0), ids.get(2));
    assertEquals(text + "<|pad|>", tok.decode(ids.get(0)));
  }
}
