package dev.kiln.dsl;

/**
 * The result of {@link Ops#topk}: the {@code k} largest values along the last dim, in descending order, and their
 * positions (int64).
 */
public record TopK(Tensor values, Tensor indices) {}
