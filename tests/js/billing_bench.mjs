#!/usr/bin/env node
// The cost of billing: a coordinator on SQLite, then on a private PostgreSQL, with fast providers
// (a tiny model, 2 tokens per answer) and loadgen.mjs at 100 concurrent requests. Prints
// loadgen's per-phase table for each store; `reserve_us` is the billing step.
//
//   DARKBLOOM_BIN=... DARKBLOOM_COORDINATOR_BIN=... node billing_bench.mjs [--requests 2000]
//                     [--hold-requests 32]   (1: a database transaction per request, for comparison)
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  tempDir, synthModel, startCoordinator, createAccount, adminCredit, setLimits, startProvider, waitForProviders,
  startPostgres,
} from "./cluster.mjs";

const { values: args } = parseArgs({
  options: {
    requests: { type: "string", default: "2000" },
    concurrency: { type: "string", default: "100" },
    providers: { type: "string", default: "2" },
    "hold-requests": { type: "string", default: "32" },
  },
});
const here = path.dirname(fileURLToPath(import.meta.url));
const dir = tempDir("darkbloom-bench-");
const model = synthModel(dir, "bench-tiny");  // 2 layers, 128 wide: the provider is not what is measured
const pg = await startPostgres(dir);

for (const store of ["sqlite", "postgres"]) {
  const extra = store === "postgres" ? ["--database-url", pg.createDatabase("bench")] : [];
  const coordinator = await startCoordinator({
    dataDir: `${dir}/data-${store}`, args: ["--queue-depth", "1000", "--hold-requests", args["hold-requests"], ...extra],
  });
  const providers = [];
  for (let i = 0; i < Number(args.providers); ++i) {
    providers.push(await startProvider(coordinator, model, ["--max-batch", "64"]));
  }
  await waitForProviders(coordinator, providers.length);
  const account = await createAccount(coordinator);
  await adminCredit(coordinator, account.account_id, 1_000_000_000);
  await setLimits(coordinator, account.account_id);  // the benchmark sends faster than the defaults allow
  const key = account.api_key;
  console.log(`== ${store}: ${args.requests} requests, concurrency ${args.concurrency}, ${providers.length} providers`);
  // Asynchronously: the coordinator's and providers' logs must keep draining meanwhile.
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(here, "loadgen.mjs"), "--url",
    coordinator.url, "--key", key, "--model", "bench-tiny", "--requests", args.requests, "--concurrency",
    args.concurrency, "--max-tokens", "2", "--no-stream"]);
  console.log(stdout);
  for (const p of providers) await p.kill();
  await coordinator.kill("SIGTERM");
}
await pg.kill("SIGINT");
