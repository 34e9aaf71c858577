// Tools and the Responses API with the official openai client, against `darkbloom serve` and a
// coordinator with two providers, on a random-weight model: forced calls (a named function, or
// `required`) are constrained to the functions' parameter schemas, so every call that finishes
// validates (python3-jsonschema); tool-call history is accepted; the Responses API answers whole
// and streamed, and the SDK's helpers assemble both. (A random model never chooses to call on its
// own: `auto` is tested on canned model outputs per family, in tests/engine/chat/tool_calls_test.cc.)
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import {
  tempDir, synthModel, startCoordinator, createKey, startProvider, waitForProviders, startServe,
} from "./cluster.mjs";

const MODEL_ID = "tools-model";
const SEEDS = 12;
const VALIDATOR = path.join(path.dirname(fileURLToPath(import.meta.url)), "validate_json.py");

const WEATHER = {
  type: "object",
  properties: { city: { enum: ["Paris", "Oslo", "Lima"] }, unit: { enum: ["c", "f"] } },
  required: ["city", "unit"],
  additionalProperties: false,
};
const ADD = {
  type: "object",
  properties: { a: { type: "integer", minimum: 0, maximum: 9 }, b: { type: "integer", minimum: 0, maximum: 9 } },
  required: ["a", "b"],
  additionalProperties: false,
};
const UNIT = {
  type: "object", $defs: { unit: { enum: ["c", "f", "k"] } },
  properties: { unit: { $ref: "#/$defs/unit" } }, required: ["unit"], additionalProperties: false,
};
const SCHEMAS = { get_weather: WEATHER, add: ADD };
const TOOLS = [
  { type: "function", function: { name: "get_weather", description: "The weather in a city", parameters: WEATHER } },
  { type: "function", function: { name: "add", description: "Adds two digits", parameters: ADD } },
];

function validate(cases) {
  const out = execFileSync("/usr/bin/python3", [VALIDATOR], { input: JSON.stringify(cases) });
  return JSON.parse(out.toString());
}

// Every call names an offered function and its arguments validate against that function's schema.
function checkCalls(calls, where) {
  assert.ok(calls.length >= 1, `${where}: no calls`);
  const ids = new Set();
  for (const call of calls) {
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_[0-9a-f]{24}$/);
    ids.add(call.id);
    assert.ok(call.function.name in SCHEMAS, `${where}: called ${call.function.name}`);
  }
  assert.equal(ids.size, calls.length, `${where}: ids repeat`);
  const results = validate(calls.map((call) => ({ schema: SCHEMAS[call.function.name], text: call.function.arguments })));
  results.forEach((result, i) => assert.ok(result.valid, `${where}: ${calls[i].function.arguments}: ${result.error}`));
}

const ask = (extra) => ({
  model: MODEL_ID, messages: [{ role: "user", content: "What is the weather in Oslo?" }], max_tokens: 160, tools: TOOLS,
  ...extra,
});

async function checkNamed(openai) {
  let called = 0;
  for (let seed = 1; seed <= SEEDS; ++seed) {
    const request = ask({ seed, tool_choice: { type: "function", function: { name: "get_weather" } } });
    const whole = await openai.chat.completions.create(request);
    const choice = whole.choices[0];
    if (choice.finish_reason !== "tool_calls") {
      assert.equal(choice.finish_reason, "length");
      continue;
    }
    called += 1;
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    assert.equal(choice.message.tool_calls[0].function.name, "get_weather");
    checkCalls(choice.message.tool_calls, `seed ${seed}`);
    // Streamed, the SDK's helper assembles the same call from its deltas.
    const streamed = await openai.chat.completions.stream(request).finalChatCompletion();
    const call = streamed.choices[0].message.tool_calls[0];
    assert.equal(streamed.choices[0].finish_reason, "tool_calls");
    assert.equal(call.function.name, "get_weather");
    assert.equal(call.function.arguments, choice.message.tool_calls[0].function.arguments);
  }
  assert.ok(called * 2 >= SEEDS, `only ${called} of ${SEEDS} forced calls finished`);
  // Several choices call on their own, each with its own id.
  const two = await openai.chat.completions.create(
    ask({ seed: 5, n: 2, tool_choice: { type: "function", function: { name: "add" } } }));
  assert.equal(two.choices.length, 2);
  const calls = two.choices.flatMap((choice) => choice.message.tool_calls ?? []);
  assert.equal(calls.length, 2);
  assert.notEqual(calls[0].id, calls[1].id);
  for (const choice of two.choices) {
    if (choice.finish_reason === "tool_calls") checkCalls(choice.message.tool_calls, `choice ${choice.index}`);
  }
}

