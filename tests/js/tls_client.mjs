// A child process of tls.test.mjs: the official openai client against the coordinator at argv's
// base URL, trusting only what NODE_EXTRA_CA_CERTS adds (Node reads it at start, hence a child).
// Prints the streamed text and finish reason as one JSON line.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const openai = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const stream = await openai.chat.completions.create({
  model, messages: [{ role: "user", content: "Hello over TLS" }], stream: true, max_tokens: 8, ignore_eos: true,
});
let text = "";
let finish = null;
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  finish = chunk.choices[0]?.finish_reason ?? finish;
}
console.log(JSON.stringify({ text, finish }));
