package dev.kiln.runtime.cuda;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;

/**
 * Runs every {@code *GpuTest} class found under a test-classes folder, on a machine without Maven (the GPU machine,
 * see scripts/gpu-check.sh). Prints one {@code GPUTEST PASS|FAIL|SKIP name ms} line per test and exits non-zero
 * when any failed. Usage: {@code GpuTestMain TEST_CLASSES_DIR [CLASS_NAME_SUBSTRING]}.
 */
public final class GpuTestMain {
  private GpuTestMain() {}

  public static void main(String[] args) throws IOException {
    Path root = Path.of(args.length > 0 ? args[0] : "runtime/target/test-classes");
    List<String> classes = new ArrayList<>();
    try (Stream<Path> files = Files.walk(root)) {
      files.map(p -> root.relativize(p).toString())
          .filter(s -> s.endsWith("GpuTest.class"))
          .filter(s -> args.length < 2 || s.contains(args[1]))
          .map(s -> s.substring(0, s.length() - ".class".length()).replace('/', '.'))
          .sorted()
          .forEach(classes::add);
    }
    LauncherDiscoveryRequestBuilder b = LauncherDiscoveryRequestBuilder.request();
    classes.forEach(c -> b.selectors(selectClass(c)));
    LauncherDiscoveryRequest request = b.build();
    Launcher launcher = LauncherFactory.create();
    SummaryGeneratingListener summary = new SummaryGeneratingListener();
    TestExecutionListener lines = new TestExecutionListener() {
      private final java.util.Map<String, Long> start = new java.util.concurrent.ConcurrentHashMap<>();

      @Override
      public void executionStarted(TestIdentifier id) {
        if (id.isTest()) {
          start.put(id.getUniqueId(), System.nanoTime());
          System.out.println("--- " + name(id));
        }
      }

      @Override
      public void executionSkipped(TestIdentifier id, String reason) {
        System.out.println("GPUTEST SKIP " + name(id) + " 0 (" + reason + ")");
      }

      @Override
      public void executionFinished(TestIdentifier id, TestExecutionResult result) {
        if (!id.isTest()) {
          return;
        }
        long ms = (System.nanoTime() - start.getOrDefault(id.getUniqueId(), System.nanoTime())) / 1_000_000;
        String status = switch (result.getStatus()) {
          case SUCCESSFUL -> "PASS";
          case ABORTED -> "SKIP";
          case FAILED -> "FAIL";
        };
        System.out.println("GPUTEST " + status + " " + name(id) + " " + ms);
        result.getThrowable().ifPresent(t -> {
          if (result.getStatus() != TestExecutionResult.Status.SUCCESSFUL) {
            t.printStackTrace(System.out);
          }
        });
      }

      private String name(TestIdentifier id) {
        String parent = id.getParentId().map(p -> p.replaceAll(".*class:([^\\]]*)].*", "$1")).orElse("");
        return parent.substring(parent.lastIndexOf('.') + 1) + "." + id.getDisplayName().replace(" ", "_");
      }
    };
    launcher.execute(request, summary, lines);
    summary.getSummary().printTo(new PrintWriter(System.out));
    System.out.flush();
    System.exit(summary.getSummary().getTotalFailureCount() == 0 && !classes.isEmpty() ? 0 : 1);
  }
}
