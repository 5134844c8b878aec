package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Names the config key of a hyper-parameter component. Without it, a {@code float}, {@code double}, {@code int},
 * {@code long}, {@code boolean} or enum component is still a hyper-parameter, read from the config key equal to the
 * component name converted to snake_case ({@code postNorm} → {@code post_norm}).
 *
 * <p>An {@code int} or {@code long} hyper-parameter passed as a size ({@code Ops.size("h", numHeads)}) is the config
 * dim of that key, so shapes can name it.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.RECORD_COMPONENT)
public @interface Hyper {
  /** The config key. */
  String value();
}
