package dev.kiln.dsl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.spi.EagerBackend;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Proxy;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Ops and Tensor run on the one eager backend found by ServiceLoader, and say what to add when there is none. */
class EagerBackendsTest {
  @Test
  void withoutABackendTheErrorNamesTheOpAndKilnRuntime() {
    // A loader that sees only the JDK: no META-INF/services for EagerBackend.
    ClassLoader empty = new URLClassLoader(new URL[0], null);
    IllegalStateException e = assertThrows(IllegalStateException.class, () -> EagerBackends.load(empty, "Ops.softmax"));
    assertTrue(e.getMessage().startsWith("Ops.softmax was called outside compiled code"), e.getMessage());
    assertTrue(e.getMessage().contains("dev.kiln:kiln-runtime"), e.getMessage());
  }

  /** A backend that records each call and returns a marker tensor. */
  private static final class Recorder {
    final List<String> calls = new ArrayList<>();
    final List<Object[]> args = new ArrayList<>();
    final Tensor result = tensor();
    final EagerBackend backend = (EagerBackend) Proxy.newProxyInstance(EagerBackend.class.getClassLoader(),
        new Class<?>[] {EagerBackend.class}, (proxy, m, a) -> {
          calls.add(m.getName());
          args.add(a == null ? new Object[0] : a);
          return m.getReturnType() == TopK.class ? new TopK(result, result) : result;
        });
  }

  private static Tensor tensor() {
    return (Tensor) Proxy.newProxyInstance(Tensor.class.getClassLoader(), new Class<?>[] {Tensor.class},
        (proxy, m, a) -> {
          if (m.isDefault()) {
            return java.lang.reflect.InvocationHandler.invokeDefault(proxy, m, a);
          }
          return switch (m.getName()) {
            case "shape" -> new long[] {2, 3};
            case "dtype" -> DType.F32;
            case "hashCode" -> System.identityHashCode(proxy);
            case "equals" -> proxy == a[0];
            default -> "tensor";
          };
        });
  }

  private static Object sample(Class<?> t) {
    if (t == Tensor.class) {
      return tensor();
    }
    if (t == Tensor[].class) {
      return new Tensor[] {tensor(), tensor()};
    }
    if (t == String.class) {
      return "a b -> b a";
    }
    if (t == DimSize[].class) {
      return new DimSize[] {new DimSize("h", 4)};
    }
    if (t == Reduction.class) {
      return Reduction.MEAN;
    }
    if (t == Mask.class) {
      return Mask.CAUSAL;
    }
    if (t == double.class) {
      return 0.25;
    }
    if (t == int.class) {
      return 3;
    }
    if (t == long.class) {
      return 7L;
    }
    throw new AssertionError("no sample for " + t);
  }

  @Test
  void everyOpDelegatesToTheBackendMethodOfTheSameNameWithTheSameArguments() throws Exception {
    Recorder r = new Recorder();
    EagerBackend previous = EagerBackends.swap(r.backend);
    try {
      int checked = 0;
      for (Method op : Ops.class.getDeclaredMethods()) {
        if (!Modifier.isPublic(op.getModifiers()) || op.getName().equals("size")) {
          continue;
        }
        Object[] a = new Object[op.getParameterCount()];
        for (int i = 0; i < a.length; i++) {
          a[i] = sample(op.getParameterTypes()[i]);
        }
        r.calls.clear();
        r.args.clear();
        Object out = op.invoke(null, a);
        assertEquals(List.of(op.getName()), r.calls, op.getName());
        assertArrayEquals(a, r.args.get(0), op.getName());
        if (out instanceof Tensor t) {
          assertSame(r.result, t, op.getName());
        }
        checked++;
      }
      assertTrue(checked >= 30, "checked " + checked + " ops");
      assertEquals(new DimSize("h", 4), Ops.size("h", 4));

      Tensor x = tensor();
      Tensor y = tensor();
      r.calls.clear();
      x.add(y);
      x.sub(y);
      x.mul(y);
      x.div(y);
      x.neg();
      assertEquals(List.of("add", "sub", "mul", "div", "neg"), r.calls);
      r.calls.clear();
      r.args.clear();
      x.add(2.0);
      x.sub(2.0);
      x.mul(4.0);
      x.div(4.0);
      assertEquals(List.of("addScalar", "addScalar", "mulScalar", "mulScalar"), r.calls);
      // Subtraction and division become addition of the negation and multiplication by the reciprocal.
      assertEquals(List.of(2.0, -2.0, 4.0, 0.25), r.args.stream().map(a -> (Object) a[1]).toList());
    } finally {
      EagerBackends.swap(previous);
    }
  }

  @Test
  void shapeQueries() {
    Tensor t = tensor();
    assertEquals(2, t.rank());
    assertEquals(3, t.size(-1));
    assertEquals(2, t.size(0));
    assertThrows(IndexOutOfBoundsException.class, () -> t.size(2));
    assertThrows(IllegalArgumentException.class, () -> new DimSize("h", 0));
  }
}
