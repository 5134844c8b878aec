package dev.kiln.processor;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.Compiler;
import com.google.testing.compile.JavaFileObjects;
import dev.kiln.processor.step.KilnProcessor;
import java.util.ArrayList;
import java.util.List;
import javax.tools.JavaFileObject;

/** Compiles test sources with Kiln's processor. */
final class Fixtures {
  private Fixtures() {}

  static final List<String> CS336 = List.of("Linear", "Embedding", "RmsNorm", "SwiGlu", "Rope",
      "MultiHeadSelfAttention", "TransformerBlock", "TransformerLm", "Mlp");

  static List<JavaFileObject> cs336() {
    List<JavaFileObject> out = new ArrayList<>();
    for (String n : CS336) {
      out.add(JavaFileObjects.forResource("cs336/" + n + ".java"));
    }
    return out;
  }

  static Compilation compile(List<JavaFileObject> sources) {
    return Compiler.javac().withProcessors(new KilnProcessor()).withOptions("-Xlint:all,-processing", "-proc:full")
        .compile(sources);
  }
}