async function checkRequired(openai) {
  let called = 0;
  for (let seed = 1; seed <= SEEDS; ++seed) {
    const single = await openai.chat.completions.create(ask({ seed, tool_choice: "required", parallel_tool_calls: false, max_tokens: 256 }));
    if (single.choices[0].finish_reason === "tool_calls") {
      called += 1;
      assert.equal(single.choices[0].message.tool_calls.length, 1);
      checkCalls(single.choices[0].message.tool_calls, `required, seed ${seed}`);
    }
  }
  assert.ok(called * 2 >= SEEDS, `only ${called} of ${SEEDS} required calls finished`);
  // In parallel: one or more calls, streamed as deltas with their own indexes.
  const streamed = await openai.chat.completions
    .stream(ask({ seed: 3, tool_choice: "required", max_tokens: 400 }))
    .finalChatCompletion();
  // Cut short or whole, the calls it began are offered functions; whole, they validate.
  assert.ok(["tool_calls", "length"].includes(streamed.choices[0].finish_reason));
  if (streamed.choices[0].finish_reason === "tool_calls") checkCalls(streamed.choices[0].message.tool_calls, "parallel");
  for (const call of streamed.choices[0].message.tool_calls ?? []) assert.ok(call.function.name in SCHEMAS);
  // A function whose schema refers to its own $defs keeps them inside the list of calls.
  const unitTool = { type: "function", function: { name: "set_unit", parameters: UNIT } };
  let finished = 0;
  for (let seed = 1; seed <= 4; ++seed) {
    const answer = await openai.chat.completions.create(ask({ seed, tools: [unitTool], tool_choice: "required", max_tokens: 256 }));
    if (answer.choices[0].finish_reason !== "tool_calls") continue;
    finished += 1;
    for (const call of answer.choices[0].message.tool_calls) {
      assert.equal(call.function.name, "set_unit");
      assert.ok(validate([{ schema: UNIT, text: call.function.arguments }])[0].valid, call.function.arguments);
    }
  }
  assert.ok(finished >= 1, "no call with $defs finished");
}

