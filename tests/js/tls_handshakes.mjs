#!/usr/bin/env node
// Times full TLS handshakes with a server (no session resumption): connect → secure, one after
// another, reported as count / p50 / p99 / max in milliseconds.
//
//   node tls_handshakes.mjs --port P --ca CA.pem [--host 127.0.0.1] [--servername localhost] [--count 200]
import fs from "node:fs";
import tls from "node:tls";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    ca: { type: "string" },
    servername: { type: "string", default: "localhost" },
    count: { type: "string", default: "200" },
  },
});
const count = Number(args.count);
if (!args.port || !args.ca || !(count > 0 && count <= 10000)) {
  console.error("tls_handshakes: error: --port and --ca are required, --count 1..10000");
  process.exit(2);
}
const ca = fs.readFileSync(args.ca);

function handshake() {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const socket = tls.connect({ host: args.host, port: Number(args.port), ca, servername: args.servername }, () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      socket.destroy();
      resolve(ms);
    });
    socket.on("error", reject);
  });
}

const times = [];
for (let i = 0; i < count; ++i) times.push(await handshake());
times.sort((a, b) => a - b);
const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
console.log(`TLS handshakes: ${count}, p50 ${at(0.5).toFixed(2)} ms, p99 ${at(0.99).toFixed(2)} ms, ` +
  `max ${times[times.length - 1].toFixed(2)} ms (full handshakes, no resumption)`);
