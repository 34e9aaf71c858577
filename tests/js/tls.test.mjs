// TLS on every link, with certificates the test makes with openssl: the official openai client
// over HTTPS, a provider over WSS, each refusal with its reason in one log line (wrong CA, wrong
// host name, expired certificate, wrong pin, plaintext off loopback), and a certificate reload on
// SIGHUP that drops no connection. Then the payout account's binding to the identity key, against
// a proxy that rewrites the provider's frames.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  tempDir, synthModel, startCoordinator, startProcess, startProvider, startPostgres, waitForOutput, createAccount,
  RawWebSocket, DARKBLOOM, COORDINATOR,
} from "./cluster.mjs";
import { makeCa, issue } from "./certs.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODEL_ID = "tls-model";
const run = promisify(execFile);

// One HTTPS call trusting `ca` only; {status, json}.
function httpsJson(coordinator, ca, method, urlPath, { key = coordinator.adminToken, body } = {}) {
  return new Promise((resolve, reject) => {
    const request = https.request(`${coordinator.url}${urlPath}`, {
      method, ca: fs.readFileSync(ca), headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    }, (response) => {
      let text = "";
      response.on("data", (d) => { text += d; });
      response.on("end", () => resolve({ status: response.statusCode, json: JSON.parse(text) }));
    });
    request.on("error", reject);
    request.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

// The SHA-256 of the certificate a new TLS connection to the coordinator is shown, and the socket.
function connectTls(coordinator, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port: coordinator.port, ca: fs.readFileSync(ca), servername: "localhost" },
      () => resolve({ socket, sha256: crypto.createHash("sha256").update(socket.getPeerCertificate().raw).digest("hex") }));
    socket.on("error", reject);
  });
}

// GET /health over an open TLS socket: the status line.
function healthOver(socket) {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (d) => {
      text += d;
      if (text.includes("\r\n\r\n")) {
        socket.off("data", onData);
        resolve(text.split("\r\n")[0]);
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
  });
}

