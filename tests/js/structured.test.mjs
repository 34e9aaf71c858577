// Structured output, log-probabilities and GET /v1/models/{id}, with the official openai client,
// against `darkbloom serve` and against a coordinator with two providers, on a random-weight model:
// the structure comes from the constraint, and an independent validator (python3-jsonschema)
// checks every answer that ends in "stop".
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import {
  tempDir, synthModel, startCoordinator, createKey, startProvider, waitForProviders, startServe,
} from "./cluster.mjs";

const MODEL_ID = "structured-model";
const SEEDS = 20;
const VALIDATOR = path.join(path.dirname(fileURLToPath(import.meta.url)), "validate_json.py");

// Schemas a random model can finish: enums, bounded strings, numbers and arrays.
const SCHEMAS = {
  enums: {
    type: "object",
    properties: { color: { enum: ["red", "green", "blue"] }, size: { type: "integer", minimum: 1, maximum: 9 } },
    required: ["color", "size"],
    additionalProperties: false,
  },
  bounded_array: { type: "array", items: { type: "string", maxLength: 4 }, minItems: 1, maxItems: 3 },
  nested: {
    type: "object",
    properties: {
      ok: { type: "boolean" },
      when: { type: "string", format: "date" },
      tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 2 },
      point: { type: "object", properties: { x: { type: "integer", minimum: -5, maximum: 5 } }, required: ["x"] },
    },
    required: ["ok", "when", "tags", "point"],
  },
  recursive: {
    $defs: {
      node: {
        type: "object",
        properties: { v: { enum: [0, 1] }, next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } },
        required: ["v", "next"],
      },
    },
    $ref: "#/$defs/node",
  },
};

function validate(cases) {
  const out = execFileSync("/usr/bin/python3", [VALIDATOR], { input: JSON.stringify(cases) });
  return JSON.parse(out.toString());
}

function responseFormat(name, schema) {
  return { type: "json_schema", json_schema: { name, schema, strict: true } };
}

// Every schema, SEEDS seeds each: each answer that stops validates, and at least half stop.
async function checkSchemas(openai, seeds = SEEDS) {
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    const answers = [];
    for (let seed = 1; seed <= seeds; ++seed) {
      const completion = await openai.chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: "Describe it" }], seed, max_tokens: 160,
        response_format: responseFormat(name, schema),
      });
      answers.push(completion.choices[0]);
    }
    const stopped = answers.filter((choice) => choice.finish_reason === "stop");
    assert.ok(stopped.length * 2 >= seeds, `${name}: only ${stopped.length} of ${seeds} answers finished`);
    const results = validate(stopped.map((choice) => ({ schema, text: choice.message.content })));
    results.forEach((result, i) => assert.ok(result.valid, `${name}: ${JSON.stringify(stopped[i].message.content)}: ${result.error}`));
  }
}

async function checkRefusals(openai) {
  const refused = async (response_format, expected) => {
    await assert.rejects(
      openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "x" }], response_format }),
      (error) => {
        assert.equal(error.status, 400);
        assert.equal(error.param, "response_format");
        assert.match(error.message, expected);
        return true;
      });
  };
  await refused(responseFormat("bad", { type: "object", properties: { a: { type: "string", not: {} } } }),
    /the keyword 'not' is not supported at #\/properties\/a/);
  await refused(responseFormat("bad", { type: "string", pattern: "(a)\\1" }), /backreferences/);
  await refused(responseFormat("bad", { $ref: "#/$defs/missing" }), /does not exist/);
  await refused({ type: "xml" }, /must be text, json_object or json_schema/);
  await refused({ type: "json_schema", json_schema: { schema: { type: "string" } } }, /name/);
}

