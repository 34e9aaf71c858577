// Hostile consumers and providers against real processes on 127.0.0.1 with the default limits:
// each scenario repeats an attack and asserts its outcome (not its timing), and that a legitimate
// client keeps being served while it runs. After each scenario the books balance.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import {
  tempDir, synthModel, startCoordinator, createAccount, adminCredit, startProvider, waitForProviders,
  FakeProvider, RawWebSocket, call, startPostgres, setLimits,
} from "./cluster.mjs";
import {
  MODEL_ID, Cluster, oversizedBody, liarProvider, legitimateStream, assertCleanStream, rawExchange, unattestedRegistrations, silentSessions,
} from "./attacks.mjs";

describe("hostile consumers and providers, default limits", () => {
  let cluster, coordinator, providers, legit, attacker;
  const number = (sql) => cluster.number(sql);
  const assertBooksBalance = () => cluster.assertBooksBalance();

  before(async () => {
    cluster = await Cluster.start(tempDir());  // default limits: no flags
    ({ coordinator, providers, legit } = cluster);
    attacker = await cluster.newAccount();
  });

  after(async () => { await cluster.stop(); });

  it("an 8.5 MB message costs no provider its connection, and a body over the limit is a 413", async () => {
    const stream = legitimateStream(coordinator, legit.api_key, 96);
    // The provider reads it, and refuses it for what it is: longer than the model's context.
    await oversizedBody(cluster, attacker);
    assertCleanStream(await stream);
    for (const provider of providers) {
      assert.doesNotMatch(provider.output.stderr, /larger than|connection to the coordinator ended/);
    }
    assert.equal((await cluster.health()).providers, 2);
    await assertBooksBalance();
  });

  it("a provider that claims more tokens than it sent is billed at the bound and distrusted", async () => {
    await liarProvider(cluster);
    await assertBooksBalance();
  });

  it("a registration flood is closed or refused, and the public listing stays small", async () => {
    const keysBefore = number("SELECT COUNT(*) FROM provider_keys");
    const stream = legitimateStream(coordinator, legit.api_key, 96);
    // An attested provider that never answers its challenge leaves no key behind.
    const mute = await FakeProvider.connect(coordinator.port, { model: "mute-model", answerChallenges: false,
      waitForTrust: false });
    // Unattested registrations from one address: each closed at once (this coordinator is not in
    // open mode), none registered. Connections that never register, from another address, all
    // at once: 32 taken, then 429.
    await unattestedRegistrations(coordinator.port, { localAddress: "127.0.0.2" });
    const silent = await silentSessions(coordinator.port, { localAddress: "127.0.0.3" });
    assert.equal(silent.length, 32);
    // Another address is still welcome, and a real provider too.
    const welcome = await RawWebSocket.connect(coordinator.port, "/ws/provider", { localAddress: "127.0.0.4" });
    welcome.socket.destroy();
    assertCleanStream(await stream);
    const health = (await call(coordinator, "GET", "/health")).json;
    assert.equal(health.routable, 2);
    assert.equal(health.providers, 3, "the two real providers and the mute one");

    // The public listing: routable providers only (not the mute one), in pages.
    const listing = (await call(coordinator, "GET", "/v1/providers/attestation")).json;
    assert.equal(listing.data.length, 2);
    assert.equal(listing.has_more, false);
    const first = (await call(coordinator, "GET", "/v1/providers/attestation?limit=1")).json;
    assert.equal(first.data.length, 1);
    assert.equal(first.has_more, true);
    const second = (await call(coordinator, "GET", `/v1/providers/attestation?limit=1&after=${first.last_id}`)).json;
    assert.equal(second.data.length, 1);
    assert.equal(second.has_more, false);
    assert.notEqual(second.data[0].provider_id, first.data[0].provider_id);
    assert.equal((await call(coordinator, "GET", "/v1/providers/attestation?limit=0")).status, 400);

    // The silent ones are closed when their time to register runs out (10 s by default).
    for (const raw of silent) assert.equal(await raw.next(15000), null);
    const again = await RawWebSocket.connect(coordinator.port, "/ws/provider", { localAddress: "127.0.0.3" });
    again.socket.destroy();
    assert.equal(mute.challenges.length >= 1, true);
    assert.equal(number("SELECT COUNT(*) FROM provider_keys"), keysBefore, "only keys that passed a challenge");
    mute.socket.socket.destroy();
  });
});