describe("TLS", () => {
  let dir, model, ca, otherCa, good, coordinator, provider;

  before(async () => {
    dir = tempDir("darkbloom-tls-");
    model = synthModel(dir, MODEL_ID);
    ca = makeCa(dir, "ca");
    otherCa = makeCa(dir, "other-ca");
    good = issue(ca, "server");
    // The files the coordinator reads, copied so a reload can replace them.
    fs.copyFileSync(good.cert, `${dir}/live.pem`);
    fs.copyFileSync(good.key, `${dir}/live.key`);
    fs.chmodSync(`${dir}/live.key`, 0o600);
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, tls: { cert: `${dir}/live.pem`, key: `${dir}/live.key` } });
    provider = await startProvider(coordinator, model, ["--coordinator-ca", ca.cert]);
  });

  after(async () => {
    await provider?.kill();
    await coordinator?.kill();
  });

  it("serves the openai client over HTTPS, through a provider on WSS", async () => {
    const account = await httpsJson(coordinator, ca.cert, "POST", "/v1/admin/keys");
    assert.equal(account.status, 200);
    const credit = await httpsJson(coordinator, ca.cert, "POST", "/v1/admin/credit",
      { body: { account_id: account.json.account_id, amount_micro_usd: 1_000_000_000 } });
    assert.equal(credit.status, 200);
    const { stdout } = await run(process.execPath, [`${HERE}/tls_client.mjs`, `${coordinator.url}/v1`, account.json.api_key, MODEL_ID],
      { cwd: HERE, env: { ...process.env, NODE_EXTRA_CA_CERTS: ca.cert }, timeout: 60000 });
    const answer = JSON.parse(stdout);
    assert.equal(answer.finish, "length");
    assert.ok(answer.text.length > 0);
    // Without the CA the same client refuses the coordinator.
    const refused = await run(process.execPath, [`${HERE}/tls_client.mjs`, `${coordinator.url}/v1`, account.json.api_key,
      MODEL_ID], { cwd: HERE, env: { ...process.env, NODE_EXTRA_CA_CERTS: otherCa.cert }, timeout: 60000 })
      .then(() => null, (e) => e);
    assert.ok(refused, "the client accepted a certificate from a CA it does not trust");
    assert.match(refused.stderr, /APIConnectionError/);
    assert.match(refused.stderr, /unable to verify the first certificate/);
  });

  it("refuses a coordinator signed by another CA, naming the cause, and keeps retrying", async () => {
    const wrong = await startProvider(coordinator, model, ["--coordinator-ca", otherCa.cert], /certificate of localhost is refused: (.*)/);
    try {
      assert.match(wrong.match[1], /unable to get local issuer certificate/);
      await waitForOutput(wrong, /refused[^]*refused/);  // it backs off and tries again
      assert.ok(!/registered as/.test(wrong.output.stderr));
    } finally {
      await wrong.kill();
    }
  });

  it("checks the pin: the right one registers, a wrong one is refused", async () => {
    const pinned = await startProvider(coordinator, model, ["--coordinator-ca", ca.cert, "--coordinator-cert-sha256",
      good.sha256.toUpperCase().match(/../g).join(":")]);
    await pinned.kill();
    const wrongPin = "00".repeat(32);
    const refused = await startProvider(coordinator, model, ["--coordinator-ca", ca.cert, "--coordinator-cert-sha256", wrongPin],
      /does not match the pinned SHA-256 \(--coordinator-cert-sha256\); it is ([0-9a-f]{64})/);
    try {
      assert.equal(refused.match[1], good.sha256);
    } finally {
      await refused.kill();
    }
  });

  it("refuses a certificate for another host name or IP address, and an expired one", async () => {
    const cases = [
      [issue(ca, "other-host", { names: ["other.example"] }), "localhost", /hostname mismatch/i],
      [issue(ca, "other-address", { names: ["localhost", "127.0.0.2"] }), "127.0.0.1", /IP address mismatch/i],
      [issue(ca, "expired", { expired: true }), "localhost", /certificate has expired/],
    ];
    for (const [cert, host, reason] of cases) {
      const other = await startCoordinator({ dataDir: `${dir}/data-${path.basename(cert.cert)}`, tls: cert });
      try {
        const refused = await startProvider({ wsUrl: `wss://${host}:${other.port}` }, model, ["--coordinator-ca", ca.cert],
          /certificate of (\S+) is refused: (.*)/);
        assert.equal(refused.match[1], host);
        assert.match(refused.match[2], reason);
        await refused.kill();
      } finally {
        await other.kill();
      }
    }
  });

  it("closes a connection that never starts its TLS handshake (10 s allowed)", async () => {
    const socket = net.connect(coordinator.port, "127.0.0.1");
    socket.on("error", () => {});
    const closed = new Promise((resolve) => socket.on("close", () => resolve("closed")));
    const verdict = await Promise.race([closed, new Promise((r) => setTimeout(() => r("still open after 30 s"), 30000))]);
    socket.destroy();
    assert.equal(verdict, "closed");
  });

  it("drops a plaintext client on the TLS port and goes on serving", async () => {
    const response = await fetch(`http://127.0.0.1:${coordinator.port}/health`).then(() => "answered", (e) => e.cause?.code ?? e.message);
    assert.notEqual(response, "answered");
    assert.equal((await httpsJson(coordinator, ca.cert, "GET", "/health")).status, 200);
  });

  it("reloads the certificate on SIGHUP, keeping open connections", async () => {
    const held = await connectTls(coordinator, ca.cert);
    assert.equal(held.sha256, good.sha256);
    const next = issue(ca, "next");
    fs.copyFileSync(next.cert, `${dir}/live.pem`);
    fs.copyFileSync(next.key, `${dir}/live.key`);
    const before = coordinator.output.stderr.match(/TLS certificate .*live\.pem/g).length;
    coordinator.child.kill("SIGHUP");
    await waitForOutput(coordinator, new RegExp(`(TLS certificate .*live\\.pem[^]*){${before + 1}}`));
    const fresh = await connectTls(coordinator, ca.cert);
    assert.equal(fresh.sha256, next.sha256);
    fresh.socket.destroy();
    // The connection opened before the reload still works, and the provider's session stayed.
    assert.match(await healthOver(held.socket), /200 OK/);
    held.socket.destroy();
    const health = await httpsJson(coordinator, ca.cert, "GET", "/health");
    assert.equal(health.json.providers, 1, coordinator.output.stderr);
    assert.equal(provider.output.stderr.match(/provider registered as/g).length, 1);
    // A broken file is refused and the last good certificate stays.
    fs.writeFileSync(`${dir}/live.pem`, "not a certificate\n");
    coordinator.child.kill("SIGHUP");
    await waitForOutput(coordinator, /TLS certificate not reloaded, the old one stays in use: .*live\.pem/);
    const after = await connectTls(coordinator, ca.cert);
    assert.equal(after.sha256, next.sha256);
    after.socket.destroy();
  });
});

