// The `hardware` trust level with real parts: software TPMs manufactured with EK certificates
// from their own local CAs (swtpm_setup + swtpm_localca), identity keys under a release key's
// PolicyAuthorize, a coordinator that checks the chain, the key's public area and its policy, and
// activates a credential through the provider's TPM. Each way of falling short ends at
// `self_signed` with its reason; a replayed activation answer too.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import {
  DARKBLOOM, FakeProvider, RawWebSocket, attestationOf, createKey, startCoordinator, startProvider, startProxy,
  synthModel, tempDir, waitForOutput, writeKey,
} from "./cluster.mjs";
import { Swtpm, check, run } from "./devices.mjs";

// A WebSocket relay in front of the coordinator, for the replay: each provider session is
// forwarded frame by frame, and `transform` may rewrite what the provider sends.
async function startRelay(coordinatorPort, transform) {
  const sessions = [];
  const server = http.createServer((request, response) => { response.statusCode = 404; response.end(); });
  server.on("upgrade", async (request, socket) => {
    const accept = crypto.createHash("sha1")
      .update(request.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const provider = new RawWebSocket(socket, { server: true });
    let upstream = null;
    const pending = [];  // what the provider sends before the upstream connection is up
    provider.intercept = (text) => {
      if (upstream) upstream.send(transform(text)); else pending.push(text);
      return true;
    };
    upstream = await RawWebSocket.connect(coordinatorPort);
    upstream.intercept = (text) => { provider.send(text); return true; };
    for (const text of pending.splice(0)) upstream.send(transform(text));
    provider.closed.then(() => upstream.socket.destroy());
    upstream.closed.then(() => provider.socket.destroy());
    sessions.push({ provider, upstream });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  server.unref();
  return { port: server.address().port, sessions, close: () => server.close() };
}

describe("the hardware trust level", () => {
  let dir;
  let tpm;
  let otherTpm;   // manufactured by another CA
  let model;
  let release;    // { private, public } PEM paths of the release key
  let otherRelease;
  let keyArgs;
  before(async () => {
    dir = tempDir("darkbloom-hardware-");
    tpm = await Swtpm.start(path.join(dir, "tpm"), { ekCert: true });
    otherTpm = await Swtpm.start(path.join(dir, "other-tpm"), { ekCert: true });
    model = synthModel(dir, "hardware-model");
    const releaseKey = (name) => {
      const key = { private: path.join(dir, `${name}.pem`), public: path.join(dir, `${name}.pub.pem`) };
      check("openssl", ["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", key.private]);
      check("openssl", ["ec", "-in", key.private, "-pubout", "-out", key.public]);
      return key;
    };
    release = releaseKey("release");
    otherRelease = releaseKey("other-release");
    // The approved state: PCR 16 after measuring this darkbloom binary (a test stand-in for a
    // measured launch), and the approvals for signing and for credential activation.
    tpm.measure(16, DARKBLOOM);
    const approval = path.join(dir, "approved");
    check(DARKBLOOM, ["keys", "approve", "--release-key", release.private, "--binary", DARKBLOOM, "--out", approval]);
    assert.ok(fs.existsSync(`${approval}.activate.sig`));
    keyArgs = ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-handle", "0x81010400",
      "--tpm-release-key", release.public, "--tpm-approval", approval, "--tpm-allow-resettable-pcr"];
  });
  after(async () => {
    await tpm.stop();
    await otherTpm.stop();
  });

  const hardwareArgs = (caTpm = tpm, releaseKey = release) =>
    ["--tpm-ek-ca", caTpm.caRoot, "--tpm-ek-ca", caTpm.caIssuer, "--tpm-release-key", releaseKey.public];

  it("proves a TPM-held key, routes --min-trust hardware to it, and publishes evidence anyone can check", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c1"),
      args: ["--min-trust", "hardware", ...hardwareArgs()] });
    try {
      const apiKey = await createKey(coordinator);
      const started = Date.now();
      const provider = await startProvider(coordinator, model, keyArgs);
      await waitForOutput(provider, /trust level hardware \(challenge passed; hardware: proven/);
      const entry = await attestationOf(coordinator, provider.id, (e) => e.trust_level === "hardware");
      assert.equal(entry.trust_level, "hardware");
      assert.match(entry.hardware.status, /^proven \(EK certificate chain, key attributes and policy, credential activation\)/);
      // The EK certificate in the listing chains to the maker's CA for anyone with openssl.
      const certificate = path.join(dir, "ek.der");
      fs.writeFileSync(certificate, Buffer.from(entry.hardware.ek_certificate, "base64"));
      const pem = check("openssl", ["x509", "-inform", "der", "-in", certificate]);
      fs.writeFileSync(`${certificate}.pem`, pem);
      assert.match(check("openssl", ["verify", "-CAfile", tpm.caRoot, "-untrusted", tpm.caIssuer, `${certificate}.pem`]), /: OK/);
      // Routed: a request is answered.
      const response = await fetch(`${coordinator.url}/v1/chat/completions`, { method: "POST",
        headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "hardware-model", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }) });
      assert.equal(response.status, 200, await response.clone().text());
      console.log(`# registration to hardware: ${Date.now() - started} ms (including the provider's start)`);

      // Blind, through `darkbloom proxy --min-trust hardware`: the proxy checks the EK chain and the
      // key's public area from the listing itself, so its own CA and release key decide.
      const keyFile = writeKey(dir, apiKey);
      const request = { model: "hardware-model", messages: [{ role: "user", content: "hi" }], max_tokens: 4 };
      const proxy = await startProxy(coordinator, keyFile, ["--min-trust", "hardware", ...hardwareArgs()]);
      const strict = await startProxy(coordinator, keyFile, ["--min-trust", "hardware", ...hardwareArgs(otherTpm)]);
      try {
        const blind = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
        assert.equal(blind.status, 200, await blind.clone().text());
        assert.equal(blind.headers.get("x-provider-trust-level"), "hardware");
        assert.equal(blind.headers.get("x-sealed-by"), "proxy");
        const refused = await fetch(`${strict.url}/v1/chat/completions`, { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
        assert.equal(refused.status, 503);
        assert.match((await refused.json()).error.message, /passes this proxy's checks for trust level hardware/);
        await waitForOutput(strict, /not used: TPM evidence rejected: the EK certificate does not chain to --tpm-ek-ca/);
      } finally {
        await proxy.kill();
        await strict.kill();
      }
      await provider.kill();
    } finally {
      await coordinator.kill();
    }
  });

  it("stays self_signed with the reason: no CA configured, another maker's CA, another release key", async () => {
    for (const [name, args, reason] of [
      ["no CA", [], /hardware: not proven: this coordinator checks no TPM/],
      ["another CA", hardwareArgs(otherTpm), /hardware: not proven: the EK certificate does not chain to --tpm-ek-ca/],
      ["another release key", hardwareArgs(tpm, otherRelease),
        /hardware: not proven: the key's authPolicy is not PolicyAuthorize of the coordinator's --tpm-release-key/],
    ]) {
      const coordinator = await startCoordinator({ dataDir: path.join(dir, `c-${name.replace(/ /g, "-")}`), args });
      try {
        const provider = await startProvider(coordinator, model, keyArgs);
        await waitForOutput(provider, /trust level self_signed \(challenge passed; hardware: not proven/);
        assert.match(provider.output.stderr, reason, name);
        const entry = await attestationOf(coordinator, provider.id);
        assert.equal(entry.trust_level, "self_signed", name);
        assert.match(`hardware: ${entry.hardware.status}`, reason, name);
        await provider.kill();
      } finally {
        await coordinator.kill();
      }
    }
  });

  it("keeps a key outside the TPM and a replayed activation answer at self_signed", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c3"), args: hardwareArgs() });
    try {
      // The TPM's real evidence sent with a key in memory: the public area is not that key.
      const provider = await startProvider(coordinator, model, keyArgs);
      await waitForOutput(provider, /trust level hardware/);
      const real = await attestationOf(coordinator, provider.id, (e) => e.trust_level === "hardware");
      await provider.kill();
      const fake = await FakeProvider.connect(coordinator.port, { waitForTrust: false,
        evidence: { ek_certificate: real.hardware.ek_certificate, key_public: real.hardware.key_public } });
      const status = await fake.waitForTrust(/hardware: not proven/);
      assert.match(status.reason, /the TPM public area is not the attested key/);
      fake.socket.socket.destroy();

      // Through a relay that records the provider's activation answer in its first session and
      // puts it in place of the answer in the next one.
      let recorded = null;
      const relay = await startRelay(coordinator.port, (text) => {
        const message = JSON.parse(text);
        if (message.type !== "credential_response") return text;
        if (recorded === null) { recorded = text; return text; }
        return recorded;
      });
      const relayed = await startProvider({ wsUrl: `ws://127.0.0.1:${relay.port}` }, model, keyArgs);
      await waitForOutput(relayed, /trust level hardware/);
      assert.notEqual(recorded, null);
      relay.sessions[0].upstream.socket.destroy();  // the provider reconnects through the relay
      await waitForOutput(relayed,
        /trust level self_signed \([^)]*hardware: not proven: the activated credential is not the one sent/, 30000);
      assert.equal(relay.sessions.length, 2);
      await relayed.kill();
      relay.close();
    } finally {
      await coordinator.kill();
    }
  });

  it("keys prove runs the same check locally and names what fails", () => {
    const proved = check(DARKBLOOM, ["keys", "prove", ...keyArgs, "--tpm-ek-ca", tpm.caRoot, "--tpm-ek-ca", tpm.caIssuer]);
    assert.match(proved, /^hardware: yes \(EK certificate chains to the CAs, key 000b[0-9a-f]{64} fixed to the TPM/);
    const refused = run(DARKBLOOM, ["keys", "prove", ...keyArgs, "--tpm-ek-ca", otherTpm.caRoot, "--tpm-ek-ca", otherTpm.caIssuer]);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /^darkbloom: error: not hardware: the EK certificate does not chain to --tpm-ek-ca/);
  });
});
