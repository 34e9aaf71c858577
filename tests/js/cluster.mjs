// Starts and stops real Darkbloom processes on 127.0.0.1 for end-to-end tests: a coordinator,
// providers, `darkbloom serve`, and a hand-rolled fake provider that breaks the protocol.
// Every process started here is killed when the test process exits, also on failure.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import nacl from "tweetnacl";

export const DARKBLOOM = process.env.DARKBLOOM_BIN;
export const COORDINATOR = process.env.DARKBLOOM_COORDINATOR_BIN;
if (!DARKBLOOM || !COORDINATOR) {
  throw new Error("set DARKBLOOM_BIN and DARKBLOOM_COORDINATOR_BIN to the built binaries");
}

const children = new Set();
function killAll() {
  for (const child of children) {
    try { child.kill("SIGKILL"); } catch { /* already gone */ }
  }
}
process.on("exit", killAll);

// Kills `child` when the test process exits, like every process started here.
export function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}
process.on("SIGINT", () => { killAll(); process.exit(130); });

const tempDirs = new Set();
process.on("exit", () => { for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true }); });

// A new directory under the system's temporary directory, removed when the test process exits.
export function tempDir(prefix = "darkbloom-e2e-") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

// Runs `cmd args`, resolving once a line of its output matches `ready`; rejects if it exits
// first or takes longer than `timeoutMs`. Output is kept for later assertions.
export function startProcess(cmd, args, { ready, env = {}, timeoutMs = 30000, name = path.basename(cmd) } = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  const output = { stdout: "", stderr: "" };
  const proc = { child, output, name, exited: false, exitCode: null };
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => {
    proc.exited = true;
    proc.exitCode = code ?? signal;
    children.delete(child);
    resolve(proc.exitCode);
  }));
  proc.exitedPromise = exited;
  proc.kill = (signal = "SIGKILL") => { try { child.kill(signal); } catch { /* gone */ } return exited; };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready after ${timeoutMs} ms:\n${output.stderr}`)), timeoutMs);
    const check = (stream, text) => {
      output[stream] += text;
      const match = output.stdout.match(ready) || output.stderr.match(ready);
      if (match && !proc.match) {
        proc.match = match;
        clearTimeout(timer);
        resolve(proc);
      }
    };
    child.stdout.on("data", (d) => check("stdout", d.toString()));
    child.stderr.on("data", (d) => check("stderr", d.toString()));
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready:\n${output.stderr}`));
    });
  });
}

export function synthModel(dir, name = "e2e-model", extra = []) {
  const file = path.join(dir, `${name}.gguf`);
  execFileSync(DARKBLOOM, ["models", "synth", "-o", file, "--layers", "2", "--embd", "128", "--heads", "4",
    "--kv-heads", "2", "--ffn", "256", "--vocab", "600", "--seed", "3", ...extra], { stdio: "ignore" });
  return file;
}

export async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// `launcher` runs the coordinator under another command (e.g. ["prlimit", "--nofile=128"]).
// `tls` ({cert, key}) serves HTTPS and WSS: the HTTPS URL names 127.0.0.1 and the WSS one
// "localhost", so both kinds of certificate name (IP address, DNS) are checked.
export async function startCoordinator({ dataDir, port = 0, adminToken = "admin-token-for-tests-0123456789abcdef", args = [], launcher = [],
  tls = null } = {}) {
  const tlsArgs = tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : [];
  const command = [...launcher, COORDINATOR,
    "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--log-level", "info", ...tlsArgs, ...args];
  const proc = await startProcess(command[0], command.slice(1),
    { ready: /listening on 127\.0\.0\.1:(\d+)/, env: { DARKBLOOM_ADMIN_TOKEN: adminToken }, name: "coordinator" });
  proc.port = Number(proc.match[1]);
  proc.url = tls ? `https://127.0.0.1:${proc.port}` : `http://127.0.0.1:${proc.port}`;
  proc.wsUrl = tls ? `wss://localhost:${proc.port}` : `ws://127.0.0.1:${proc.port}`;
  proc.adminToken = adminToken;
  return proc;
}

