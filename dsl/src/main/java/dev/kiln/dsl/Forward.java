package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * The forward method of a {@link Module}. Its tensor parameters and its result carry {@link Shape}s; its body uses
 * the op vocabulary of {@link Ops}, {@link Tensor}'s arithmetic, calls to sub-modules, a for-each over a
 * {@link Repeat} list, {@code if}/{@code switch} on hyper-parameters and early {@code return}.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.METHOD)
public @interface Forward {}
