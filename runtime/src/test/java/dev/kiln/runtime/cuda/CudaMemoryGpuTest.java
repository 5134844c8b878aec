package dev.kiln.runtime.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

class CudaMemoryGpuTest {
  @Test
  void allocatorReusesFreedBlocksOfTheSameClass() {
    CudaDevice dev = GpuTesting.device();
    CachingAllocator alloc = dev.allocator();
    CudaStream s = dev.defaultStream();
    CachingAllocator.Stats before = alloc.stats();
    DeviceBuffer a = alloc.allocate(3_000_000, s);
    long addr = a.address();
    assertEquals(4L << 20, a.size(), "3 MB rounds up to the 2 MiB granule");
    a.close();
    DeviceBuffer b = alloc.allocate(2_500_000, s);
    assertEquals(addr, b.address(), "a freed block of the same class is handed out again");
    CachingAllocator.Stats mid = alloc.stats();
    assertTrue(mid.cacheHits() > before.cacheHits());
    assertEquals(before.bytesInUse() + b.size(), mid.bytesInUse());
    assertTrue(mid.peakBytesInUse() >= mid.bytesInUse());
    b.close();
    assertEquals(before.bytesInUse(), alloc.stats().bytesInUse());
    assertTrue(alloc.stats().bytesCached() >= 4L << 20);
  }

  @Test
  void roundTripsEveryDtypeAndLargeArraysThroughPinnedStaging() {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(1);
    for (DType t : new DType[] {DType.F32, DType.BF16, DType.F16, DType.F64}) {
      NdArray h = GpuTesting.randn(rnd, t, 3, 37, 53);
      try (CudaArray d = CudaArray.fromHost(dev, h)) {
        assertArrayEquals(h.to(DType.F64).toDoubleArray(), d.toHost().to(DType.F64).toDoubleArray(), 0.0, t.name());
      }
    }
    int[] ints = new int[1001];
    for (int i = 0; i < ints.length; i++) {
      ints[i] = rnd.nextInt();
    }
    try (CudaArray d = CudaArray.fromHost(dev, NdArray.fromInts(ints, 7, 143))) {
      assertArrayEquals(ints, d.toHost().toIntArray());
    }
    // 5.3M floats = 21 MB: three staging chunks, the last one partial.
    NdArray big = GpuTesting.randn(rnd, DType.F32, 1, 5_300_001);
    try (CudaArray d = CudaArray.fromHost(dev, big)) {
      assertArrayEquals(big.toFloatArray(), d.toHost().toFloatArray());
    }
  }

  @Test
  void overlapsTellsSlotsLaidEndToEndFromViewsThatShareBytes() {
    // CudaEngine leaves a captured step's gradients in place unless two of them overlap: slots of one allocation end
    // to end (the device's gradient arena) do not; views that share an element do, whatever their strides.
    CudaDevice dev = GpuTesting.device();
    try (CudaArray a = CudaArray.empty(dev, DType.BF16, 3 * 64); CudaArray other = CudaArray.empty(dev, DType.BF16, 64)) {
      long[] shape = {8, 8};
      long[] strides = NdArray.contiguousStrides(shape);
      CudaArray s0 = a.strided(shape, strides, 0);
      CudaArray s1 = a.strided(shape, strides, 64);
      CudaArray s2 = a.strided(shape, strides, 128);
      assertTrue(!s0.overlaps(s1) && !s1.overlaps(s0) && !s1.overlaps(s2) && !s0.overlaps(s2), "end to end");
      assertTrue(s1.overlaps(a.strided(shape, strides, 127)), "one element shared with the next slot's start");
      assertTrue(s0.overlaps(s0.transpose(0, 1)), "a transposed view of the same bytes");
      assertTrue(s1.overlaps(a.strided(new long[] {8}, new long[] {9}, 64)), "the diagonal of a slot");
      CudaArray reversed = a.strided(new long[] {64}, new long[] {-1}, 127); // s1's elements, last first
      assertTrue(reversed.overlaps(s1) && !reversed.overlaps(s0) && !reversed.overlaps(s2), "a negative stride");
      assertTrue(!s0.overlaps(other.view(8, 8)), "another allocation");
      assertTrue(!s0.overlaps(a.strided(new long[] {0, 8}, new long[] {8, 1}, 0)), "an empty view");
    }
  }

  @Test
  void deviceToDeviceCopiesTakeTheSourcesBytesIntoViewsOfTheSameShape() {
    CudaDevice dev = GpuTesting.device();
    NdArray h = GpuTesting.randn(new Random(3), DType.F32, 1, 7, 5);
    try (CudaArray src = CudaArray.fromHost(dev, h);
        CudaArray whole = CudaArray.empty(dev, DType.F32, 9, 5).poison()) {
      // Into rows 1..7 of a larger array: the rows around them keep their poison.
      CudaArray rows = whole.narrow(0, 1, 7);
      rows.copyFrom(src, dev.defaultStream());
      assertArrayEquals(GpuTesting.doubles(h), GpuTesting.doubles(rows.toHost()));
      assertTrue(Double.isNaN(GpuTesting.doubles(whole.narrow(0, 0, 1).toHost())[0]), "the row before is untouched");
      assertTrue(Double.isNaN(GpuTesting.doubles(whole.narrow(0, 8, 1).toHost())[4]), "the row after is untouched");
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> whole.copyFrom(src, dev.defaultStream()));
      assertTrue(e.getMessage().contains("copyFrom"), e.getMessage());
      try (CudaArray wide = CudaArray.fromHost(dev, GpuTesting.randn(new Random(4), DType.F32, 1, 5, 7))) {
        IllegalArgumentException t = assertThrows(IllegalArgumentException.class,
            () -> src.copyFrom(wide.transpose(0, 1), dev.defaultStream()));
        assertTrue(t.getMessage().contains("contiguous"), t.getMessage());
      }
    }
  }

  @Test
  void viewsDownloadTheirOwnElementsAndPoisonWritesNaN() {
    CudaDevice dev = GpuTesting.device();
    NdArray h = GpuTesting.randn(new Random(2), DType.F32, 1, 6, 9);
    try (CudaArray d = CudaArray.fromHost(dev, h)) {
      assertArrayEquals(h.transpose(0, 1).contiguous().toFloatArray(), d.transpose(0, 1).toHost().toFloatArray());
      assertArrayEquals(h.narrow(1, 2, 5).contiguous().toFloatArray(), d.narrow(1, 2, 5).toHost().toFloatArray());
      assertArrayEquals(h.select(0, 4).toFloatArray(), d.select(0, 4).toHost().toFloatArray());
      d.poison();
      for (float f : d.toHost().toFloatArray()) {
        assertTrue(Float.isNaN(f));
      }
    }
    try (CudaArray d = CudaArray.empty(dev, DType.BF16, 33).poison()) {
      for (double x : d.toHost().to(DType.F64).toDoubleArray()) {
        assertTrue(Double.isNaN(x));
      }
    }
  }
}
