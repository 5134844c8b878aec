package dev.kiln.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * {@code kiln bench ...}: benchmarks, each against a named peer measured in the same run, printing ratios.
 * Benchmarks are not tests: they report figures, they do not assert them.
 */
@Command(
    name = "bench",
    description = "Benchmarks against a named peer in the same run (prints ratios).",
    subcommands = {BenchGemmCommand.class, BenchTrainCommand.class, BenchGenerateCommand.class, dev.kiln.cli.tokenizer.TokenizerBenchCommand.class})
public final class BenchCommand implements Runnable {
  @CommandLine.Spec CommandLine.Model.CommandSpec spec;

  @Override
  public void run() {
    spec.commandLine().usage(System.out);
  }
}