describe("connections", () => {
  const exchange = rawExchange;
  const idle = (port, localAddress) => new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(socket));
    socket.on("error", reject);
  });

  it("refuses an unauthenticated body before reading it, and caps connections per address", async () => {
    const dir = tempDir();
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    try {
      // 10 MiB announced, nothing sent: the answer comes without a 100 Continue or the body.
      const answer = await exchange(coordinator.port, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" +
        `Content-Type: application/json\r\nContent-Length: ${10 << 20}\r\nExpect: 100-continue\r\n` +
        "Authorization: Bearer db-nope\r\n\r\n");
      assert.match(answer, /^HTTP\/1\.1 401 /);
      assert.doesNotMatch(answer, /100 Continue/);
      assert.match(answer, /Missing or unknown API key/);
      // Nor for an admin route without the admin token, or a route that does not exist.
      for (const [target, status] of [["/v1/admin/credit", 401], ["/v1/nowhere", 404]]) {
        const refused = await exchange(coordinator.port, `POST ${target} HTTP/1.1\r\nHost: x\r\n` +
          `Content-Length: ${10 << 20}\r\nExpect: 100-continue\r\n\r\n`);
        assert.match(refused, new RegExp(`^HTTP/1\\.1 ${status} `), target);
        assert.doesNotMatch(refused, /100 Continue/, target);
      }

      // 256 connections from one address are taken; the next is answered 429 and closed.
      const held = [];
      for (let i = 0; i < 256; i++) held.push(await idle(coordinator.port, "127.0.0.6"));
      const refused = await exchange(coordinator.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        { localAddress: "127.0.0.6" });
      assert.match(refused, /^HTTP\/1\.1 429 /);
      assert.match(refused, /Retry-After: 5/i);
      const other = await exchange(coordinator.port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        { localAddress: "127.0.0.7" });
      assert.match(other, /^HTTP\/1\.1 200 /);
      for (const socket of held) socket.destroy();
    } finally {
      await coordinator.kill();
    }
  });

  it("throttles an address that keeps failing the admin token, and only that address", async () => {
    const dir = tempDir();
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    const admin = (token, localAddress) => exchange(coordinator.port, "POST /v1/admin/keys HTTP/1.1\r\nHost: x\r\n" +
      `Authorization: Bearer ${token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`, { localAddress });
    try {
      for (let i = 0; i < 10; i++) assert.match(await admin("guess", "127.0.0.8"), /^HTTP\/1\.1 401 /);
      const throttled = await admin("guess", "127.0.0.8");
      assert.match(throttled, /^HTTP\/1\.1 429 /);
      assert.match(throttled, /Retry-After: \d+/i);
      assert.match(await admin(coordinator.adminToken, "127.0.0.8"), /^HTTP\/1\.1 429 /, "even the right token, for now");
      assert.match(await admin(coordinator.adminToken, "127.0.0.9"), /^HTTP\/1\.1 200 /);
    } finally {
      await coordinator.kill();
    }
  });

  it("keeps its connection cap below the open-file limit and keeps serving past it", async () => {
    const dir = tempDir();
    const coordinator = await startCoordinator({ dataDir: `${dir}/data`, launcher: ["prlimit", "--nofile=128:128"] });
    try {
      assert.match(coordinator.output.stderr, /connections capped at 96 by the open-file limit \(128\)/);
      const held = [];
      let closedByServer = 0;
      for (let i = 0; i < 110; i++) {
        try {
          const socket = await idle(coordinator.port, `127.0.1.${1 + (i % 50)}`);
          socket.on("close", () => { closedByServer += 1; });
          socket.on("error", () => {});
          held.push(socket);
        } catch { closedByServer += 1; }
      }
      await new Promise((r) => setTimeout(r, 500));
      // Past the cap, connections are closed at accept: at most 96 stay open.
      assert.ok(closedByServer >= 110 - 96, `${closedByServer} of 110 closed by the coordinator`);
      for (const socket of held) socket.destroy();
      await new Promise((r) => setTimeout(r, 200));
      const health = await exchange(coordinator.port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      assert.match(health, /^HTTP\/1\.1 200 /);
    } finally {
      await coordinator.kill();
    }
  });
});

