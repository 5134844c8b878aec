package dev.kiln.runtime.tokenizer;

import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and writes tokenizers in the formats other tools use:
 *
 * <ul>
 *   <li>GPT-2: {@code vocab.json} (token spelled in {@link ByteLevelAlphabet} → id) and {@code merges.txt} (an
 *       optional {@code #version} line, then {@code left right} per merge, in rank order);
 *   <li>Hugging Face {@code tokenizer.json} with a byte-level BPE model ({@code model.type == "BPE"}, ByteLevel
 *       pre-tokenizer without prefix space); merges as {@code "a b"} strings or {@code ["a", "b"]} pairs; {@code
 *       added_tokens} are matched before pre-tokenization, like special tokens.
 * </ul>
 *
 * {@link #save} writes all three files, each atomically; {@code tokenizer.json} names the special tokens (as {@code
 * added_tokens} with {@code special: true}), so a saved folder loads back with them.
 */
public final class TokenizerFiles {
  public static final String VOCAB = "vocab.json";
  public static final String MERGES = "merges.txt";
  public static final String HF = "tokenizer.json";

  private TokenizerFiles() {}

  /**
   * Loads {@code dir/tokenizer.json} if present, else {@code dir/vocab.json} + {@code dir/merges.txt}; {@code
   * extraSpecials} are added to the special tokens the files name.
   */
  public static BpeTokenizer load(Path dir, List<String> extraSpecials) throws IOException {
    if (!Files.isDirectory(dir)) {
      throw new NoSuchFileException(dir.toString(), null, "tokenizer folder not found (expected a folder holding "
          + HF + ", or " + VOCAB + " and " + MERGES + ")");
    }
    Path hf = dir.resolve(HF);
    if (Files.isRegularFile(hf)) {
      return loadHuggingFace(hf, extraSpecials);
    }
    Path vocab = dir.resolve(VOCAB);
    Path merges = dir.resolve(MERGES);
    if (Files.isRegularFile(vocab) && Files.isRegularFile(merges)) {
      return loadGpt2(vocab, merges, extraSpecials);
    }
    throw new NoSuchFileException(
        dir.toString(), null, "holds neither " + HF + " nor both " + VOCAB + " and " + MERGES);
  }

  /** Loads GPT-2 files; {@code specials} are looked up in the vocabulary by their text, or appended after it. */
  public static BpeTokenizer loadGpt2(Path vocabJson, Path mergesTxt, List<String> specials) throws IOException {
    String name = vocabJson.getFileName().toString();
    Map<String, Object> vocab;
    try {
      vocab = Json.parseObject(readUtf8(vocabJson));
    } catch (Json.ParseException e) {
      throw new IllegalArgumentException(vocabJson + ": malformed JSON: " + e.getMessage(), e);
    }
    List<MergeLine> merges = new ArrayList<>();
    List<String> lines = Arrays.asList(readUtf8(mergesTxt).split("\n", -1));
    for (int k = 0; k < lines.size(); k++) {
      String line = lines.get(k);
      if (line.endsWith("\r")) {
        line = line.substring(0, line.length() - 1);
      }
      if ((k == 0 && line.startsWith("#version")) || line.isEmpty()) {
        continue;
      }
      String where = mergesTxt + " line " + (k + 1);
      int sp = line.indexOf(' ');
      if (sp <= 0 || sp == line.length() - 1 || line.indexOf(' ', sp + 1) >= 0) {
        throw new IllegalArgumentException(
            where + ": expected two tokens separated by one space, found \"" + line + "\"");
      }
      merges.add(new MergeLine(line.substring(0, sp), line.substring(sp + 1), where));
    }
    return assemble(vocabJson + "", name, vocab, merges, new LinkedHashMap<>(), specials);
  }

  /** Loads a Hugging Face {@code tokenizer.json} whose model is byte-level BPE. */
  @SuppressWarnings("unchecked")
  public static BpeTokenizer loadHuggingFace(Path file, List<String> extraSpecials) throws IOException {
    Map<String, Object> root;
    try {
      root = Json.parseObject(readUtf8(file));
    } catch (Json.ParseException e) {
      throw new IllegalArgumentException(file + ": malformed JSON: " + e.getMessage(), e);
    }
    Object modelObj = root.get("model");
    if (!(modelObj instanceof Map)) {
      throw new IllegalArgumentException(file + ": no \"model\" object");
    }
    Map<String, Object> model = (Map<String, Object>) modelObj;
    if (!"BPE".equals(model.get("type"))) {
      throw new IllegalArgumentException(
          file + ": model.type is " + Json.write(model.get("type")) + "; only \"BPE\" (byte-level) is supported");
    }
    requireAbsentOr(file, model, "byte_fallback", false, "byte fallback is a SentencePiece-style BPE, not byte-level");
    requireAbsentOr(file, model, "ignore_merges", false, "ignore_merges changes how pre-tokens are encoded");
    for (String k : List.of("continuing_subword_prefix", "end_of_word_suffix")) {
      Object v = model.get(k);
      if (v != null && !"".equals(v)) {
        throw new IllegalArgumentException(file + ": model." + k + " = " + Json.write(v) + " is not supported");
      }
    }
    Object dropout = model.get("dropout");
    if (dropout instanceof Number d && d.doubleValue() != 0) {
      throw new IllegalArgumentException(file + ": model.dropout = " + d + " is not supported (encoding is exact)");
    }
    if (root.get("normalizer") != null) {
      throw new IllegalArgumentException(file + ": a normalizer is not supported (byte-level BPE needs none)");
    }
    Object pre = root.get("pre_tokenizer");
    if (!(pre instanceof Map<?, ?> pm) || !"ByteLevel".equals(pm.get("type"))) {
      throw new IllegalArgumentException(
          file + ": pre_tokenizer must be {\"type\": \"ByteLevel\"} (GPT-2's pattern), found " + Json.write(pre));
    }
    if (Boolean.TRUE.equals(pm.get("add_prefix_space")) || Boolean.FALSE.equals(pm.get("use_regex"))) {
      throw new IllegalArgumentException(
          file + ": pre_tokenizer needs add_prefix_space false and use_regex true, found " + Json.write(pre));
    }
    if (!(model.get("vocab") instanceof Map)) {
      throw new IllegalArgumentException(file + ": model.vocab must be an object of token → id");
    }
    Map<String, Object> vocab = (Map<String, Object>) model.get("vocab");
    Object mergesObj = model.get("merges");
    if (!(mergesObj instanceof List)) {
      throw new IllegalArgumentException(file + ": model.merges must be an array");
    }
    List<MergeLine> merges = new ArrayList<>();
    List<Object> ml = (List<Object>) mergesObj;
    for (int k = 0; k < ml.size(); k++) {
      String where = file + " model.merges[" + k + "]";
      Object m = ml.get(k);
      if (m instanceof String s) {
        String[] parts = s.split(" ", -1);
        if (parts.length != 2 || parts[0].isEmpty() || parts[1].isEmpty()) {
          throw new IllegalArgumentException(where + ": expected \"left right\", found " + Json.write(s));
        }
        merges.add(new MergeLine(parts[0], parts[1], where));
      } else if (m instanceof List<?> pair
          && pair.size() == 2
          && pair.get(0) instanceof String a
          && pair.get(1) instanceof String b) {
        merges.add(new MergeLine(a, b, where));
      } else {
        throw new IllegalArgumentException(where + ": expected \"left right\" or [\"left\", \"right\"], found "
            + Json.write(m));
      }
    }
    LinkedHashMap<String, Integer> fixed = new LinkedHashMap<>();
    Object added = root.get("added_tokens");
    if (added instanceof List<?> al) {
      for (int k = 0; k < al.size(); k++) {
        if (!(al.get(k) instanceof Map<?, ?> t)
            || !(t.get("content") instanceof String content)
            || !(t.get("id") instanceof Long id)) {
          throw new IllegalArgumentException(file + " added_tokens[" + k + "]: expected {\"id\": n, \"content\": s}");
        }
        fixed.put(content, Math.toIntExact(id));
      }
    } else if (added != null) {
      throw new IllegalArgumentException(file + ": added_tokens must be an array");
    }
    return assemble(file + " model.vocab", file + " model.vocab", vocab, merges, fixed, extraSpecials);
  }

  private static void requireAbsentOr(Path file, Map<String, Object> m, String key, Object ok, String why) {
    Object v = m.get(key);
    if (v != null && !v.equals(ok)) {
      throw new IllegalArgumentException(file + ": model." + key + " = " + v + " is not supported: " + why);
    }
  }

  private static String readUtf8(Path p) throws IOException {
    if (!Files.isRegularFile(p)) {
      throw new NoSuchFileException(p.toString(), null, "file not found");
    }
    byte[] b = Files.readAllBytes(p);
    try {
      return StandardCharsets.UTF_8
          .newDecoder()
          .decode(java.nio.ByteBuffer.wrap(b))
          .toString();
    } catch (CharacterCodingException e) {
      throw new IllegalArgumentException(p + ": not valid UTF-8", e);
    }
  }

  record MergeLine(String left, String right, String where) {}

  /** Checks and links vocabulary, merges and special tokens into a tokenizer. */
  private static BpeTokenizer assemble(
      String vocabWhere,
      String vocabName,
      Map<String, Object> vocab,
      List<MergeLine> merges,
      LinkedHashMap<String, Integer> fixedSpecials,
      List<String> extraSpecials) {
    Map<String, Integer> idOf = new HashMap<>();
    Map<Integer, String> tokenAt = new HashMap<>();
    int maxId = -1;
    for (Map.Entry<String, Object> e : vocab.entrySet()) {
      if (!(e.getValue() instanceof Long v) || v < 0 || v >= Integer.MAX_VALUE - 1_000_000) {
        throw new IllegalArgumentException(
            vocabWhere + ": token " + Json.write(e.getKey()) + " has id " + Json.write(e.getValue())
                + "; ids must be non-negative integers");
      }
      int id = v.intValue();
      String prev = tokenAt.put(id, e.getKey());
      if (prev != null) {
        throw new IllegalArgumentException(
            vocabWhere + ": id " + id + " is used by both " + Json.write(prev) + " and " + Json.write(e.getKey()));
      }
      idOf.put(e.getKey(), id);
      maxId = Math.max(maxId, id);
    }
    if (idOf.isEmpty()) {
      throw new IllegalArgumentException(vocabWhere + ": the vocabulary is empty");
    }
    // Special tokens: those the file fixes, then the caller's, found by their text or their byte spelling.
    LinkedHashMap<String, Integer> specials = new LinkedHashMap<>();
    for (Map.Entry<String, Integer> e : fixedSpecials.entrySet()) {
      String there = tokenAt.get(e.getValue());
      String spelled = ByteLevelAlphabet.encode(e.getKey().getBytes(StandardCharsets.UTF_8));
      if (there != null && !there.equals(e.getKey()) && !there.equals(spelled)) {
        throw new IllegalArgumentException(vocabWhere + ": added token " + Json.write(e.getKey()) + " has id "
            + e.getValue() + ", which the vocabulary gives to " + Json.write(there));
      }
      specials.put(e.getKey(), e.getValue());
      maxId = Math.max(maxId, e.getValue());
    }
    for (String s : extraSpecials) {
      if (s.isEmpty()) {
        throw new IllegalArgumentException("a special token cannot be empty");
      }
      if (specials.containsKey(s)) {
        continue;
      }
      Integer id = idOf.get(s);
      if (id == null) {
        id = idOf.get(ByteLevelAlphabet.encode(s.getBytes(StandardCharsets.UTF_8)));
      }
      if (id == null) {
        id = ++maxId;
      }
      specials.put(s, id);
    }
    byte[][] tokenBytes = new byte[maxId + 1][];
    java.util.Set<Integer> specialIdSet = new java.util.HashSet<>(specials.values());
    for (Map.Entry<String, Integer> e : idOf.entrySet()) {
      if (specialIdSet.contains(e.getValue())) {
        continue;
      }
      byte[] b = ByteLevelAlphabet.decodeOrNull(e.getKey());
      if (b == null || b.length == 0) {
        throw new IllegalArgumentException(vocabWhere + ": token " + Json.write(e.getKey()) + " (id " + e.getValue()
            + ") is not spelled in GPT-2's byte alphabet; if it is a special token, name it as one"
            + " (--special-tokens)");
      }
      tokenBytes[e.getValue()] = b;
    }
    for (Map.Entry<String, Integer> e : specials.entrySet()) {
      tokenBytes[e.getValue()] = e.getKey().getBytes(StandardCharsets.UTF_8);
    }
    int[] byteToId = new int[256];
    for (int b = 0; b < 256; b++) {
      Integer id = idOf.get(String.valueOf(ByteLevelAlphabet.charOf(b)));
      if (id == null || specialIdSet.contains(id)) {
        throw new IllegalArgumentException(String.format(
            "%s: no token for byte 0x%02X (spelled \"%c\"); a byte-level vocabulary needs all 256 bytes",
            vocabWhere, b, ByteLevelAlphabet.charOf(b)));
      }
      byteToId[b] = id;
    }
    int n = merges.size();
    int[] left = new int[n];
    int[] right = new int[n];
    int[] result = new int[n];
    Map<Long, Integer> seen = new HashMap<>();
    for (int r = 0; r < n; r++) {
      MergeLine m = merges.get(r);
      Integer a = idOf.get(m.left());
      Integer b = idOf.get(m.right());
      for (String part : new String[] {m.left(), m.right()}) {
        if (!idOf.containsKey(part)) {
          throw new IllegalArgumentException(
              m.where() + ": token " + Json.write(part) + " is not in " + vocabName);
        }
      }
      Integer c = idOf.get(m.left() + m.right());
      if (c == null) {
        throw new IllegalArgumentException(m.where() + ": merging " + Json.write(m.left()) + " and "
            + Json.write(m.right()) + " gives " + Json.write(m.left() + m.right()) + ", which is not in " + vocabName);
      }
      Integer before = seen.put(MergeTable.key(a, b), r);
      if (before != null) {
        throw new IllegalArgumentException(
            m.where() + ": repeats the merge " + Json.write(m.left() + " " + m.right()) + " of "
                + merges.get(before).where());
      }
      left[r] = a;
      right[r] = b;
      result[r] = c;
    }
    List<String> specialList = new ArrayList<>(specials.keySet());
    int[] specialIds = specials.values().stream().mapToInt(Integer::intValue).toArray();
    return new BpeTokenizer(tokenBytes, byteToId, left, right, result, specialList, specialIds);
  }

  /**
   * Writes {@code vocab.json}, {@code merges.txt} (with a {@code #version: 0.2} header) and a Hugging Face {@code
   * tokenizer.json} naming the special tokens into {@code dir}, each atomically.
   */
  public static void save(BpeTokenizer tok, Path dir) throws IOException {
    Files.createDirectories(dir);
    LinkedHashMap<String, Object> vocab = new LinkedHashMap<>();
    for (int id = 0; id < tok.vocabSize(); id++) {
      if (!tok.hasToken(id)) {
        continue;
      }
      byte[] b = tok.tokenBytes(id);
      String key = tok.isSpecial(id) ? new String(b, StandardCharsets.UTF_8) : ByteLevelAlphabet.encode(b);
      Object clash = vocab.put(key, id);
      if (clash != null) {
        throw new IllegalArgumentException("cannot write " + VOCAB + ": special token " + Json.write(key)
            + " is spelled like token " + clash + "; rename the special token");
      }
    }
    List<String> merges = new ArrayList<>(tok.mergeCount());
    StringBuilder mergesTxt = new StringBuilder("#version: 0.2\n");
    for (int r = 0; r < tok.mergeCount(); r++) {
      String m = ByteLevelAlphabet.encode(tok.tokenBytes(tok.mergeLeft(r))) + " "
          + ByteLevelAlphabet.encode(tok.tokenBytes(tok.mergeRight(r)));
      merges.add(m);
      mergesTxt.append(m).append('\n');
    }
    List<Object> added = new ArrayList<>();
    for (String s : tok.specialTokenList()) {
      LinkedHashMap<String, Object> t = new LinkedHashMap<>();
      t.put("id", tok.specialId(s));
      t.put("content", s);
      t.put("single_word", false);
      t.put("lstrip", false);
      t.put("rstrip", false);
      t.put("normalized", false);
      t.put("special", true);
      added.add(t);
    }
    LinkedHashMap<String, Object> byteLevel = new LinkedHashMap<>();
    byteLevel.put("type", "ByteLevel");
    byteLevel.put("add_prefix_space", false);
    byteLevel.put("trim_offsets", true);
    byteLevel.put("use_regex", true);
    LinkedHashMap<String, Object> model = new LinkedHashMap<>();
    model.put("type", "BPE");
    model.put("dropout", null);
    model.put("unk_token", null);
    model.put("continuing_subword_prefix", "");
    model.put("end_of_word_suffix", "");
    model.put("fuse_unk", false);
    model.put("byte_fallback", false);
    model.put("ignore_merges", false);
    model.put("vocab", vocab);
    model.put("merges", merges);
    LinkedHashMap<String, Object> root = new LinkedHashMap<>();
    root.put("version", "1.0");
    root.put("truncation", null);
    root.put("padding", null);
    root.put("added_tokens", added);
    root.put("normalizer", null);
    root.put("pre_tokenizer", byteLevel);
    root.put("post_processor", byteLevel);
    root.put("decoder", byteLevel);
    root.put("model", model);
    AtomicFiles.writeString(dir.resolve(VOCAB), Json.write(vocab));
    AtomicFiles.writeString(dir.resolve(MERGES), mergesTxt.toString());
    AtomicFiles.writeString(dir.resolve(HF), Json.write(root));
  }
}
