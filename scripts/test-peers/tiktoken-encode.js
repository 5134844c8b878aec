// Oracle for Kiln's tokenizer tests and benchmark: the tiktoken npm package (OpenAI's Rust tokenizer as WASM).
// Reads {"encoding": "gpt2", "texts": [...], "allowedSpecial": "all" | "none"} on stdin and prints a JSON array with
// the ids of each text. With "none", special-token text is encoded as ordinary text.
// With {"bench": "<file>"} instead, it times its own encoding of the file and prints {"bytes", "tokens", "seconds"}.
const { get_encoding } = require("tiktoken");
const fs = require("fs");

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const enc = get_encoding(request.encoding || "gpt2");
if (request.bench) {
  const text = fs.readFileSync(request.bench, "utf8");
  const bytes = Buffer.byteLength(text, "utf8");
  enc.encode_ordinary(text); // warm-up
  let best = Infinity;
  let tokens = 0;
  for (let r = 0; r < (request.repeats || 3); r++) {
    const t0 = process.hrtime.bigint();
    tokens = enc.encode_ordinary(text).length;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, secs);
  }
  process.stdout.write(JSON.stringify({ bytes, tokens, seconds: best }));
} else {
  const out = request.texts.map((t) =>
    Array.from(request.allowedSpecial === "all" ? enc.encode(t, "all", []) : enc.encode(t, [], [])));
  process.stdout.write(JSON.stringify(out));
}
enc.free();