describe("request limits per account", () => {
  it("a burst past an account's limits gets 429 with Retry-After and x-ratelimit-*, and an admin can lift them", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID, ["--ctx", "8192"]);
    const coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--queue-depth", "200"] });
    try {
      const provider = await startProvider(coordinator, model, ["--ctx", "8192"]);
      await waitForProviders(coordinator, 1);
      const consumer = await createAccount(coordinator);
      await adminCredit(coordinator, consumer.account_id, 1_000_000_000);
      const chat = () => call(coordinator, "POST", "/v1/chat/completions", { key: consumer.api_key,
        body: { model: MODEL_ID, messages: [{ role: "user", content: "x" }], max_tokens: 1 } });
      // 60 at once against a bucket of 40 that refills at 1 per second (slow enough that a busy
      // machine's pace does not matter).
      await setLimits(coordinator, consumer.account_id, { rps: 1, burst: 40, maxConcurrent: 64 });
      const answers = await Promise.all(Array.from({ length: 60 }, chat));
      const limited = answers.filter((a) => a.status === 429);
      assert.ok(limited.length >= 15 && limited.length <= 20, `${limited.length} of 60 refused`);
      assert.equal(answers.filter((a) => a.status === 200).length, 60 - limited.length);
      for (const answer of limited) {
        assert.equal(answer.json.error.code, "rate_limit_exceeded");
        assert.equal(answer.headers.get("retry-after"), "1");
        assert.equal(answer.headers.get("x-ratelimit-limit-requests"), "40");
        assert.equal(answer.headers.get("x-ratelimit-remaining-requests"), "0");
        assert.match(answer.headers.get("x-ratelimit-reset-requests"), /^\d+(ms|s)$/);
      }
      assert.equal(answers.find((a) => a.status === 200).headers.get("x-ratelimit-limit-requests"), "40");

      // The admin lifts them (0 = unlimited), kept in the store: 60 at once all run.
      const set = await call(coordinator, "PUT", "/v1/admin/limits",
        { body: { account_id: consumer.account_id, requests_per_second: 0, burst: 0, max_concurrent: 0 } });
      assert.equal(set.status, 200, set.text);
      assert.equal((await call(coordinator, "PUT", "/v1/admin/limits", { key: consumer.api_key,
        body: { account_id: consumer.account_id, requests_per_second: 0, burst: 0, max_concurrent: 0 } })).status, 401);
      assert.equal((await call(coordinator, "PUT", "/v1/admin/limits",
        { body: { account_id: "acct_nobody", requests_per_second: 1, burst: 1, max_concurrent: 1 } })).status, 404);
      const lifted = await Promise.all(Array.from({ length: 60 }, chat));
      assert.deepEqual([...new Set(lifted.map((a) => a.status))], [200]);

      // A cap on requests in flight: the third concurrent stream of an account limited to 2 waits for nothing.
      await setLimits(coordinator, consumer.account_id, { maxConcurrent: 2 });
      const long = { model: MODEL_ID, messages: [{ role: "user", content: "x" }], max_tokens: 8000, ignore_eos: true, stream: true };
      const open = await Promise.all([0, 1].map(() => fetch(`${coordinator.url}/v1/chat/completions`, { method: "POST",
        headers: { Authorization: `Bearer ${consumer.api_key}`, "Content-Type": "application/json" }, body: JSON.stringify(long) })));
      for (const response of open) assert.equal(response.status, 200);
      const third = await call(coordinator, "POST", "/v1/chat/completions", { key: consumer.api_key, body: long });
      assert.equal(third.status, 429);
      assert.match(third.json.error.message, /in flight/);
      for (const response of open) await response.body.cancel();
      await provider.kill();
    } finally {
      await coordinator.kill();
    }
  });
});

