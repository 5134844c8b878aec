package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Binds the dims of a sub-module at the point of use: {@code @Bind("d_in=d_model d_out=d_ff") Linear w1} makes this
 * {@code Linear} map {@code d_model} to {@code d_ff}. Entries are {@code name=dim} separated by spaces; the left side
 * names a dim of the sub-module, the right side is a dim expression of this module ({@code d_model},
 * {@code 4*d_model}, {@code d_model/heads}). Dims of the sub-module that are not bound keep their name.
 *
 * <p>On a {@link Repeat} list the bindings apply to every element.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.RECORD_COMPONENT)
public @interface Bind {
  /** Space-separated {@code name=dim} entries. */
  String value();
}
