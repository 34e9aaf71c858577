// Money through real processes on 127.0.0.1, on each store: SQLite (the default) and a private
// PostgreSQL server this test starts. Reserve → 402, settle, the 95/5/20 split, admin routes and
// their bad input, 200 concurrent requests on a balance for 20, a coordinator killed with
// SIGKILL between reserve and settle, and two coordinators sharing one PostgreSQL. After each,
// money is conserved: the balances of all accounts add up to what was credited.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  tempDir, synthModel, startCoordinator, createAccount, adminCredit, startProvider, waitForProviders, freePort,
  startPostgres, readEvents, call,
} from "./cluster.mjs";

const MODEL_ID = "bill-model";

const CHAT = { model: MODEL_ID, messages: [{ role: "user", content: "Count to three" }], max_tokens: 8, ignore_eos: true };

async function chat(coordinator, key, body = CHAT) {
  return call(coordinator, "POST", "/v1/chat/completions", { key, body });
}

async function balance(coordinator, key) {
  const answer = await call(coordinator, "GET", "/v1/balance", { key });
  assert.equal(answer.status, 200, answer.text);
  return answer.json.balance_micro_usd;
}

// Default prices: 50,000 / 200,000 micro-USD per million input / output tokens, at least 100.
function defaultCost(prompt, completion) {
  return Math.max(100, Math.floor(prompt * 50_000 / 1e6) + Math.floor(completion * 200_000 / 1e6));
}

const settleWait = () => new Promise((r) => setTimeout(r, 150));  // group commits every 10 ms

