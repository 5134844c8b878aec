package dev.kiln.dsl.spi;

import dev.kiln.dsl.Init;

/**
 * One row of a generated parameter table.
 *
 * @param name the state-dict key: the path of record component names in snake_case joined with {@code .}, list
 *     elements numbered, as CS336 and PyTorch name them ({@code qProj} in element 0 of {@code layers} inside
 *     {@code attn}: {@code layers.0.attn.q_proj.weight})
 * @param shape the shape as dim expressions in the root module's config names ({@code d_ff d_model})
 * @param dims the sizes under the config the table was made for
 * @param init how {@code init} fills it
 */
public record ParamInfo(String name, String shape, long[] dims, Init init) {
  /**
   * {@code shape} with each whole dim name that {@code names} maps replaced by its text: how a sub-module's table
   * speaks the root module's names ({@code d_out d_in} of a {@code Linear} bound as {@code d_model → d_ff} reads
   * {@code d_ff d_model}).
   */
  public static String renameDims(String shape, java.util.Map<String, String> names) {
    StringBuilder out = new StringBuilder();
    java.util.regex.Matcher m = java.util.regex.Pattern.compile("[A-Za-z_][A-Za-z0-9_]*").matcher(shape);
    int at = 0;
    while (m.find()) {
      out.append(shape, at, m.start());
      String r = names.get(m.group());
      out.append(r == null ? m.group() : r.matches("[A-Za-z0-9_]+") ? r : "(" + r + ")");
      at = m.end();
    }
    return out.append(shape.substring(at)).toString();
  }
}
