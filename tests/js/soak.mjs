// ./run soak: every attack and fault of the hostile suite, over and over for SOAK_SECONDS (600 by
// default), against one coordinator on a private PostgreSQL with two real providers, default
// limits. A legitimate client streams all along; its latency while attacks run is printed against
// a quiet baseline measured first, as a factor. Outcomes are asserted as in the suite (any failed
// assertion ends the soak with a non-zero exit); timings are printed, never asserted.
import assert from "node:assert/strict";
import { tempDir, setLimits } from "./cluster.mjs";
import {
  MODEL_ID, Cluster, chatRequest, assertCleanStream, oversizedBody, liarProvider, registrationFlood, badKeyFlood,
  malformedRequests, providerFloods, manyStreams, killProviderMidStream, killCoordinator, restartPostgres,
} from "./attacks.mjs";

const seconds = Number(process.env.SOAK_SECONDS ?? 600);
if (!(seconds > 0)) {
  console.error("soak: SOAK_SECONDS must be a positive number of seconds");
  process.exit(2);
}

// Attacks run while the legitimate client streams (it must keep succeeding); faults stop the
// service for a moment, so the client pauses and its latency is not counted while they run.
const attacks = {
  oversized_body: (c, attacker) => oversizedBody(c, attacker),
  liar_provider: (c) => liarProvider(c),
  registration_flood: (c) => registrationFlood(c, { waitForDeadline: false }),
  bad_key_flood: (c) => badKeyFlood(c, { ms: 5000 }),
  malformed_requests: (c, attacker) => malformedRequests(c, attacker),
  provider_floods: (c) => providerFloods(c),
  streams_1000: (c) => manyStreams(c, { count: 1000 }),
};
const faults = {
  provider_kill: (c) => killProviderMidStream(c),
  coordinator_kill: (c) => killCoordinator(c),
  postgres_restart: (c) => restartPostgres(c),
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const percentile = (values, p) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

// The legitimate client: one short stream after another, each timed, until stopped. Like the
// official clients it waits and retries on a 429 (Retry-After): while 1,000 streams compete for
// the same model, waiting is the fair outcome. The wait counts in its latency.
function legitimateClient(cluster) {
  const client = { latencies: [], retries: 0, paused: false, stopped: false, failures: [] };
  const body = { model: MODEL_ID, stream: true, max_tokens: 16, ignore_eos: true,
    messages: [{ role: "user", content: "Tell me a story" }] };
  client.done = (async () => {
    while (!client.stopped) {
      if (client.paused) {
        await sleep(50);
        continue;
      }
      const started = performance.now();
      try {
        for (;;) {
          const answer = await chatRequest(cluster.coordinator.port, cluster.legit.api_key, body).done;
          if (answer.status === 429 && !client.stopped && !client.paused) {
            client.retries += 1;
            await sleep(1000 * Number(answer.headers["retry-after"] ?? 1));
            continue;
          }
          assert.equal(answer.status, 200, answer.text);
          assertCleanStream(answer.events);
          break;
        }
        if (!client.paused) client.latencies.push(performance.now() - started);
      } catch (error) {
        if (!client.paused) client.failures.push(error.message);
      }
    }
  })();
  return client;
}

async function main() {
  const started = Date.now();
  const cluster = await Cluster.start(tempDir("darkbloom-soak-"), { postgres: true });
  const attacker = await cluster.newAccount();
  // The legitimate client streams back to back, faster than the default 20 requests per second
  // on this small model: its account is unlimited, so what it measures is the service.
  await setLimits(cluster.coordinator, cluster.legit.account_id, {});
  const totals = {};
  const add = (name, result) => {
    totals[name] ??= { runs: 0 };
    totals[name].runs += 1;
    for (const [key, value] of Object.entries(result ?? {})) {
      if (typeof value === "number") totals[name][key] = (totals[name][key] ?? 0) + value;
    }
  };
  try {
    const baselineMs = Math.min(30000, Math.max(5000, seconds * 100));
    console.log(`soak: ${seconds} s; quiet baseline for ${baselineMs / 1000} s`);
    const quiet = legitimateClient(cluster);
    await new Promise((r) => setTimeout(r, baselineMs));
    quiet.stopped = true;
    await quiet.done;
    assert.deepEqual(quiet.failures, [], "the quiet baseline failed");

    const loud = legitimateClient(cluster);
    const deadline = started + seconds * 1000;
    const rounds = [...Object.keys(attacks), ...Object.keys(faults)];
    for (let round = 0; Date.now() < deadline; round++) {
      const name = rounds[round % rounds.length];
      const fault = faults[name];
      if (fault) loud.paused = true;
      const result = await (fault ?? attacks[name])(cluster, attacker);
      loud.paused = false;
      await cluster.assertBooksBalance(30000);
      add(name, result);
      console.log(`soak: ${Math.round((Date.now() - started) / 1000)} s: ${name} ${JSON.stringify(result)}`);
      assert.deepEqual(loud.failures, [], `the legitimate client failed during ${name}`);
    }
    loud.stopped = true;
    await loud.done;
    assert.deepEqual(loud.failures, []);

    const p50q = percentile(quiet.latencies, 50);
    const p99q = percentile(quiet.latencies, 99);
    const p50 = percentile(loud.latencies, 50);
    const p99 = percentile(loud.latencies, 99);
    console.log("soak: totals");
    for (const [name, counts] of Object.entries(totals)) console.log(`  ${name.padEnd(20)} ${JSON.stringify(counts)}`);
    console.log(`soak: legitimate streams: ${quiet.latencies.length} quiet, ${loud.latencies.length} under attack ` +
      `(${loud.retries} retries after a 429), 0 failed`);
    console.log(`soak: latency of a 16-token stream, quiet: p50 ${p50q.toFixed(1)} ms, p99 ${p99q.toFixed(1)} ms`);
    console.log(`soak: under attack: p50 ${p50.toFixed(1)} ms (${(p50 / p50q).toFixed(2)}x), ` +
      `p99 ${p99.toFixed(1)} ms (${(p99 / p99q).toFixed(2)}x)`);
    console.log(`soak: books balanced after each of ${Object.values(totals).reduce((n, t) => n + t.runs, 0)} ` +
      `scenarios, in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    await cluster.stop();
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(`soak: FAILED: ${error.stack ?? error}`);
  process.exit(1);
});