describe("transient gaps", () => {
  it("a model whose providers just left answers 503 with Retry-After, not 404", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    try {
      const consumer = await createAccount(coordinator);
      await adminCredit(coordinator, consumer.account_id, 1_000_000_000);
      const provider = await startProvider(coordinator, model);
      await waitForProviders(coordinator, 1);
      assertCleanStream(await legitimateStream(coordinator, consumer.api_key, 4));
      await provider.kill();
      await waitForProviders(coordinator, 0);
      const gap = await call(coordinator, "POST", "/v1/chat/completions", { key: consumer.api_key,
        body: { model: MODEL_ID, messages: [{ role: "user", content: "x" }], max_tokens: 4 } });
      assert.equal(gap.status, 503, gap.text);
      assert.equal(gap.json.error.code, "no_provider_available");
      assert.equal(gap.headers.get("retry-after"), "5");
      const unknown = await call(coordinator, "POST", "/v1/chat/completions", { key: consumer.api_key,
        body: { model: "never-served", messages: [{ role: "user", content: "x" }], max_tokens: 4 } });
      assert.equal(unknown.status, 404);
      // The provider comes back: served again.
      const back = await startProvider(coordinator, model);
      await waitForProviders(coordinator, 1);
      assertCleanStream(await legitimateStream(coordinator, consumer.api_key, 4));
      await back.kill();
    } finally {
      await coordinator.kill();
    }
  });
});

describe("a database that stops answering", () => {
  let dir, pg, database, coordinator, provider;

  // SIGSTOP the server and every backend: connections stay open and nothing answers, the way a
  // hung database looks (a crashed one at least closes its sockets).
  const signalPostgres = (signal) => {
    // The server's children (its backends), from /proc: field 4 of /proc/PID/stat is the parent.
    const backends = fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).filter((pid) => {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pg.child.pid;
      } catch { return false; }  // gone meanwhile
    });
    for (const pid of [pg.child.pid, ...backends.map(Number)]) process.kill(pid, signal);
  };
  const answersWithin = (promise, ms) => Promise.race([promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms))]);

  before(async () => {
    dir = tempDir();
    pg = await startPostgres(dir);
    database = pg.createDatabase("frozen");
    const model = synthModel(dir, MODEL_ID);
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--database-url", pg.url("frozen")] });
    provider = await startProvider(coordinator, model);
    await waitForProviders(coordinator, 1);
  });

  after(async () => {
    try { signalPostgres("SIGCONT"); } catch { /* already gone */ }
    await provider.kill();
    await coordinator.kill();
    await pg.kill();
  });

  it("keeps streaming for known keys, answers 503 fast for what needs it, and loses no settlement", async () => {
    const consumer = await createAccount(coordinator);
    await adminCredit(coordinator, consumer.account_id, 1_000_000_000);
    assertCleanStream(await legitimateStream(coordinator, consumer.api_key, 8));  // key cached, credit held

    signalPostgres("SIGSTOP");
    try {
      // A key nobody has seen needs the database: its lookup waits on the stuck worker.
      const stuck = call(coordinator, "GET", "/v1/balance", { key: `db-${"7".repeat(64)}` });
      // Streams of known keys go on: the key is cached and the reservation is made in memory.
      for (let i = 0; i < 3; i++) assertCleanStream(await answersWithin(legitimateStream(coordinator, consumer.api_key, 8), 20000));
      assert.equal((await answersWithin(call(coordinator, "GET", "/health"), 5000)).status, 200);
      // Once the worker has been stuck past its limit (5 s), whatever needs the database is a
      // fast 503 with Retry-After instead of another wait.
      await new Promise((r) => setTimeout(r, 5500));
      const refused = await answersWithin(call(coordinator, "GET", "/v1/balance", { key: `db-${"8".repeat(64)}` }), 5000);
      assert.equal(refused.status, 503, refused.text);
      assert.equal(refused.json.error.code, "service_unavailable");
      assert.equal(refused.headers.get("retry-after"), "2");
      const admin = await answersWithin(call(coordinator, "POST", "/v1/admin/keys"), 5000);
      assert.equal(admin.status, 503);
      signalPostgres("SIGCONT");
      assert.equal((await answersWithin(stuck, 20000)).status, 401, "answered once the database is back");
    } finally {
      signalPostgres("SIGCONT");
    }
    // The settlements made while it was stuck are written now: 4 charges, the books balance.
    const number = (sql) => Number(pg.query(database.split("/").pop(), sql)[0][0] ?? 0);
    const deadline = Date.now() + 20000;
    while (number("SELECT COUNT(*) FROM ledger WHERE kind = 'charge'") < 4 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(number("SELECT COUNT(*) FROM ledger WHERE kind = 'charge'"), 4);
    assert.equal(number("SELECT COALESCE(SUM(balance), 0) FROM accounts"),
      number("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'admin_credit'"));
    assert.equal((await call(coordinator, "GET", "/v1/balance", { key: `db-${"9".repeat(64)}` })).status, 401);
  });
});

