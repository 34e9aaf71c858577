// Floods and faults against real processes on 127.0.0.1 with the default limits (the scenarios
// live in attacks.mjs, which ./run soak repeats for minutes): malformed requests, 1,000 streams at
// once, a provider and the coordinator killed mid-stream, PostgreSQL restarted under load. Each
// asserts its outcome, not its timing; the books balance after each.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { tempDir } from "./cluster.mjs";
import {
  Cluster, legitimateStream, assertCleanStream, malformedRequests, manyStreams, killProviderMidStream,
  killCoordinator, restartPostgres, badKeyFlood, providerFloods,
} from "./attacks.mjs";

describe("floods and faults, default limits", () => {
  let cluster;

  before(async () => { cluster = await Cluster.start(tempDir()); });
  after(async () => { await cluster.stop(); });

  it("30 kinds of malformed HTTP and JSON each get a 4xx, and the coordinator stays healthy", async () => {
    const consumer = await cluster.newAccount();
    await malformedRequests(cluster, consumer);
    assertCleanStream(await legitimateStream(cluster.coordinator, cluster.legit.api_key, 8));
    assert.equal(await cluster.balance(consumer), consumer.credit, "nothing charged for a refused request");
    await cluster.assertBooksBalance();
  });

  it("random API keys get 401s while a legitimate client keeps streaming", async () => {
    const stream = legitimateStream(cluster.coordinator, cluster.legit.api_key, 256);
    await badKeyFlood(cluster, { ms: 3000 });
    assertCleanStream(await stream);
  });

  it("a provider's floods of messages neither forge log lines nor keep it connected", async () => {
    await providerFloods(cluster);
    assertCleanStream(await legitimateStream(cluster.coordinator, cluster.legit.api_key, 8));
    await cluster.assertBooksBalance();
  });

  it("1,000 streams at once each end with exactly one [DONE] or a 429", async () => {
    await manyStreams(cluster, { count: 1000 });
    assertCleanStream(await legitimateStream(cluster.coordinator, cluster.legit.api_key, 8));
    await cluster.assertBooksBalance();
  });

  it("a provider killed mid-stream: in-band errors, one [DONE] each, charged only for what was delivered", async () => {
    await killProviderMidStream(cluster);
    assertCleanStream(await legitimateStream(cluster.coordinator, cluster.legit.api_key, 8));
    await cluster.assertBooksBalance();
  });

  it("the coordinator killed mid-stream and restarted: no hang, escrow returned, providers back within 30 s", async () => {
    const { reconnect_ms: reconnectMs } = await killCoordinator(cluster);
    assert.ok(reconnectMs <= 30000);
    await cluster.assertBooksBalance();
  });
});

describe("PostgreSQL stopped and restarted under load", () => {
  let cluster;

  before(async () => { cluster = await Cluster.start(tempDir(), { postgres: true, providers: 1 }); });
  after(async () => { await cluster.stop(); });

  it("serves or refuses with 503 meanwhile, and loses no settlement", async () => {
    await restartPostgres(cluster);
    assertCleanStream(await legitimateStream(cluster.coordinator, cluster.legit.api_key, 8));
    await cluster.assertBooksBalance();
  });
});