async function checkHistoryAndRefusals(openai) {
  const messages = [
    { role: "user", content: "Weather in Lima?" },
    { role: "assistant", content: null, tool_calls: [
      { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Lima","unit":"c"}' } }] },
    { role: "tool", tool_call_id: "call_1", content: "21 degrees" },
  ];
  const answer = await openai.chat.completions.create({ model: MODEL_ID, messages, tools: TOOLS, max_tokens: 4 });
  assert.ok(["stop", "length", "tool_calls"].includes(answer.choices[0].finish_reason));
  const refused = async (request, param, pattern) => {
    await assert.rejects(openai.chat.completions.create(request),
      (error) => error.status === 400 && error.param === param && pattern.test(error.message));
  };
  await refused({ model: MODEL_ID, messages: [...messages.slice(0, 2), { role: "tool", tool_call_id: "call_9", content: "x" }] },
    "messages[2].tool_call_id", /call_9/);
  await refused(ask({ tools: undefined, tool_choice: "required" }), "tool_choice", /tools/);
  await refused(ask({ tool_choice: { type: "function", function: { name: "nope" } } }), "tool_choice", /nope/);
  await refused(ask({ tools: [{ type: "retrieval" }] }), "tools[0].type", /function/);
  // A schema the grammar engine does not support is refused by the provider, and the refusal
  // reaches the client as it is.
  const odd = [{ type: "function", function: { name: "odd", parameters: { type: "object", not: { type: "null" } } } }];
  await refused(ask({ tools: odd, tool_choice: "required" }), "tools[0].function.parameters", /not/);
}

async function checkResponses(openai) {
  const ask = { model: MODEL_ID, input: "Hi", instructions: "Be brief", max_output_tokens: 6, temperature: 0 };
  const whole = await openai.responses.create(ask);
  assert.equal(whole.object, "response");
  assert.ok(["completed", "incomplete"].includes(whole.status));
  assert.equal(typeof whole.output_text, "string");
  assert.ok(whole.usage.output_tokens >= 1 && whole.usage.input_tokens >= 1);

  // Streamed: the documented sequence, and the same text as the SDK's final response.
  const stream = await openai.responses.create({ ...ask, stream: true });
  const types = [];
  let text = "";
  let sequence = 0;
  for await (const event of stream) {
    types.push(event.type);
    assert.equal(event.sequence_number, sequence++);
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  assert.deepEqual(types.slice(0, 2), ["response.created", "response.in_progress"]);
  assert.ok(types.includes("response.output_text.delta"));
  assert.ok(["response.completed", "response.incomplete"].includes(types.at(-1)));
  assert.equal(text, whole.output_text);
  const final = await openai.responses.stream(ask).finalResponse();
  assert.equal(final.output_text, whole.output_text);

  // text.format json_schema, and a forced function call (flat Responses tools).
  const structured = await openai.responses.create({
    model: MODEL_ID, input: "Weather?", max_output_tokens: 48, seed: 2,
    text: { format: { type: "json_schema", name: "weather", schema: WEATHER, strict: true } },
  });
  if (structured.status === "completed") assert.ok(validate([{ schema: WEATHER, text: structured.output_text }])[0].valid);
  let called = 0;
  for (let seed = 1; seed <= 6; ++seed) {
    const request = {
      model: MODEL_ID, input: "Weather?", max_output_tokens: 160, seed,
      tools: [{ type: "function", name: "get_weather", parameters: WEATHER, strict: true }],
      tool_choice: { type: "function", name: "get_weather" },
    };
    const response = await openai.responses.create(request);
    const call = response.output.find((item) => item.type === "function_call");
    if (response.status !== "completed") continue;
    called += 1;
    assert.equal(call.name, "get_weather");
    assert.ok(validate([{ schema: WEATHER, text: call.arguments }])[0].valid, call.arguments);
    const streamed = await openai.responses.stream(request).finalResponse();
    const streamedCall = streamed.output.find((item) => item.type === "function_call");
    assert.equal(streamedCall.arguments, call.arguments);
    // The call and its result go back as input, statelessly.
    const next = await openai.responses.create({
      model: MODEL_ID, max_output_tokens: 4, tools: request.tools,
      input: [{ role: "user", content: "Weather?" }, call, { type: "function_call_output", call_id: call.call_id, output: "sunny" }],
    });
    assert.ok(["completed", "incomplete"].includes(next.status));
  }
  assert.ok(called * 2 >= 6, `only ${called} of 6 forced calls finished`);
  await assert.rejects(openai.responses.create({ model: MODEL_ID, input: "Hi", previous_response_id: "resp_1" }),
    (error) => error.status === 400 && error.param === "previous_response_id");
}

describe("tools and responses on darkbloom serve", () => {
  let dir, serve, openai;
  before(async () => {
    dir = tempDir();
    serve = await startServe(synthModel(dir, MODEL_ID));
    openai = new OpenAI({ apiKey: "unused", baseURL: `${serve.url}/v1`, maxRetries: 0, timeout: 60000 });
  });
  after(async () => serve && (await serve.kill()));

  it("a named function: every finished call validates, streamed equals whole", () => checkNamed(openai));
  it("required: one call or several, each valid", () => checkRequired(openai));
  it("tool-call history is accepted; bad tools and choices are 400s naming param", () => checkHistoryAndRefusals(openai));
  it("the Responses API: whole, streamed, structured and with a forced call", () => checkResponses(openai));
});

describe("tools and responses through a coordinator with two providers", () => {
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

  it("a named function: every finished call validates, streamed equals whole", () => checkNamed(openai));
  it("required: one call or several, each valid", () => checkRequired(openai));
  it("tool-call history is accepted; a provider's 400 reaches the client as it is", () => checkHistoryAndRefusals(openai));
  it("the Responses API: whole, streamed, structured and with a forced call", () => checkResponses(openai));
  it("a stop string does not cut a forced call short", async () => {
    // Each of these appears in any call's text: applied, they would end the answer before its call
    // (and a "stop" without a call gets the provider dropped). Under a grammar none applies.
    for (const tool_choice of [{ type: "function", function: { name: "add" } }, "required"]) {
      const answer = await openai.chat.completions.create(ask({ seed: 2, tool_choice, max_tokens: 256,
        stop: ["{", "\"", "a", "e"] }));
      assert.ok(["tool_calls", "length"].includes(answer.choices[0].finish_reason), answer.choices[0].finish_reason);
      assert.ok(answer.choices[0].message.tool_calls?.length >= 1, "a call began");
    }
    await waitForProviders(coordinator, 2, 5000, { routable: true });
  });
  it("answers that call tools are billed in full and keep both providers trusted", async () => {
    const { data, response } = await openai.chat.completions
      .create(ask({ seed: 1, tool_choice: { type: "function", function: { name: "add" } } })).withResponse();
    assert.ok(data.usage.completion_tokens >= 5);
    // The provider's receipt covers the calls: "\x1f", then the content and each call's id, name and
    // arguments, each after its length in bytes and ':'.
    const message = data.choices[0].message;
    const field = (text) => `${Buffer.byteLength(text)}:${text}`;
    const calls = message.tool_calls ?? [];
    assert.ok(calls.length >= 1);
    const covered = "\x1f" + field(message.content ?? "") +
      calls.map((c) => field(c.id) + field(c.function.name) + field(c.function.arguments)).join("");
    const hash = crypto.createHash("sha256")
      .update(`${response.headers.get("x-receipt-request-id")}:${response.headers.get("x-receipt-completion-tokens")}:${covered}`)
      .digest("hex");
    assert.equal(response.headers.get("x-response-hash"), hash);
    await waitForProviders(coordinator, 2, 5000, { routable: true });
    const health = await (await fetch(`${coordinator.url}/health`)).json();
    assert.equal(health.routable, 2);
  });
});