for (const kind of ["sqlite", "postgres"]) {
  describe(`billing on ${kind}`, () => {
    let dir, model, pg, databaseUrl, coordinator, operator, providers, database;

    // Rows of a query on the coordinator's database.
    const query = (sql) => (kind === "sqlite"
      ? JSON.parse(execFileSync("/usr/bin/python3", ["-c",
        "import json, sqlite3, sys; print(json.dumps(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall()))",
        `${dir}/data/coordinator.db`, sql]).toString()).map((row) => row.map(String))
      : pg.query(database, sql));
    const number = (sql) => Number(query(sql)[0][0] ?? 0);
    // Every account's balance (escrows too) against every credit.
    const assertConserved = () => {
      assert.equal(number("SELECT COALESCE(SUM(balance), 0) FROM accounts"),
        number("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'admin_credit'"));
      assert.equal(number("SELECT COUNT(*) FROM accounts WHERE balance < 0"), 0);
    };

    const coordinatorArgs = (extra = []) => [
      ...(kind === "postgres" ? ["--database-url", databaseUrl] : []), "--queue-depth", "400",
      // Money is the subject here, not request limits (hostile.test.mjs has those).
      "--rate-limit", "0", "--max-concurrent-per-key", "0", ...extra];

    before(async () => {
      dir = tempDir();
      model = synthModel(dir, MODEL_ID);
      if (kind === "postgres") {
        pg = await startPostgres(dir);
        database = "billing";
        databaseUrl = pg.createDatabase(database);
      }
      coordinator = await startCoordinator({ dataDir: `${dir}/data`, port: await freePort(), args: coordinatorArgs() });
      operator = await createAccount(coordinator);
      providers = [];
      for (let i = 0; i < 2; ++i) {
        providers.push(await startProvider(coordinator, model, ["--account-token", operator.api_key]));
      }
      await waitForProviders(coordinator, 2);
    });

    after(async () => {
      for (const p of providers) await p.kill();
      await coordinator.kill();
      if (pg) await pg.kill("SIGINT");
    });

    it("answers 402 insufficient_quota when the balance does not cover the worst case, charging nothing", async () => {
      const consumer = await createAccount(coordinator);
      const answer = await chat(coordinator, consumer.api_key);
      assert.equal(answer.status, 402, answer.text);
      assert.equal(answer.json.error.type, "insufficient_quota");
      assert.equal(answer.json.error.code, "insufficient_quota");
      await adminCredit(coordinator, consumer.account_id, 99);  // below the minimum charge
      assert.equal((await chat(coordinator, consumer.api_key)).status, 402);
      assert.equal(await balance(coordinator, consumer.api_key), 99);
      const usage = await call(coordinator, "GET", "/v1/usage", { key: consumer.api_key });
      assert.deepEqual(usage.json.data, []);
    });

    it("charges the tokens used, pays the operator 95 % and lists the charge", async () => {
      const consumer = await createAccount(coordinator);
      await adminCredit(coordinator, consumer.account_id, 10_000);
      const before = await balance(coordinator, operator.api_key);
      const answer = await chat(coordinator, consumer.api_key);
      assert.equal(answer.status, 200, answer.text);
      const { prompt_tokens: prompt, completion_tokens: completion } = answer.json.usage;
      assert.equal(completion, 8);
      const cost = defaultCost(prompt, completion);
      await settleWait();
      assert.equal(await balance(coordinator, consumer.api_key), 10_000 - cost);
      assert.equal(await balance(coordinator, operator.api_key), before + Math.floor(cost * 95 / 100));
      const usage = await call(coordinator, "GET", "/v1/usage", { key: consumer.api_key });
      assert.equal(usage.json.data.length, 1);
      assert.equal(usage.json.data[0].cost_micro_usd, cost);
      assert.equal(usage.json.data[0].request_id, answer.json.id.replace(/^chatcmpl-/, ""));
      assertConserved();
    });

    it("streams are billed too, and X-Timing's reserve step is measured", async () => {
      const consumer = await createAccount(coordinator);
      await adminCredit(coordinator, consumer.account_id, 10_000);
      const response = await fetch(`${coordinator.url}/v1/chat/completions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${consumer.api_key}`, "Content-Type": "application/json" },
        body: JSON.stringify({ ...CHAT, stream: true, stream_options: { include_usage: true } }),
      });
      assert.equal(response.status, 200);
      const timing = JSON.parse(response.headers.get("x-timing"));
      assert.equal(typeof timing.reserve_us, "number");
      const events = await readEvents(response);
      const usage = JSON.parse(events.find((e) => e !== "[DONE]" && JSON.parse(e).usage)).usage;
      await settleWait();
      assert.equal(await balance(coordinator, consumer.api_key), 10_000 - defaultCost(usage.prompt_tokens, 8));
    });

    it("a provider with an unknown account token is refused with the reason", async () => {
      const stray = await startProvider(coordinator, model, ["--account-token", "db-not-a-key"],
        /closed by peer: (unknown account token[^\n]*)/);
      assert.match(stray.match[1], /payouts need an API key of the operator's account/);
      await stray.kill();
      const health = await (await fetch(`${coordinator.url}/health`)).json();
      assert.equal(health.providers, 2);
    });

    it("admin routes refuse consumer keys and bad input, leaving the ledger untouched", async () => {
      const consumer = await createAccount(coordinator);
      const entries = number("SELECT COUNT(*) FROM ledger");
      const refused = [
        [await call(coordinator, "POST", "/v1/admin/credit", { key: consumer.api_key, body: { account_id: consumer.account_id, amount_micro_usd: 1000 } }), 401],
        [await call(coordinator, "PUT", "/v1/admin/pricing", { key: consumer.api_key, body: { input_per_million: 1, output_per_million: 1 } }), 401],
        [await call(coordinator, "POST", "/v1/admin/referrals", { key: consumer.api_key, body: { account_id: consumer.account_id, referrer_id: operator.account_id } }), 401],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: consumer.account_id, amount_micro_usd: -5 } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: consumer.account_id, amount_micro_usd: 0 } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: consumer.account_id, amount_micro_usd: 1e16 } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: consumer.account_id, amount_micro_usd: 1.5 } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: consumer.account_id, amount_micro_usd: "100" } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: '{"account_id": "x", "amount_micro_usd": 5' }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { amount_micro_usd: 5 } }), 400],
        [await call(coordinator, "POST", "/v1/admin/credit", { body: { account_id: "acct_nobody", amount_micro_usd: 5 } }), 404],
        [await call(coordinator, "PUT", "/v1/admin/pricing", { body: { model: MODEL_ID, input_per_million: -1, output_per_million: 1 } }), 400],
        [await call(coordinator, "PUT", "/v1/admin/pricing", { body: { model: MODEL_ID, input_per_million: 1, output_per_million: 2 ** 63 } }), 400],
        [await call(coordinator, "PUT", "/v1/admin/pricing", { body: [] }), 400],
        [await call(coordinator, "POST", "/v1/admin/referrals", { body: { account_id: consumer.account_id, referrer_id: consumer.account_id } }), 400],
        [await call(coordinator, "POST", "/v1/admin/referrals", { body: { account_id: consumer.account_id, referrer_id: "acct_nobody" } }), 404],
      ];
      for (const [answer, status] of refused) {
        assert.equal(answer.status, status, answer.text);
        assert.equal(typeof answer.json.error.message, "string", answer.text);
        assert.equal(typeof answer.json.error.type, "string", answer.text);
      }
      assert.equal(number("SELECT COUNT(*) FROM ledger"), entries);
      assert.equal(number("SELECT COUNT(*) FROM prices"), 0);
      assert.equal((await call(coordinator, "GET", "/v1/balance", { key: "db-not-a-key" })).status, 401);
      // An idempotency key makes a retried credit a no-op.
      const body = { account_id: consumer.account_id, amount_micro_usd: 500, idempotency_key: "grant-1" };
      assert.equal((await call(coordinator, "POST", "/v1/admin/credit", { body })).json.credited_micro_usd, 500);
      assert.equal((await call(coordinator, "POST", "/v1/admin/credit", { body })).json.credited_micro_usd, 0);
      assert.equal(await balance(coordinator, consumer.api_key), 500);
    });

    it("runs exactly the 20 of 200 concurrent requests the balance covers; the rest get 402", async () => {
      const consumer = await createAccount(coordinator);
      // Worst case: every body byte a prompt token, max_tokens out; here below the 100 minimum.
      const worst = defaultCost(Buffer.byteLength(JSON.stringify(CHAT)), CHAT.max_tokens);
      assert.equal(worst, 100);
      await adminCredit(coordinator, consumer.account_id, 20 * worst);
      const answers = await Promise.all(Array.from({ length: 200 }, () => chat(coordinator, consumer.api_key)));
      const counts = {};
      for (const a of answers) counts[a.status] = (counts[a.status] ?? 0) + 1;
      assert.deepEqual(counts, { 200: 20, 402: 180 });
      await settleWait();
      assert.equal(await balance(coordinator, consumer.api_key), 0);
      const usage = (await call(coordinator, "GET", "/v1/usage", { key: consumer.api_key })).json.data;
      assert.equal(usage.length, 20);
      const newest = (await call(coordinator, "GET", "/v1/usage?limit=1", { key: consumer.api_key })).json.data;
      assert.deepEqual(newest, usage.slice(0, 1));
      for (const bad of ["limit=0", "limit=1001", "limit=ten", "limit="]) {
        const refused = await call(coordinator, "GET", `/v1/usage?${bad}`, { key: consumer.api_key });
        assert.equal(refused.status, 400, bad);
        assert.equal(refused.json.error.param, "limit");
      }
      // Per request: what the consumer paid went to the operator, the platform and no one else.
      for (const { request_id: id, cost_micro_usd: cost } of usage) {
        assert.equal(cost, 100);
        assert.equal(number(`SELECT SUM(amount) FROM ledger WHERE request_id = '${id}' AND kind <> 'charge'`), cost);
      }
      assertConserved();
    });

    it("prices per model and referrals change the split", async () => {
      const referrer = await createAccount(coordinator);
      const consumer = await createAccount(coordinator);
      const referral = await call(coordinator, "POST", "/v1/admin/referrals",
        { body: { account_id: consumer.account_id, referrer_id: referrer.account_id } });
      assert.equal(referral.status, 200, referral.text);
      const twice = await call(coordinator, "POST", "/v1/admin/referrals",
        { body: { account_id: consumer.account_id, referrer_id: operator.account_id } });
      assert.equal(twice.status, 400);
      const priced = await call(coordinator, "PUT", "/v1/admin/pricing",
        { body: { model: MODEL_ID, input_per_million: 10_000_000, output_per_million: 20_000_000 } });
      assert.equal(priced.status, 200, priced.text);
      assert.ok(priced.json.data.some((p) => p.model === MODEL_ID && p.output_per_million === 20_000_000));
      await adminCredit(coordinator, consumer.account_id, 1_000_000);
      const answer = await chat(coordinator, consumer.api_key);
      assert.equal(answer.status, 200, answer.text);
      const cost = Math.max(100, answer.json.usage.prompt_tokens * 10 + 8 * 20);
      await settleWait();
      assert.equal(await balance(coordinator, consumer.api_key), 1_000_000 - cost);
      const fee = cost - Math.floor(cost * 95 / 100);
      assert.equal(await balance(coordinator, referrer.api_key), Math.floor(fee * 20 / 100));
      assertConserved();
      // Back to the default rates for the tests after this one.
      const reset = await call(coordinator, "PUT", "/v1/admin/pricing",
        { body: { model: MODEL_ID, input_per_million: 50_000, output_per_million: 200_000 } });
      assert.equal(reset.status, 200, reset.text);
    });

    it("after kill -9 between reserve and settle, a restart returns the escrow and charges nothing twice", async () => {
      const consumer = await createAccount(coordinator);
      await adminCredit(coordinator, consumer.account_id, 1_000_000);
      // Long answers are in flight (reserved, not settled) when the coordinator dies.
      const long = { ...CHAT, max_tokens: 4000, stream: true };
      const inflight = Array.from({ length: 4 }, () => chat(coordinator, consumer.api_key, long).catch(() => null));
      await new Promise((r) => setTimeout(r, 400));
      assert.ok(number("SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE owner IS NOT NULL") > 0, "money in escrow");
      await coordinator.kill("SIGKILL");
      await Promise.all(inflight);
      const port = coordinator.port;
      coordinator = await startCoordinator({ dataDir: `${dir}/data`, port, args: coordinatorArgs() });
      assert.equal(number("SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE owner IS NOT NULL"), 0);
      assertConserved();
      const charged = number(`SELECT COALESCE(-SUM(l.amount), 0) FROM ledger l JOIN accounts a ON a.id = l.account_id
                              WHERE a.owner = '${consumer.account_id}' AND l.kind = 'charge'`);
      assert.equal(await balance(coordinator, consumer.api_key), 1_000_000 - charged);
      assert.equal(number("SELECT COUNT(*) FROM (SELECT request_id FROM ledger WHERE kind = 'charge' GROUP BY request_id HAVING COUNT(*) > 1) AS twice"), 0);
      // And it serves again once the providers are back.
      await waitForProviders(coordinator, 2, 60000);
      const again = await chat(coordinator, consumer.api_key);
      assert.equal(again.status, 200, again.text);
      await settleWait();
      assertConserved();
    });

    if (kind === "postgres") {
      it("two coordinators on one PostgreSQL never spend more than the balance together", async () => {
        // A second coordinator with the first one's id would spend its escrow: it refuses to start.
        await assert.rejects(
          startCoordinator({ dataDir: `${dir}/data3`, port: await freePort(), args: coordinatorArgs() }),
          /another coordinator runs as 'main' on this database: give each its own --coordinator-id/);
        const second = await startCoordinator({
          dataDir: `${dir}/data2`, port: await freePort(), args: coordinatorArgs(["--coordinator-id", "second"]),
        });
        const secondProviders = [await startProvider(second, model, ["--account-token", operator.api_key])];
        await waitForProviders(second, 1);
        try {
          const consumer = await createAccount(coordinator);
          await adminCredit(coordinator, consumer.account_id, 20 * 100);
          const answers = await Promise.all(Array.from({ length: 100 }, (_, i) =>
            chat(i % 2 === 0 ? coordinator : second, consumer.api_key)));
          const ok = answers.filter((a) => a.status === 200).length;
          assert.ok(answers.every((a) => a.status === 200 || a.status === 402));
          assert.ok(ok <= 20 && ok >= 12, `served ${ok}: ${answers.find((a) => a.status !== 200)?.text}`);
          await settleWait();
          assert.ok(number(`SELECT balance FROM accounts WHERE id = '${consumer.account_id}'`) >= 0);
          assert.equal(number(`SELECT COUNT(*) FROM ledger l JOIN accounts a ON a.id = l.account_id
                               WHERE a.owner = '${consumer.account_id}' AND l.kind = 'charge'`), ok);
          assertConserved();
        } finally {
          for (const p of secondProviders) await p.kill();
          await second.kill("SIGTERM");
        }
        // A clean stop returned the second coordinator's allowance.
        assert.equal(number("SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE id LIKE 'escrow_second_%'"), 0);
        assertConserved();
      });
    }
  });
}
