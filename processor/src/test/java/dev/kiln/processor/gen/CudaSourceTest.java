package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The CUDA C twin of every fused kernel: each module's {@code .cu} holds an {@code extern "C"} {@code _f32} and
 * {@code _f64} function per kernel of its Java kernels class, and compiles with {@code nvcc} for sm_90 without a
 * warning when {@code nvcc} is on the PATH (running the kernels is the CUDA device's test, on a GPU).
 */
class CudaSourceTest {
  private static final List<String> WITH_KERNELS = List.of("cs336.RmsNorm", "cs336.SwiGlu", "cs336.Mlp", "prims.Pointwise", "prims.Einops");

  @Test
  void everyJavaKernelHasCudaTwins() {
    Generated g = Generated.cs336();
    for (String m : WITH_KERNELS) {
      String cu = g.resource("META-INF/kiln/cuda/" + m + ".cu");
      String java = g.source("Compiled" + m.substring(m.indexOf('.') + 1) + "Kernels.java");
      int kernels = 0;
      int bf16Variants = 0;
      int warpRowForms = 0;
      for (String line : java.split("\n")) {
        String t = line.strip();
        if (t.startsWith("public static void ")) {
          String name = t.substring("public static void ".length(), t.indexOf('('));
          assertTrue(cu.contains("extern \"C\" __global__ void " + name + "_f32("), m + " lacks " + name + "_f32");
          assertTrue(cu.contains("extern \"C\" __global__ void " + name + "_f64("), m + " lacks " + name + "_f64");
          kernels++;
          // A kernel with outputs only GEMMs read (marked in its comment; a result, when the caller's GEMMs alone
          // read it) also has the variant storing them in bf16.
          String comment = cu.substring(cu.indexOf("// Kernel " + name + " "));
          comment = comment.substring(0, comment.indexOf("template <"));
          boolean marked = comment.contains("(only GEMMs read it") || comment.contains("(the result: bf16");
          assertEquals(marked, cu.contains("extern \"C\" __global__ void " + name + "_f32_bf16("),
              m + ": " + name + "_f32_bf16 exactly when an output is marked as read only by GEMMs");
          // An input that may be a GEMM output kept in bf16 (marked too): the variants reading it so.
          boolean in16 = comment.contains("(a GEMM output: may come in bf16");
          assertEquals(in16, cu.contains("extern \"C\" __global__ void " + name + "_f32_in16("),
              m + ": " + name + "_f32_in16 exactly when an input is marked as a GEMM output");
          assertEquals(in16 && marked, cu.contains("extern \"C\" __global__ void " + name + "_f32_bf16_in16("),
              m + ": " + name + "_f32_bf16_in16 exactly when both are marked");
          int floatVariants = 1 + (marked ? 1 : 0) + (in16 ? 1 : 0) + (in16 && marked ? 1 : 0);
          bf16Variants += floatVariants - 1;
          // A row kernel (one with a reduction: "one row at a time") also has its warp-row form for each span, in
          // every variant but f64.
          boolean rowKernel = comment.contains("(one row at a time)");
          // A row kernel without GEMM-only outputs whose one full output is not a column sum also writes that
          // output's bf16 copy in its _tw variants (Kernel.twinOutput): f32 and, with in16, f32_in16, each with its
          // warp-row forms.
          long fullOutputs = comment.lines().filter(l -> l.matches("//   t\\d+ out full .*")
              && !l.contains("(summed over runs of rows")).count();
          boolean twin = rowKernel && !marked && fullOutputs == 1;
          assertEquals(twin, cu.contains("extern \"C\" __global__ void " + name + "_f32_tw("),
              m + ": " + name + "_f32_tw exactly for a row kernel with one full output and no GEMM-only ones");
          int twinVariants = twin ? 1 + (in16 ? 1 : 0) : 0;
          bf16Variants += twinVariants;
          // ... and its block-row form for each of those spans.
          List<String> forms = new ArrayList<>();
          for (int span : dev.kiln.processor.emit.cuda.CudaEmitter.WARP_ROW_SPANS) {
            forms.add("_w" + span);
          }
          for (int span : dev.kiln.processor.emit.cuda.CudaEmitter.BLOCK_ROW_SPANS) {
            forms.add("_b" + span);
          }
          for (String form : forms) {
            assertEquals(rowKernel, cu.contains("extern \"C\" __global__ void " + name + form + "_f32("),
                m + ": " + name + form + "_f32 exactly for a row kernel");
            assertEquals(twin, cu.contains("extern \"C\" __global__ void " + name + form + "_f32_tw("),
                m + ": " + name + form + "_f32_tw exactly with the twin variants");
            assertTrue(!cu.contains(name + form + "_f64("), m + ": no f64 " + form + " form of " + name);
            warpRowForms += rowKernel ? floatVariants + twinVariants : 0;
          }
        }
      }
      assertTrue(kernels > 0, m + " has no kernels");
      assertEquals(2 * kernels + bf16Variants + warpRowForms, cu.split("extern \"C\" __global__", -1).length - 1,
          m + ": one f32 and one f64 per kernel, f32_bf16 where an output is read only by GEMMs, f32_in16 where an"
              + " input may be a bf16 GEMM output, f32_bf16_in16 where both, _tw where a row kernel's one full output"
              + " has a bf16 twin, and the warp-row and block-row forms of row kernels");
      assertTrue(cu.contains("+=") && cu.contains("Conventions"), "the header states the conventions");
    }
  }

  /**
   * Each generated module says its kernels wait for the grid before them ({@code kiln_waits_at_entry}), and each
   * kernel does so before it touches memory: the runtime launches them programmatically (docs/cuda.md).
   */
  @Test
  void everyKernelWaitsForTheGridBeforeIt() {
    Generated g = Generated.cs336();
    for (String m : WITH_KERNELS) {
      String cu = g.resource("META-INF/kiln/cuda/" + m + ".cu");
      assertTrue(cu.contains("extern \"C\" __device__ int kiln_waits_at_entry = 1;"), m + " defines the marker");
      assertEquals(List.of(), dev.kiln.runtime.cuda.KernelEntries.withoutWait(cu), m);
    }
  }

  @Test
  void compilesWithNvcc() throws IOException, InterruptedException {
    Path nvcc = null;
    for (String dir : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator)) {
      Path p = Path.of(dir, "nvcc");
      if (Files.isExecutable(p)) {
        nvcc = p;
        break;
      }
    }
    Assumptions.assumeTrue(nvcc != null, "nvcc is not on the PATH: the CUDA C is checked for its kernels only");
    Generated g = Generated.cs336();
    Path dir = Files.createTempDirectory("kiln-cu");
    // Two modules (a row kernel with reductions, and pointwise kernels with every expression) keep the test short;
    // the emitter writes all modules with the same code.
    for (String m : List.of("cs336.RmsNorm", "prims.Pointwise")) {
      Path src = dir.resolve(m + ".cu");
      Files.writeString(src, g.resource("META-INF/kiln/cuda/" + m + ".cu"));
      List<String> cmd = new ArrayList<>(List.of(nvcc.toString(), "-arch=sm_90", "-Werror", "all-warnings", "-c",
          "-o", dir.resolve(m + ".o").toString(), src.toString()));
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
      String out = new String(p.getInputStream().readAllBytes());
      assertTrue(p.waitFor(120, TimeUnit.SECONDS), "nvcc timed out");
      assertEquals(0, p.exitValue(), m + ":\n" + out);
    }
  }
}
