package dev.kiln.runtime.train;

import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.tensor.Rng;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The trainer's own progress, saved as a checkpoint's {@code trainer.json}: with the parameters and the optimizer
 * state it is everything an exact resume needs.
 *
 * @param step updates completed
 * @param dataRng the training batch generator's state (the data position: offsets are drawn from it)
 * @param batchesDrawn training batches drawn so far (micro-batches included), for people reading the file
 * @param tokensSeen training tokens consumed so far
 * @param bestValLoss the lowest validation loss so far, or NaN when none was measured
 * @param elapsedSeconds wall time spent training so far, across resumes
 */
public record TrainerState(
    long step, Rng.State dataRng, long batchesDrawn, long tokensSeen, double bestValLoss, double elapsedSeconds) {
  /** Format version of {@code trainer.json}. */
  public static final long FORMAT = 1;

  public String toJson() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("format", FORMAT);
    m.put("step", step);
    Map<String, Object> rng = new LinkedHashMap<>();
    rng.put("seed", dataRng.seed());
    rng.put("stream", dataRng.stream());
    rng.put("offset", dataRng.offset());
    m.put("data_rng", rng);
    m.put("batches_drawn", batchesDrawn);
    m.put("tokens_seen", tokensSeen);
    m.put("best_val_loss", Double.isNaN(bestValLoss) ? null : bestValLoss);
    m.put("elapsed_seconds", elapsedSeconds);
    return Json.writePretty(m);
  }

  /** Parses {@code trainer.json}; {@code source} names the file in errors. */
  @SuppressWarnings("unchecked")
  public static TrainerState fromJson(String text, String source) {
    Map<String, Object> m = Json.parseObject(text);
    if (!(m.get("format") instanceof Long f) || f != FORMAT) {
      throw new IllegalArgumentException(source + ": unknown trainer.json format " + m.get("format") + " (expected "
          + FORMAT + ")");
    }
    if (!(m.get("data_rng") instanceof Map<?, ?> rng)) {
      throw new IllegalArgumentException(source + ": missing data_rng");
    }
    Map<String, Object> r = (Map<String, Object>) rng;
    Object best = m.get("best_val_loss");
    return new TrainerState(
        longOf(m, "step", source),
        new Rng.State(longOf(r, "seed", source), longOf(r, "stream", source), longOf(r, "offset", source)),
        longOf(m, "batches_drawn", source),
        longOf(m, "tokens_seen", source),
        best == null ? Double.NaN : ((Number) best).doubleValue(),
        ((Number) m.get("elapsed_seconds")).doubleValue());
  }

  private static long longOf(Map<String, Object> m, String key, String source) {
    if (!(m.get(key) instanceof Long v)) {
      throw new IllegalArgumentException(source + ": \"" + key + "\" must be an integer, got " + m.get(key));
    }
    return v;
  }
}
