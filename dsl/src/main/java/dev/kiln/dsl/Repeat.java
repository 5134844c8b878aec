package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * A list of repeated sub-modules whose length is a config dim: {@code @Repeat("num_layers") List<Block> layers}.
 * The forward body runs them with a for-each loop; parameter keys are {@code layers.0...}, {@code layers.1...}.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.RECORD_COMPONENT)
public @interface Repeat {
  /** The config key holding the number of elements. */
  String value();
}
