package dev.kiln.runtime.io;

import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A tokenized corpus as CS336 and nanoGPT store it: a flat array of little-endian token ids, {@code uint16} when the
 * vocabulary has at most 65,536 ids and {@code uint32} above, with no header, memory-mapped so any size (past 2^31
 * tokens) reads in place.
 *
 * <p>Because a raw {@code .bin} cannot say its own width, Kiln writes a sidecar manifest next to it,
 * {@code <name>.bin.json} = {@code {"dtype": "uint16", "count": N, "vocab_size": V}}, and checks it on open. A
 * {@code .bin} from elsewhere opens with {@link #open(Path, Width)}.
 */
public final class TokenFile implements AutoCloseable {
  /** Bytes per token id on disk. */
  public enum Width {
    UINT16(2, "uint16"),
    UINT32(4, "uint32");

    private final int bytes;
    private final String dtype;

    Width(int bytes, String dtype) {
      this.bytes = bytes;
      this.dtype = dtype;
    }

    public int bytes() {
      return bytes;
    }

    /** The numpy dtype name used in the manifest. */
    public String dtypeName() {
      return dtype;
    }

    /** uint16 up to 65,536 ids (0..65535), uint32 above. */
    public static Width forVocabSize(long vocabSize) {
      return vocabSize <= 65_536 ? UINT16 : UINT32;
    }
  }

  private final Path path;
  private final Width width;
  private final long length;
  private final long vocabSize;
  private final Arena arena;
  private final MemorySegment data;

  private TokenFile(Path path, Width width, long vocabSize, Arena arena, MemorySegment data) {
    this.path = path;
    this.width = width;
    this.vocabSize = vocabSize;
    this.arena = arena;
    this.data = data;
    this.length = data.byteSize() / width.bytes;
  }

  /** The manifest path for a token file: {@code <name>.bin.json} next to {@code <name>.bin}. */
  public static Path manifestOf(Path tokens) {
    return tokens.resolveSibling(tokens.getFileName() + ".json");
  }

  /** Opens a token file through its manifest; without one, use {@link #open(Path, Width)}. */
  public static TokenFile open(Path path) throws IOException {
    Path manifest = manifestOf(path);
    if (!Files.isRegularFile(manifest)) {
      throw new IOException(
          "token file " + path + " has no manifest " + manifest.getFileName() + ", so its width is unknown; open it"
              + " with TokenFile.open(path, Width.UINT16) (nanoGPT/CS336 .bin files for vocabularies up to 65,536)"
              + " or Width.UINT32");
    }
    return open(path, null);
  }

  /**
   * Opens a token file of the given width. When a manifest exists it must agree (width and count); {@code width}
   * may be null only when it does.
   */
  public static TokenFile open(Path path, Width width) throws IOException {
    Path manifest = manifestOf(path);
    long count = -1;
    long vocab = -1;
    if (Files.isRegularFile(manifest)) {
      Map<String, Object> m;
      try {
        m = Json.parseObject(Files.readString(manifest));
      } catch (Json.ParseException e) {
        throw new IOException("token manifest " + manifest + " is not valid JSON: " + e.getMessage(), e);
      }
      Width declared = null;
      for (Width w : Width.values()) {
        if (w.dtype.equals(m.get("dtype"))) {
          declared = w;
        }
      }
      if (declared == null) {
        throw new IOException(
            "token manifest " + manifest + " has dtype " + m.get("dtype") + "; expected \"uint16\" or \"uint32\"");
      }
      if (width != null && width != declared) {
        throw new IOException(
            "token file " + path + " was opened as " + width.dtype + " but its manifest says " + declared.dtype);
      }
      width = declared;
      if (!(m.get("count") instanceof Long c) || c < 0) {
        throw new IOException("token manifest " + manifest + " has no valid \"count\"");
      }
      count = c;
      if (m.get("vocab_size") instanceof Long v && v > 0) {
        vocab = v;
      }
    } else if (width == null) {
      throw new IOException("token file " + path + ": no manifest and no width given");
    }
    Arena arena = Arena.ofShared();
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      long size = ch.size();
      if (size % width.bytes != 0) {
        throw new IOException(
            "token file " + path + " is " + size + " bytes, not a whole number of " + width.dtype + " ids (wrong width,"
                + " or a truncated write)");
      }
      if (count >= 0 && size / width.bytes != count) {
        throw new IOException(
            "token file " + path + " holds " + size / width.bytes + " ids but its manifest says " + count
                + " (the two were written separately; re-write the file or delete the stale manifest)");
      }
      MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
      return new TokenFile(path, width, vocab, arena, seg);
    } catch (IOException | RuntimeException e) {
      arena.close();
      throw e;
    }
  }

  public Path path() {
    return path;
  }

  public Width width() {
    return width;
  }

  /** The vocabulary size from the manifest, or -1 when unknown. */
  public long vocabSize() {
    return vocabSize;
  }

  /** Number of token ids. */
  public long length() {
    return length;
  }

  /** Token id {@code i} (uint32 ids above 2^31-1 come back negative; Kiln's writer never produces them). */
  public int get(long i) {
    if (i < 0 || i >= length) {
      throw new IndexOutOfBoundsException("token index " + i + " out of range [0, " + length + ") of " + path);
    }
    return width == Width.UINT16
        ? Short.toUnsignedInt(data.get(Layouts.I16, i * 2))
        : data.get(Layouts.I32, i * 4);
  }

  /** Reads {@code dst.length} ids starting at token {@code start}. */
  public void read(long start, int[] dst) {
    read(start, dst, 0, dst.length);
  }

  /** Reads {@code len} ids starting at token {@code start} into {@code dst[off..off+len)}. */
  public void read(long start, int[] dst, int off, int len) {
    if (start < 0 || len < 0 || start > length - len) {
      throw new IndexOutOfBoundsException(
          "tokens [" + start + ", " + (start + len) + ") out of range [0, " + length + ") of " + path);
    }
    if (width == Width.UINT32) {
      MemorySegment.copy(data, Layouts.I32, start * 4, dst, off, len);
      return;
    }
    long at = start * 2;
    for (int k = 0; k < len; k++, at += 2) {
      dst[off + k] = Short.toUnsignedInt(data.get(Layouts.I16, at));
    }
  }

  /**
   * Tokens {@code [start, start+len)} widened to a new I32 array. This always <b>copies</b> (uint16 ids must be
   * widened, and a copy also outlives {@link #close()}); use {@link #get}/{@link #read} to stay zero-copy.
   */
  public NdArray slice(long start, int len) {
    int[] ids = new int[len];
    read(start, ids);
    return NdArray.fromInts(ids);
  }

  /** Unmaps the file. */
  @Override
  public void close() {
    if (arena.scope().isAlive()) {
      arena.close();
    }
  }

  // ---------------------------------------------------------------- writing

  /** A streaming writer for a new token file; see {@link Writer}. */
  public static Writer writer(Path path, long vocabSize) throws IOException {
    return new Writer(path, vocabSize);
  }

  /**
   * Appends token ids to a temporary file next to the target; {@link #close()} forces it to disk, renames it over
   * the target and writes the manifest. If an append was refused (an id outside the vocabulary), close discards the
   * temporary file and leaves any existing target untouched; call {@link #abort()} yourself to discard after other
   * failures.
   */
  public static final class Writer implements AutoCloseable {
    private static final int BUFFER_BYTES = 1 << 20;
    private final Path target;
    private final Path tmp;
    private final long vocabSize;
    private final Width width;
    private final FileChannel ch;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(BUFFER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private long count;
    private boolean failed;
    private boolean closed;

    private Writer(Path target, long vocabSize) throws IOException {
      // Ids travel as Java ints, so 2^31 ids is the ceiling even though uint32 could hold more.
      if (vocabSize <= 0 || vocabSize > (1L << 31)) {
        throw new IllegalArgumentException("vocabulary size " + vocabSize + " must be in [1, 2^31]");
      }
      this.target = target.toAbsolutePath();
      this.vocabSize = vocabSize;
      this.width = Width.forVocabSize(vocabSize);
      Files.createDirectories(this.target.getParent());
      this.tmp = Files.createTempFile(this.target.getParent(), "." + this.target.getFileName() + ".", ".tmp");
      this.ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
    }

    public Width width() {
      return width;
    }

    /** Ids appended so far. */
    public long count() {
      return count;
    }

    public void append(int id) throws IOException {
      append(new int[] {id}, 0, 1);
    }

    public void append(int[] ids) throws IOException {
      append(ids, 0, ids.length);
    }

    /** Appends {@code ids[off..off+len)}; the whole batch is checked before any of it is written. */
    public void append(int[] ids, int off, int len) throws IOException {
      if (closed) {
        throw new IllegalStateException("token writer for " + target + " is closed");
      }
      for (int k = 0; k < len; k++) {
        long id = Integer.toUnsignedLong(ids[off + k]);
        if (ids[off + k] < 0 || id >= vocabSize) {
          failed = true;
          throw new IllegalArgumentException(
              "token id " + ids[off + k] + " at position " + (count + k) + " of " + target + " is outside the vocabulary"
                  + " [0, " + vocabSize + ")" + (width == Width.UINT16 && id >= 65_536 ? " and does not fit uint16" : ""));
        }
      }
      for (int k = 0; k < len; k++) {
        if (buf.remaining() < width.bytes) {
          flush();
        }
        if (width == Width.UINT16) {
          buf.putShort((short) ids[off + k]);
        } else {
          buf.putInt(ids[off + k]);
        }
      }
      count += len;
    }

    private void flush() throws IOException {
      buf.flip();
      while (buf.hasRemaining()) {
        ch.write(buf);
      }
      buf.clear();
    }

    /** Discards everything written; the target is untouched. */
    public void abort() throws IOException {
      if (!closed) {
        closed = true;
        ch.close();
        Files.deleteIfExists(tmp);
      }
    }

    /** Commits: the token file, then its manifest, each appearing atomically. */
    @Override
    public void close() throws IOException {
      if (closed) {
        return;
      }
      if (failed) {
        abort();
        return;
      }
      boolean done = false;
      try {
        flush();
        ch.force(true);
        ch.close();
        closed = true;
        try {
          Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
          Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        }
        Map<String, Object> manifest = new LinkedHashMap<>();
        manifest.put("dtype", width.dtype);
        manifest.put("count", count);
        manifest.put("vocab_size", vocabSize);
        AtomicFiles.writeString(manifestOf(target), Json.writePretty(manifest));
        done = true;
      } finally {
        if (!done) {
          closed = true;
          ch.close();
          Files.deleteIfExists(tmp);
        }
      }
    }
  }
}
