// Trust end to end with real parts: identity keys in a software TPM (swtpm) and a SoftHSM2
// token, checked with tpm2-tools, OpenSC and the openssl command line; a coordinator that
// verifies attestations, challenges providers and relays signed receipts; and fake providers
// that each get one thing wrong.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  DARKBLOOM, FakeProvider, IdentityKey, RawWebSocket, canonicalJson, createKey, rfc3339, startCoordinator, startProvider,
  synthModel, tempDir, waitForOutput,
} from "./cluster.mjs";
import { Swtpm, SoftHsmToken, SOFTHSM_MODULE, check, fields, opensslVerifies, pemOf, run } from "./devices.mjs";

const darkbloom = (args, env) => run(DARKBLOOM, args, { env });
// What `darkbloom keys sign` signs: a fixed prefix, then the file.
const manual = (text) => `darkbloom keys sign v1\n${text}`;

describe("identity key in a software TPM", () => {
  let dir;
  let tpm;
  const handle = "0x81010100";
  const tpmArgs = (extra = []) => ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-handle", handle, ...extra];

  before(async () => {
    dir = tempDir("darkbloom-tpm-");
    tpm = await Swtpm.start(dir);
  });
  after(async () => { await tpm.stop(); });

  it("creates the key once, finds the same key after restarts, and OpenSSL verifies its signatures", async () => {
    const none = ["--tpm-policy", "none"];
    const before = darkbloom(["keys", "show", ...tpmArgs(none)]);
    assert.equal(before.status, 0);
    assert.equal(fields(before.stdout).backend, "ephemeral", "show creates nothing");
    assert.match(fields(before.stdout).degraded_reason, /no key at 0x81010100 yet/);

    const message = path.join(dir, "message");
    fs.writeFileSync(message, "signed inside the TPM");
    const signed = darkbloom(["keys", "sign", ...tpmArgs(none), "--in", message, "--out", path.join(dir, "sig.der")]);
    assert.equal(signed.status, 0, signed.stderr);
    const key = fields(signed.stdout);
    assert.equal(key.backend, "tpm2");
    assert.equal(key.persistent, "yes");
    assert.ok(opensslVerifies(dir, pemOf(key.public_key), manual("signed inside the TPM"), fs.readFileSync(path.join(dir, "sig.der"))));
    assert.ok(!opensslVerifies(dir, pemOf(key.public_key), "signed inside the TPM", fs.readFileSync(path.join(dir, "sig.der"))));

    // tpm2-tools sees a key fixed to this TPM, generated inside it, for signing only.
    const attributes = tpm.tools("tpm2_readpublic", ["-c", handle]);
    assert.match(attributes, /fixedtpm\|fixedparent\|sensitivedataorigin\|userwithauth\|sign/);

    await tpm.stop();
    await tpm.start();
    const again = fields(darkbloom(["keys", "show", ...tpmArgs(none)]).stdout);
    assert.equal(again.backend, "tpm2");
    assert.equal(again.public_key, key.public_key, "the same key after a TPM restart");

    const deleted = darkbloom(["keys", "delete", ...tpmArgs(none)]);
    assert.notEqual(deleted.status, 0, "delete wants --yes");
    assert.equal(darkbloom(["keys", "delete", ...tpmArgs(none), "--yes"]).status, 0);
    assert.match(fields(darkbloom(["keys", "show", ...tpmArgs(none)]).stdout).degraded_reason, /no key at/);
  });

  it("lets only an approved binary use the key, and a newly approved release the same key", () => {
    const release = path.join(dir, "release.pem");
    const releasePublic = path.join(dir, "release.pub.pem");
    check("openssl", ["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", release]);
    check("openssl", ["ec", "-in", release, "-pubout", "-out", releasePublic]);
    const approval = path.join(dir, "v1");
    const authorize = (approvalPrefix) => tpmArgs(["--tpm-release-key", releasePublic, "--tpm-approval", approvalPrefix,
      "--tpm-allow-resettable-pcr"]);

    // Boot-time measurement stand-in: PCR 16 holds the provider binary's hash.
    tpm.measure(16, DARKBLOOM);
    const approved = darkbloom(["keys", "approve", "--release-key", release, "--binary", DARKBLOOM, "--out", approval]);
    assert.equal(approved.status, 0, approved.stderr);
    // tpm2-tools computes the same PolicyPCR digest from the live PCR in a trial session.
    const session = path.join(dir, "trial.ctx");
    const policyFile = path.join(dir, "trial.policy");
    tpm.tools("tpm2_startauthsession", ["-S", session]);
    tpm.tools("tpm2_policypcr", ["-S", session, "-l", "sha256:16", "-L", policyFile]);
    tpm.tools("tpm2_flushcontext", [session]);
    assert.deepEqual(fs.readFileSync(`${approval}.policy`), fs.readFileSync(policyFile));
    assert.ok(opensslVerifies(dir, fs.readFileSync(releasePublic), fs.readFileSync(`${approval}.policy`),
      fs.readFileSync(`${approval}.sig`)), "the approval is the release key's signature over the policy");

    const message = path.join(dir, "m2");
    fs.writeFileSync(message, "approved");
    // PCR 16 binds nothing unless the operator says it is a test: any process can reset it.
    const unsafe = fields(darkbloom(["keys", "show", ...tpmArgs(["--tpm-release-key", releasePublic,
      "--tpm-approval", approval])]).stdout);
    assert.equal(unsafe.backend, "ephemeral");
    assert.match(unsafe.degraded_reason, /PCR 16 can be reset and extended by any local process/);
    const signed = darkbloom(["keys", "sign", ...authorize(approval), "--in", message, "--out", path.join(dir, "s2.der")]);
    assert.equal(signed.status, 0, signed.stderr);
    const key = fields(signed.stdout);
    assert.equal(key.backend, "tpm2");
    assert.match(key.key, /authorize policy/);
    assert.ok(opensslVerifies(dir, pemOf(key.public_key), manual("approved"), fs.readFileSync(path.join(dir, "s2.der"))));

    // A different binary measured: the TPM refuses the key; the cause is named and we fall back.
    const other = path.join(dir, "other-binary");
    fs.writeFileSync(other, "not the provider");
    tpm.measure(16, other);
    const refused = fields(darkbloom(["keys", "show", ...authorize(approval)]).stdout);
    assert.equal(refused.backend, "ephemeral");
    assert.match(refused.degraded_reason, /tpm2: the approved state does not match this platform \(PolicyAuthorize\)/);

    // The release key approves the new state: the same key signs again, nothing re-created.
    const v2 = path.join(dir, "v2");
    assert.equal(darkbloom(["keys", "approve", "--release-key", release, "--binary", other, "--out", v2]).status, 0);
    const released = fields(darkbloom(["keys", "show", ...authorize(v2)]).stdout);
    assert.equal(released.backend, "tpm2");
    assert.equal(released.public_key, key.public_key);

    // A key at a handle made under another policy is not ours: named, neither used nor replaced.
    const plainHandle = ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-handle", "0x81010102"];
    const plain = fields(check(DARKBLOOM, ["keys", "sign", ...plainHandle, "--tpm-policy", "none", "--in", message,
      "--out", path.join(dir, "s4.der")]));
    assert.equal(plain.backend, "tpm2");
    const foreign = fields(darkbloom(["keys", "show", ...plainHandle, "--tpm-release-key", releasePublic,
      "--tpm-approval", v2, "--tpm-allow-resettable-pcr"]).stdout);
    assert.equal(foreign.backend, "ephemeral");
    assert.match(foreign.degraded_reason, /the object at 0x81010102 is not this provider's key \(usable with a password, administrable without the policy, a different policy\)/);
    const notDeleted = darkbloom(["keys", "delete", ...plainHandle, "--tpm-release-key", releasePublic,
      "--tpm-approval", v2, "--tpm-allow-resettable-pcr", "--yes"]);
    assert.notEqual(notDeleted.status, 0);
    assert.match(notDeleted.stderr, /refusing to delete: the object at 0x81010102 is not this provider's key/);
    assert.equal(fields(darkbloom(["keys", "show", ...plainHandle, "--tpm-policy", "none"]).stdout).public_key, plain.public_key,
      "and it is still there, untouched");

    // An approval not signed by the release key is worthless.
    const forgedKey = path.join(dir, "forged.pem");
    check("openssl", ["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", forgedKey]);
    const forged = path.join(dir, "forged");
    assert.equal(darkbloom(["keys", "approve", "--release-key", forgedKey, "--binary", other, "--out", forged]).status, 0);
    const rejected = fields(darkbloom(["keys", "show", ...authorize(forged)]).stdout);
    assert.equal(rejected.backend, "ephemeral");
    assert.match(rejected.degraded_reason, /release approval/);
  });

  it("rotates: a new key at the handle, vouched for by the old one", () => {
    const none = ["--tpm-policy", "none"];
    const h = ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-handle", "0x81010101", ...none];
    const message = path.join(dir, "m3");
    fs.writeFileSync(message, "x");
    const first = fields(darkbloom(["keys", "sign", ...h, "--in", message, "--out", path.join(dir, "s3")]).stdout);
    const out = path.join(dir, "rotation.json");
    const rotated = darkbloom(["keys", "rotate", ...h, "--out", out]);
    assert.equal(rotated.status, 0, rotated.stderr);
    const { statement, signature } = JSON.parse(fs.readFileSync(out, "utf8"));
    const parsed = JSON.parse(statement);
    assert.equal(parsed.old_public_key, first.public_key);
    assert.notEqual(parsed.new_public_key, first.public_key);
    assert.ok(opensslVerifies(dir, pemOf(first.public_key), statement, Buffer.from(signature, "base64")));
    assert.equal(fields(darkbloom(["keys", "show", ...h]).stdout).public_key, parsed.new_public_key);
  });
});

describe("identity key in a PKCS#11 token (SoftHSM2)", () => {
  let dir;
  let token;
  // Flags for the token; `overrides` replaces any of them ({ "--pkcs11-token": "absent" }).
  const args = (overrides = {}) => Object.entries({ "--key-backend": "pkcs11", "--pkcs11-module": SOFTHSM_MODULE,
    "--pkcs11-token": token.label, "--pkcs11-pin-file": token.pinFile, ...overrides }).flat();

  before(() => {
    dir = tempDir("darkbloom-hsm-");
    token = new SoftHsmToken(dir);
  });

  it("creates a sensitive, non-extractable key once and finds it again", () => {
    const message = path.join(dir, "message");
    fs.writeFileSync(message, "signed in the token");
    const signed = darkbloom(["keys", "sign", ...args(), "--in", message, "--out", path.join(dir, "sig.der")], token.env);
    assert.equal(signed.status, 0, signed.stderr);
    const key = fields(signed.stdout);
    assert.equal(key.backend, "pkcs11");
    assert.ok(opensslVerifies(dir, pemOf(key.public_key), manual("signed in the token"), fs.readFileSync(path.join(dir, "sig.der"))));
    // OpenSC, not darkbloom, reads the key's attributes.
    const listed = token.privateKeys();
    assert.match(listed, /label:\s+darkbloom-provider-v1/);
    assert.match(listed, /Access:\s+sensitive, always sensitive, never extractable, local/);
    assert.equal(fields(darkbloom(["keys", "show", ...args()], token.env).stdout).public_key, key.public_key);
  });

  it("names a wrong PIN, a missing token and an exportable key instead of using them", () => {
    const wrongPin = path.join(dir, "wrong-pin");
    fs.writeFileSync(wrongPin, "9999\n", { mode: 0o600 });
    const wrong = fields(darkbloom(["keys", "show", ...args({ "--pkcs11-pin-file": wrongPin })], token.env).stdout);
    assert.equal(wrong.backend, "ephemeral");
    assert.match(wrong.degraded_reason, /wrong PIN/);
    const missing = fields(darkbloom(["keys", "show", ...args({ "--pkcs11-token": "absent" })], token.env).stdout);
    assert.match(missing.degraded_reason, /no PKCS#11 token labelled 'absent'/);
    const noModule = fields(darkbloom(["keys", "show", ...args({ "--pkcs11-module": "/nonexistent/p11.so" })], token.env).stdout);
    assert.match(noModule.degraded_reason, /cannot load PKCS#11 module/);

    // A key imported from a file was outside the token once: refused, not used.
    const pem = path.join(dir, "imported.pem");
    check("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pem]);
    check("softhsm2-util", ["--import", pem, "--token", token.label, "--label", "imported-v1", "--id", "a1",
      "--pin", token.pin], { env: token.env });
    const exportable = fields(darkbloom(["keys", "show", ...args({ "--pkcs11-label": "imported-v1" })], token.env).stdout);
    assert.equal(exportable.backend, "ephemeral");
    assert.match(exportable.degraded_reason, /can be or has been exported .*local=false/);

    // An unusable PIN never makes `start` crash or pretend: doctor names it too.
    const doctor = darkbloom(["doctor", ...args({ "--pkcs11-pin-file": wrongPin })], token.env);
    assert.equal(doctor.status, 0);
    assert.match(doctor.stdout, /degraded_reason: pkcs11: login to token 'darkbloom': wrong PIN/);
    assert.match(doctor.stdout, /core_dumps_disabled: true/);
  });

  it("rotates under the same label with a statement signed by the old key", () => {
    const old = fields(darkbloom(["keys", "show", ...args()], token.env).stdout);
    const out = path.join(dir, "rotation.json");
    const rotated = darkbloom(["keys", "rotate", ...args(), "--out", out], token.env);
    assert.equal(rotated.status, 0, rotated.stderr);
    const { statement, signature } = JSON.parse(fs.readFileSync(out, "utf8"));
    assert.equal(JSON.parse(statement).old_public_key, old.public_key);
    assert.ok(opensslVerifies(dir, pemOf(old.public_key), statement, Buffer.from(signature, "base64")));
    const now = fields(darkbloom(["keys", "show", ...args()], token.env).stdout);
    assert.equal(now.public_key, JSON.parse(statement).new_public_key);
    assert.match(token.privateKeys(), /never extractable/);
  });
});

describe("coordinator trust", () => {
  let dir;
  let tpm;
  let model;
  before(async () => {
    dir = tempDir("darkbloom-trust-");
    tpm = await Swtpm.start(path.join(dir, "tpm"));
    model = synthModel(dir, "trust-model");
  });
  after(async () => { await tpm.stop(); });

  // The public listing (routable providers only, rebuilt at most once a second): polled until
  // `ready` holds for it.
  const attestations = async (coordinator, ready = (list) => list.length > 0) => {
    const deadline = Date.now() + 5000;
    for (;;) {
      const list = (await (await fetch(`${coordinator.url}/v1/providers/attestation`)).json()).data;
      if (ready(list) || Date.now() > deadline) return list;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const chat = (coordinator, key, body) => fetch(`${coordinator.url}/v1/chat/completions`, {
    method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });

  it("attests a TPM-held key, keeps it across provider restarts, and signs receipts anyone can check", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c1") });
    const keyArgs = ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-policy", "none", "--tpm-handle", "0x81010200"];
    try {
      const apiKey = await createKey(coordinator);
      let provider = await startProvider(coordinator, model, keyArgs);
      await waitForOutput(provider, /trust level self_signed \(challenge passed\)/);
      const [entry] = await attestations(coordinator);
      assert.equal(entry.trust_level, "self_signed");
      assert.equal(entry.key_backend, "tpm2");
      assert.equal(entry.challenges.passed, 1);
      assert.equal(JSON.parse(entry.attestation).public_key, entry.public_key);
      assert.equal(entry.binary_hash, crypto.createHash("sha256").update(fs.readFileSync(DARKBLOOM)).digest("hex"));
      assert.ok(opensslVerifies(dir, entry.public_key_pem, entry.attestation, Buffer.from(entry.signature, "base64")),
        "the published attestation verifies with OpenSSL");

      // Non-streaming: the receipt travels in headers.
      const response = await chat(coordinator, apiKey, { model: "trust-model", messages: [{ role: "user", content: "hi" }],
        max_tokens: 6, ignore_eos: true });
      assert.equal(response.status, 200);
      const body = await response.json();
      const text = body.choices[0].message.content;
      const hash = response.headers.get("x-response-hash");
      const requestId = response.headers.get("x-receipt-request-id");
      const signedTokens = response.headers.get("x-receipt-completion-tokens");
      assert.equal(signedTokens, "6");
      assert.equal(hash, crypto.createHash("sha256").update(`${requestId}:${signedTokens}:${text}`).digest("hex"));
      assert.ok(opensslVerifies(dir, entry.public_key_pem, hash, Buffer.from(response.headers.get("x-response-signature"), "base64")),
        "openssl verifies the receipt with the published key");
      assert.ok(!opensslVerifies(dir, entry.public_key_pem, hash.replace(/^./, (c) => (c === "0" ? "1" : "0")),
        Buffer.from(response.headers.get("x-response-signature"), "base64")));

      await provider.kill("SIGTERM");
      provider = await startProvider(coordinator, model, keyArgs);
      await waitForOutput(provider, /challenge passed/);
      const [again] = await attestations(coordinator, (list) => list.length === 1 &&
        JSON.parse(list[0].attestation).encryption_key !== JSON.parse(entry.attestation).encryption_key);
      assert.equal(again.public_key, entry.public_key, "the same identity after a restart");
      assert.notEqual(JSON.parse(again.attestation).encryption_key, JSON.parse(entry.attestation).encryption_key,
        "a new X25519 key per process, bound by the same identity");
      await provider.kill();
    } finally {
      await coordinator.kill();
    }
  });

  it("reports a TPM policy failure, falls back to an in-memory key and trust self_signed", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c2") });
    try {
      const release = path.join(dir, "release.pem");
      check("openssl", ["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", release]);
      const releasePublic = path.join(dir, "release.pub.pem");
      check("openssl", ["ec", "-in", release, "-pubout", "-out", releasePublic]);
      // Approve a state, create the key under it, then measure something else.
      const other = path.join(dir, "other");
      fs.writeFileSync(other, "other binary");
      tpm.measure(16, other);
      check(DARKBLOOM, ["keys", "approve", "--release-key", release, "--binary", other, "--out", path.join(dir, "ok")]);
      const args = ["--key-backend", "tpm2", "--tpm-tcti", tpm.tcti, "--tpm-handle", "0x81010201",
        "--tpm-release-key", releasePublic, "--tpm-approval", path.join(dir, "ok"), "--tpm-allow-resettable-pcr"];
      const message = path.join(dir, "m");
      fs.writeFileSync(message, "m");
      assert.equal(fields(check(DARKBLOOM, ["keys", "sign", ...args, "--in", message, "--out", path.join(dir, "s")])).backend, "tpm2");
      tpm.measure(16, DARKBLOOM);
      const provider = await startProvider(coordinator, model, args);
      await waitForOutput(provider, /challenge passed/);
      assert.match(provider.output.stderr, /identity key: ephemeral \(degraded: tpm2: the approved state does not match/);
      const [entry] = await attestations(coordinator);
      assert.equal(entry.key_backend, "ephemeral");
      assert.equal(entry.trust_level, "self_signed");
      assert.match(entry.degraded_reason, /PolicyAuthorize/);
      await provider.kill();
    } finally {
      await coordinator.kill();
    }
  });

  it("drops providers whose attestation is forged, stale, bound to another key or of an unapproved binary", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c3") });
    try {
      const cases = [
        ["a forged signature", { signDocument: (bytes) => new IdentityKey().sign(bytes) }, /attestation: the signature does not verify/],
        ["a stale timestamp", { document: { timestamp: rfc3339(new Date(Date.now() - 10 * 60 * 1000)) } }, /away from now/],
        ["another X25519 key", { document: { encryption_key: crypto.randomBytes(32).toString("base64") } }, /not bound/],
      ];
      for (const [what, options, pattern] of cases) {
        const fake = await FakeProvider.connect(coordinator.port, { ...options, waitForTrust: false }).catch((e) => e);
        assert.ok(fake instanceof Error || (await fake.socket.closed, true), what);
        await waitForOutput(coordinator, pattern);
      }
      // With a release list, an unknown binary is refused, an approved one welcome.
      const approve = (hash) => fetch(`${coordinator.url}/v1/admin/releases`, { method: "POST",
        headers: { Authorization: `Bearer ${coordinator.adminToken}` }, body: JSON.stringify({ binary_hash: hash, version: "1" }) });
      assert.equal((await approve("cd".repeat(32))).status, 200);
      const badHash = await approve("not-a-hash");
      assert.equal(badHash.status, 400);
      assert.equal((await badHash.json()).error.param, "binary_hash");
      assert.equal((await fetch(`${coordinator.url}/v1/admin/releases`)).status, 401);
      await FakeProvider.connect(coordinator.port, { waitForTrust: false }).catch(() => null);
      await waitForOutput(coordinator, /binary abab[0-9a-f]+ is not an approved release/);
      const listed = await FakeProvider.connect(coordinator.port, { document: { binary_hash: "cd".repeat(32) } });
      assert.equal(listed.trust.at(-1).trust_level, "self_signed");
    } finally {
      await coordinator.kill();
    }
  });

  it("accepts a rotation signed by the old key and refuses the old key afterwards", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c4") });
    try {
      const oldKey = new IdentityKey();
      const first = await FakeProvider.connect(coordinator.port, { identity: oldKey });
      const newKey = new IdentityKey();
      const statement = canonicalJson({ old_public_key: oldKey.publicKey, new_public_key: newKey.publicKey, timestamp: rfc3339() });
      // Signed by the new key itself: no proof at all.
      await FakeProvider.connect(coordinator.port, { identity: newKey, waitForTrust: false,
        rotation: { rotation_statement: statement, rotation_signature: newKey.sign(statement) } }).catch(() => null);
      await waitForOutput(coordinator, /rotation statement: the signature does not verify/);
      const rotated = await FakeProvider.connect(coordinator.port, { identity: newKey,
        rotation: { rotation_statement: statement, rotation_signature: oldKey.sign(statement) } });
      assert.equal(rotated.trust.at(-1).trust_level, "self_signed");
      await waitForOutput(coordinator, /key rotation accepted/);
      await first.waitForTrust(/^none its identity key was rotated out/);  // the live old session too
      await FakeProvider.connect(coordinator.port, { identity: oldKey, waitForTrust: false }).catch(() => null);
      await waitForOutput(coordinator, /this identity key was rotated out/);
    } finally {
      await coordinator.kill();
    }
  });

  it("counts a replayed answer as a failure and distrusts a posture regression at once", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c5"), args: ["--challenge-interval", "0.3"] });
    try {
      const fake = await FakeProvider.connect(coordinator.port, { answerChallenges: false, waitForTrust: false });
      const waitChallenge = async (n) => {
        const deadline = Date.now() + 5000;
        while (fake.challenges.length < n) {
          if (Date.now() > deadline) throw new Error("no challenge");
          await new Promise((r) => setTimeout(r, 10));
        }
        return fake.challenges[n - 1];
      };
      const first = await waitChallenge(1);
      fake.socket.send(JSON.stringify(fake.challengeAnswer(first)));
      await fake.waitForTrust(/challenge passed/);
      const second = await waitChallenge(2);
      assert.notEqual(second.nonce, first.nonce, "every challenge has a fresh nonce");
      fake.socket.send(JSON.stringify(fake.challengeAnswer(first)));  // the old answer again
      const failed = await fake.waitForTrust(/challenge failed/);
      assert.match(failed.reason, /replayed or stale/);
      assert.equal(failed.trust_level, "self_signed", "one failure is not yet distrust");
      const third = await waitChallenge(3);
      fake.socket.send(JSON.stringify(fake.challengeAnswer(third, { posture: { not_traced: false } })));
      const distrusted = await fake.waitForTrust(/^none posture regressed/);
      assert.match(distrusted.reason, /not_traced/);
      assert.deepEqual(await attestations(coordinator, (list) => list.length === 0), [],
        "a distrusted provider is no longer listed");
    } finally {
      await coordinator.kill();
    }
  });

  it("stops routing to a provider that stops answering challenges", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c6"),
      args: ["--challenge-interval", "0.3", "--challenge-timeout", "0.3"] });
    try {
      const apiKey = await createKey(coordinator);
      const fake = await FakeProvider.connect(coordinator.port, { model: "fake-trust" });
      const served = chat(coordinator, apiKey, { model: "fake-trust", messages: [{ role: "user", content: "one" }] });
      const request = await fake.next("inference_request");
      await fake.answer(request, ["fine"]);
      const response = await served;
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("x-provider-trust-level"), "self_signed");
      assert.match(response.headers.get("x-response-hash"), /^[0-9a-f]{64}$/);

      fake.answerChallenges = false;
      const distrusted = await fake.waitForTrust(/^none three challenges in a row failed/);
      assert.match(distrusted.reason, /no answer within/);
      const refused = await chat(coordinator, apiKey, { model: "fake-trust", messages: [{ role: "user", content: "two" }] });
      assert.equal(refused.status, 502);
      assert.match((await refused.json()).error.message, /trusted enough/);
      await assert.rejects(fake.next("inference_request", 500), /no message/, "no request reaches it");
    } finally {
      await coordinator.kill();
    }
  });

  it("distrusts a provider whose receipt does not match its answer", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c7") });
    try {
      const apiKey = await createKey(coordinator);
      const fake = await FakeProvider.connect(coordinator.port, { model: "fake-receipt" });
      const served = chat(coordinator, apiKey, { model: "fake-receipt", messages: [{ role: "user", content: "x" }] });
      const request = await fake.next("inference_request");
      const { sessionKey } = fake.open(request);
      fake.socket.send(fake.chunk(request.request_id, sessionKey, 0, "real answer"));
      fake.socket.send(fake.complete(request.request_id, sessionKey, 1, 1, { text: "another answer" }));
      const response = await served;
      assert.equal(response.status, 200);
      assert.equal((await response.json()).choices[0].message.content, "real answer");
      assert.equal(response.headers.get("x-response-hash"), null, "a receipt that does not verify is not passed on");
      await fake.waitForTrust(/^none receipt rejected/);

      // An attested provider that answers without any receipt is distrusted as well.
      const quiet = await FakeProvider.connect(coordinator.port, { model: "fake-unsigned" });
      const pending = chat(coordinator, apiKey, { model: "fake-unsigned", messages: [{ role: "user", content: "x" }] });
      const unsigned = await quiet.next("inference_request");
      const opened = quiet.open(unsigned);
      quiet.socket.send(quiet.chunk(unsigned.request_id, opened.sessionKey, 0, "unsigned"));
      quiet.socket.send(quiet.complete(unsigned.request_id, opened.sessionKey, 1, 1));
      assert.equal((await pending).status, 200);
      await quiet.waitForTrust(/^none an answer came without its receipt/);
    } finally {
      await coordinator.kill();
    }
  });

  it("has the provider sign only what a challenge looks like", async () => {
    // A fake coordinator asks the real provider to sign a receipt-shaped string as a "challenge".
    const fakeCoordinator = await RawWebSocket.listen();
    const provider = await startProvider({ port: fakeCoordinator.port }, model, [], /serving/);
    try {
      const socket = await fakeCoordinator.accepted;
      const hello = JSON.parse(await socket.next());
      assert.equal(hello.type, "register");
      socket.send(JSON.stringify({ type: "registered", provider_id: "prov_fake", protocol_version: 1, heartbeat_interval_ms: 60000 }));
      const hash = crypto.createHash("sha256").update("att_x:1:forged").digest("hex");
      socket.send(JSON.stringify({ type: "attestation_challenge", nonce: hash.slice(0, 44), timestamp: hash.slice(44) }));
      await waitForOutput(provider, /refusing to sign a malformed or stale challenge/);
      const stale = { type: "attestation_challenge", nonce: crypto.randomBytes(32).toString("base64"),
        timestamp: rfc3339(new Date(Date.now() - 60 * 60 * 1000)) };
      socket.send(JSON.stringify(stale));
      const good = { type: "attestation_challenge", nonce: crypto.randomBytes(32).toString("base64"), timestamp: rfc3339() };
      socket.send(JSON.stringify(good));
      let answer;
      for (;;) {
        answer = JSON.parse(await socket.next());
        if (answer.type === "attestation_response") break;
      }
      assert.equal(answer.nonce, good.nonce, "only the well-formed, current challenge is answered");
      const document = JSON.parse(hello.attestation.document);
      assert.ok(opensslVerifies(dir, pemOf(document.public_key), good.nonce + good.timestamp, Buffer.from(answer.signature, "base64")));
      assert.ok(opensslVerifies(dir, pemOf(document.public_key), answer.status, Buffer.from(answer.status_signature, "base64")));
      assert.equal(JSON.parse(answer.status).nonce, good.nonce);
    } finally {
      await provider.kill();
    }
  });

  it("keeps unattested providers out unless the coordinator runs in open mode", async () => {
    const strict = await startCoordinator({ dataDir: path.join(dir, "c8") });
    const open = await startCoordinator({ dataDir: path.join(dir, "c9"), args: ["--min-trust", "none"] });
    try {
      // Not in open mode, an unattested registration is closed: it could never be routed to.
      const strictKey = await createKey(strict);
      const refused = await FakeProvider.connect(strict.port, { model: "plain", attest: false });
      assert.equal(refused.registered, null, "closed without a registered message");
      const unknown = await chat(strict, strictKey, { model: "plain", messages: [{ role: "user", content: "x" }] });
      assert.equal(unknown.status, 404);

      const apiKey = await createKey(open);
      const fake = await FakeProvider.connect(open.port, { model: "plain", attest: false });
      const pending = chat(open, apiKey, { model: "plain", messages: [{ role: "user", content: "x" }] });
      await fake.answer(await fake.next("inference_request"), ["open"]);
      const response = await pending;
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("x-provider-trust-level"), "none");
      assert.equal(fake.trust[0].trust_level, "none");
    } finally {
      await strict.kill();
      await open.kill();
    }
  });
});