describe("plaintext off loopback", () => {
  it("the coordinator refuses it without --allow-plaintext and warns with it", async () => {
    const dir = tempDir("darkbloom-tls-");
    const refused = await run(COORDINATOR, ["--listen", "0.0.0.0:0", "--data-dir", `${dir}/a`]).then(
      () => null, (e) => e);
    assert.ok(refused, "the coordinator started");
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--listen 0\.0\.0\.0:0 is not a loopback address.*--tls-cert.*--allow-plaintext/);
    const allowed = await startProcess(COORDINATOR, ["--listen", "0.0.0.0:0", "--allow-plaintext", "--data-dir", `${dir}/b`],
      { ready: /listening on 0\.0\.0\.0:(\d+) \(http\)/, name: "coordinator" });
    try {
      await waitForOutput(allowed, /warn .*serving plain HTTP on 0\.0\.0\.0 \(--allow-plaintext\)/);
    } finally {
      await allowed.kill();
    }
    const half = await run(COORDINATOR, ["--listen", "0.0.0.0:0", "--tls-cert", `${dir}/none.pem`, "--data-dir", `${dir}/c`])
      .then(() => null, (e) => e);
    assert.match(half.stderr, /--tls-cert and --tls-key go together/);
  });

  it("the provider refuses ws:// to a non-loopback host without --allow-plaintext", async () => {
    const dir = tempDir("darkbloom-tls-");
    const model = synthModel(dir, MODEL_ID);
    const refused = await run(DARKBLOOM, ["start", "--model", model, "--coordinator", "ws://192.0.2.7:8080"]).then(
      () => null, (e) => e);
    assert.ok(refused, "the provider started");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /plaintext to a non-loopback host: use wss:\/\/, or give --allow-plaintext/);
    const mixed = await run(DARKBLOOM, ["start", "--model", model, "--coordinator", "ws://127.0.0.1:9", "--coordinator-ca", model])
      .then(() => null, (e) => e);
    assert.match(mixed.stderr, /need a wss:\/\/ --coordinator/);
  });
});

// A man in the middle on the provider's link: relays WebSocket frames both ways and passes the
// provider's `register` through `rewrite` on the way.
async function rewritingProxy(coordinator, rewrite) {
  const front = await RawWebSocket.listen();
  front.accepted.then(async (provider) => {
    provider.socket.on("error", () => {});  // a provider killed by the test resets its socket
    const upstream = await RawWebSocket.connect(coordinator.port);
    upstream.socket.on("error", () => {});
    upstream.intercept = (text) => { provider.send(text); return true; };
    provider.intercept = (text) => {
      const message = JSON.parse(text);
      upstream.send(message.type === "register" ? JSON.stringify(rewrite(message)) : text);
      return true;
    };
    for (const early of provider.messages.splice(0)) provider.intercept(early);  // sent before upstream was up
    upstream.closed.then(() => provider.socket.end());
    provider.closed.then(() => upstream.socket.end());
  });
  return { wsUrl: `ws://127.0.0.1:${front.port}` };
}

