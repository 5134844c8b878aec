package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * A trainable parameter tensor of a {@link Module}: {@code @Param(shape = "d_out d_in", init =
 * Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight}.
 *
 * <p>The shape names config dims (no {@code ...}: a parameter's size is fixed by the config). The state-dict key is
 * the path of record component names, e.g. {@code layers.0.ffn.w1.weight}.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.RECORD_COMPONENT)
public @interface Param {
  /** The shape string, e.g. {@code "d_out d_in"}. */
  String shape();

  /** How {@code init(config, seed)} fills the tensor. */
  Init init();
}
