package dev.kiln.runtime.cuda;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Finds a CUDA library (cuBLAS, NVRTC) to call through FFM: an environment variable naming the file wins; else each
 * name is tried with the system loader (LD_LIBRARY_PATH, ld.so cache), then in the usual CUDA install folders.
 * Failure lists everything tried and says how to point Kiln at the library.
 */
public final class NativeLibrary {
  private NativeLibrary() {}

  /** A loaded library and the file or name it came from. */
  public record Loaded(SymbolLookup lookup, String source) {}

  /**
   * Loads the first of {@code names} that exists.
   *
   * @param what a human name for messages, e.g. "cuBLAS"
   * @param envVar the override variable, e.g. {@code KILN_CUBLAS}, holding a path to the library file
   * @param names sonames in order of preference, e.g. {@code libcublas.so.13, libcublas.so.12}
   */
  public static Loaded load(String what, String envVar, List<String> names) {
    return load(what, envVar, System.getenv(envVar), names, searchFolders());
  }

  static Loaded load(String what, String envVar, String override, List<String> names, List<Path> folders) {
    List<String> tried = new ArrayList<>();
    if (override != null && !override.isBlank()) {
      try {
        Path file = Path.of(override);
        if (file.getParent() != null) {
          preloadSiblings(file.getParent(), file.getFileName().toString());
        }
        return new Loaded(SymbolLookup.libraryLookup(file, Arena.global()), override);
      } catch (IllegalArgumentException e) {
        throw new IllegalStateException(
            "cannot load " + what + " from " + envVar + "=" + override + ": " + e.getMessage()
                + "; point " + envVar + " at the library file or unset it to search " + names);
      }
    }
    for (String name : names) {
      try {
        return new Loaded(SymbolLookup.libraryLookup(name, Arena.global()), name);
      } catch (IllegalArgumentException e) {
        tried.add(name + " (system loader)");
      }
    }
    for (Path dir : folders) {
      for (String name : names) {
        Path p = dir.resolve(name);
        if (Files.isRegularFile(p)) {
          try {
            preloadSiblings(dir, name);
            return new Loaded(SymbolLookup.libraryLookup(p, Arena.global()), p.toString());
          } catch (IllegalArgumentException e) {
            tried.add(p + " (" + e.getMessage() + ")");
          }
        } else {
          tried.add(p.toString());
        }
      }
    }
    throw new IllegalStateException(
        "cannot find " + what + "; tried " + String.join(", ", tried) + ". Install the CUDA toolkit libraries or set "
            + envVar + "=/path/to/" + names.getFirst());
  }

  /**
   * cuBLAS needs cuBLASLt of the same version and NVRTC loads its builtins library; loading those first from the
   * same folder satisfies the dependency even when that folder is not on the loader's path.
   */
  private static void preloadSiblings(Path dir, String name) {
    int so = name.lastIndexOf(".so");
    if (so < 0) {
      return;
    }
    String major = name.length() > so + 4 ? name.substring(so + 4) : "";
    List<String> siblings = new ArrayList<>();
    if (name.startsWith("libcublas.")) {
      siblings.add("libcublasLt.so." + major);
    }
    if (name.startsWith("libnvrtc.")) {
      try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "libnvrtc-builtins.so." + major + "*")) {
        for (Path p : ds) {
          siblings.add(p.getFileName().toString());
        }
      } catch (IOException e) {
        // No builtins beside it: NVRTC reports that itself when it compiles.
      }
    }
    for (String s : siblings) {
      Path p = dir.resolve(s);
      if (Files.isRegularFile(p)) {
        try {
          SymbolLookup.libraryLookup(p, Arena.global());
        } catch (IllegalArgumentException e) {
          // Best effort: the main library's own error is the one worth reporting.
        }
      }
    }
  }

  /** $CUDA_HOME, $CUDA_PATH, /usr/local/cuda and every /usr/local/cuda-* install, newest first. */
  static List<Path> searchFolders() {
    Set<Path> out = new LinkedHashSet<>();
    for (String env : new String[] {"CUDA_HOME", "CUDA_PATH"}) {
      String v = System.getenv(env);
      if (v != null && !v.isBlank()) {
        out.add(Path.of(v, "lib64"));
        out.add(Path.of(v, "targets", "x86_64-linux", "lib"));
      }
    }
    out.add(Path.of("/usr/local/cuda/lib64"));
    out.add(Path.of("/usr/local/cuda/targets/x86_64-linux/lib"));
    List<Path> versioned = new ArrayList<>();
    try (DirectoryStream<Path> ds = Files.newDirectoryStream(Path.of("/usr/local"), "cuda-*")) {
      ds.forEach(versioned::add);
    } catch (IOException e) {
      // No /usr/local: nothing to add.
    }
    versioned.sort((a, b) -> b.getFileName().toString().compareTo(a.getFileName().toString()));
    for (Path v : versioned) {
      out.add(v.resolve("targets/x86_64-linux/lib"));
      out.add(v.resolve("lib64"));
    }
    out.add(Path.of("/usr/lib/x86_64-linux-gnu"));
    return List.copyOf(out);
  }
}
