package dev.kiln.runtime.tokenizer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.PrimitiveIterator;

/**
 * A byte-level BPE tokenizer (GPT-2 style): a vocabulary of byte strings, an ordered list of merges, and special
 * tokens that are matched before pre-tokenization and never merged. Immutable and thread-safe; encoding state (the
 * pre-token cache) lives in {@link Encoder}s, one per thread.
 *
 * <p>Load one with {@link #load(Path, List)} (a folder with {@code tokenizer.json}, or GPT-2 {@code vocab.json} +
 * {@code merges.txt}), train one with {@link BpeTrainer}, save one with {@link TokenizerFiles#save}.
 */
public final class BpeTokenizer {
  private final byte[][] tokenBytes;
  private final int[] byteToId;
  private final int[] mergeLeft;
  private final int[] mergeRight;
  private final int[] mergeResult;
  private final MergeTable mergeTable;
  private final SpecialTokens specials;
  private final int[] specialIds;
  private final ThreadLocal<Encoder> encoders = ThreadLocal.withInitial(this::newEncoder);

  /**
   * Builds a tokenizer from checked parts (loaders and the trainer validate before calling this).
   *
   * @param tokenBytes bytes of each id ({@code null} for ids not in use); special tokens hold their UTF-8 text
   * @param mergeLeft left id of each merge, by rank
   * @param mergeRight right id of each merge, by rank
   * @param mergeResult id the merge produces, by rank
   * @param specials special token texts, and {@code specialIds} their ids in the same order
   */
  BpeTokenizer(
      byte[][] tokenBytes,
      int[] byteToId,
      int[] mergeLeft,
      int[] mergeRight,
      int[] mergeResult,
      List<String> specials,
      int[] specialIds) {
    this(tokenBytes, byteToId, mergeLeft, mergeRight, mergeResult, specials, specialIds,
        new MergeTable(mergeLeft, mergeRight));
  }

  BpeTokenizer(
      byte[][] tokenBytes,
      int[] byteToId,
      int[] mergeLeft,
      int[] mergeRight,
      int[] mergeResult,
      List<String> specials,
      int[] specialIds,
      MergeTable mergeTable) {
    this.tokenBytes = tokenBytes;
    this.byteToId = byteToId;
    this.mergeLeft = mergeLeft;
    this.mergeRight = mergeRight;
    this.mergeResult = mergeResult;
    this.mergeTable = mergeTable;
    this.specials = new SpecialTokens(specials);
    if (this.specials.size() != specialIds.length) {
      throw new IllegalArgumentException("special tokens repeat: " + specials);
    }
    this.specialIds = specialIds.clone();
  }

  /**
   * Loads a tokenizer from a folder: {@code tokenizer.json} (Hugging Face, byte-level BPE) when present, else GPT-2
   * {@code vocab.json} + {@code merges.txt}. {@code specials} are added to those the files name (a GPT-2 folder names
   * none, so pass e.g. {@code <|endoftext|>}).
   */
  public static BpeTokenizer load(Path dir, List<String> specials) throws IOException {
    return TokenizerFiles.load(dir, specials);
  }

  /** A new encoder (with its own cache) for use on one thread. */
  public Encoder newEncoder() {
    return new Encoder(this, 1 << 16);
  }

  /** Encodes text, matching special tokens. Uses a per-thread encoder, so it is safe from any thread. */
  public int[] encode(String text) {
    return encoders.get().encode(text);
  }

  /** Encodes text as ordinary text: special-token strings inside it are split like any other text. */
  public int[] encodeOrdinary(String text) {
    byte[] b = text.getBytes(StandardCharsets.UTF_8);
    IntList out = new IntList(b.length / 3 + 16);
    encoders.get().encodeOrdinary(b, 0, b.length, out);
    return out.toArray();
  }

  /**
   * Encodes a sequence of strings (the lines of a file, with their newlines) lazily, as if they were one text
   * joined together, in constant memory: text is buffered only up to a safe cut (see {@link TextChunker}), so the ids
   * are exactly those of {@code encode(String.join("", lines))}.
   */
  public PrimitiveIterator.OfInt encodeIterable(Iterable<String> lines) {
    return encodeStream(TextChunker.of(lines.iterator()), 1 << 16);
  }

  /** Lazily encodes a byte source in chunks of about {@code chunkBytes}; see {@link #encodeIterable}. */
  public PrimitiveIterator.OfInt encodeStream(TextChunker.Source source, int chunkBytes) {
    TextChunker chunker = new TextChunker(source, specials, chunkBytes);
    Encoder enc = newEncoder();
    return new PrimitiveIterator.OfInt() {
      private final IntList ids = new IntList(chunkBytes / 2);
      private int at;
      private boolean done;

      @Override
      public boolean hasNext() {
        while (at == ids.size() && !done) {
          byte[] chunk = chunker.next();
          ids.clear();
          at = 0;
          if (chunk == null) {
            done = true;
          } else {
            enc.encode(chunk, 0, chunk.length, ids);
          }
        }
        return at < ids.size();
      }

      @Override
      public int nextInt() {
        if (!hasNext()) {
          throw new NoSuchElementException();
        }
        return ids.array()[at++];
      }
    };
  }

  /** Decodes ids to text; bytes that are not valid UTF-8 become U+FFFD. Unknown ids are an error. */
  public String decode(int[] ids) {
    return decode(ids, 0, ids.length);
  }

