package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The attention launch table ({@link FlashAttention.Tuning}) against the kernels flash_attention.cu compiles. The
 * host sizes grids and shared memory from a variant's name, so a name whose warps, rows per warp or tile differ from
 * the kernel's template arguments would launch it wrongly; no GPU is needed to catch that, so this runs in CI.
 */
class FlashAttentionTuningTest {
  /**
   * {@code {warps, m-tiles per warp, tile}} of each compiled variant, keyed by {@code fwd|bwd d<d> <variant>} (a
   * KILN_BWD line declares the dK/dV and the dQ kernel of a variant together).
   */
  private static Map<String, int[]> compiledKernels() throws IOException {
    Pattern line = Pattern.compile(
        "^KILN_(FWD|BWD)\\(d(\\d+)_(\\w+), (\\d+), (\\d+), (\\d+), (\\d+),",
        Pattern.MULTILINE);
    Map<String, int[]> kernels = new HashMap<>();
    Matcher m = line.matcher(source("flash_attention.cu"));
    while (m.find()) {
      assertEquals(m.group(2), m.group(4), "head dim in the name and the template of " + m.group());
      kernels.put(m.group(1).toLowerCase() + " d" + m.group(2) + " " + m.group(3),
          new int[] {Integer.parseInt(m.group(5)), Integer.parseInt(m.group(6)), Integer.parseInt(m.group(7))});
    }
    assertTrue(kernels.size() > 20, "parsed only " + kernels.size() + " variant lines from flash_attention.cu");
    // Whole-head lines: KILN_FWD_HEAD(d<d>_<variant>, D, warps, rows, bounds), one 16-row tile a warp at a time, and
    // KILN_FWD_SLAB (the same with q from global memory).
    Matcher h = Pattern.compile("^KILN_(FWD|BWD)_(?:HEAD|SLAB)\\(d(\\d+)_(\\w+), (\\d+), (\\d+), (\\d+),",
        Pattern.MULTILINE)
        .matcher(source("flash_attention.cu"));
    int heads = 0;
    while (h.find()) {
      assertEquals(h.group(2), h.group(4), "head dim in the name and the template of " + h.group());
      kernels.put(h.group(1).toLowerCase() + " d" + h.group(2) + " " + h.group(3),
          new int[] {Integer.parseInt(h.group(5)), 1, Integer.parseInt(h.group(6))});
      heads++;
    }
    assertTrue(heads >= 2, "parsed only " + heads + " whole-head lines from flash_attention.cu");
    // flash_attention_sm90a.cu, 16 rows a warp: KILN_FWD_WGP(d<d>_<variant>, D, warpgroups, key tile, min blocks)
    // and KILN_BWD_WG(d<d>_<variant>, D, warpgroups, tile) (a dK/dV and a dQ kernel).
    String hopperSource = source("flash_attention_sm90a.cu");
    int hopper = warpgroupLines(hopperSource, "KILN_FWD_WGP", "fwd", kernels)
        + warpgroupLines(hopperSource, "KILN_BWD_WG", "bwd", kernels);
    assertTrue(hopper >= 8, "parsed only " + hopper + " variant lines from flash_attention_sm90a.cu");
    return kernels;
  }

  /**
   * The {@code macro(d<d>_<variant>, D, warpgroups, tile[, ...])} lines of {@code src} into {@code kernels} as
   * {@code {4 · warpgroups warps, 1 m-tile a warp, tile}}; returns how many there were.
   */
  private static int warpgroupLines(String src, String macro, String pass, Map<String, int[]> kernels) {
    Matcher w = Pattern.compile("^" + macro + "\\(d(\\d+)_(\\w+), (\\d+), (\\d+), (\\d+)(, \\d+)*\\)",
        Pattern.MULTILINE).matcher(src);
    int count = 0;
    while (w.find()) {
      assertEquals(w.group(1), w.group(3), "head dim in the name and the template of " + w.group());
      kernels.put(pass + " d" + w.group(1) + " " + w.group(2),
          new int[] {4 * Integer.parseInt(w.group(4)), 1, Integer.parseInt(w.group(5))});
      count++;
    }
    return count;
  }

