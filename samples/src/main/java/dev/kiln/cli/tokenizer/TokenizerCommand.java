package dev.kiln.cli.tokenizer;

import dev.kiln.runtime.io.Npy;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import dev.kiln.dsl.DType;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.tokenizer.BpeTrainer;
import dev.kiln.runtime.tokenizer.FileEncoder;
import dev.kiln.runtime.tokenizer.TieBreak;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kiln tokenizer train | encode | decode}: byte-level BPE, in GPT-2's file formats. */
@Command(
    name = "tokenizer",
    description = "Train, encode and decode with a byte-level BPE tokenizer (GPT-2 formats).",
    subcommands = {
      TokenizerCommand.Train.class,
      TokenizerCommand.Encode.class,
      TokenizerCommand.Decode.class,
    })
public final class TokenizerCommand implements Runnable {
  @CommandLine.Spec CommandLine.Model.CommandSpec spec;

  @Override
  public void run() {
    spec.commandLine().usage(spec.commandLine().getOut());
  }

  /** A byte count for people: kB below a megabyte, MB above. */
  static String size(long bytes) {
    return bytes < 1_000_000
        ? String.format(Locale.ROOT, "%.1f kB", bytes / 1e3)
        : String.format(Locale.ROOT, "%.1f MB", bytes / 1e6);
  }

  /** Shows a token for people: its text, escaped so whitespace and control characters are visible. */
  static String showToken(byte[] bytes) {
    String s = new String(bytes, StandardCharsets.UTF_8);
    StringBuilder b = new StringBuilder("\"");
    s.codePoints().forEach(cp -> {
      switch (cp) {
        case '\n' -> b.append("\\n");
        case '\t' -> b.append("\\t");
        case '\r' -> b.append("\\r");
        case '"' -> b.append("\\\"");
        default -> {
          if (cp < 0x20 || cp == 0xFFFD) {
            b.append(String.format("\\u%04x", cp));
          } else {
            b.appendCodePoint(cp);
          }
        }
      }
    });
    return b.append('"').toString();
  }

  @Command(name = "train", description = "Learn a vocabulary and merges from text files.")
  static final class Train implements Callable<Integer> {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Option(names = "--input", arity = "1..*", required = true, paramLabel = "FILE", description = "UTF-8 text files.")
    List<Path> inputs;

    @Option(names = "--vocab-size", required = true, paramLabel = "N",
        description = "Final vocabulary size: 256 bytes + special tokens + merges.")
    int vocabSize;

    @Option(names = "--special-tokens", arity = "0..*", paramLabel = "TOKEN",
        description = "Special tokens (e.g. <|endoftext|>): split off before training, never merged.")
    List<String> specials = new ArrayList<>();

    @Option(names = "--out", required = true, paramLabel = "DIR",
        description = "Folder for vocab.json, merges.txt and tokenizer.json.")
    Path out;

    @Option(names = "--threads", paramLabel = "N", description = "Pre-tokenization threads (default: all cores).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--tie-break", paramLabel = "RULE",
        description = "How equal counts are ordered: BYTES (CS336's rule, default) or GPT2_ALPHABET"
            + " (reproduces the spring-2024 CS336 reference merges).")
    TieBreak tieBreak = TieBreak.BYTES;

    @Override
    public Integer call() throws IOException {
      BpeTrainer.Result r = BpeTrainer.train(inputs, vocabSize, specials, threads, tieBreak);
      TokenizerFiles.save(r.tokenizer(), out);
      BpeTokenizer tok = r.tokenizer();
      int longest = tok.longestTokenId();
      PrintWriter o = spec.commandLine().getOut();
      BpeTrainer.Stats s = r.stats();
      o.printf(Locale.ROOT, "trained in %.2f s (%s, %,d unique pre-tokens): %d merges, vocabulary %d%n",
          s.seconds(), size(s.inputBytes()), s.uniquePreTokens(), s.merges(), tok.vocabSize());
      if (s.merges() < vocabSize - 256 - tok.specialTokenList().size()) {
        o.printf("note: the text ran out of pairs before reaching vocabulary size %d%n", vocabSize);
      }
      o.printf("longest token: id %d, %d bytes, %s%n", longest, tok.tokenBytes(longest).length,
          showToken(tok.tokenBytes(longest)));
      o.printf("wrote %s, %s, %s in %s%n", TokenizerFiles.VOCAB, TokenizerFiles.MERGES, TokenizerFiles.HF, out);
      o.flush();
      return 0;
    }
  }

  @Command(name = "encode", description = "Encode a text file into a token file (.bin) or an int32 array (.npy).")
  static final class Encode implements Callable<Integer> {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Option(names = "--tokenizer", required = true, paramLabel = "DIR",
        description = "Folder with tokenizer.json, or GPT-2 vocab.json + merges.txt.")
    Path dir;

    @Option(names = "--special-tokens", arity = "0..*", paramLabel = "TOKEN",
        description = "Special tokens to match (added to those tokenizer.json names).")
    List<String> specials = new ArrayList<>();

    @Option(names = "--input", required = true, paramLabel = "FILE", description = "UTF-8 text to encode.")
    Path input;

    @Option(names = "--output", required = true, paramLabel = "OUT",
        description = "OUT.bin: uint16/uint32 token file with a .bin.json manifest; OUT.npy: int32 array.")
    Path output;

    @Option(names = "--threads", paramLabel = "N", description = "Encoding threads (default: all cores).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--progress", description = "Draw the progress bar even when stderr is not a terminal.")
    boolean progress;

