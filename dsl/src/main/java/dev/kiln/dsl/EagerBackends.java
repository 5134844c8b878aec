package dev.kiln.dsl;

import dev.kiln.dsl.spi.EagerBackend;
import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;

/** Finds the one {@link EagerBackend} on the class path, once. */
final class EagerBackends {
  private static volatile EagerBackend backend;

  private EagerBackends() {}

  /** The backend; {@code op} names the call that needed it, for the error message. */
  static EagerBackend get(String op) {
    EagerBackend b = backend;
    if (b == null) {
      synchronized (EagerBackends.class) {
        b = backend;
        if (b == null) {
          b = load(EagerBackends.class.getClassLoader(), op);
          backend = b;
        }
      }
    }
    return b;
  }

  /** Installs {@code b} (null: look it up again on next use) and returns the previous one; visible for tests. */
  static synchronized EagerBackend swap(EagerBackend b) {
    EagerBackend old = backend;
    backend = b;
    return old;
  }

  /** Loads the backend through {@link ServiceLoader} from {@code loader}; visible for tests. */
  static EagerBackend load(ClassLoader loader, String op) {
    List<EagerBackend> found = new ArrayList<>();
    for (EagerBackend b : ServiceLoader.load(EagerBackend.class, loader)) {
      found.add(b);
    }
    if (found.isEmpty()) {
      throw new IllegalStateException(
          op
              + " was called outside compiled code, which runs Kiln's eager interpreter, but no "
              + EagerBackend.class.getName()
              + " is on the class path. Add the dependency dev.kiln:kiln-runtime (it registers the interpreter),"
              + " or call the module through its generated Compiled class.");
    }
    if (found.size() > 1) {
      List<String> names = new ArrayList<>();
      for (EagerBackend b : found) {
        names.add(b.getClass().getName());
      }
      throw new IllegalStateException(
          "more than one Kiln eager backend on the class path: " + names + "; keep exactly one kiln-runtime jar");
    }
    return found.get(0);
  }
}