  private static String source(String file) throws IOException {
    String path = "/dev/kiln/runtime/cuda/kernels/" + file;
    try (InputStream in = FlashAttentionTuningTest.class.getResourceAsStream(path)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  @Test
  void everyListedVariantIsCompiledWithTheShapeTheHostAssumes() throws IOException {
    Map<String, int[]> kernels = compiledKernels();
    FlashAttention.Tuning.FORWARD_VARIANTS.forEach((d, variants) -> {
      for (String v : variants) {
        int[] k = kernels.get("fwd d" + d + " " + v);
        assertTrue(k != null, "forward d" + d + " " + v + " is listed but not compiled");
        assertEquals(FlashAttention.Tuning.warps(v), k[0], "warps of forward d" + d + " " + v);
        assertEquals(FlashAttention.Tuning.rowsPerWarp(v), 16 * k[1], "rows per warp of forward d" + d + " " + v);
        int rows = FlashAttention.Tuning.wholeHeadRows(v);
        assertEquals(rows > 0 ? rows : FlashAttention.Tuning.forwardKeyTile(v), k[2],
            (rows > 0 ? "rows of whole-head forward d" : "key tile of forward d") + d + " " + v);
      }
    });
    FlashAttention.Tuning.BACKWARD_VARIANTS.forEach((d, variants) -> {
      for (String v : variants) {
        int[] k = kernels.get("bwd d" + d + " " + v);
        assertTrue(k != null, "backward d" + d + " " + v + " is listed but not compiled");
        assertEquals(FlashAttention.Tuning.warps(v), k[0], "warps of backward d" + d + " " + v);
        assertEquals(FlashAttention.Tuning.rowsPerWarp(v), 16 * k[1], "rows per warp of backward d" + d + " " + v);
        int rows = FlashAttention.Tuning.wholeHeadRows(v);
        assertEquals(rows > 0 ? rows : FlashAttention.Tuning.backwardTile(d, v), k[2],
            (rows > 0 ? "rows of whole-head backward d" : "tile of backward d") + d + " " + v);
      }
    });
    // And the other way: a compiled kernel nobody can select is dead code.
    for (String key : kernels.keySet()) {
      String[] p = key.split(" ");
      int d = Integer.parseInt(p[1].substring(1));
      List<String> listed = (p[0].equals("fwd") ? FlashAttention.Tuning.FORWARD_VARIANTS
          : FlashAttention.Tuning.BACKWARD_VARIANTS).get(d);
      assertTrue(listed != null && listed.contains(p[2]), key + " is compiled but not listed in Tuning");
    }
  }

  @Test
  void environmentOverridesAreAppliedAndBadOnesNamed() {
    FlashAttention.Tuning t = FlashAttention.Tuning.DEFAULT.with("bwd64=w4wg, fwd128=w8wgp");
    assertEquals("w4wg", t.backward().get(64));
    assertEquals("w8wgp", t.forward().get(128));
    assertEquals(FlashAttention.Tuning.DEFAULT.forward().get(64), t.forward().get(64));
    assertEquals(FlashAttention.Tuning.DEFAULT, FlashAttention.Tuning.DEFAULT.with(" "));
    IllegalArgumentException form = assertThrows(IllegalArgumentException.class,
        () -> FlashAttention.Tuning.DEFAULT.with("backward64:w4wg"));
    assertTrue(form.getMessage().contains("KILN_ATTENTION_TUNING") && form.getMessage().contains("bwd<d>=<variant>")
        && form.getMessage().contains("fwdlong<d>=<variant>"),
        form.getMessage());
    IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class,
        () -> FlashAttention.Tuning.DEFAULT.with("fwd64=w99"));
    assertTrue(unknown.getMessage().contains("choose one of"), unknown.getMessage());
  }

  @Test
  void longSequencesTakeTheirOwnForwardWhereOneIsChosen() {
    FlashAttention.Tuning t = FlashAttention.Tuning.DEFAULT;
    long at = FlashAttention.Tuning.LONG_SEQUENCE;
    assertEquals("w12wgpk128", t.forward(64, at), "d64 from the threshold");
    assertEquals("w12wgpk128", t.forward(64, 16_384));
    assertEquals(t.forward().get(64), t.forward(64, at - 1), "d64 below it");
    assertEquals(t.forward().get(128), t.forward(128, 16_384), "no long choice at d128: the one forward");
    // The environment's form; fwd<d> sets every length (what the benchmark's sweep and the GPU test's need).
    FlashAttention.Tuning e = t.with("fwdlong128=w8wgp");
    assertEquals("w8wgp", e.forward(128, at));
    assertEquals(t.forward().get(128), e.forward(128, 512));
    FlashAttention.Tuning every = t.withForward(64, "w4r32");
    assertEquals("w4r32", every.forward(64, 512));
    assertEquals("w4r32", every.forward(64, 16_384));
    IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> t.with("fwdlong64=w99"));
    assertTrue(bad.getMessage().contains("long-sequence") && bad.getMessage().contains("choose one of"),
        bad.getMessage());
    assertThrows(IllegalArgumentException.class, () -> t.withLongForward(96, "w4r32"));
  }