describe("the payout account is bound to the identity key", () => {
  let dir, model, coordinator, operator, thief;

  before(async () => {
    dir = tempDir("darkbloom-binding-");
    model = synthModel(dir, MODEL_ID);
    // Open mode, so that a register stripped of its attestation reaches the account check.
    coordinator = await startCoordinator({ dataDir: `${dir}/data`, args: ["--min-trust", "none"] });
    operator = await createAccount(coordinator);
    thief = await createAccount(coordinator);
  });

  after(async () => {
    await coordinator?.kill();
  });

  const cases = [
    ["a relay that changes nothing lets it register", (m) => m, null],
    ["a swapped account token is refused", (m) => ({ ...m, account_token: thief.api_key }),
      /the account token does not match the attestation's account_binding/],
    ["a removed account token is refused", ({ account_token, ...rest }) => rest,
      /binds a payout account but register carries no account token/],
    ["an added account token is refused", (m) => ({ ...m, account_token: thief.api_key }),
      /register carries an account token the attestation does not bind/, []],
    ["an account token without an attestation is refused", ({ attestation, ...rest }) => rest,
      /an account token needs a signed attestation that binds it/],
  ];
  for (const [name, rewrite, refusal, providerArgs = null] of cases) {
    it(name, async () => {
      const proxy = await rewritingProxy(coordinator, rewrite);
      const ready = refusal ? /connection to the coordinator ended/ : /provider registered as (prov_[0-9a-z_]+)/;
      const provider = await startProvider(proxy, model, providerArgs ?? ["--account-token", operator.api_key], ready);
      try {
        // The proxy passes no close frame on: the coordinator's log says why it dropped the session.
        if (refusal) await waitForOutput(coordinator, new RegExp(`dropped: .*${refusal.source}`));
        else await waitForOutput(coordinator, new RegExp(`provider ${provider.match[1]} registered`));
      } finally {
        await provider.kill();
      }
    });
  }
});

describe("PostgreSQL over TLS", () => {
  let dir, ca, otherCa, postgres;

  before(async () => {
    dir = tempDir("darkbloom-pg-tls-");
    ca = makeCa(dir, "pg-ca");
    otherCa = makeCa(dir, "pg-other-ca");
    postgres = await startPostgres(dir, { tls: issue(ca, "postgres") });
  });

  after(async () => {
    await postgres?.kill();
  });

  // The URL in a private file, as an operator would keep one with a password.
  function urlFile(name, url) {
    const file = `${dir}/${name}.url`;
    fs.writeFileSync(file, `${url}\n`, { mode: 0o600 });
    return file;
  }

  it("connects with sslmode=verify-full and the right CA, over TLS", async () => {
    const url = `${postgres.createDatabase("tls_ok")}?sslmode=verify-full&sslrootcert=${ca.cert}`;
    const coordinator = await startCoordinator({ dataDir: `${dir}/ok`, args: ["--database-url-file", urlFile("ok", url)] });
    try {
      const account = await createAccount(coordinator);
      assert.match(account.api_key, /^db-/);
      const rows = postgres.query("postgres",
        "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'tls_ok'");
      assert.ok(rows.length >= 1, "the coordinator has no connection to its database");
      for (const [ssl, version] of rows) {
        assert.equal(ssl, "t");
        assert.match(version, /^TLSv1\.[23]$/);
      }
    } finally {
      await coordinator.kill();
    }
  });

  it("refuses a server its CA did not sign, with the reason", async () => {
    const url = `${postgres.createDatabase("tls_wrong")}?sslmode=verify-full&sslrootcert=${otherCa.cert}`;
    const failed = await run(COORDINATOR, ["--listen", "127.0.0.1:0", "--data-dir", `${dir}/wrong`,
      "--database-url-file", urlFile("wrong", url)]).then(() => null, (e) => e);
    assert.ok(failed, "the coordinator started against an untrusted database server");
    assert.match(failed.stderr, /cannot connect to PostgreSQL: .*certificate verify failed/);
  });
});
