package dev.kiln.dsl.spi;

import dev.kiln.dsl.Init;

/**
 * One row of a generated parameter table.
 *
 * @param name the state-dict key: the path of record component names in snake_case joined with {@code .}, list
 *     elements numbered, as CS336 and PyTorch name them ({@code qProj} in element 0 of {@code layers} inside
 *     {@code attn}: {@code layers.0.attn.q_proj.weight})
 * @param shape the shape as dim expressions in the root module's config names ({@code d_ff d_model})
 * @param dims the sizes under the config the table was made for
 * @param init how {@code init} fills it
 */
public record ParamInfo(String name, String shape, long[] dims, Init init) {}
