package dev.kiln.dsl;

/** How {@link Ops#reduce} combines the elements of the dims it removes. */
public enum Reduction {
  SUM,
  MEAN,
  MAX,
  MIN
}
