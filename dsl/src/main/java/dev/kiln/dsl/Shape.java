package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * The shape of a tensor parameter ({@code @Shape("... d_in") Tensor x}) or, on the method, of the result of a
 * {@link Forward} or {@link Loss} method. The einops grammar: named dims, {@code ...} at most once, parenthesised
 * groups, {@code 1}, literal sizes and dim arithmetic ({@code d_model/heads}); {@code ""} is a scalar.
 *
 * <p>Within one method, {@code ...} stands for the same dims in every parameter and in the result, and so does each
 * name. Names that are not dims of the module are bound by the inputs at call time.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.METHOD, ElementType.PARAMETER})
public @interface Shape {
  /** The shape string. */
  String value();
}
