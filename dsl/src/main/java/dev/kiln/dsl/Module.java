package dev.kiln.dsl;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Marks a record as a Kiln module: a piece of a model whose components are parameter tensors ({@link Param}),
 * sub-modules (optionally with {@link Bind}), lists of repeated sub-modules ({@link Repeat}) and hyper-parameters
 * (plain {@code float}, {@code double}, {@code int}, {@code long}, {@code boolean} or enum components, optionally
 * {@link Hyper}). It has one {@link Forward} method and at most one {@link Loss} method.
 *
 * <p>Kiln's annotation processor checks every shape in the module at compile time. Calling the forward method on a
 * record instance runs the eager reference interpreter.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.TYPE)
public @interface Module {}