// Sets an account's request limits (PUT /v1/admin/limits; 0 = unlimited, the default here).
export async function setLimits(coordinator, accountId, { rps = 0, burst = 0, maxConcurrent = 0 } = {}) {
  const response = await fetch(`${coordinator.url}/v1/admin/limits`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${coordinator.adminToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ account_id: accountId, requests_per_second: rps, burst, max_concurrent: maxConcurrent }),
  });
  if (response.status !== 200) throw new Error(`admin limits failed: ${response.status} ${await response.text()}`);
  return await response.json();
}

// A new account with an API key, credited with `credit` micro-USD (default: 1,000 USD, plenty
// for tests whose subject is not money).
export async function createKey(coordinator, credit = 1_000_000_000) {
  const account = await createAccount(coordinator);
  if (credit > 0) await adminCredit(coordinator, account.account_id, credit);
  return account.api_key;
}

// {api_key, account_id} of a new account with nothing on it.
export async function createAccount(coordinator) {
  const response = await fetch(`${coordinator.url}/v1/admin/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${coordinator.adminToken}` },
  });
  if (response.status !== 200) throw new Error(`admin key creation failed: ${response.status} ${await response.text()}`);
  return await response.json();
}

export async function adminCredit(coordinator, accountId, amount) {
  const response = await fetch(`${coordinator.url}/v1/admin/credit`, {
    method: "POST",
    headers: { Authorization: `Bearer ${coordinator.adminToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ account_id: accountId, amount_micro_usd: amount }),
  });
  if (response.status !== 200) throw new Error(`admin credit failed: ${response.status} ${await response.text()}`);
  return await response.json();
}

// Each provider gets its own state directory (one agent per directory), unless `args` names one.
export async function startProvider(coordinator, model, args = [], ready = /provider registered as (prov_[0-9a-z_]+)/) {
  const stateDir = args.includes("--state-dir") ? [] : ["--state-dir", tempDir("darkbloom-state-")];
  const proc = await startProcess(DARKBLOOM,
    ["--log-level", "info", "start", "--coordinator", coordinator.wsUrl ?? `ws://127.0.0.1:${coordinator.port}`, "--model", model,
      "--threads", "1", ...stateDir, ...args],
    { ready, name: "provider" });
  proc.id = proc.match[1];
  return proc;
}

// One API call: the admin token unless `key` is given, a JSON body unless it is a string; the
// answer's status, text, parsed JSON (null when not JSON) and headers.
export async function call(coordinator, method, path, { key = coordinator.adminToken, body } = {}) {
  const response = await fetch(`${coordinator.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, json, text, headers: response.headers };
}

// Resolves when `pattern` appears in a process's output.
export async function waitForOutput(proc, pattern, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = (proc.output.stderr + proc.output.stdout).match(pattern);
    if (match) return match;
    if (Date.now() > deadline) throw new Error(`no ${pattern} in output of ${proc.name}:\n${proc.output.stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// Resolves when the coordinator counts `n` providers (with `routable`, `n` that receive requests:
// registered and past their first challenge).
export async function waitForProviders(coordinator, n, timeoutMs = 30000, { routable = false } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const health = await (await fetch(`${coordinator.url}/health`)).json();
      if (health.providers === n && (!routable || health.routable === n)) return;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`coordinator did not reach ${n} providers`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A private PostgreSQL server in `dir` on a free loopback port, as the postgres user when we are
// root (PostgreSQL refuses root). setpriv execs the server itself with a parent-death signal,
// so it dies with this test process whatever happens. Returns the process with .url(db) and
// .query(db, sql) (psql, rows as arrays of strings) and .createDatabase(name).
// `tls` ({cert, key}) turns on TLS with that certificate (copied in for the postgres user).
export async function startPostgres(dir, { tls = null } = {}) {
  const bin = fs.readdirSync("/usr/lib/postgresql").sort().map((v) => `/usr/lib/postgresql/${v}/bin`)
    .filter((b) => fs.existsSync(`${b}/postgres`)).pop();
  if (!bin) throw new Error("no PostgreSQL server under /usr/lib/postgresql (./run deps)");
  const root = process.getuid() === 0;
  const asUser = (cmd, args) => (root
    ? ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig", "SIGQUIT", "--", cmd, ...args]]
    : [cmd, args]);
  const pgDir = path.join(dir, "pg");
  fs.mkdirSync(pgDir, { mode: 0o700 });
  if (root) {
    fs.chmodSync(dir, 0o711);  // the postgres user must pass through the test's directory
    execFileSync("chown", ["postgres:postgres", pgDir]);
  }
  execFileSync(...asUser(`${bin}/initdb`, ["-D", `${pgDir}/data`, "-U", "darkbloom", "--auth=trust", "-E", "UTF8",
    "--no-sync", "--no-instructions"]), { stdio: "ignore" });
  const tlsArgs = [];
  if (tls) {
    fs.copyFileSync(tls.cert, `${pgDir}/server.pem`);
    fs.copyFileSync(tls.key, `${pgDir}/server.key`);
    fs.chmodSync(`${pgDir}/server.key`, 0o600);
    if (root) execFileSync("chown", ["postgres:postgres", `${pgDir}/server.pem`, `${pgDir}/server.key`]);
    tlsArgs.push("-c", "ssl=on", "-c", `ssl_cert_file=${pgDir}/server.pem`, "-c", `ssl_key_file=${pgDir}/server.key`);
  }
  const port = await freePort();
  const launch = () => startProcess(...asUser(`${bin}/postgres`, ["-D", `${pgDir}/data`, "-p", String(port), "-k", pgDir,
    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200", ...tlsArgs]),
  { ready: /ready to accept connections/, name: "postgres" });
  const proc = await launch();
  // A fast shutdown (open transactions rolled back, connections closed), and a start again on
  // the same port and data: a database that went away for a while.
  proc.stop = async () => { await proc.kill("SIGINT"); };
  proc.start = async () => {
    const started = await launch();
    Object.assign(proc, { child: started.child, output: started.output, kill: started.kill,
      exitedPromise: started.exitedPromise, exited: false });
  };
  proc.port = port;
  proc.url = (db = "postgres") => `postgresql://darkbloom@127.0.0.1:${port}/${db}`;
  proc.query = (db, sql) => execFileSync("psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "darkbloom", "-d", db,
    "-tA", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql]).toString().trim().split("\n").filter((l) => l)
    .map((l) => l.split("\t"));
  proc.createDatabase = (name) => { proc.query("postgres", `CREATE DATABASE ${name}`); return proc.url(name); };
  return proc;
}

export async function startServe(model, args = []) {
  const proc = await startProcess(DARKBLOOM, ["serve", "--model", model, "--port", "0", "--threads", "1", ...args],
    { ready: /at http:\/\/127\.0\.0\.1:(\d+)\/v1/, name: "serve" });
  proc.port = Number(proc.match[1]);
  proc.url = `http://127.0.0.1:${proc.port}`;
  return proc;
}

// A provider's entry in the public listing, polled until `ready` holds for it (the listing is
// rebuilt at most once a second); whatever it is after 10 s.
export async function attestationOf(coordinator, providerId, ready = () => true) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const list = (await (await fetch(`${coordinator.url}/v1/providers/attestation`)).json()).data;
    const entry = list.find((e) => e.provider_id === providerId);
    if ((entry && ready(entry)) || Date.now() > deadline) return entry;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// `darkbloom proxy` in front of `coordinator`, with the API key in `keyFile`; `.url` is its base.
export async function startProxy(coordinator, keyFile, args = []) {
  const proc = await startProcess(DARKBLOOM, ["--log-level", "info", "proxy", "--coordinator", coordinator.url,
    "--api-key-file", keyFile, "--listen", "127.0.0.1:0", "--listing-max-age", "0.2", ...args],
    { ready: /OpenAI API at http:\/\/127\.0\.0\.1:(\d+)\/v1/, name: "proxy" });
  proc.url = `http://127.0.0.1:${proc.match[1]}`;
  return proc;
}

// A file (mode 0600) in `dir` holding `key`.
export function writeKey(dir, key, name = "api-key") {
  const file = path.join(dir, name);
  fs.writeFileSync(file, key, { mode: 0o600 });
  return file;
}

// Reads an SSE response body into its `data:` payloads.
export async function readEvents(response) {
  const text = await response.text();
  return text.split("\n\n").filter((block) => block.startsWith("data: ")).map((block) => block.slice(6));
}

// A minimal WebSocket client speaking raw frames, for a provider that misbehaves on purpose.
export class RawWebSocket {
  // `localAddress` (e.g. 127.0.0.2) makes the connection come from another loopback address.
  static connect(port, pathname = "/ws/provider", { localAddress } = {}) {
    return new Promise((resolve, reject) => {
      const key = crypto.randomBytes(16).toString("base64");
      const request = http.request({
        host: "127.0.0.1", port, path: pathname, localAddress,
        headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key },
      });
      request.on("upgrade", (response, socket) => resolve(new RawWebSocket(socket)));
      request.on("response", (response) => reject(new Error(`no upgrade: ${response.statusCode}`)));
      request.on("error", reject);
      request.end();
    });
  }

  // A fake coordinator: accepts one provider's WebSocket upgrade on a local port.
  static async listen() {
    const server = http.createServer((request, response) => { response.statusCode = 404; response.end(); });
    const accepted = new Promise((resolve) => {
      server.on("upgrade", (request, socket) => {
        const accept = crypto.createHash("sha1")
          .update(request.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
        socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
        resolve(new RawWebSocket(socket, { server: true }));
      });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    server.unref();  // never keeps the test process alive
    return { port: server.address().port, accepted, server };
  }

  constructor(socket, { server = false } = {}) {
    this.server = server;
    this.socket = socket;
    socket.unref();
    this.buffer = Buffer.alloc(0);
    this.messages = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => socket.on("close", resolve));
    // A peer that goes away resets the connection when it had unread data: that is a close (the
    // "close" event follows), not a crash of the test process.
    socket.on("error", (error) => { this.error = error; });
    socket.on("data", (data) => this.#receive(data));
  }

  send(text) {
    const payload = Buffer.from(text);
    if (this.server) {  // servers send unmasked frames
      let header;
      if (payload.length < 126) header = Buffer.from([0x81, payload.length]);
      else if (payload.length < 65536) { header = Buffer.alloc(4); header[0] = 0x81; header[1] = 126; header.writeUInt16BE(payload.length, 2); }
      else { header = Buffer.alloc(10); header[0] = 0x81; header[1] = 127; header.writeBigUInt64BE(BigInt(payload.length), 2); }
      this.socket.write(Buffer.concat([header, payload]));
      return;
    }
    const mask = crypto.randomBytes(4);
    let header;
    if (payload.length < 126) {
      header = Buffer.from([0x81, 0x80 | payload.length]);
    } else if (payload.length < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x81; header[1] = 0x80 | 126; header.writeUInt16BE(payload.length, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x81; header[1] = 0x80 | 127; header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  // The next text message, or null once the connection closed.
  next(timeoutMs = 10000) {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no message")), timeoutMs);
      this.waiters.push((message) => { clearTimeout(timer); resolve(message); });
      this.closed.then(() => { clearTimeout(timer); resolve(null); });
    });
  }

  #receive(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const fin = (this.buffer[0] & 0x80) !== 0;
      const opcode = this.buffer[0] & 0x0f;
      const masked = (this.buffer[1] & 0x80) !== 0;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) { if (this.buffer.length < 4) return; length = this.buffer.readUInt16BE(2); offset = 4; }
      else if (length === 127) { if (this.buffer.length < 10) return; length = Number(this.buffer.readBigUInt64BE(2)); offset = 10; }
      const maskBytes = masked ? 4 : 0;
      if (this.buffer.length < offset + maskBytes + length) return;
      const mask = masked ? this.buffer.subarray(offset, offset + 4) : null;
      let payload = Buffer.from(this.buffer.subarray(offset + maskBytes, offset + maskBytes + length));
      if (mask) payload = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
      offset += maskBytes;
      this.buffer = this.buffer.subarray(offset + length);
      // A fragmented message: text frame without FIN, then continuations (opcode 0) up to one with it.
      if (opcode === 0x1 && !fin) { this.fragments = [payload]; continue; }
      if (opcode === 0x0 && this.fragments) {
        this.fragments.push(payload);
        if (!fin) continue;
        payload = Buffer.concat(this.fragments);
        this.fragments = null;
      }
      if (opcode === 0x1 || opcode === 0x0) {
        const text = payload.toString();
        if (this.intercept && this.intercept(text)) continue;  // handled in the background
        const waiter = this.waiters.shift();
        if (waiter) waiter(text); else this.messages.push(text);
      } else if (opcode === 0x9) {
        // answer pings so the peer keeps us
        if (this.server) {
          this.socket.write(Buffer.concat([Buffer.from([0x8a, payload.length]), payload]));
        } else {
          const pongMask = crypto.randomBytes(4);
          this.socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length]), pongMask,
            Buffer.from(payload.map((b, i) => b ^ pongMask[i % 4]))]));
        }
      } else if (opcode === 0x8) {
        this.closeReason = payload.subarray(2).toString();  // after the 2-byte status code
        this.socket.end();
      }
    }
  }
}

export function registerMessage(modelId) {
  return JSON.stringify({
    type: "register", protocol_version: 1, provider_version: "fake", backend: "fake",
    hardware: { cpu: "fake", cores: 1, memory_gb: 1 },
    models: [{ id: modelId, size_bytes: 1, quantization: "q8_0", weight_hash: "00" }],
    encryption_key: crypto.randomBytes(32).toString("base64"),
    prefill_tps: 100, decode_tps: 100, max_concurrency: 1,
  });
}

// Compact JSON with keys sorted at every level: the canonical form documents are signed in.
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function rfc3339(date = new Date()) {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// The Merkle tree over a file's 1 MiB chunks (crypto/merkle.h), written here from the definition
// with Node's crypto: leaf = SHA-256(0x00 || chunk), node = SHA-256(0x01 || left || right), an odd
// node carried up, an empty file one empty chunk.
export const MERKLE_CHUNK = 1 << 20;
export function merkleTree(bytes) {
  const sha = (...parts) => crypto.createHash("sha256").update(Buffer.concat(parts)).digest();
  const leaves = [];
  for (let at = 0; at < bytes.length || leaves.length === 0; at += MERKLE_CHUNK) {
    leaves.push(sha(Buffer.from([0]), bytes.subarray(at, at + MERKLE_CHUNK)));
  }
  const levels = [leaves];
  while (levels.at(-1).length > 1) {
    const below = levels.at(-1);
    const up = [];
    for (let i = 0; i + 1 < below.length; i += 2) up.push(sha(Buffer.from([1]), below[i], below[i + 1]));
    if (below.length % 2 === 1) up.push(below.at(-1));
    levels.push(up);
  }
  return {
    root: levels.at(-1)[0].toString("hex"),
    size: bytes.length,
    chunks: leaves.length,
    chunk: (index) => bytes.subarray(index * MERKLE_CHUNK, (index + 1) * MERKLE_CHUNK),
    // Sibling hashes from the leaf up, skipping levels where the node has none.
    path(index) {
      const siblings = [];
      for (const level of levels.slice(0, -1)) {
        if ((index ^ 1) < level.length) siblings.push(level[index ^ 1].toString("hex"));
        index = Math.floor(index / 2);
      }
      return siblings;
    },
  };
}

// A P-256 identity key made with Node's own crypto: raw X ‖ Y in base64, DER signatures.
export class IdentityKey {
  constructor() {
    const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    this.privateKey = privateKey;
    this.publicKeyObject = publicKey;
    const jwk = publicKey.export({ format: "jwk" });
    this.publicKey = Buffer.concat([Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]).toString("base64");
  }
  sign(text) { return crypto.sign("sha256", Buffer.from(text), this.privateKey).toString("base64"); }
}

export const GOOD_POSTURE = { secure_boot: false, kernel_lockdown: false, ptrace_restricted: false,
  core_dumps_disabled: true, not_traced: true, env_clean: true };

// A provider written independently of the C++ one, on tweetnacl: it speaks the protocol
// correctly by default, so a test can make it misbehave in exactly one way.
export class FakeProvider {
  // Registers and, unless `attest` is false, attests with its own P-256 key and answers
  // challenges in the background (`answerChallenges`), so it becomes routable like a real one.
  // `document` overrides fields of the attestation document; `sign` replaces how it is signed.
  // `files` maps model ids to the bytes this provider holds: each is registered with its Merkle
  // root (unless `models` overrides the entries) and its chunks are proved when a challenge asks.
  // `features` are the register message's (e.g. ["blind"]); none by default.
  static async connect(port, { model = "fake-model", decodeTps = 100, maxConcurrency = 1, encryptionKey,
    attest = true, answerChallenges = true, identity = new IdentityKey(), document = {}, signDocument,
    rotation, waitForTrust = attest, files = {}, models, evidence, features } = {}) {
    const provider = new FakeProvider(await RawWebSocket.connect(port));
    provider.keys = nacl.box.keyPair();
    provider.identity = identity;
    provider.answerChallenges = answerChallenges;
    provider.challenges = [];
    provider.trust = [];
    const hello = JSON.parse(registerMessage(model));
    provider.trees = Object.fromEntries(Object.entries(files).map(([id, bytes]) => [id, merkleTree(bytes)]));
    for (const entry of hello.models) {
      const tree = provider.trees[entry.id];
      if (tree) Object.assign(entry, { merkle_root: tree.root, size_bytes: tree.size });
    }
    if (models) hello.models = models;
    if (features) hello.features = features;
    hello.encryption_key = encryptionKey ?? Buffer.from(provider.keys.publicKey).toString("base64");
    hello.decode_tps = decodeTps;
    hello.max_concurrency = maxConcurrency;
    if (attest) {
      provider.document = {
        public_key: identity.publicKey, key_backend: "ephemeral",
        encryption_key: Buffer.from(provider.keys.publicKey).toString("base64"),
        binary_hash: "ab".repeat(32), version: "fake", hardware: { cpu: "fake", memory_gb: 1 }, os: "Linux fake",
        ...GOOD_POSTURE, timestamp: rfc3339(), ...document,
      };
      const bytes = canonicalJson(provider.document);
      hello.attestation = { document: bytes, signature: signDocument ? signDocument(bytes) : identity.sign(bytes) };
      if (rotation) Object.assign(hello.attestation, rotation);
      if (evidence) Object.assign(hello.attestation, evidence);  // TPM evidence: ek_certificate, key_public
    }
    provider.socket.intercept = (text) => provider.#background(text);
    provider.socket.send(JSON.stringify(hello));
    provider.registered = await provider.next("registered");  // null when refused: see socket.closeReason
    if (waitForTrust) await provider.waitForTrust(/challenge passed/);
    return provider;
  }

  // Challenges are answered (or kept, when answering is off) and trust_status messages recorded
  // as they arrive, whatever the test is waiting for.
  #background(text) {
    let message;
    try { message = JSON.parse(text); } catch { return false; }
    if (message.type === "attestation_challenge") {
      this.challenges.push(message);
      if (this.answerChallenges) this.socket.send(JSON.stringify(this.challengeAnswer(message)));
      return true;
    }
    if (message.type === "trust_status") {
      this.trust.push(message);
      for (const waiter of this.trustWaiters ?? []) waiter();
      return true;
    }
    return false;
  }

  // A correct answer to a challenge, with fields overridden as given: the chunks it names are
  // proved from `files` (or by `prove(model, index, tree)`, which returns a proof or undefined).
  challengeAnswer(challenge, { posture = {}, status = {}, nonce = challenge.nonce, timestamp = challenge.timestamp,
    prove = this.prove } = {}) {
    const statusDocument = canonicalJson({ nonce, timestamp, binary_hash: this.document?.binary_hash ?? "ab".repeat(32),
      ...GOOD_POSTURE, ...posture, ...status });
    const answer = { type: "attestation_response", nonce, timestamp, signature: this.identity.sign(nonce + timestamp),
      status: statusDocument, status_signature: this.identity.sign(statusDocument) };
    const proofs = (challenge.model_chunks ?? []).map(({ model, index }) => {
      const tree = this.trees?.[model];
      if (prove) return prove(model, index, tree);
      if (!tree) return undefined;
      return { model, index, chunk: tree.chunk(index).toString("base64"), path: tree.path(index) };
    }).filter(Boolean);
    if (proofs.length > 0) answer.model_proofs = proofs;
    return answer;
  }

  // Resolves with the first trust_status whose reason matches.
  async waitForTrust(pattern, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.trust.find((m) => pattern.test(`${m.trust_level} ${m.reason}`));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no trust_status matching ${pattern}: ${JSON.stringify(this.trust)}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 50);
        (this.trustWaiters ??= []).push(() => { clearTimeout(timer); resolve(); });
      });
      this.trustWaiters = [];
    }
  }

  constructor(socket) { this.socket = socket; }

  // The next message of a type, skipping others (trust_status, ...).
  async next(type, timeoutMs = 10000) {
    for (;;) {
      const text = await this.socket.next(timeoutMs);
      if (text === null) return null;
      const message = JSON.parse(text);
      if (!type || message.type === type) return message;
    }
  }

  // Opens an inference_request: the session key and the OpenAI body.
  open(request) {
    const sessionKey = Buffer.from(request.sealed_body.ephemeral_public_key, "base64");
    const sealed = Buffer.from(request.sealed_body.ciphertext, "base64");
    const plain = nacl.box.open(sealed.subarray(24), sealed.subarray(0, 24), sessionKey, this.keys.secretKey);
    if (!plain) throw new Error("the sealed body does not open with this provider's key");
    return { sessionKey, content: JSON.parse(Buffer.from(plain).toString()) };
  }

  seal(object, recipient, senderKeys = this.keys) {
    const nonce = nacl.randomBytes(24);
    const box = nacl.box(Buffer.from(JSON.stringify(object)), nonce, recipient, senderKeys.secretKey);
    return { ephemeral_public_key: Buffer.from(senderKeys.publicKey).toString("base64"),
             ciphertext: Buffer.concat([Buffer.from(nonce), Buffer.from(box)]).toString("base64") };
  }

  chunk(requestId, sessionKey, seq, text) {
    return JSON.stringify({ type: "inference_chunk", request_id: requestId, sealed: this.seal({ seq, text }, sessionKey) });
  }

  // `text` (the whole answer) adds a signed receipt; `receipt` overrides its fields.
  complete(requestId, sessionKey, seq, completionTokens, { text, receipt = {} } = {}) {
    const content = { seq, prompt_tokens: 5, completion_tokens: completionTokens, finish_reason: "stop" };
    if (text !== undefined && this.identity) {
      content.response_hash = crypto.createHash("sha256").update(`${requestId}:${completionTokens}:${text}`).digest("hex");
      content.receipt_signature = this.identity.sign(content.response_hash);
      Object.assign(content, receipt);
    }
    return JSON.stringify({ type: "inference_complete", request_id: requestId, sealed: this.seal(content, sessionKey) });
  }

  // Answers one request correctly with the given pieces of text.
  async answer(request, pieces) {
    const { sessionKey } = this.open(request);
    this.socket.send(JSON.stringify({ type: "inference_accepted", request_id: request.request_id }));
    pieces.forEach((text, seq) => this.socket.send(this.chunk(request.request_id, sessionKey, seq, text)));
    this.socket.send(this.complete(request.request_id, sessionKey, pieces.length, pieces.length,
      { text: pieces.join("") }));
  }
}
