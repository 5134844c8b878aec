package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.gather;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Ids to vectors: row {@code id} of the table (CS336: std 1 cut at ±3). */
@Module
public record Embedding(@Param(shape = "vocab_size d_model", init = Init.TRUNC_NORMAL_UNIT) Tensor weight) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("...") Tensor ids) {
    return gather(weight, ids);
  }
}
