package dev.kiln.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The {@code kiln} command. Each feature adds its subcommand class to the list below; {@code bin/kiln} starts this
 * class with the JVM flags Kiln needs.
 */
@Command(
    name = "kiln",
    mixinStandardHelpOptions = true,
    versionProvider = KilnVersion.class,
    description = "Build, train and serve language models from scratch in Java.",
    subcommands = {
      CommandLine.HelpCommand.class,
      DoctorCommand.class,
      QuickstartCommand.class,
      BenchCommand.class,
      dev.kiln.cli.tokenizer.TokenizerCommand.class,
      GenerateCommand.class,
      TrainCommand.class,
      ForwardCommand.class,
    })
public final class KilnCommand implements Runnable {
  @CommandLine.Spec CommandLine.Model.CommandSpec spec;

  @Override
  public void run() {
    spec.commandLine().usage(System.out);
  }

  public static void main(String[] args) {
    System.exit(execute(args));
  }

  /** Runs the command line and returns the exit code (tests call this instead of {@link #main}). */
  public static int execute(String... args) {
    CommandLine cl = new CommandLine(new KilnCommand());
    cl.setExecutionExceptionHandler(
        (ex, line, parsed) -> {
          // A user error (bad flag value, missing file, malformed input) is one clear line, not a stack trace.
          line.getErr().println(line.getColorScheme().errorText("kiln: " + ex.getMessage()));
          if (System.getenv("KILN_DEBUG") != null) {
            ex.printStackTrace(line.getErr());
          }
          return 1;
        });
    return cl.execute(args);
  }
}