  public String decode(int[] ids, int from, int to) {
    byte[] b = decodeBytes(ids, from, to);
    CharsetDecoder d =
        StandardCharsets.UTF_8
            .newDecoder()
            .onMalformedInput(CodingErrorAction.REPLACE)
            .onUnmappableCharacter(CodingErrorAction.REPLACE);
    try {
      return d.decode(ByteBuffer.wrap(b)).toString();
    } catch (java.nio.charset.CharacterCodingException e) {
      throw new IllegalStateException("a REPLACE decoder reported an error", e);
    }
  }

  /** The bytes that ids stand for, concatenated. */
  public byte[] decodeBytes(int[] ids, int from, int to) {
    int n = 0;
    for (int k = from; k < to; k++) {
      n += bytesOf(ids[k], k).length;
    }
    byte[] out = new byte[n];
    int at = 0;
    for (int k = from; k < to; k++) {
      byte[] t = tokenBytes[ids[k]];
      System.arraycopy(t, 0, out, at, t.length);
      at += t.length;
    }
    return out;
  }

  private byte[] bytesOf(int id, int position) {
    if (id < 0 || id >= tokenBytes.length || tokenBytes[id] == null) {
      throw new IllegalArgumentException(
          "token id " + id + " at position " + position + " is not in the vocabulary (size " + tokenBytes.length + ")");
    }
    return tokenBytes[id];
  }

  /**
   * Decodes a stream of ids to text piece by piece, carrying incomplete UTF-8 sequences across pieces so a
   * character split between two tokens (or two reads) is decoded once the rest arrives.
   */
  public final class StreamDecoder {
    private final CharsetDecoder d =
        StandardCharsets.UTF_8
            .newDecoder()
            .onMalformedInput(CodingErrorAction.REPLACE)
            .onUnmappableCharacter(CodingErrorAction.REPLACE);
    private ByteBuffer in = ByteBuffer.allocate(1 << 16);
    private final CharBuffer out = CharBuffer.allocate(1 << 16);
    private final Appendable sink;

    private StreamDecoder(Appendable sink) {
      this.sink = sink;
    }

    /** Decodes {@code ids[from, to)} and appends the complete characters to the sink. */
    public void write(int[] ids, int from, int to) throws IOException {
      for (int k = from; k < to; k++) {
        byte[] t = bytesOf(ids[k], k);
        if (in.remaining() < t.length) {
          drain(false);
          if (in.remaining() < t.length) {
            ByteBuffer bigger = ByteBuffer.allocate(in.capacity() + t.length);
            in.flip();
            bigger.put(in);
            in = bigger;
          }
        }
        in.put(t);
      }
      drain(false);
    }

    /** Ends the stream: a trailing incomplete sequence becomes U+FFFD. */
    public void finish() throws IOException {
      drain(true);
      while (true) {
        CoderResult r = d.flush(out);
        flushOut();
        if (!r.isOverflow()) {
          break;
        }
      }
    }

    private void drain(boolean last) throws IOException {
      in.flip();
      while (true) {
        CoderResult r = d.decode(in, out, last);
        flushOut();
        if (!r.isOverflow()) {
          break;
        }
      }
      in.compact();
    }

    private void flushOut() throws IOException {
      out.flip();
      sink.append(out);
      out.clear();
    }
  }

  /** A decoder that appends text to {@code sink} as ids arrive. */
  public StreamDecoder streamDecoder(Appendable sink) {
    return new StreamDecoder(sink);
  }

  /** Number of ids (the largest id plus one). */
  public int vocabSize() {
    return tokenBytes.length;
  }

  /** The bytes token {@code id} stands for (a copy); special tokens give their UTF-8 text. */
  public byte[] tokenBytes(int id) {
    return bytesOf(id, 0).clone();
  }

  /** True when {@code id} is in use (vocabularies loaded from files may skip ids). */
  public boolean hasToken(int id) {
    return id >= 0 && id < tokenBytes.length && tokenBytes[id] != null;
  }

  /** The special tokens, in order. */
  public List<String> specialTokenList() {
    return specials.tokens();
  }

  /** The id of a special token, or -1 if it is not one. */
  public int specialId(String token) {
    int i = specials.tokens().indexOf(token);
    return i < 0 ? -1 : specialIds[i];
  }

  /** True when {@code id} is a special token. */
  public boolean isSpecial(int id) {
    for (int s : specialIds) {
      if (s == id) {
        return true;
      }
    }
    return false;
  }

  /** Number of merges. */
  public int mergeCount() {
    return mergeLeft.length;
  }

  /** Left id of merge {@code rank}. */
  public int mergeLeft(int rank) {
    return mergeLeft[rank];
  }

  /** Right id of merge {@code rank}. */
  public int mergeRight(int rank) {
    return mergeRight[rank];
  }

  /** The id merge {@code rank} produces. */
  public int mergeResult(int rank) {
    return mergeResult[rank];
  }

  /** The id of the single-byte token for byte {@code b}. */
  public int byteId(int b) {
    return byteToId[b & 0xFF];
  }

  /** The id of the longest non-special token (the first among equals), for reports. */
  public int longestTokenId() {
    int best = -1;
    for (int id = 0; id < tokenBytes.length; id++) {
      if (tokenBytes[id] != null && !isSpecial(id) && (best < 0 || tokenBytes[id].length > tokenBytes[best].length)) {
        best = id;
      }
    }
    return best;
  }

  SpecialTokens specialTokens() {
    return specials;
  }

  int specialId(int index) {
    return specialIds[index];
  }

  MergeTable mergeTable() {
    return mergeTable;
  }

  int[] mergeResults() {
    return mergeResult;
  }

  int[] byteToIdTable() {
    return byteToId;
  }
}
