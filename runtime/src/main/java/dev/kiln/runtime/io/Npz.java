package dev.kiln.runtime.io;

import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Path;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.CheckedOutputStream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipException;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;

/**
 * numpy's {@code .npz}: a zip archive of {@code .npy} entries, as {@code np.savez} (stored) and
 * {@code np.savez_compressed} (deflated) write it. Entry {@code name.npy} is array {@code name}.
 *
 * <p>Reading copies each entry into off-heap memory (deflated entries cannot be mapped); writing stores entries
 * uncompressed, streaming each array twice (once for the CRC the stored method needs up front, once to write),
 * never holding a heap copy of it.
 */
public final class Npz {
  private Npz() {}

  /** All arrays in archive order, keyed by entry name without {@code .npy}. */
  public static Map<String, NdArray> read(Path file) throws IOException {
    Map<String, NdArray> out = new LinkedHashMap<>();
    ZipFile zip;
    try {
      zip = new ZipFile(file.toFile());
    } catch (ZipException e) {
      throw new NpyException(file + ": not a valid .npz (zip) archive: " + e.getMessage(), e);
    }
    try (zip) {
      Enumeration<? extends ZipEntry> entries = zip.entries();
      while (entries.hasMoreElements()) {
        ZipEntry e = entries.nextElement();
        if (e.isDirectory()) {
          continue;
        }
        String name = e.getName();
        if (!name.endsWith(".npy")) {
          throw new NpyException(file + ": entry \"" + name + "\" is not a .npy array");
        }
        String key = name.substring(0, name.length() - 4);
        if (out.containsKey(key)) {
          throw new NpyException(file + ": archive holds entry \"" + name + "\" twice");
        }
        // The zip reader does not check CRCs, so a flipped bit in a stored entry would pass unnoticed.
        try (java.util.zip.CheckedInputStream in =
            new java.util.zip.CheckedInputStream(zip.getInputStream(e), new CRC32())) {
          NdArray a = Npy.read(in, e.getSize(), file + "!" + name);
          if (e.getCrc() != -1 && in.getChecksum().getValue() != e.getCrc()) {
            throw new NpyException(file + ": entry \"" + name + "\" fails its CRC check (corrupt archive)");
          }
          out.put(key, a);
        } catch (ZipException ze) {
          throw new NpyException(file + ": entry \"" + name + "\" is corrupt: " + ze.getMessage(), ze);
        }
      }
    } catch (ZipException ze) {
      throw new NpyException(file + ": corrupt .npz archive: " + ze.getMessage(), ze);
    }
    return out;
  }

  /** Writes the arrays as stored {@code name.npy} entries, in iteration order, atomically. */
  public static void write(Path file, Map<String, NdArray> arrays) throws IOException {
    Map<String, byte[]> headers = new LinkedHashMap<>();
    for (Map.Entry<String, NdArray> e : arrays.entrySet()) {
      if (e.getKey() == null || e.getKey().isEmpty()) {
        throw new NpyException("cannot write " + file + ": an array has an empty name");
      }
      headers.put(e.getKey(), Npy.header(e.getValue(), file + "!" + e.getKey() + ".npy"));
    }
    AtomicFiles.write(file, raw -> {
      ZipOutputStream zip = new ZipOutputStream(raw);
      for (Map.Entry<String, NdArray> e : arrays.entrySet()) {
        byte[] header = headers.get(e.getKey());
        CRC32 crc = new CRC32();
        Npy.writeTo(new CheckedOutputStream(OutputStream.nullOutputStream(), crc), e.getValue(), header);
        ZipEntry entry = new ZipEntry(e.getKey() + ".npy");
        entry.setMethod(ZipEntry.STORED);
        long size = header.length + e.getValue().byteSize();
        entry.setSize(size);
        entry.setCompressedSize(size);
        entry.setCrc(crc.getValue());
        zip.putNextEntry(entry);
        Npy.writeTo(zip, e.getValue(), header);
        zip.closeEntry();
      }
      zip.finish();
    });
  }
}
