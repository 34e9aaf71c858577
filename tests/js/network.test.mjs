// End to end through real processes on 127.0.0.1: the official openai client (6.49.0) talks to
// darkbloom-coordinator, which routes sealed requests to `darkbloom start` providers.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import OpenAI from "openai";
import nacl from "tweetnacl";
import {
  tempDir, synthModel, startCoordinator, createKey, startProvider, waitForProviders, readEvents, freePort,
  RawWebSocket, registerMessage, waitForOutput, startServe, FakeProvider,
} from "./cluster.mjs";

const MODEL_ID = "e2e-model";

function client(coordinator, apiKey) {
  return new OpenAI({ apiKey, baseURL: `${coordinator.url}/v1`, maxRetries: 0, timeout: 60000 });
}

async function rawChat(coordinator, apiKey, body, extraHeaders = {}) {
  return fetch(`${coordinator.url}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json", ...extraHeaders },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

describe("coordinator with two providers", () => {
  let dir, model, coordinator, apiKey, providers, openai;

  before(async () => {
    dir = tempDir();
    model = synthModel(dir, MODEL_ID);
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--max-body-bytes", "1048576"] });
    apiKey = await createKey(coordinator);
    providers = [await startProvider(coordinator, model), await startProvider(coordinator, model)];
    // Routable, not only registered: the spreading tests below need both to take requests.
    await waitForProviders(coordinator, 2, 30000, { routable: true });
    openai = client(coordinator, apiKey);
  });

  after(async () => {
    for (const p of providers) await p.kill();
    await coordinator.kill();
  });

  it("streams a chat completion with role, content, finish and exactly one [DONE]", async () => {
    const response = await rawChat(coordinator, apiKey, {
      model: MODEL_ID, messages: [{ role: "user", content: "Hello there" }], stream: true, max_tokens: 16, ignore_eos: true,
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /text\/event-stream/);
    assert.match(response.headers.get("x-provider-id"), /^prov_/);
    assert.equal(response.headers.get("x-provider-encrypted"), "true");
    assert.equal(response.headers.get("x-provider-trust-level"), "self_signed");
    assert.equal(response.headers.get("x-provider-key-backend"), "ephemeral");
    const timing = JSON.parse(response.headers.get("x-timing"));
    for (const key of ["parse_us", "reserve_us", "route_us", "queue_us", "encrypt_us", "dispatch_us", "provider_us"]) {
      assert.equal(typeof timing[key], "number", key);
    }
    const events = await readEvents(response);
    assert.equal(events.filter((e) => e === "[DONE]").length, 1);
    assert.equal(events.at(-1), "[DONE]");
    const all = events.slice(0, -1).map((e) => JSON.parse(e));
    // The provider's signed receipt comes last, with no choices; it covers the text streamed.
    const receipt = all.at(-1).darkbloom_receipt;
    assert.deepEqual(all.at(-1).choices, []);
    const chunks = all.slice(0, -1);
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
    const text = chunks.map((c) => c.choices[0].delta.content).join("");
    assert.equal(receipt.completion_tokens, 16);
    assert.equal(receipt.response_hash,
      crypto.createHash("sha256").update(`${receipt.request_id}:16:${text}`).digest("hex"));
    assert.equal(receipt.public_key, response.headers.get("x-provider-public-key"));
    for (const chunk of chunks) {
      assert.equal(chunk.object, "chat.completion.chunk");
      assert.equal(typeof chunk.choices[0].delta.content, "string");
    }
  });

  it("answers through the openai client, streaming and not", async () => {
    const completion = await openai.chat.completions.create({
      model: MODEL_ID, messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }], max_tokens: 8,
      ignore_eos: true,
    });
    assert.equal(completion.object, "chat.completion");
    assert.equal(typeof completion.choices[0].message.content, "string");
    assert.equal(completion.usage.completion_tokens, 8);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + 8);

    const stream = await openai.chat.completions.create({
      model: MODEL_ID, messages: [{ role: "user", content: "Count" }], max_tokens: 10, stream: true, ignore_eos: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(text.length > 0);
    assert.equal(usage.completion_tokens, 10);
  });

  it("serves /v1/completions, streaming and not", async () => {
    const completion = await openai.completions.create({ model: MODEL_ID, prompt: "Once upon a time", max_tokens: 6, ignore_eos: true });
    assert.equal(completion.object, "text_completion");
    assert.equal(typeof completion.choices[0].text, "string");
    assert.equal(completion.usage.completion_tokens, 6);
    const stream = await openai.completions.create({ model: MODEL_ID, prompt: "Once", max_tokens: 5, stream: true, ignore_eos: true });
    let pieces = 0;
    for await (const chunk of stream) if (chunk.choices[0]?.text) pieces++;
    assert.ok(pieces > 0);
  });

  it("greedy requests give the same answer on either provider", async () => {
    const ask = () => openai.chat.completions.create({
      model: MODEL_ID, messages: [{ role: "user", content: "Same question" }], max_tokens: 12, temperature: 0,
    }).withResponse();
    // The router sends each request where it expects the earliest finish, so four at once can all
    // go to one provider when it has measured much faster (a loaded machine). Ask in rounds until
    // both have answered; how requests spread is the 20-stream test's subject.
    const answers = [];
    const providersUsed = new Set();
    for (let round = 0; round < 8 && providersUsed.size < 2; round++) {
      for (const answer of await Promise.all([ask(), ask(), ask(), ask()])) {
        answers.push(answer);
        providersUsed.add(answer.response.headers.get("x-provider-id"));
      }
    }
    assert.equal(providersUsed.size, 2, "both providers answered within 8 rounds of 4 requests at once");
    for (const { data } of answers) assert.equal(data.choices[0].message.content, answers[0].data.choices[0].message.content);
  });

  it("runs 20 concurrent streams over both providers", async () => {
    const seen = new Set();
    const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const { data: stream, response } = await openai.chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: `request ${i}` }], max_tokens: 12, stream: true, ignore_eos: true,
      }).withResponse();
      seen.add(response.headers.get("x-provider-id"));
      let text = "";
      let finish = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      return { text, finish };
    }));
    assert.equal(results.length, 20);
    for (const r of results) assert.equal(r.finish, "length");
    assert.equal(seen.size, 2, `both providers should serve: ${[...seen]}`);
  });

  it("lists the served model with its providers", async () => {
    const models = await openai.models.list();
    const entry = models.data.find((m) => m.id === MODEL_ID);
    assert.ok(entry);
    assert.equal(entry.metadata.provider_count, 2);
    assert.equal(entry.metadata.quantization, "q8_0");
  });

  it("rejects an unknown model with 404 and param model", async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
      (error) => error.status === 404 && error.code === "model_not_found" && error.param === "model");
  });

  it("rejects a bad key with 401", async () => {
    await assert.rejects(
      client(coordinator, "db-" + "0".repeat(64)).chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }] }),
      (error) => error.status === 401 && error.code === "invalid_api_key" && error.type === "authentication_error");
  });

  it("rejects malformed JSON and invalid fields with 400 and keeps serving", async () => {
    const bad = await rawChat(coordinator, apiKey, "{not json");
    assert.equal(bad.status, 400);
    const badBody = await bad.json();
    assert.equal(badBody.error.type, "invalid_request_error");
    assert.equal(badBody.error.code, "invalid_request_error");
    const noMessages = await rawChat(coordinator, apiKey, { model: MODEL_ID, messages: [] });
    assert.equal(noMessages.status, 400);
    assert.equal((await noMessages.json()).error.param, "messages");
    const badTemperature = await rawChat(coordinator, apiKey, { model: MODEL_ID, messages: [{ role: "user", content: "x" }], temperature: 9 });
    assert.equal((await badTemperature.json()).error.param, "temperature");
    const ok = await openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }], max_tokens: 2, ignore_eos: true });
    assert.equal(ok.usage.completion_tokens, 2);
  });

  it("rejects a body over the limit with 413", async () => {
    const response = await rawChat(coordinator, apiKey, JSON.stringify({ model: MODEL_ID, padding: "x".repeat(2 << 20) }));
    assert.equal(response.status, 413);
    assert.equal((await response.json()).error.code, "request_too_large");
  });

  it("drops a provider that sends malformed frames without disturbing the others", async () => {
    const fake = await FakeProvider.connect(coordinator.port, { model: MODEL_ID + "-fake" });
    assert.equal(fake.registered.type, "registered");
    await waitForProviders(coordinator, 3);
    const streaming = openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "go" }], max_tokens: 30, stream: true, ignore_eos: true });
    fake.socket.send("this is not json");
    await fake.socket.closed;
    await waitForProviders(coordinator, 2);
    let text = "";
    for await (const chunk of await streaming) text += chunk.choices[0]?.delta?.content ?? "";
    assert.ok(text.length > 0);
  });

  it("relays an independently written provider's sealed answer exactly", async () => {
    const fake = await FakeProvider.connect(coordinator.port, { model: "fake-honest" });
    try {
      const answer = rawChat(coordinator, apiKey, { model: "fake-honest", messages: [{ role: "user", content: "secret" }], stream: true });
      const request = await fake.next("inference_request");
      assert.ok(!JSON.stringify(request).includes("secret"), "the prompt must not cross the wire in clear");
      const { content } = fake.open(request);
      assert.equal(content.endpoint, "chat.completions");
      assert.equal(content.body.messages[0].content, "secret");
      assert.equal(content.body.max_tokens, 8192, "a bound is injected when the client sets none");
      await fake.answer(request, ["Hello", ", ", "wörld"]);
      const response = await answer;
      assert.equal(response.status, 200);
      const events = await readEvents(response);
      const text = events.slice(0, -1).map((e) => JSON.parse(e)).map((c) => c.choices[0]?.delta?.content ?? "").join("");
      assert.equal(text, "Hello, wörld");
    } finally {
      fake.socket.socket.destroy();
    }
  });

  it("drops providers whose chunks are plaintext, foreign, misaddressed or out of sequence", async () => {
    const misbehaviours = {
      plaintext: (fake, request) => JSON.stringify({ type: "inference_chunk", request_id: request.request_id, text: "leak" }),
      foreign_sender: (fake, request, sessionKey) => JSON.stringify({
        type: "inference_chunk", request_id: request.request_id,
        sealed: fake.seal({ seq: 0, text: "x" }, sessionKey, nacl.box.keyPair()) }),
      wrong_recipient: (fake, request) => fake.chunk(request.request_id, fake.keys.publicKey, 0, "x"),
      skipped_sequence: (fake, request, sessionKey) => fake.chunk(request.request_id, sessionKey, 1, "x"),
    };
    for (const [name, badFrame] of Object.entries(misbehaviours)) {
      const fake = await FakeProvider.connect(coordinator.port, { model: "fake-only" });
      const answer = rawChat(coordinator, apiKey, { model: "fake-only", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      const request = await fake.next("inference_request");
      const { sessionKey } = fake.open(request);
      fake.socket.send(badFrame(fake, request, sessionKey));
      assert.equal(await fake.next(), null, `${name}: the provider is dropped`);
      const response = await answer;
      assert.equal(response.status, 502, name);
      assert.equal((await response.json()).error.type, "provider_error");
    }
  });

  it("ends a stream with an in-band error when a chunk is replayed after the first", async () => {
    const fake = await FakeProvider.connect(coordinator.port, { model: "fake-replay" });
    const answer = rawChat(coordinator, apiKey, { model: "fake-replay", messages: [{ role: "user", content: "hi" }], stream: true });
    const request = await fake.next("inference_request");
    const { sessionKey } = fake.open(request);
    const first = fake.chunk(request.request_id, sessionKey, 0, "once");
    fake.socket.send(first);
    fake.socket.send(first);
    const response = await answer;
    assert.equal(response.status, 200);
    const events = await readEvents(response);
    assert.equal(events.at(-1), "[DONE]");
    assert.equal(JSON.parse(events.at(-2)).error.type, "provider_error");
    assert.equal(await fake.next(), null);
  });

  it("drops a provider that floods more output than any request allows", async () => {
    const fake = await FakeProvider.connect(coordinator.port, { model: "fake-flood" });
    const answer = rawChat(coordinator, apiKey, { model: "fake-flood", messages: [{ role: "user", content: "hi" }] });
    const request = await fake.next("inference_request");
    const { sessionKey } = fake.open(request);
    const megabyte = "x".repeat(1 << 20);
    for (let seq = 0; seq < 70; seq++) fake.socket.send(fake.chunk(request.request_id, sessionKey, seq, megabyte));
    const response = await answer;
    assert.equal(response.status, 502);
    assert.match((await response.json()).error.message, /larger than any request allows/);
    assert.equal(await fake.next(), null);
  });

  it("refuses a provider that registers a weak encryption key", async () => {
    const raw = await RawWebSocket.connect(coordinator.port);
    const hello = JSON.parse(registerMessage("weak-key"));
    hello.encryption_key = Buffer.alloc(32).toString("base64");
    raw.send(JSON.stringify(hello));
    assert.equal(await raw.next(), null, "closed without a registered message");
    const response = await rawChat(coordinator, apiKey, { model: "weak-key", messages: [{ role: "user", content: "x" }] });
    assert.equal(response.status, 404);
  });
});

describe("failures and restarts", () => {
  it("gives an in-band error then [DONE] when the provider dies mid-stream", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID, ["--ctx", "8192"]);
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    const apiKey = await createKey(coordinator);
    const provider = await startProvider(coordinator, model, ["--ctx", "8192"]);
    try {
      const response = await rawChat(coordinator, apiKey, {
        model: MODEL_ID, messages: [{ role: "user", content: "long answer" }], stream: true, max_tokens: 8000, ignore_eos: true,
      });
      assert.equal(response.status, 200);
      const reader = response.body.getReader();
      const first = await reader.read();
      assert.ok(!first.done);
      await provider.kill("SIGKILL");
      let text = new TextDecoder().decode(first.value);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      const events = text.split("\n\n").filter((b) => b.startsWith("data: ")).map((b) => b.slice(6));
      assert.equal(events.at(-1), "[DONE]");
      assert.equal(events.filter((e) => e === "[DONE]").length, 1);
      const error = JSON.parse(events.at(-2));
      assert.equal(error.error.type, "provider_error");
    } finally {
      await provider.kill();
      await coordinator.kill();
    }
  });

  it("cancels at the provider when the client disconnects", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID, ["--ctx", "8192"]);
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    const apiKey = await createKey(coordinator);
    const provider = await startProvider(coordinator, model, ["--ctx", "8192", "--max-concurrency", "1"]);
    try {
      const response = await rawChat(coordinator, apiKey, {
        model: MODEL_ID, messages: [{ role: "user", content: "go on forever" }], stream: true, max_tokens: 8000, ignore_eos: true,
      });
      const reader = response.body.getReader();
      await reader.read();
      await reader.cancel();
      // The provider reports the request cancelled well before its 8000 tokens, and is free again.
      const deadline = Date.now() + 20000;
      while (!/finished cancelled after (\d+) tokens/.test(provider.output.stderr) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const match = provider.output.stderr.match(/finished cancelled after (\d+) tokens/);
      assert.ok(match, "the provider never saw the cancellation:\n" + provider.output.stderr);
      assert.ok(Number(match[1]) < 8000);
      const next = await client(coordinator, apiKey).chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: "next" }], max_tokens: 3, ignore_eos: true,
      });
      assert.equal(next.usage.completion_tokens, 3);
    } finally {
      await provider.kill();
      await coordinator.kill();
    }
  });

  it("providers reconnect after the coordinator restarts, and keys survive", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const port = await freePort();
    let coordinator = await startCoordinator({ dataDir: `${dir}/data`, port });
    const apiKey = await createKey(coordinator);
    const providers = [await startProvider(coordinator, model), await startProvider(coordinator, model)];
    try {
      await waitForProviders(coordinator, 2);
      await coordinator.kill("SIGTERM");
      coordinator = await startCoordinator({ dataDir: `${dir}/data`, port });
      await waitForProviders(coordinator, 2);
      const answer = await client(coordinator, apiKey).chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: "back again" }], max_tokens: 4, ignore_eos: true,
      });
      assert.equal(answer.usage.completion_tokens, 4);
    } finally {
      for (const p of providers) await p.kill();
      await coordinator.kill();
    }
  });
});

describe("queueing, retries and eviction", () => {
  let dir, model, coordinator, apiKey;

  before(async () => {
    dir = tempDir();
    model = synthModel(dir, MODEL_ID, ["--ctx", "8192"]);
  });

  after(async () => { if (coordinator) await coordinator.kill(); });

  it("queues requests while providers are busy and answers 429 when the queue is full or the wait runs out", async () => {
    coordinator = await startCoordinator({ dataDir: `${dir}/q`, args: ["--queue-depth", "1", "--queue-wait", "0.5"] });
    apiKey = await createKey(coordinator);
    const provider = await startProvider(coordinator, model, ["--ctx", "8192", "--max-concurrency", "1"]);
    try {
      const long = await rawChat(coordinator, apiKey, {
        model: MODEL_ID, messages: [{ role: "user", content: "long" }], stream: true, max_tokens: 8000, ignore_eos: true,
      });
      const reader = long.body.getReader();
      await reader.read();  // the provider's only slot is taken
      const queued = rawChat(coordinator, apiKey, { model: MODEL_ID, messages: [{ role: "user", content: "q" }], max_tokens: 2 });
      while ((await (await fetch(`${coordinator.url}/health`)).json()).queued !== 1) await new Promise((r) => setTimeout(r, 10));
      const rejected = await rawChat(coordinator, apiKey, { model: MODEL_ID, messages: [{ role: "user", content: "r" }], max_tokens: 2 });
      assert.equal(rejected.status, 429);
      assert.ok(rejected.headers.get("retry-after"));
      assert.equal((await rejected.json()).error.code, "rate_limit_exceeded");
      const expired = await queued;
      assert.equal(expired.status, 429);
      assert.match((await expired.json()).error.message, /became free within 0\.5 s/);
      await reader.cancel();
    } finally {
      await provider.kill();
      await coordinator.kill();
      coordinator = null;
    }
  });

  it("retries on another provider when the first fails or never starts answering", async () => {
    coordinator = await startCoordinator({ dataDir: `${dir}/r`, args: ["--first-chunk-timeout", "0.5"] });
    apiKey = await createKey(coordinator);
    for (const misbehaviour of ["silent", "error"]) {
      // The faster claim makes `bad` the first choice; `good` answers the retry.
      const bad = await FakeProvider.connect(coordinator.port, { model: `retry-${misbehaviour}`, decodeTps: 500 });
      const good = await FakeProvider.connect(coordinator.port, { model: `retry-${misbehaviour}`, decodeTps: 5 });
      try {
        const answer = rawChat(coordinator, apiKey, { model: `retry-${misbehaviour}`, messages: [{ role: "user", content: "?" }] });
        const first = await bad.next("inference_request");
        if (misbehaviour === "error") {
          bad.socket.send(JSON.stringify({ type: "inference_error", request_id: first.request_id, status_code: 500, message: "boom" }));
        }
        const second = await good.next("inference_request");
        assert.notEqual(second.request_id, first.request_id, "each attempt has its own request id");
        await good.answer(second, ["retried"]);
        const response = await answer;
        assert.equal(response.status, 200);
        assert.equal(response.headers.get("x-provider-id"), good.registered.provider_id);
        assert.equal((await response.json()).choices[0].message.content, "retried");
        if (misbehaviour === "silent") {
          assert.deepEqual(await bad.next("cancel"), { type: "cancel", request_id: first.request_id });
        }
        // A late answer from the abandoned attempt is dropped, not relayed or double counted.
        bad.socket.send(bad.chunk(first.request_id, bad.open(first).sessionKey, 0, "late"));
      } finally {
        bad.socket.socket.destroy();
        good.socket.socket.destroy();
      }
    }
    await coordinator.kill();
    coordinator = null;
  });

  it("fails a stream that falls silent for the inference timeout", async () => {
    coordinator = await startCoordinator({ dataDir: `${dir}/s`, args: ["--inference-timeout", "0.5"] });
    apiKey = await createKey(coordinator);
    const fake = await FakeProvider.connect(coordinator.port, { model: "stalls" });
    try {
      const answer = rawChat(coordinator, apiKey, { model: "stalls", messages: [{ role: "user", content: "?" }], stream: true });
      const request = await fake.next("inference_request");
      fake.socket.send(fake.chunk(request.request_id, fake.open(request).sessionKey, 0, "and then nothing"));
      const events = await readEvents(await answer);
      assert.equal(events.at(-1), "[DONE]");
      assert.match(JSON.parse(events.at(-2)).error.message, /no output for too long/);
      assert.equal((await fake.next("cancel")).request_id, request.request_id);
    } finally {
      fake.socket.socket.destroy();
      await coordinator.kill();
      coordinator = null;
    }
  });

  it("keeps providers registered with a short heartbeat timeout", async () => {
    coordinator = await startCoordinator({ dataDir: `${dir}/h`, args: ["--heartbeat-timeout", "1"] });
    const provider = await startProvider(coordinator, model, ["--ctx", "8192"]);
    try {
      await new Promise((r) => setTimeout(r, 2500));  // more than two eviction windows
      const health = await (await fetch(`${coordinator.url}/health`)).json();
      assert.equal(health.providers, 1);
      assert.doesNotMatch(provider.output.stderr, /reconnecting/);
    } finally {
      await provider.kill();
      await coordinator.kill();
      coordinator = null;
    }
  });

  it("evicts a provider that stops sending heartbeats", async () => {
    // Open mode: the hand-rolled provider registers without an attestation.
    coordinator = await startCoordinator({ dataDir: `${dir}/e`, args: ["--heartbeat-timeout", "0.6", "--min-trust", "none"] });
    const fake = await RawWebSocket.connect(coordinator.port);
    fake.send(registerMessage("silent-model"));
    await fake.next();  // registered
    await fake.next();  // trust_status
    await waitForProviders(coordinator, 1);
    await waitForProviders(coordinator, 0, 10000);
    assert.equal(await fake.next(), null, "the evicted provider's connection is closed");
    assert.match(coordinator.output.stderr, /dropped: silent for more than/);
    await coordinator.kill();
    coordinator = null;
  });
});

describe("provider agent", () => {
  it("registers, answers load_model, and heartbeats to its coordinator", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const fakeCoordinator = await RawWebSocket.listen();
    const provider = await startProvider({ port: fakeCoordinator.port }, model, [], /loading/);
    try {
      const socket = await fakeCoordinator.accepted;
      const hello = JSON.parse(await socket.next());
      assert.equal(hello.type, "register");
      assert.equal(hello.models[0].id, MODEL_ID);
      assert.match(hello.models[0].weight_hash, /^[0-9a-f]{64}$/);
      assert.equal(Buffer.from(hello.encryption_key, "base64").length, 32);
      assert.ok(hello.decode_tps > 0 && hello.prefill_tps > 0);
      socket.send(JSON.stringify({ type: "registered", provider_id: "prov_fake", protocol_version: 1, heartbeat_interval_ms: 200 }));
      const heartbeat = JSON.parse(await socket.next());
      assert.equal(heartbeat.type, "heartbeat");
      assert.equal(heartbeat.active_model, MODEL_ID);
      socket.send(JSON.stringify({ type: "load_model", model: MODEL_ID }));
      socket.send(JSON.stringify({ type: "load_model", model: "something-else" }));
      socket.send(JSON.stringify({ type: "future_message", anything: true }));
      const statuses = [];
      while (statuses.length < 4) {
        const message = JSON.parse(await socket.next());
        if (message.type === "load_model_status") statuses.push(`${message.model}:${message.status}`);
      }
      assert.deepEqual(statuses, [`${MODEL_ID}:started`, `${MODEL_ID}:succeeded`, "something-else:started", "something-else:failed"]);
    } finally {
      await provider.kill();
    }
  });

  it("reconnects with backoff when the coordinator is away", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const port = await freePort();
    const provider = await startProvider({ port }, model, [], /reconnecting in (\d+) ms/);
    try {
      await waitForOutput(provider, /reconnecting in \d+ ms[\s\S]*reconnecting in \d+ ms/);
      const coordinator = await startCoordinator({ dataDir: `${dir}/data`, port });
      await waitForProviders(coordinator, 1, 30000);
      await coordinator.kill();
    } finally {
      await provider.kill();
    }
  });

  it("unloads an idle model and loads it again for the next request", async () => {
    const dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const coordinator = await startCoordinator({ dataDir: `${dir}/data` });
    const apiKey = await createKey(coordinator);
    const provider = await startProvider(coordinator, model, ["--idle-timeout-mins", "0.01"]);
    try {
      await waitForOutput(provider, /unloaded idle model/);
      const answer = await client(coordinator, apiKey).chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: "wake up" }], max_tokens: 3, ignore_eos: true,
      });
      assert.equal(answer.usage.completion_tokens, 3);
      assert.match(provider.output.stderr, /loaded 'e2e-model'/);
    } finally {
      await provider.kill();
      await coordinator.kill();
    }
  });
});

describe("darkbloom serve", () => {
  let serve, openai;

  before(async () => {
    const dir = tempDir();
    serve = await startServe(synthModel(dir, "served-model"));
    openai = new OpenAI({ apiKey: "not-needed", baseURL: `${serve.url}/v1`, maxRetries: 0 });
  });

  after(async () => { await serve.kill(); });

  it("answers the openai client directly, streaming and not", async () => {
    const completion = await openai.chat.completions.create({
      model: "served-model", messages: [{ role: "user", content: "hello" }], max_tokens: 5, ignore_eos: true,
    });
    assert.equal(completion.usage.completion_tokens, 5);
    const stream = await openai.chat.completions.create({
      model: "served-model", messages: [{ role: "user", content: "hello" }], max_tokens: 5, stream: true,
      stream_options: { include_usage: true }, ignore_eos: true,
    });
    let usage = null;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    assert.equal(usage.completion_tokens, 5);
    const models = await openai.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["served-model"]);
  });

  it("refuses another model name with 404", async () => {
    await assert.rejects(openai.chat.completions.create({ model: "other", messages: [{ role: "user", content: "x" }] }),
      (error) => error.status === 404 && error.param === "model");
  });
});
