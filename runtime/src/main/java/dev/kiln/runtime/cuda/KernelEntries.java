package dev.kiln.runtime.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads CUDA C source for the rule that programmatic launches rest on: every {@code __global__} function's body
 * begins with {@code kiln_pdl_enter();}, so it waits for the grid before it before it touches memory
 * (kiln_common.cuh). {@link KernelLoader} launches a module programmatically only when its source keeps the rule;
 * the tests hold Kiln's kernels and the processor's generated ones to it.
 *
 * <p>The scan is textual: it finds each {@code __global__}, skips to the end of the parameter list and takes the body's
 * first statement, skipping blanks and the line continuations of a kernel defined in a macro. It does not expand
 * macros, so a macro's body is checked where the macro is defined.
 */
public final class KernelEntries {
  private static final Pattern GLOBAL = Pattern.compile("\\b__global__\\b");
  private static final String ENTER = "kiln_pdl_enter();";

  private KernelEntries() {}

  /**
   * The {@code __global__} functions of {@code source} whose body does not begin with {@code kiln_pdl_enter();},
   * each named by its declaration's text up to the parameter list (empty when all begin so).
   */
  public static List<String> withoutWait(String source) {
    List<String> missing = new ArrayList<>();
    Matcher m = GLOBAL.matcher(source);
    while (m.find()) {
      int depth = 0;
      int lastOpen = -1; // the last group opened at depth 0: after __launch_bounds__(...), the parameter list
      for (int i = m.end(); i < source.length(); i++) {
        char c = source.charAt(i);
        if (c == '(') {
          if (depth++ == 0) {
            lastOpen = i;
          }
        } else if (c == ')') {
          depth--;
        } else if (c == ';' && depth == 0) {
          break; // a declaration, not a definition
        } else if (c == '{' && depth == 0 && lastOpen >= 0) {
          if (!firstStatement(source, i + 1).startsWith(ENTER)) {
            missing.add(source.substring(m.start(), lastOpen).replaceAll("\\s+", " ").strip());
          }
          break;
        }
      }
    }
    return missing;
  }

  private static String firstStatement(String source, int from) {
    int i = from;
    while (i < source.length()) {
      char c = source.charAt(i);
      if (Character.isWhitespace(c) || c == '\\') {
        i++;
      } else {
        break;
      }
    }
    return source.substring(i, Math.min(source.length(), i + ENTER.length()));
  }
}
