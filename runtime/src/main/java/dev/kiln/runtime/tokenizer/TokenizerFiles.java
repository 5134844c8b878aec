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
    String text = readUtf8(mergesTxt);
    List<MergeLine> merges = new ArrayList<>();
    int at = 0;
    for (int k = 0; at < text.length(); k++) {
      int nl = text.indexOf('\n', at);
      int end = nl < 0 ? text.length() : nl;
      int stop = end > at && text.charAt(end - 1) == '\r' ? end - 1 : end;
      int lineStart = at;
      at = end + 1;
      if (stop == lineStart || (k == 0 && text.startsWith("#version", lineStart))) {
        continue;
      }
      int sp = text.indexOf(' ', lineStart);
      int sp2 = sp < 0 ? -1 : text.indexOf(' ', sp + 1);
      boolean oneSpaceInside = sp > lineStart && sp < stop - 1 && (sp2 < 0 || sp2 >= stop);
      if (!oneSpaceInside) {
        throw new IllegalArgumentException(mergesTxt + " line " + (k + 1)
            + ": expected two tokens separated by one space, found \"" + text.substring(lineStart, stop) + "\"");
      }
      merges.add(new MergeLine(text.substring(lineStart, sp), text.substring(sp + 1, stop), k + 1));
    }
    text = null;
    return assemble(vocabJson + "", name, vocab, merges, line -> mergesTxt + " line " + line,
        new LinkedHashMap<>(), specials);
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
      ml.set(k, null);
      if (m instanceof String s) {
        String[] parts = s.split(" ", -1);
        if (parts.length != 2 || parts[0].isEmpty() || parts[1].isEmpty()) {
          throw new IllegalArgumentException(where + ": expected \"left right\", found " + Json.write(s));
        }
        merges.add(new MergeLine(parts[0], parts[1], k));
      } else if (m instanceof List<?> pair
          && pair.size() == 2
          && pair.get(0) instanceof String a
          && pair.get(1) instanceof String b) {
        merges.add(new MergeLine(a, b, k));
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
    return assemble(file + " model.vocab", file + " model.vocab", vocab, merges,
        k -> file + " model.merges[" + k + "]", fixed, extraSpecials);
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

  /** One merge as read; {@code line} is what {@code where} turns into a location for messages. */
  record MergeLine(String left, String right, int line) {}

  /**
   * Checks and links vocabulary, merges and special tokens into a tokenizer. Works on the parsed JSON map directly
   * and keeps no second map of the vocabulary, so a GPT-2 vocabulary loads in a small heap.
   */
  private static BpeTokenizer assemble(
      String vocabWhere,
      String vocabName,
      Map<String, Object> vocab,
      List<MergeLine> merges,
      java.util.function.IntFunction<String> where,
      LinkedHashMap<String, Integer> fixedSpecials,
      List<String> extraSpecials) {
    int maxId = -1;
    for (Map.Entry<String, Object> e : vocab.entrySet()) {
      if (!(e.getValue() instanceof Long v) || v < 0 || v >= Integer.MAX_VALUE - 1_000_000) {
        throw new IllegalArgumentException(
            vocabWhere + ": token " + Json.write(e.getKey()) + " has id " + Json.write(e.getValue())
                + "; ids must be non-negative integers");
      }
      maxId = Math.max(maxId, v.intValue());
    }
    if (vocab.isEmpty()) {
      throw new IllegalArgumentException(vocabWhere + ": the vocabulary is empty");
    }
    String[] tokenAt = new String[maxId + 1];
    for (Map.Entry<String, Object> e : vocab.entrySet()) {
      int id = ((Long) e.getValue()).intValue();
      if (tokenAt[id] != null) {
        throw new IllegalArgumentException(vocabWhere + ": id " + id + " is used by both " + Json.write(tokenAt[id])
            + " and " + Json.write(e.getKey()));
      }
      tokenAt[id] = e.getKey();
    }
    // Special tokens: those the file fixes, then the caller's, found by their text or their byte spelling.
    LinkedHashMap<String, Integer> specials = new LinkedHashMap<>();
    for (Map.Entry<String, Integer> e : fixedSpecials.entrySet()) {
      String there = e.getValue() < tokenAt.length ? tokenAt[e.getValue()] : null;
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
      Object id = vocab.get(s);
      if (id == null) {
        id = vocab.get(ByteLevelAlphabet.encode(s.getBytes(StandardCharsets.UTF_8)));
      }
      specials.put(s, id == null ? ++maxId : ((Long) id).intValue());
    }
    byte[][] tokenBytes = new byte[maxId + 1][];
    java.util.Set<Integer> specialIdSet = new java.util.HashSet<>(specials.values());
    for (int id = 0; id < tokenAt.length; id++) {
      if (tokenAt[id] == null || specialIdSet.contains(id)) {
        continue;
      }
      byte[] b = ByteLevelAlphabet.decodeOrNull(tokenAt[id]);
      if (b == null || b.length == 0) {
        throw new IllegalArgumentException(vocabWhere + ": token " + Json.write(tokenAt[id]) + " (id " + id
            + ") is not spelled in GPT-2's byte alphabet; if it is a special token, name it as one"
            + " (--special-tokens)");
      }
      tokenBytes[id] = b;
    }
    tokenAt = null;
    for (Map.Entry<String, Integer> e : specials.entrySet()) {
      tokenBytes[e.getValue()] = e.getKey().getBytes(StandardCharsets.UTF_8);
    }
    int[] byteToId = new int[256];
    for (int b = 0; b < 256; b++) {
      Object id = vocab.get(String.valueOf(ByteLevelAlphabet.charOf(b)));
      if (id == null || specialIdSet.contains(((Long) id).intValue())) {
        throw new IllegalArgumentException(String.format(
            "%s: no token for byte 0x%02X (spelled \"%c\"); a byte-level vocabulary needs all 256 bytes",
            vocabWhere, b, ByteLevelAlphabet.charOf(b)));
      }
      byteToId[b] = ((Long) id).intValue();
    }
    int n = merges.size();
    int[] left = new int[n];
    int[] right = new int[n];
    int[] result = new int[n];
    int[] lines = new int[n];
    for (int r = 0; r < n; r++) {
      MergeLine m = merges.get(r);
      merges.set(r, null);
      for (String part : new String[] {m.left(), m.right()}) {
        if (!vocab.containsKey(part)) {
          throw new IllegalArgumentException(
              where.apply(m.line()) + ": token " + Json.write(part) + " is not in " + vocabName);
        }
      }
      Object c = vocab.get(m.left() + m.right());
      if (c == null) {
        throw new IllegalArgumentException(where.apply(m.line()) + ": merging " + Json.write(m.left()) + " and "
            + Json.write(m.right()) + " gives " + Json.write(m.left() + m.right()) + ", which is not in "
            + vocabName);
      }
      left[r] = ((Long) vocab.get(m.left())).intValue();
      right[r] = ((Long) vocab.get(m.right())).intValue();
      result[r] = ((Long) c).intValue();
      lines[r] = m.line();
    }
    MergeTable table = new MergeTable(left, right);
    for (int r = 0; r < n; r++) {
      int first = table.rank(left[r], right[r]);
      if (first != r) {
        throw new IllegalArgumentException(where.apply(lines[r]) + ": repeats the merge of "
            + where.apply(lines[first]));
      }
    }
    List<String> specialList = new ArrayList<>(specials.keySet());
    int[] specialIds = specials.values().stream().mapToInt(Integer::intValue).toArray();
    return new BpeTokenizer(tokenBytes, byteToId, left, right, result, specialList, specialIds, table);
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
