package dev.kiln.runtime.tensor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import org.junit.jupiter.api.Test;

class StorageTest {
  @Test
  void uninitializedStorageIsAlignedUsableAndCounted() {
    long before = Storage.uninitializedBytesLive();
    NdArray a = NdArray.empty(DType.F32, 1000, 3);
    assertEquals(0, a.segment().address() % Storage.ALIGNMENT, "64-byte aligned");
    assertEquals(12_000, a.segment().byteSize());
    assertTrue(Storage.uninitializedBytesLive() >= before + 12_000);
    a.fill(2.5);
    assertEquals(2.5, a.getDouble(999, 2));
  }

  /** Unreachable uninitialized storage is freed by the collector, and the live count goes back down. */
  @Test
  void unreachableStorageIsFreed() throws InterruptedException {
    long before = Storage.uninitializedBytesLive();
    for (int i = 0; i < 64; i++) {
      NdArray.empty(DType.F32, 1 << 18).fill(i); // 1 MiB each, dropped at once
    }
    long deadline = System.nanoTime() + 10_000_000_000L;
    while (Storage.uninitializedBytesLive() > before + (8L << 20) && System.nanoTime() < deadline) {
      System.gc();
      Thread.sleep(20);
    }
    assertTrue(Storage.uninitializedBytesLive() <= before + (8L << 20),
        "64 MiB of dropped tensors were not freed: " + Storage.uninitializedBytesLive() + " bytes live");
  }
}