    @Override
    public Integer call() throws IOException {
      String name = output.getFileName().toString();
      boolean npy = name.endsWith(".npy");
      if (!npy && !name.endsWith(".bin")) {
        throw new IllegalArgumentException("--output " + output + ": name it .bin (a token file) or .npy (an int32"
            + " array); other extensions are not written");
      }
      if (!Files.isRegularFile(input)) {
        throw new NoSuchFileException(input.toString(), null, "input file not found");
      }
      if (Files.size(input) == 0) {
        throw new IllegalArgumentException("--input " + input + " is empty: nothing to encode");
      }
      BpeTokenizer tok = BpeTokenizer.load(dir, specials);
      PrintWriter err = spec.commandLine().getErr();
      ProgressBar bar = progress || ProgressBar.terminalAttached() ? new ProgressBar(err) : null;
      FileEncoder.Progress p = bar == null ? null : bar::update;
      FileEncoder.Summary s;
      String kind;
      if (npy) {
        s = encodeNpy(tok, p);
        kind = "int32 .npy";
      } else {
        try (TokenFile.Writer w = TokenFile.writer(output, tok.vocabSize())) {
          try {
            s = FileEncoder.encode(tok, input, threads, (ids, n) -> w.append(ids, 0, n), p);
          } catch (IOException | RuntimeException e) {
            w.abort();
            throw e;
          }
          kind = w.width().dtypeName() + " .bin";
        }
      }
      if (bar != null) {
        bar.finish();
      }
      err.printf(Locale.ROOT, "encoded %s: %s into %,d tokens (%s) in %.2f s, %.1f MB/s on %d thread(s) -> %s%n",
          input, size(s.bytes()), s.tokens(), kind, s.seconds(), s.megabytesPerSecond(), Math.max(1, threads),
          output);
      err.flush();
      return 0;
    }

    /** Streams ids to a temporary int32 file, then writes the .npy from a mapping of it (never all ids on heap). */
    private FileEncoder.Summary encodeNpy(BpeTokenizer tok, FileEncoder.Progress p) throws IOException {
      Path abs = output.toAbsolutePath();
      Files.createDirectories(abs.getParent());
      Path tmp = Files.createTempFile(abs.getParent(), "." + abs.getFileName() + ".", ".i32");
      try {
        FileEncoder.Summary s;
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
          ByteBuffer buf = ByteBuffer.allocateDirect(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
          s = FileEncoder.encode(tok, input, threads, (ids, n) -> {
            for (int k = 0; k < n; k++) {
              if (buf.remaining() < 4) {
                drain(ch, buf);
              }
              buf.putInt(ids[k]);
            }
          }, p);
          drain(ch, buf);
        }
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(tmp, StandardOpenOption.READ)) {
          MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
          Npy.write(output, NdArray.of(Storage.wrap(seg), DType.I32, s.tokens()));
        }
        return s;
      } finally {
        Files.deleteIfExists(tmp);
      }
    }

    private static void drain(FileChannel ch, ByteBuffer buf) throws IOException {
      buf.flip();
      while (buf.hasRemaining()) {
        ch.write(buf);
      }
      buf.clear();
    }
  }

  @Command(name = "decode", description = "Print the text of a token file (.bin) or int array (.npy).")
  static final class Decode implements Callable<Integer> {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Option(names = "--tokenizer", required = true, paramLabel = "DIR",
        description = "Folder with tokenizer.json, or GPT-2 vocab.json + merges.txt.")
    Path dir;

    @Option(names = "--special-tokens", arity = "0..*", paramLabel = "TOKEN",
        description = "Special tokens (added to those tokenizer.json names).")
    List<String> specials = new ArrayList<>();

    @Option(names = "--input", required = true, paramLabel = "OUT", description = "A .bin token file or a .npy array.")
    Path input;

    @Override
    public Integer call() throws IOException {
      if (!Files.isRegularFile(input)) {
        throw new NoSuchFileException(input.toString(), null, "token file not found");
      }
      String name = input.getFileName().toString();
      BpeTokenizer tok = BpeTokenizer.load(dir, specials);
      PrintWriter out = spec.commandLine().getOut();
      BpeTokenizer.StreamDecoder dec = tok.streamDecoder(out);
      int[] buf = new int[1 << 16];
      if (name.endsWith(".bin")) {
        try (TokenFile tf = Files.exists(TokenFile.manifestOf(input))
            ? TokenFile.open(input)
            : TokenFile.open(input, TokenFile.Width.forVocabSize(tok.vocabSize()))) {
          for (long at = 0; at < tf.length(); at += buf.length) {
            int n = (int) Math.min(buf.length, tf.length() - at);
            tf.read(at, buf, 0, n);
            dec.write(buf, 0, n);
          }
        }
      } else if (name.endsWith(".npy")) {
        NdArray a = Npy.read(input);
        if (a.shape().length != 1 || (a.dtype() != DType.I32 && a.dtype() != DType.I64)) {
          throw new IllegalArgumentException(input + ": expected a 1-D int32 or int64 array of token ids, found "
              + a.dtype() + " " + java.util.Arrays.toString(a.shape()));
        }
        long n = a.shape()[0];
        for (long at = 0; at < n; at += buf.length) {
          int m = (int) Math.min(buf.length, n - at);
          for (int k = 0; k < m; k++) {
            long v = a.getLong(at + k);
            buf[k] = v < 0 || v > Integer.MAX_VALUE ? -1 : (int) v;
          }
          dec.write(buf, 0, m);
        }
      } else {
        throw new IllegalArgumentException("--input " + input + ": expected a .bin token file or a .npy array");
      }
      dec.finish();
      out.flush();
      return 0;
    }
  }
}
