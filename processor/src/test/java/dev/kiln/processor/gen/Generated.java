package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.testing.compile.Compilation;
import com.google.testing.compile.Compiler;
import com.google.testing.compile.JavaFileObjects;
import dev.kiln.processor.step.KilnProcessor;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import javax.tools.JavaFileObject;

/**
 * Compiles test modules with Kiln's processor in memory and loads what came out (the user's records, the generated
 * {@code Compiled<Module>} classes, their kernels and {@code .cu} resources) in one class loader.
 */
public final class Generated {
  final Compilation compilation;
  final ClassLoader loader;
  private final Map<String, String> sources = new HashMap<>();
  private final Map<String, byte[]> classes = new HashMap<>();
  private final Map<String, String> resources = new HashMap<>();

  private static final Map<List<String>, Generated> CACHE = new ConcurrentHashMap<>();

  private Generated(List<String> resourcePaths) {
    List<JavaFileObject> in = new ArrayList<>();
    for (String r : resourcePaths) {
      in.add(JavaFileObjects.forResource(r));
    }
    compilation = Compiler.javac().withProcessors(new KilnProcessor())
        .withOptions("-Xlint:all,-processing", "-proc:full").compile(in);
    assertEquals(Compilation.Status.SUCCESS, compilation.status(), () -> compilation.diagnostics().toString()
        + "\n" + dump());
    for (JavaFileObject f : compilation.generatedFiles()) {
      String name = f.toUri().getPath();
      try (InputStream s = f.openInputStream()) {
        byte[] bytes = s.readAllBytes();
        if (f.getKind() == JavaFileObject.Kind.CLASS) {
          String cls = name.substring(name.indexOf("/CLASS_OUTPUT/") + "/CLASS_OUTPUT/".length(),
              name.length() - ".class".length()).replace('/', '.');
          classes.put(cls, bytes);
        } else if (f.getKind() == JavaFileObject.Kind.SOURCE) {
          sources.put(name.substring(name.lastIndexOf('/') + 1), new String(bytes));
        } else {
          resources.put(name.substring(name.indexOf("/CLASS_OUTPUT/") + "/CLASS_OUTPUT/".length()), new String(bytes));
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    loader = new ClassLoader(Generated.class.getClassLoader()) {
      @Override
      protected Class<?> findClass(String name) throws ClassNotFoundException {
        byte[] b = classes.get(name);
        if (b == null) {
          throw new ClassNotFoundException(name);
        }
        return defineClass(name, b, 0, b.length);
      }

      @Override
      public InputStream getResourceAsStream(String name) {
        String r = resources.get(name);
        return r != null ? new java.io.ByteArrayInputStream(r.getBytes()) : super.getResourceAsStream(name);
      }
    };
  }

  /** The modules in {@code resourcePaths}, compiled once per test run. */
  static Generated of(String... resourcePaths) {
    return CACHE.computeIfAbsent(List.of(resourcePaths), Generated::new);
  }

  /**
   * The modules whose generated code the tests run: the CS336 modules and the primitive fixtures. The coverage test
   * reads the same list, so a primitive counts as gradient-tested only if one of these uses it.
   */
  public static final List<String> FIXTURES = List.of("cs336/Linear.java", "cs336/Embedding.java", "cs336/RmsNorm.java",
      "cs336/SwiGlu.java", "cs336/Rope.java", "cs336/MultiHeadSelfAttention.java", "cs336/RotaryAttention.java",
      "cs336/TransformerBlock.java",
      "cs336/TransformerLm.java", "cs336/Mlp.java", "prims/Pointwise.java", "prims/Einops.java",
      "prims/Selection.java", "prims/RepeatBranch.java", "devpkg/HeadGain.java", "devpkg/Heads.java");

  static Generated cs336() {
    return of(FIXTURES.toArray(String[]::new));
  }

  private String dump() {
    StringBuilder b = new StringBuilder();
    try {
      for (JavaFileObject f : compilation.generatedSourceFiles()) {
        b.append("=== ").append(f.getName()).append('\n').append(f.getCharContent(true));
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return b.toString();
  }

  /** A generated source file's text by simple file name ({@code CompiledLinear.java}). */
  String source(String file) {
    String s = sources.get(file);
    if (s == null) {
      throw new IllegalArgumentException("no generated " + file + " among " + sources.keySet());
    }
    return s;
  }

  /** A generated resource ({@code META-INF/kiln/cuda/cs336.SwiGlu.cu}). */
  String resource(String path) {
    String s = resources.get(path);
    if (s == null) {
      throw new IllegalArgumentException("no generated resource " + path + " among " + resources.keySet());
    }
    return s;
  }

  Class<?> type(String name) {
    try {
      return Class.forName(name, true, loader);
    } catch (ClassNotFoundException e) {
      throw new IllegalArgumentException(e);
    }
  }

  /** Calls a public method by name (the only one with that name and arity). */
  static Object call(Object target, String method, Object... args) {
    Class<?> c = target instanceof Class<?> k ? k : target.getClass();
    for (Method m : c.getMethods()) {
      if (m.getName().equals(method) && m.getParameterCount() == args.length) {
        try {
          return m.invoke(target instanceof Class<?> ? null : target, args);
        } catch (IllegalAccessException e) {
          throw new IllegalStateException(e);
        } catch (InvocationTargetException e) {
          if (e.getCause() instanceof RuntimeException r) {
            throw r;
          }
          throw new IllegalStateException(e.getCause());
        }
      }
    }
    throw new IllegalArgumentException("no method " + method + "/" + args.length + " on " + c);
  }

  static byte[] readAll(InputStream in) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    in.transferTo(out);
    return out.toByteArray();
  }
}