  @Test
  void portableChoicesRunOffHopper() {
    // PORTABLE replaces a wg (sm_90a-only) choice on other GPUs, so it must name none itself.
    for (Map<Integer, String> m : List.of(FlashAttention.Tuning.PORTABLE.forward(),
        FlashAttention.Tuning.PORTABLE.backward())) {
      m.forEach((d, v) -> assertTrue(!FlashAttention.Tuning.hopperOnly(v), "PORTABLE d" + d + " names " + v));
      // It also replaces a whole-head choice on sequences longer than the variant holds.
      m.forEach((d, v) -> assertEquals(0, FlashAttention.Tuning.wholeHeadRows(v), "PORTABLE d" + d + " names " + v));
    }
    // What a whole-head choice hands longer sequences to must itself be a tiled kernel.
    for (Map<Integer, String> m : List.of(FlashAttention.Tuning.BEYOND_WHOLE_HEAD.forward(),
        FlashAttention.Tuning.BEYOND_WHOLE_HEAD.backward())) {
      m.forEach((d, v) -> assertEquals(0, FlashAttention.Tuning.wholeHeadRows(v), "BEYOND_WHOLE_HEAD d" + d + " " + v));
    }
    assertEquals(256, FlashAttention.Tuning.wholeHeadRows("w8h256mb3"));
    assertEquals(0, FlashAttention.Tuning.wholeHeadRows("w12wgpk128"));
    assertTrue(FlashAttention.Tuning.hopperOnly("w8wgpk128") && !FlashAttention.Tuning.hopperOnly("w4r32k32"));
  }

  @Test
  void defaultsAreListedAndBadChoicesAreRefusedWithTheOptions() {
    FlashAttention.Tuning t = FlashAttention.Tuning.DEFAULT.withForward(64, "w8").withBackward(80, "w4r32");
    assertEquals("w8", t.forward().get(64));
    assertEquals(FlashAttention.Tuning.DEFAULT.forward().get(128), t.forward().get(128));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> FlashAttention.Tuning.DEFAULT.withBackward(128, "w4r32"));
    assertTrue(e.getMessage().contains("not compiled for head dim 128")
        && e.getMessage().contains(FlashAttention.Tuning.BACKWARD_VARIANTS.get(128).toString()),
        e.getMessage());
    IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
        () -> new FlashAttention.Tuning(Map.of(64, "w4mb4"), FlashAttention.Tuning.DEFAULT.backward()));
    assertTrue(missing.getMessage().contains("for each head dim"), missing.getMessage());
  }

  @Test
  void wholeHeadForwardsSizeTheirSharedMemoryByWhatTheyHold() {
    // q, k and v of 256 rows at d32 in padded rows (40 elements): 61,440 bytes, which any GPU holds. The d80 slab
    // keeps k and v of 512 rows only (88-element rows): 180,224 bytes, within an H100/H200's 232,448 a block but
    // over an A100's 167,936, where the host must take the tiled forward instead.
    assertEquals(3 * 256 * 40 * 2, FlashAttention.wholeHeadForwardBytes("w8h256mb3", 32, false));
    assertEquals(2 * 512 * 88 * 2, FlashAttention.wholeHeadForwardBytes("w16h512kv", 80, false));
    assertTrue(FlashAttention.Tuning.queryFromGlobal("w16h512kv"));
    assertTrue(!FlashAttention.Tuning.queryFromGlobal("w8h256mb3") && !FlashAttention.Tuning.queryFromGlobal("w4r32"));
    // What the slab hands longer sequences, or a GPU without the memory: a tiled forward.
    assertEquals(0, FlashAttention.Tuning.wholeHeadRows(FlashAttention.Tuning.BEYOND_WHOLE_HEAD.forward(80)));
  }

  @Test
  void slabBackwardSizesItsSharedMemoryByTheResidentHalf() {
    // dK/dV, the larger of the two kernels, keeps q and dO of 512 rows at d80 in padded rows and each row's lse and
    // dot: 184,320 bytes, within an H100/H200's 232,448 but over an A100's 167,936 (there the tiled backward runs).
    assertEquals(2 * 512 * 88 * 2 + 2 * 512 * 4, FlashAttention.slabBackwardBytes(512, 80));
    assertTrue(FlashAttention.slabBackwardBytes(512, 80) <= 232_448 && FlashAttention.slabBackwardBytes(512, 80) > 167_936);
    assertTrue(FlashAttention.Tuning.slabBackward(FlashAttention.Tuning.DEFAULT.backward(80)));
    assertEquals(512, FlashAttention.Tuning.wholeHeadRows(FlashAttention.Tuning.DEFAULT.backward(80)));
    // The whole-head backward of d32 holds all four tensors in one kernel: not the slab form.
    assertTrue(!FlashAttention.Tuning.slabBackward(FlashAttention.Tuning.DEFAULT.backward(32)));
    assertEquals(0, FlashAttention.Tuning.wholeHeadRows(FlashAttention.Tuning.BEYOND_WHOLE_HEAD.backward(80)));
  }
}
