package dev.kiln.fixture;

import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.rope;
import static dev.kiln.dsl.Ops.size;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * Regression fixture for generated code in a package under {@code dev}, where the generated field {@code dev} hides
 * the package: an enum hyper-parameter in a branch, a sub-module dim bound to a division ({@code d/heads}), and
 * sub-module calls after CSE has merged equal nodes (the two RoPEs' angle tables) in nested branches, whose backward
 * must still find their contexts.
 */
@Module
public record Heads(
    @Bind("d_in=d d_out=d") cs336.Linear proj,
    @Bind("d_head=d/heads") HeadGain gain,
    @Hyper("heads") int heads,
    Mode mode,
    @Hyper("twice") boolean twice) {

  public enum Mode { PLAIN, GAINED }

  @Forward
  public @Shape("b s d") Tensor apply(@Shape("b s d") Tensor x, @Shape("s") Tensor positions) {
    Tensor a = rearrange(proj.apply(x), "b s (h e) -> b h s e", size("h", heads));
    Tensor c = rearrange(x, "b s (h e) -> b h s e", size("h", heads));
    if (twice) {
      a = rope(a, positions, 10000.0);
      c = rope(c, positions, 10000.0);
    }
    if (mode == Mode.GAINED) {
      a = gain.apply(a);
    }
    return proj.apply(rearrange(a.add(c), "b h s e -> b s (h e)"));
  }
}
