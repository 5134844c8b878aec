package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;

/**
 * Keys and values of every layer for positions {@code 0..capacity-1}, preallocated as float32
 * {@code [capacity, num_heads, d_head]} per layer. Keys are stored after QK-norm and RoPE (rotated at their absolute
 * position), so a later query never re-rotates them. Rows past the filled length hold stale data and are never read.
 */
final class KvCache {
  private final NdArray[] keys;
  private final NdArray[] values;
  private final int capacity;

  KvCache(ModelConfig c, int capacity) {
    this.capacity = capacity;
    keys = new NdArray[c.numLayers()];
    values = new NdArray[c.numLayers()];
    for (int l = 0; l < c.numLayers(); l++) {
      keys[l] = NdArray.zeros(DType.F32, capacity, c.numHeads(), c.headDim());
      values[l] = NdArray.zeros(DType.F32, capacity, c.numHeads(), c.headDim());
    }
  }

  int capacity() {
    return capacity;
  }

  /** Stores {@code k, v: [T, heads, d_head]} at positions {@code start..start+T-1} of {@code layer}. */
  void write(int layer, int start, NdArray k, NdArray v) {
    long t = k.shape(0);
    if (start + t > capacity) {
      throw new IllegalStateException("KV cache overflow: positions " + start + ".." + (start + t - 1)
          + " do not fit a cache of " + capacity);
    }
    keys[layer].narrow(0, start, t).copyFrom(k);
    values[layer].narrow(0, start, t).copyFrom(v);
  }

  /** Keys of positions {@code 0..length-1}: a view {@code [length, heads, d_head]}. */
  NdArray keys(int layer, int length) {
    return keys[layer].narrow(0, 0, length);
  }

  /** Values of positions {@code 0..length-1}: a view {@code [length, heads, d_head]}. */
  NdArray values(int layer, int length) {
    return values[layer].narrow(0, 0, length);
  }
}
