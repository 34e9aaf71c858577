#!/usr/bin/env node
// Load generator for an OpenAI-compatible endpoint (the coordinator or `darkbloom serve`): a
// bounded number of chat requests at bounded concurrency, each one's latency split into the
// phases of the X-Timing header plus client-side totals, reported as count / mean / p50 / p95 /
// p99 / max per phase, as a table and as Markdown.
//
//   node loadgen.mjs --url http://127.0.0.1:8080 --key db-... --model M [--requests 200]
//                    [--concurrency 20] [--max-tokens 16] [--no-stream] [--prompt-bytes 0] [--json]
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    key: { type: "string", default: "none" },
    model: { type: "string" },
    requests: { type: "string", default: "200" },
    concurrency: { type: "string", default: "20" },
    "max-tokens": { type: "string", default: "16" },
    "prompt-bytes": { type: "string", default: "0" },
    "no-stream": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});

function fail(message) {
  console.error(`loadgen: error: ${message}`);
  process.exit(2);
}
if (!args.url || !args.model) fail("--url and --model are required");
const total = Number(args.requests);
const concurrency = Number(args.concurrency);
const maxTokens = Number(args["max-tokens"]);
const promptBytes = Number(args["prompt-bytes"]);
if (!(total > 0 && total <= 100000)) fail("--requests must be 1..100000");
if (!(concurrency > 0 && concurrency <= 1000)) fail("--concurrency must be 1..1000");
const stream = !args["no-stream"];

const phases = ["parse_us", "reserve_us", "route_us", "queue_us", "encrypt_us", "dispatch_us", "provider_us"];

async function one(index) {
  const content = `Request ${index}. ` + "x".repeat(Math.max(0, promptBytes));
  const started = performance.now();
  const response = await fetch(`${args.url}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${args.key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: args.model, messages: [{ role: "user", content }], max_tokens: maxTokens,
                           stream, ignore_eos: true, temperature: 0 }),
  });
  const sample = { status: response.status };
  const timing = response.headers.get("x-timing");
  if (timing) Object.assign(sample, JSON.parse(timing));
  if (!stream) {
    await response.text();
  } else {
    const reader = response.body.getReader();
    let first = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (first === null && new TextDecoder().decode(value).includes('"content":"') && !new TextDecoder().decode(value).includes('"role"')) {
        first = performance.now();
      }
    }
    if (first !== null) sample.ttft_ms = first - started;
  }
  sample.total_ms = performance.now() - started;
  return sample;
}

const samples = [];
let next = 0;
const wallStart = performance.now();
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next < total) {
    const index = next++;
    try {
      samples.push(await one(index));
    } catch (error) {
      samples.push({ status: 0, error: String(error) });
    }
  }
}));
const wallMs = performance.now() - wallStart;

function stats(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { count: values.length, mean: values.reduce((a, b) => a + b, 0) / values.length, p50: at(0.5), p95: at(0.95),
           p99: at(0.99), max: sorted.at(-1) };
}

const ok = samples.filter((s) => s.status === 200);
const rows = [];
for (const key of [...phases, "ttft_ms", "total_ms"]) {
  const values = ok.map((s) => s[key]).filter((v) => typeof v === "number");
  const row = stats(values);
  if (row) rows.push({ segment: key, ...row });
}
const summary = { requests: total, ok: ok.length, failed: samples.length - ok.length, concurrency, stream,
                  max_tokens: maxTokens, wall_s: wallMs / 1000, requests_per_s: ok.length / (wallMs / 1000), rows };
if (args.json) {
  console.log(JSON.stringify(summary));
  process.exit(ok.length === total ? 0 : 1);
}
const fmt = (v, key) => (key.endsWith("_us") ? v.toFixed(0) : v.toFixed(2));
console.log(`${ok.length}/${total} ok, concurrency ${concurrency}, ${stream ? "streaming" : "non-streaming"}, ` +
            `max_tokens ${maxTokens}, ${summary.requests_per_s.toFixed(1)} req/s over ${summary.wall_s.toFixed(2)} s`);
console.log("| segment | count | mean | p50 | p95 | p99 | max |");
console.log("|---|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.segment} | ${r.count} | ${fmt(r.mean, r.segment)} | ${fmt(r.p50, r.segment)} | ${fmt(r.p95, r.segment)} | ` +
              `${fmt(r.p99, r.segment)} | ${fmt(r.max, r.segment)} |`);
}
process.exit(ok.length === total ? 0 : 1);
