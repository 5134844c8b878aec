package dev.kiln.runtime.cpu.device;

import dev.kiln.dsl.spi.Device;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;

/**
 * A {@link Device} that runs the interface's default method for the named operations and {@code base}'s for
 * everything else: how a device without its own kernel for them (the CUDA device, once) computes them, checked on
 * the CPU's primitives.
 */
final class ComposedDefaults {
  private ComposedDefaults() {}

  /** {@code base}, except that methods whose name starts with {@code prefix} run the interface's default. */
  static Device over(Device base, String prefix) {
    return (Device) Proxy.newProxyInstance(Device.class.getClassLoader(), new Class<?>[] {Device.class},
        (InvocationHandler) (proxy, m, args) -> {
          if (m.getName().startsWith(prefix)) {
            return InvocationHandler.invokeDefault(proxy, m, args);
          }
          try {
            return m.invoke(base, args);
          } catch (InvocationTargetException e) {
            throw e.getCause();
          }
        });
  }
}
