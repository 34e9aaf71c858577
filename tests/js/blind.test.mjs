// Coordinator-blind requests end to end: the `openai` client talks to `darkbloom proxy`, which
// seals each body to providers it verified itself; the coordinator routes, bills and relays what
// it cannot open. The coordinator's memory, logs and database are searched for the prompt and
// the answer afterwards, and the same search finds a plain request's prompt while it is in flight
// (so the search can fail).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import {
  FakeProvider, call, createKey, startCoordinator, startProvider, startProxy, synthModel, tempDir, waitForProviders,
  writeKey,
} from "./cluster.mjs";

// Every readable mapping of a process (its heap, stacks, libraries' data), searched for each
// needle. Reading /proc/PID/mem needs ptrace rights over the process: the test is its parent.
function searchMemory(pid, needles) {
  const found = new Set();
  const fd = fs.openSync(`/proc/${pid}/mem`, "r");
  const overlap = Math.max(...needles.map((n) => n.length));
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")) {
      const match = line.match(/^([0-9a-f]+)-([0-9a-f]+) r/);
      if (!match || line.includes("[vvar]") || line.includes("[vsyscall]")) continue;
      const start = BigInt(`0x${match[1]}`);
      const end = BigInt(`0x${match[2]}`);
      const piece = 8n << 20n;
      for (let at = start; at < end; at += piece) {
        const length = Number((end - at < piece ? end - at : piece) + BigInt(overlap));
        const buffer = Buffer.alloc(length);
        let read = 0;
        try { read = fs.readSync(fd, buffer, 0, length, at); } catch { continue; }
        const bytes = buffer.subarray(0, read);
        for (const needle of needles) if (bytes.includes(needle)) found.add(needle);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return found;
}

function searchFiles(dir, needles) {
  const found = new Set();
  for (const name of fs.readdirSync(dir, { recursive: true })) {
    const file = path.join(dir, String(name));
    if (!fs.statSync(file).isFile()) continue;
    const bytes = fs.readFileSync(file);
    for (const needle of needles) if (bytes.includes(needle)) found.add(needle);
  }
  return found;
}

// Another X25519 public key: a chunk sealed to it opens for nobody in this test.
function nacl_public_key() {
  const { publicKey } = crypto.generateKeyPairSync("x25519");
  return publicKey.export({ format: "der", type: "spki" }).subarray(-32);
}

describe("blind requests through darkbloom proxy", () => {
  let dir, coordinator, provider, proxy, key, openai, direct;
  const model = "e2e-model";

  before(async () => {
    dir = tempDir("darkbloom-blind-");
    const file = synthModel(dir, model);
    coordinator = await startCoordinator({ dataDir: path.join(dir, "data"), args: ["--rate-limit", "0"] });
    key = await createKey(coordinator);
    provider = await startProvider(coordinator, file);
    await waitForProviders(coordinator, 1, 30000, { routable: true });
    proxy = await startProxy(coordinator, writeKey(dir, key));
    openai = new OpenAI({ apiKey: "unused-by-the-proxy", baseURL: `${proxy.url}/v1`, maxRetries: 0, timeout: 60000 });
    direct = new OpenAI({ apiKey: key, baseURL: `${coordinator.url}/v1`, maxRetries: 0, timeout: 60000 });
  });
  after(async () => {
    await proxy?.kill();
    await provider?.kill();
    await coordinator?.kill();
  });

  it("answers a chat request, whole and streamed, as the provider would answer it directly", async () => {
    const request = { model, messages: [{ role: "user", content: "Say something" }], max_tokens: 12, temperature: 0 };
    const plain = await direct.chat.completions.create(request);
    const { data: blind, response } = await openai.chat.completions.create(request).withResponse();
    assert.equal(response.headers.get("x-sealed-by"), "proxy");
    assert.equal(response.headers.get("x-provider-id"), provider.id);
    assert.match(response.headers.get("x-attempt-id"), /^att_/);
    assert.equal(blind.choices[0].message.content, plain.choices[0].message.content, "the same greedy answer");
    assert.equal(blind.choices[0].finish_reason, plain.choices[0].finish_reason);
    assert.equal(blind.usage.completion_tokens, plain.usage.completion_tokens);
    assert.equal(blind.usage.prompt_tokens, plain.usage.prompt_tokens);
    assert.ok(blind.choices[0].message.content.length > 0);
    assert.ok(response.headers.get("x-response-signature"), "the receipt the proxy verified");

    const stream = await openai.chat.completions.create({ ...request, stream: true,
      stream_options: { include_usage: true } });
    let text = "";
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta?.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(text, plain.choices[0].message.content);
    assert.equal(finish, plain.choices[0].finish_reason);
    assert.equal(usage.completion_tokens, plain.usage.completion_tokens);

    // ignore_eos travels in clear too (the coordinator bills its silent tokens without suspicion).
    const long = await openai.chat.completions.create({ ...request, max_tokens: 20, ignore_eos: true });
    assert.equal(long.usage.completion_tokens, 20);
    assert.equal(long.choices[0].finish_reason, "length");

    const completion = await openai.completions.create({ model, prompt: "Once", max_tokens: 8, temperature: 0 });
    const plainCompletion = await direct.completions.create({ model, prompt: "Once", max_tokens: 8, temperature: 0 });
    assert.equal(completion.choices[0].text, plainCompletion.choices[0].text);
  });

  it("bills a blind request as the same plain one is billed", async () => {
    const account = await createKey(coordinator, 1_000_000);
    const billed = await startProxy(coordinator, writeKey(dir, account, "billed-key"));
    const balance = async () => (await call(coordinator, "GET", "/v1/balance", { key: account })).json.balance_micro_usd;
    try {
      // Prices high enough that the charge tells the token counts apart (above the 100 micro-USD minimum).
      const priced = await call(coordinator, "PUT", "/v1/admin/pricing",
        { body: { model, input_per_million: 1_000_000, output_per_million: 100_000_000 } });
      assert.equal(priced.status, 200, priced.text);
      const request = { model, messages: [{ role: "user", content: "hi" }], max_tokens: 6, temperature: 0 };
      const blindClient = new OpenAI({ apiKey: "x", baseURL: `${billed.url}/v1`, maxRetries: 0 });
      const plainClient = new OpenAI({ apiKey: account, baseURL: `${coordinator.url}/v1`, maxRetries: 0 });
      const start = await balance();
      const plain = await plainClient.chat.completions.create(request);
      const afterPlain = await balance();
      const blind = await blindClient.chat.completions.create(request);
      const afterBlind = await balance();
      assert.deepEqual(blind.usage, plain.usage);
      assert.equal(start - afterPlain, plain.usage.prompt_tokens + 100 * plain.usage.completion_tokens,
        "the plain request was charged its tokens");
      assert.equal(afterPlain - afterBlind, start - afterPlain, "the blind one cost the same");
    } finally {
      await billed.kill();
    }
  });

  it("passes errors on in the OpenAI shape", async () => {
    await assert.rejects(openai.chat.completions.create({ model, messages: "not a list" }),
      (error) => error.status === 400 && /messages/.test(error.message));
    await assert.rejects(openai.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
      (error) => error.status === 404);
    // The coordinator's own refusal (no credit) comes through as it is.
    const broke = await createKey(coordinator, 0);
    const poor = await startProxy(coordinator, writeKey(dir, broke, "broke-key"));
    try {
      const client = new OpenAI({ apiKey: "x", baseURL: `${poor.url}/v1`, maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], max_tokens: 4 }),
        (error) => error.status === 402 && /balance/.test(error.message));
    } finally {
      await poor.kill();
    }
    // A proxy with a key the coordinator does not know.
    const stranger = await startProxy(coordinator, writeKey(dir, "sk-not-a-key-of-this-coordinator", "bad-key"));
    try {
      const client = new OpenAI({ apiKey: "x", baseURL: `${stranger.url}/v1`, maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }] }),
        (error) => error.status === 401);
    } finally {
      await stranger.kill();
    }
  });

  it("keeps the prompt and the answer out of the coordinator's memory, logs and database", async () => {
    const marker = `blind-marker-${crypto.randomBytes(12).toString("hex")}`;
    const answer = await openai.chat.completions.create({ model, max_tokens: 24, temperature: 0,
      messages: [{ role: "user", content: `Remember ${marker} please` }] });
    const text = answer.choices[0].message.content;
    assert.ok(text.length >= 16, `an answer long enough to search for: ${JSON.stringify(text)}`);
    const needles = [Buffer.from(marker), Buffer.from(text)];
    const inMemory = searchMemory(coordinator.child.pid, needles);
    assert.equal(inMemory.size, 0, "neither the prompt nor the answer is in the coordinator's memory");
    const logs = coordinator.output.stdout + coordinator.output.stderr;
    assert.ok(!logs.includes(marker) && !logs.includes(text), "nor in its logs");
    assert.equal(searchFiles(path.join(dir, "data"), needles).size, 0, "nor in its database");
  });

  // A fake provider of its own model that takes blind requests; `answer(request, sessionKey)`
  // answers the first one it gets, after checking what the coordinator sent in clear.
  async function blindFake(name, count = 1) {
    const fake = await FakeProvider.connect(coordinator.port,
      { model: name, files: { [name]: crypto.randomBytes(2048) }, features: ["blind"] });
    await listed(name, count);
    return fake;
  }
  // Waits until the coordinator lists a routable provider of `name`, and the proxy's cached
  // listing (0.2 s) is older than that.
  async function listed(name, count = 1) {
    const deadline = Date.now() + 10000;
    for (;;) {
      const page = await (await fetch(`${coordinator.url}/v1/providers/attestation`)).json();
      if (page.data.filter((entry) => entry.models.includes(name)).length >= count) break;
      if (Date.now() > deadline) throw new Error(`${name} is not listed`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  const usageText = (id, prompt, completion, chunks) => `darkbloom blind usage v1\n${id}:${prompt}:${completion}:${chunks}`;
  // An honest blind answer: the text in one chunk, the completion, and the usage signed in clear.
  async function answerBlind(fake, request, text) {
    const { sessionKey } = fake.open(request);
    const id = request.request_id;
    fake.socket.send(JSON.stringify({ type: "inference_accepted", request_id: id }));
    fake.socket.send(fake.chunk(id, sessionKey, 0, text));
    const complete = JSON.parse(fake.complete(id, sessionKey, 1, 1, { text }));
    complete.usage = { prompt_tokens: 5, completion_tokens: 1, chunks: 1 };
    complete.usage_signature = fake.identity.sign(usageText(id, 5, 1, 1));
    fake.socket.send(JSON.stringify(complete));
  }
  async function closed(fake) {
    while (await fake.socket.next(10000) !== null) { /* other frames */ }
    return fake.socket.closeReason ?? "";
  }

  it("bills a blind answer on signed usage bounded by what was relayed, and checks the signature", async () => {
    const liar = await blindFake("liar-model");
    const pending = openai.chat.completions.create({ model: "liar-model", max_tokens: 8,
      messages: [{ role: "user", content: "count" }] });
    const request = await liar.next("inference_request");
    assert.deepEqual(request.blind, { max_tokens: 8, n: 1 }, "the terms in clear");
    const { sessionKey, content } = liar.open(request);
    assert.equal(content.body.max_tokens, 8);
    const id = request.request_id;
    liar.socket.send(JSON.stringify({ type: "inference_accepted", request_id: id }));
    liar.socket.send(liar.chunk(id, sessionKey, 0, "hello"));
    const complete = JSON.parse(liar.complete(id, sessionKey, 1, 2, { text: "hello" }));
    complete.usage = { prompt_tokens: 5, completion_tokens: 100000, chunks: 1 };
    complete.usage_signature = liar.identity.sign(usageText(id, 5, 100000, 1));
    liar.socket.send(JSON.stringify(complete));
    const answer = await pending;
    assert.equal(answer.choices[0].message.content, "hello");
    assert.equal(answer.usage.prompt_tokens, 5);
    assert.equal(answer.usage.completion_tokens, 6, "billed at what was relayed: 5 bytes of text and an end token");
    await liar.waitForTrust(/none.*reported 5 prompt and 100000 completion tokens/);

    const forger = await blindFake("forger-model");
    const forged = openai.chat.completions.create({ model: "forger-model", max_tokens: 8,
      messages: [{ role: "user", content: "count" }] });
    const second = await forger.next("inference_request");
    const opened = forger.open(second);
    forger.socket.send(forger.chunk(second.request_id, opened.sessionKey, 0, "hi"));
    const wrong = JSON.parse(forger.complete(second.request_id, opened.sessionKey, 1, 1, { text: "hi" }));
    wrong.usage = { prompt_tokens: 5, completion_tokens: 1, chunks: 1 };
    wrong.usage_signature = forger.identity.sign(usageText(second.request_id, 5, 1, 2));
    forger.socket.send(JSON.stringify(wrong));
    await assert.rejects(forged, (error) => error.status === 502 && /disconnected/.test(error.message));
    assert.match(await closed(forger), /blind usage rejected/);
  });

  it("the proxy refuses chunks out of order or sealed to another key, which the coordinator cannot see", async () => {
    for (const [name, sendChunk, problem] of [
      ["reorder-model", (fake, id, key) => fake.chunk(id, key, 3, "late"), /chunk 3 arrived where 0 was due/],
      ["misseal-model", (fake, id) => fake.chunk(id, nacl_public_key(), 0, "elsewhere"), /does not open with this request's key/],
      // Padding would be billed (the coordinator sees only sizes): the proxy sees it.
      ["padded-model", (fake, id, key) => JSON.stringify({ type: "inference_chunk", request_id: id,
        sealed: fake.seal({ seq: 0, text: "x", padding: "y".repeat(1000) }, key) }), /chunk 0 is padded/],
      // A call the request did not offer (it offered none): the coordinator checks this on plain answers.
      ["caller-model", (fake, id, key) => JSON.stringify({ type: "inference_chunk", request_id: id,
        sealed: fake.seal({ seq: 0, text: "", tool_calls: [{ index: 0, id: "call_1", name: "rm_rf", arguments: "{}" }] },
          key) }), /tool calls in an answer that may call no tool/],
      // Logprobs are bytes the coordinator bills too: only when asked for.
      ["logprobs-model", (fake, id, key) => JSON.stringify({ type: "inference_chunk", request_id: id,
        sealed: fake.seal({ seq: 0, text: "x", logprobs: { content: [], padding: "z".repeat(1000) } }, key) }),
        /logprobs the request did not ask for/],
    ]) {
      const fake = await blindFake(name);
      const pending = openai.chat.completions.create({ model: name, max_tokens: 8, stream: true,
        messages: [{ role: "user", content: "x" }] });
      const request = await fake.next("inference_request");
      const { sessionKey } = fake.open(request);
      fake.socket.send(sendChunk(fake, request.request_id, sessionKey));
      const stream = await pending;
      await assert.rejects((async () => { for await (const chunk of stream) void chunk; })(), problem);
    }
  });

  it("a client that leaves before the first chunk cancels at the provider and pays nothing", async () => {
    const fake = await blindFake("slow-model");
    const account = await createKey(coordinator, 1_000_000);
    const proxyOfAccount = await startProxy(coordinator, writeKey(dir, account, "leaving-key"));
    try {
      const before = (await call(coordinator, "GET", "/v1/balance", { key: account })).json.balance_micro_usd;
      const leaving = new AbortController();
      const pending = fetch(`${proxyOfAccount.url}/v1/chat/completions`, { method: "POST", signal: leaving.signal,
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "slow-model", max_tokens: 8, stream: true, messages: [{ role: "user", content: "x" }] }) });
      const request = await fake.next("inference_request");
      leaving.abort();
      await assert.rejects(pending);
      const cancel = await fake.next("cancel");
      assert.equal(cancel.request_id, request.request_id, "the coordinator cancelled the attempt");
      const after = (await call(coordinator, "GET", "/v1/balance", { key: account })).json.balance_micro_usd;
      assert.equal(after, before, "nothing was charged");
    } finally {
      await proxyOfAccount.kill();
    }
  });

  it("seals a large request for as many providers as the coordinator's body limit takes", async () => {
    const twins = [await blindFake("twin-model"), await blindFake("twin-model", 2)];
    const small = await startProxy(coordinator, writeKey(dir, key, "twin-key"), ["--coordinator-max-body-bytes", "65536"]);
    try {
      const ask = (client, bytes) => client.chat.completions.create({ model: "twin-model", max_tokens: 4,
        messages: [{ role: "user", content: "x".repeat(bytes) }] }).withResponse();
      // Each twin answers whatever reaches it.
      for (const fake of twins) {
        (async () => {
          for (;;) {
            const request = await fake.next("inference_request", 30000);
            if (!request) return;
            await answerBlind(fake, request, "ok");
          }
        })();
      }
      const copiesOf = ({ response }) => JSON.parse(response.headers.get("x-proxy-timing")).copies;
      // 30 KB: two copies fit in 10 MiB, one in 64 KiB.
      assert.equal(copiesOf(await ask(openai, 30_000)), 2);
      assert.equal(copiesOf(await ask(new OpenAI({ apiKey: "x", baseURL: `${small.url}/v1`, maxRetries: 0 }), 30_000)), 1);
      // 60 KB: not even one copy fits in 64 KiB.
      await assert.rejects(ask(new OpenAI({ apiKey: "x", baseURL: `${small.url}/v1`, maxRetries: 0 }), 60_000),
        (error) => error.status === 413 && /--coordinator-max-body-bytes/.test(error.message));
    } finally {
      await small.kill();
    }
  });

  it("the same search finds a plain request's prompt while it is in flight", async () => {
    // A provider that holds the request: the plain prompt stays in the coordinator until it ends.
    const bytes = crypto.randomBytes(4096);
    const fake = await FakeProvider.connect(coordinator.port, { model: "held-model", files: { "held-model": bytes } });
    await listed("held-model");
    const marker = `plain-marker-${crypto.randomBytes(12).toString("hex")}`;
    const pending = direct.chat.completions.create({ model: "held-model", max_tokens: 4,
      messages: [{ role: "user", content: `Remember ${marker}` }] });
    const request = await fake.next("inference_request");
    assert.ok(request, "the fake provider got the request");
    assert.ok(fake.open(request).content.body.messages[0].content.includes(marker));
    const found = searchMemory(coordinator.child.pid, [Buffer.from(marker)]);
    assert.equal(found.size, 1, "the plain prompt is in the coordinator's memory");
    await fake.answer(request, ["done"]);
    assert.equal((await pending).choices[0].message.content, "done");
  });
});