async function checkJsonObjectAndStreaming(openai) {
  // The SDK's stream helper assembles the streamed answer.
  const schema = SCHEMAS.enums;
  const stream = openai.chat.completions.stream({
    model: MODEL_ID, messages: [{ role: "user", content: "Go" }], seed: 3, max_tokens: 160,
    response_format: responseFormat("enums", schema),
  });
  const final = await stream.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, "stop");
  assert.ok(validate([{ schema, text: final.choices[0].message.content }])[0].valid);

  // Plain JSON objects: a random model seldom closes one (any key, any value), so every answer
  // must at least begin as an object, and those that stop must parse as one.
  for (let seed = 1; seed <= 4; ++seed) {
    const completion = await openai.chat.completions.create({
      model: MODEL_ID, messages: [{ role: "user", content: "An object" }], seed, max_tokens: 48,
      response_format: { type: "json_object" },
    });
    const choice = completion.choices[0];
    assert.match(choice.message.content, /^\s*\{/);
    if (choice.finish_reason !== "stop") continue;
    const value = JSON.parse(choice.message.content);
    assert.ok(typeof value === "object" && value !== null && !Array.isArray(value));
  }

  // Completions take response_format too, streamed.
  const text = await openai.completions.create({
    model: MODEL_ID, prompt: "Value:", seed: 5, max_tokens: 160, stream: true,
    response_format: responseFormat("enums", schema),
  });
  let content = "";
  let finish = null;
  for await (const chunk of text) {
    content += chunk.choices[0]?.text ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.match(content, /^\s*\{/);  // an object begins, whether or not it finished
  if (finish === "stop") assert.ok(validate([{ schema, text: content }])[0].valid, content);
}

async function checkLogprobs(openai) {
  const completion = await openai.chat.completions.create({
    model: MODEL_ID, messages: [{ role: "user", content: "Count" }], max_tokens: 12, temperature: 0,
    logprobs: true, top_logprobs: 3, ignore_eos: true,
  });
  const choice = completion.choices[0];
  const entries = choice.logprobs.content;
  assert.ok(entries.length >= 1 && entries.length <= completion.usage.completion_tokens);
  // The bytes of the reported tokens are the answer's bytes.
  const bytes = Buffer.from(entries.flatMap((entry) => entry.bytes));
  assert.equal(bytes.toString("utf8"), choice.message.content);
  for (const entry of entries) {
    assert.equal(entry.top_logprobs.length, 3);
    // Greedy: the sampled token is the most likely one, with the same log-probability.
    assert.equal(entry.token, entry.top_logprobs[0].token);
    assert.ok(Math.abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-6);
    for (let i = 1; i < 3; ++i) assert.ok(entry.top_logprobs[i - 1].logprob >= entry.top_logprobs[i].logprob);
    const mass = entry.top_logprobs.reduce((sum, top) => sum + Math.exp(top.logprob), 0);
    assert.ok(entry.logprob <= 0 && mass <= 1 + 1e-6);
  }
  // Log-probabilities are those of the distribution before temperature: the first token's
  // alternatives do not change with it.
  const hot = await openai.chat.completions.create({
    model: MODEL_ID, messages: [{ role: "user", content: "Count" }], max_tokens: 1, temperature: 1.7, seed: 9,
    logprobs: true, top_logprobs: 3, ignore_eos: true,
  });
  assert.deepEqual(hot.choices[0].logprobs.content[0].top_logprobs, entries[0].top_logprobs);

  // Streamed: each chunk carries the entries of its own text.
  const stream = await openai.chat.completions.create({
    model: MODEL_ID, messages: [{ role: "user", content: "Count" }], max_tokens: 12, temperature: 0,
    logprobs: true, top_logprobs: 3, ignore_eos: true, stream: true,
  });
  const streamed = [];
  for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  assert.deepEqual(streamed, entries);

  // Completions: the legacy shape, arrays of one length, offsets into the text.
  const legacy = await openai.completions.create({
    model: MODEL_ID, prompt: "Once", max_tokens: 8, temperature: 0, logprobs: 2, ignore_eos: true,
  });
  const lp = legacy.choices[0].logprobs;
  assert.ok(lp.tokens.length >= 1);
  for (const key of ["token_logprobs", "top_logprobs", "text_offset"]) assert.equal(lp[key].length, lp.tokens.length);
  assert.equal(lp.text_offset[0], 0);
  for (const top of lp.top_logprobs) assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 2);
}

// n choices: each is the answer of one request with seed + i; streamed and whole agree; usage adds up.
async function checkChoices(openai) {
  const ask = (extra) => ({
    model: MODEL_ID, messages: [{ role: "user", content: "Tell me about rivers and mills" }], max_tokens: 10,
    temperature: 1, ignore_eos: true, ...extra,
  });
  const whole = await openai.chat.completions.create(ask({ n: 3, seed: 11 }));
  assert.equal(whole.choices.length, 3);
  assert.deepEqual(whole.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(whole.usage.completion_tokens, 30);
  for (let i = 0; i < 3; ++i) {
    const single = await openai.chat.completions.create(ask({ seed: 11 + i }));
    assert.equal(whole.choices[i].message.content, single.choices[0].message.content, `choice ${i}`);
    assert.equal(whole.choices[i].finish_reason, "length");
  }
  assert.equal(whole.usage.prompt_tokens, (await openai.chat.completions.create(ask({ seed: 1 }))).usage.prompt_tokens);

  const stream = openai.chat.completions.stream(ask({ n: 3, seed: 11, stream_options: { include_usage: true } }));
  const streamed = await stream.finalChatCompletion();
  assert.deepEqual(streamed.choices.map((c) => c.message.content), whole.choices.map((c) => c.message.content));
  assert.deepEqual(streamed.choices.map((c) => c.finish_reason), ["length", "length", "length"]);

  // Completions too, and structured output in every choice.
  const texts = await openai.completions.create({
    model: MODEL_ID, prompt: "Once", n: 2, max_tokens: 160, seed: 4, response_format: responseFormat("enums", SCHEMAS.enums),
  });
  assert.equal(texts.choices.length, 2);
  for (const choice of texts.choices) {
    assert.match(choice.text, /^\s*\{/);
    if (choice.finish_reason === "stop") assert.ok(validate([{ schema: SCHEMAS.enums, text: choice.text }])[0].valid);
  }
  await assert.rejects(openai.chat.completions.create(ask({ n: 9 })),
    (error) => error.status === 400 && error.param === "n");
}

async function checkModelLookup(openai) {
  const model = await openai.models.retrieve(MODEL_ID);
  assert.equal(model.id, MODEL_ID);
  assert.equal(model.object, "model");
  await assert.rejects(openai.models.retrieve("no-such-model"), (error) => error.status === 404 && error.param === "model");
}

describe("structured output on darkbloom serve", () => {
  let dir, serve, openai;
  before(async () => {
    dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    serve = await startServe(model);
    openai = new OpenAI({ apiKey: "unused", baseURL: `${serve.url}/v1`, maxRetries: 0, timeout: 60000 });
  });
  after(async () => serve && (await serve.kill()));

  it("every answer that stops validates against its schema, and most stop", () => checkSchemas(openai));
  it("refuses unsupported and malformed schemas with 400s naming response_format", () => checkRefusals(openai));
  it("json_object answers, SDK stream helpers and completions", () => checkJsonObjectAndStreaming(openai));
  it("logprobs: greedy tokens are the top ones, streamed equals whole, completions shape", () => checkLogprobs(openai));
  it("GET /v1/models/{id}", () => checkModelLookup(openai));
  it("n choices, whole and streamed", () => checkChoices(openai));
});

describe("structured output through a coordinator with two providers", () => {
  let dir, coordinator, providers = [], openai;
  before(async () => {
    dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--rate-limit", "0"] });
    const apiKey = await createKey(coordinator);
    providers = [await startProvider(coordinator, model), await startProvider(coordinator, model)];
    await waitForProviders(coordinator, 2, 30000, { routable: true });
    openai = new OpenAI({ apiKey, baseURL: `${coordinator.url}/v1`, maxRetries: 0, timeout: 60000 });
  });
  after(async () => {
    for (const p of providers) await p.kill();
    if (coordinator) await coordinator.kill();
  });

  it("every answer that stops validates against its schema, and most stop", () => checkSchemas(openai));
  it("a provider's 400 naming response_format reaches the client as it is", () => checkRefusals(openai));
  it("json_object answers, SDK stream helpers and completions", () => checkJsonObjectAndStreaming(openai));
  it("logprobs travel sealed and arrive whole and streamed", () => checkLogprobs(openai));
  it("GET /v1/models/{id}", () => checkModelLookup(openai));
  it("n choices travel sealed, indexed, and are billed together", () => checkChoices(openai));
  it("refuses more logprob entries than it holds for a whole answer", async () => {
    await assert.rejects(
      openai.chat.completions.create({
        model: MODEL_ID, messages: [{ role: "user", content: "x" }], n: 8, max_tokens: 4096, logprobs: true,
        top_logprobs: 20,
      }),
      (error) => error.status === 400 && error.param === "max_tokens" && /entries/.test(error.message));
  });
});

describe("darkbloom serve with an API key", () => {
  let dir, serve;
  before(async () => {
    dir = tempDir();
    const model = synthModel(dir, MODEL_ID);
    const keyFile = path.join(dir, "api-key");
    fs.writeFileSync(keyFile, "serve-key-0123456789\n", { mode: 0o600 });
    serve = await startServe(model, ["--api-key-file", keyFile]);
  });
  after(async () => serve && (await serve.kill()));

  it("refuses requests without the key in the OpenAI shape and answers with it, with X-Timing", async () => {
    const wrong = new OpenAI({ apiKey: "serve-key-0123456788", baseURL: `${serve.url}/v1`, maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (error) => error.status === 401 && error.type === "authentication_error");
    const bare = await fetch(`${serve.url}/v1/chat/completions`, { method: "POST", body: "{}" });
    assert.equal(bare.status, 401);
    assert.equal((await bare.json()).error.code, "invalid_api_key");
    assert.equal((await fetch(`${serve.url}/health`)).status, 200);

    const right = new OpenAI({ apiKey: "serve-key-0123456789", baseURL: `${serve.url}/v1`, maxRetries: 0 });
    const { data, response } = await right.chat.completions
      .create({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 4, ignore_eos: true })
      .withResponse();
    assert.equal(data.usage.completion_tokens, 4);
    const timing = JSON.parse(response.headers.get("x-timing"));
    for (const key of ["parse_us", "queue_us", "prefill_us", "decode_us"]) assert.equal(typeof timing[key], "number", key);
    assert.ok(timing.prefill_us > 0 && timing.decode_us > 0);
  });
});
