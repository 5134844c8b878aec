package dev.kiln.cli;

import picocli.CommandLine;

/** {@code kiln --version}: Kiln's version (from the jar manifest) and the Java running it. */
public final class KilnVersion implements CommandLine.IVersionProvider {
  @Override
  public String[] getVersion() {
    String v = KilnCommand.class.getPackage().getImplementationVersion();
    return new String[] {
      "kiln " + (v == null ? "(development build)" : v),
      "Java " + Runtime.version() + " (" + System.getProperty("java.vendor") + ")",
    };
  }
}
