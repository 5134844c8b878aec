package dev.kiln.runtime.tokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Iterator;

/**
 * Cuts a stream of UTF-8 text into chunks of about {@code chunkBytes} at cuts that {@link ChunkBoundaries} proves
 * safe, so each chunk can be encoded (or its pre-tokens counted) on its own, in any thread, with exactly the result of
 * processing the whole text. Holds at most one chunk plus look-ahead; a stretch with no safe cut (a giant whitespace
 * run) grows the buffer until the cut or the end of input.
 */
public final class TextChunker {
  /** Where the bytes come from. */
  @FunctionalInterface
  public interface Source {
    /** Reads up to {@code len} bytes into {@code dst[off..]}; returns the count, or -1 at the end of input. */
    int read(byte[] dst, int off, int len) throws IOException;
  }

  private final Source source;
  private final SpecialTokens specials;
  private final int chunkBytes;
  private byte[] buf;
  private int len;
  private boolean eof;
  private long consumed;

  public TextChunker(Source source, SpecialTokens specials, int chunkBytes) {
    if (chunkBytes < 16) {
      throw new IllegalArgumentException("chunk size must be at least 16 bytes, got " + chunkBytes);
    }
    this.source = source;
    this.specials = specials;
    this.chunkBytes = chunkBytes;
    this.buf = new byte[chunkBytes + Math.max(4096, chunkBytes / 4)];
  }

  /** A source reading a channel (a file), in the channel's own chunks. */
  public static Source of(ReadableByteChannel ch) {
    return (dst, off, n) -> ch.read(ByteBuffer.wrap(dst, off, n));
  }

  /** A source over strings (lines of a file, say), joined as they come, without separators. */
  public static Source of(Iterator<String> strings) {
    return new Source() {
      private byte[] pending = new byte[0];
      private int at;

      @Override
      public int read(byte[] dst, int off, int n) {
        while (at == pending.length) {
          if (!strings.hasNext()) {
            return -1;
          }
          pending = strings.next().getBytes(StandardCharsets.UTF_8);
          at = 0;
        }
        int k = Math.min(n, pending.length - at);
        System.arraycopy(pending, at, dst, off, k);
        at += k;
        return k;
      }
    };
  }

  /** Bytes handed out so far. */
  public long consumed() {
    return consumed;
  }

  /** The next chunk (a fresh array the caller owns), or null at the end of input. */
  public byte[] next() {
    try {
      int searchFrom = chunkBytes;
      while (true) {
        fill(searchFrom + buf.length / 4);
        if (len == 0 && eof) {
          return null;
        }
        if (len <= chunkBytes && eof) {
          return take(len);
        }
        int cut = ChunkBoundaries.findCut(buf, 0, len, Math.min(chunkBytes, len), specials, chunkBytes / 2);
        if (cut > 0) {
          return take(cut);
        }
        if (eof) {
          return take(len);
        }
        // No provably safe cut in what we hold: read more and look again.
        if (len == buf.length) {
          buf = Arrays.copyOf(buf, buf.length * 2);
        }
        searchFrom = len;
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private void fill(int want) throws IOException {
    want = Math.min(want, buf.length);
    while (!eof && len < want) {
      int r = source.read(buf, len, buf.length - len);
      if (r < 0) {
        eof = true;
      } else if (r == 0) {
        Thread.onSpinWait();
      } else {
        len += r;
      }
    }
  }

  private byte[] take(int n) {
    byte[] out = Arrays.copyOf(buf, n);
    System.arraycopy(buf, n, buf, 0, len - n);
    len -= n;
    consumed += n;
    return out;
  }
}
