package dev.kiln.runtime.tokenizer;

import java.util.Arrays;

/** A growable list of ints without boxing: the token ids an encoder produces. */
public final class IntList {
  private int[] a;
  private int n;

  public IntList() {
    this(64);
  }

  public IntList(int capacity) {
    a = new int[Math.max(4, capacity)];
  }

  public void add(int v) {
    if (n == a.length) {
      a = Arrays.copyOf(a, a.length * 2);
    }
    a[n++] = v;
  }

  public void addAll(int[] src, int from, int count) {
    if (n + count > a.length) {
      a = Arrays.copyOf(a, Math.max(a.length * 2, n + count));
    }
    System.arraycopy(src, from, a, n, count);
    n += count;
  }

  public int get(int i) {
    if (i >= n) {
      throw new IndexOutOfBoundsException("index " + i + " of " + n);
    }
    return a[i];
  }

  public int size() {
    return n;
  }

  public void clear() {
    n = 0;
  }

  /** The backing array; valid up to {@link #size()}, and only until the next add. */
  public int[] array() {
    return a;
  }

  public int[] toArray() {
    return Arrays.copyOf(a, n);
  }
}
