package dev.kiln.cli;

import dev.kiln.runtime.cuda.CudaProbe;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import picocli.CommandLine.Command;

/**
 * {@code kiln doctor}: what Kiln will run on. Reports, never fails: a missing GPU or a missing JVM flag is a line
 * of advice, not an error, because the CPU path works everywhere.
 */
@Command(name = "doctor", description = "Print Java, CPU, OpenBLAS and GPU facts Kiln depends on.")
public final class DoctorCommand implements Runnable {
  /** CPU flags that decide which kernels are fast, in the order people look for them. */
  private static final List<String> INTERESTING_FLAGS =
      List.of("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
          "avx512_fp16", "amx_bf16", "amx_tile", "asimd", "sve");

  @Override
  public void run() {
    PrintStream out = System.out;
    out.println("Java");
    out.println("  version        " + Runtime.version() + " (" + System.getProperty("java.vendor") + ")");
    out.println("  home           " + System.getProperty("java.home"));
    out.println("  heap max       " + mib(Runtime.getRuntime().maxMemory()));
    List<String> args = ManagementFactory.getRuntimeMXBean().getInputArguments();
    boolean nativeAccess = args.stream().anyMatch(a -> a.startsWith("--enable-native-access"));
    boolean vector = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
    out.println("  native access  " + (nativeAccess ? "enabled" : "not enabled (start through bin/kiln, which adds --enable-native-access=ALL-UNNAMED)"));
    out.println("  Vector API     " + (vector ? "present (" + vectorBits() + "-bit preferred float vectors)"
        : "absent: CPU kernels use plain loops (bin/kiln adds --add-modules jdk.incubator.vector)"));

    out.println("CPU");
    out.println("  model          " + cpuModel());
    out.println("  cores          " + Runtime.getRuntime().availableProcessors() + " available to the JVM");
    out.println("  features       " + String.join(" ", cpuFlags()));
    out.println("  arch           " + System.getProperty("os.arch") + ", " + System.getProperty("os.name") + " "
        + System.getProperty("os.version"));

    out.println("OpenBLAS");
    OpenBlasInfo.print(out);

    out.println("GPU");
    CudaProbe.Report gpu = CudaProbe.probe();
    if (!gpu.available()) {
      out.println("  none           " + gpu.problem() + " (the CPU backend is used)");
    } else {
      out.println("  driver         CUDA " + gpu.driverVersionString());
      for (CudaProbe.Device d : gpu.devices()) {
        out.printf("  device %d       %s, compute capability %s, %s, %d SMs%n", d.ordinal(), d.name(),
            d.computeCapability(), mib(d.totalMemoryBytes()), d.multiprocessors());
      }
    }
  }

  private static String vectorBits() {
    // Reflection keeps this class loadable when the incubator module is absent.
    try {
      Class<?> fv = Class.forName("jdk.incubator.vector.FloatVector");
      Object species = fv.getField("SPECIES_PREFERRED").get(null);
      return String.valueOf(
          Class.forName("jdk.incubator.vector.VectorSpecies").getMethod("vectorBitSize").invoke(species));
    } catch (ReflectiveOperationException | LinkageError e) {
      return "?";
    }
  }

  private static String mib(long bytes) {
    return String.format("%,d MiB", bytes >> 20);
  }

  private static List<String> cpuInfoLines() {
    try {
      return Files.readAllLines(Path.of("/proc/cpuinfo"));
    } catch (IOException | SecurityException e) {
      return List.of();
    }
  }

  private static String cpuModel() {
    for (String line : cpuInfoLines()) {
      if (line.startsWith("model name")) {
        return line.substring(line.indexOf(':') + 1).trim();
      }
    }
    return "unknown (no /proc/cpuinfo)";
  }

  private static List<String> cpuFlags() {
    Set<String> have = new LinkedHashSet<>();
    for (String line : cpuInfoLines()) {
      if (line.startsWith("flags") || line.startsWith("Features")) {
        for (String f : line.substring(line.indexOf(':') + 1).trim().split("\\s+")) {
          have.add(f);
        }
        break;
      }
    }
    List<String> shown = new ArrayList<>();
    for (String f : INTERESTING_FLAGS) {
      if (have.contains(f)) {
        shown.add(f);
      }
    }
    if (shown.isEmpty()) {
      shown.add("unknown");
    }
    return shown;
  }
}
