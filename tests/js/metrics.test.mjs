// Prometheus metrics, scraped by a real Debian `prometheus` server on loopback: the coordinator's
// --metrics-listen and the provider's, series present and moving after traffic; /metrics on the
// coordinator's main port only with the admin token.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import {
  tempDir, synthModel, startCoordinator, startProvider, startProcess, createKey, waitForProviders, freePort, call,
} from "./cluster.mjs";

const MODEL_ID = "metrics-model";

async function startPrometheus(dir, targets) {
  const port = await freePort();
  const config = `${dir}/prometheus.yml`;
  fs.writeFileSync(config, [
    "global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "scrape_configs:",
    ...targets.map(([job, address]) => `  - job_name: ${job}\n    static_configs:\n      - targets: ["${address}"]`),
    ""].join("\n"));
  const proc = await startProcess("prometheus", [`--config.file=${config}`, `--storage.tsdb.path=${dir}/tsdb`,
    `--web.listen-address=127.0.0.1:${port}`], { ready: /Server is ready to receive web requests/, name: "prometheus" });
  proc.query = async (query) => {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(query)}`);
    const body = await response.json();
    assert.equal(body.status, "success", JSON.stringify(body));
    return body.data.result;
  };
  // The value of a query once it is at least `minimum` (Prometheus scrapes every second).
  proc.valueAtLeast = async (query, minimum, timeoutMs = 20000) => {
    const deadline = Date.now() + timeoutMs;
    let last = null;
    while (Date.now() < deadline) {
      const result = await proc.query(query);
      if (result.length > 0) {
        last = Number(result[0].value[1]);
        if (last >= minimum) return last;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${query} stayed at ${last}, below ${minimum}`);
  };
  return proc;
}

describe("metrics", () => {
  let dir, coordinator, provider, prometheus, apiKey;
  let coordinatorMetrics, providerMetrics;

  before(async () => {
    dir = tempDir("darkbloom-metrics-");
    const model = synthModel(dir, MODEL_ID);
    coordinatorMetrics = `127.0.0.1:${await freePort()}`;
    providerMetrics = `127.0.0.1:${await freePort()}`;
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--metrics-listen", coordinatorMetrics] });
    provider = await startProvider(coordinator, model, ["--metrics-listen", providerMetrics]);
    await waitForProviders(coordinator, 1);
    apiKey = await createKey(coordinator);
    prometheus = await startPrometheus(dir, [["coordinator", coordinatorMetrics], ["provider", providerMetrics]]);
  });

  after(async () => {
    await prometheus?.kill();
    await provider?.kill();
    await coordinator?.kill();
  });

  it("the main port's /metrics needs the admin token", async () => {
    assert.equal((await call(coordinator, "GET", "/metrics", { key: "db-not-an-admin" })).status, 401);
    const scraped = await call(coordinator, "GET", "/metrics");
    assert.equal(scraped.status, 200);
    assert.match(scraped.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    assert.match(scraped.text, /^# TYPE darkbloom_http_requests_total counter$/m);
  });

  it("Prometheus scrapes both, and the series move after traffic", async () => {
    assert.equal(await prometheus.valueAtLeast('up{job="coordinator"}', 1), 1);
    assert.equal(await prometheus.valueAtLeast('up{job="provider"}', 1), 1);
    assert.equal(await prometheus.valueAtLeast('darkbloom_providers{trust_level="self_signed"}', 1), 1);
    const completions = 'sum(darkbloom_http_requests_total{route="/v1/chat/completions",status_class="2xx"}) or vector(0)';
    const before = Number((await prometheus.query(completions))[0].value[1]);
    for (let i = 0; i < 3; ++i) {
      const answer = await call(coordinator, "POST", "/v1/chat/completions", { key: apiKey, body: {
        model: MODEL_ID, messages: [{ role: "user", content: "count me" }], max_tokens: 8, ignore_eos: true } });
      assert.equal(answer.status, 200, answer.text);
    }
    const refused = await call(coordinator, "POST", "/v1/chat/completions", { key: "db-unknown", body: {} });
    assert.equal(refused.status, 401);
    // A path nobody serves is counted as "unmatched", never under its own name.
    assert.equal((await call(coordinator, "GET", "/no-such-route-1")).status, 404);
    await prometheus.valueAtLeast('sum(darkbloom_http_requests_total{route="unmatched"})', 1);
    assert.equal((await prometheus.query('darkbloom_http_requests_total{route=~".*no-such.*"}')).length, 0);
    // Each of these must exist and have moved: requests by route and status, the X-Timing phases,
    // time to first token, tokens, the ledger, the store, challenges; on the provider, requests
    // by outcome and the engine's tokens.
    assert.ok(await prometheus.valueAtLeast(completions, before + 3) >= before + 3);
    const moved = [
      ['sum(darkbloom_http_requests_total{status_class="4xx"})', 1],
      ['darkbloom_request_phase_seconds_count{phase="provider"}', 3],
      ['darkbloom_request_phase_seconds_count{phase="queue"}', 3],
      ["darkbloom_time_to_first_token_seconds_count", 3],
      ['darkbloom_tokens_total{direction="out"}', 24],
      ['darkbloom_tokens_total{direction="in"}', 1],
      ["darkbloom_ledger_settlements_total", 3],
      ["darkbloom_ledger_settled_micro_usd_total", 1],
      ["darkbloom_ledger_holds_total", 1],
      ["darkbloom_store_call_seconds_count", 1],
      ['darkbloom_challenges_total{result="passed"}', 1],
      ["darkbloom_open_connections", 1],
      ['darkbloom_provider_requests_total{outcome="completed"}', 3],
      ['darkbloom_engine_tokens_total{phase="decode"}', 24],
      ['darkbloom_engine_tokens_total{phase="prefill"}', 1],
      ["darkbloom_engine_kv_blocks_total", 1],
      ["darkbloom_provider_registered", 1],
    ];
    for (const [query, minimum] of moved) await prometheus.valueAtLeast(query, minimum);
    // Present, at zero here: failures and refusals.
    for (const query of ["darkbloom_ledger_refusals_total", "darkbloom_store_errors_total",
      "darkbloom_tls_handshake_failures_total", 'darkbloom_challenges_total{result="failed"}', "darkbloom_queue_depth"]) {
      assert.equal((await prometheus.query(query)).length, 1, query);
    }
  });

  it("labels carry no key, account, request id or address", async () => {
    const text = (await call(coordinator, "GET", "/metrics")).text +
      await (await fetch(`http://${providerMetrics}/metrics`)).text();
    assert.doesNotMatch(text, /db-|acct_|req_|prov_|127\.0\.0\.1/);
    const labels = new Set([...text.matchAll(/[{,]([a-z_]+)="/g)].map((m) => m[1]));
    assert.ok(labels.size >= 6, [...labels].join(","));
    for (const label of labels) {
      assert.ok(["direction", "le", "outcome", "phase", "result", "route", "status_class", "trust_level"].includes(label),
        label);
    }
  });
});
