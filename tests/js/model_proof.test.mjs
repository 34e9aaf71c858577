// Proof of the model end to end: the admin catalogue (models by the Merkle root of their 1 MiB
// chunks), a real provider that proves chunks of its GGUF file at every challenge, one whose file
// is another refused for that model, and fake providers (with their own Merkle code, in
// cluster.mjs) that lack the file, hold another one or answer with a wrong path: each is closed at
// its first challenge.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  COORDINATOR, DARKBLOOM, FakeProvider, MERKLE_CHUNK, attestationOf, call, createKey, merkleTree, startCoordinator,
  startProcess, startProvider, tempDir, waitForOutput,
} from "./cluster.mjs";
import { check, run } from "./devices.mjs";

// A GGUF of three chunks and a bit (F16 weights, a wider FFN than synthModel's).
const synthLarger = (dir, seed) => {
  const file = path.join(dir, "proof-model.gguf");
  check(DARKBLOOM, ["models", "synth", "-o", file, "--layers", "2", "--embd", "128", "--heads", "4", "--kv-heads", "2",
    "--ffn", "2048", "--vocab", "600", "--seed", String(seed), "--type", "f16"]);
  return file;
};

// What `darkbloom models hash --json` says of a file.
const modelHash = (file) => JSON.parse(check(DARKBLOOM, ["models", "hash", "--json", file]));

describe("proof of the model", () => {
  let dir;
  let model;      // a GGUF of three chunks and a bit
  let otherDir;   // another file under the same model id
  before(() => {
    dir = tempDir("darkbloom-proof-");
    model = synthLarger(dir, 3);
    otherDir = path.join(dir, "other");
    fs.mkdirSync(otherDir);
    synthLarger(otherDir, 4);
  });

  it("refuses a coordinator setting that asks for more chunks than providers prove", () => {
    const refused = run(COORDINATOR, ["--listen", "127.0.0.1:0", "--data-dir", path.join(dir, "c0"),
      "--model-challenge-chunks", "4", "--model-challenge-interval", "20"]);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /--model-challenge-chunks 4 every --model-challenge-interval 20\.0 s asks for more than providers prove \(one 1 MiB chunk per 10 s\)/);
  });

  it("models hash agrees with an independent Merkle tree over the file", () => {
    const bytes = fs.readFileSync(model);
    assert.ok(bytes.length > 3 * MERKLE_CHUNK, "the test model spans several chunks");
    const tree = merkleTree(bytes);
    const hash = modelHash(model);
    assert.equal(hash.merkle_root, tree.root);
    assert.equal(hash.size_bytes, bytes.length);
    assert.equal(hash.chunks, tree.chunks);
  });

  it("catalogues models, refuses another file under a catalogued id, and challenges a real provider's chunks", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c1"), args: ["--challenge-interval", "1", "--model-challenge-chunks", "1", "--model-challenge-interval", "10"] });
    try {
      const { merkle_root: root, size_bytes: size } = modelHash(model);
      // Bad entries: a 400 naming the field, nothing stored. No admin token: 401.
      for (const [body, param] of [[{ id: "proof-model", merkle_root: root.toUpperCase(), size_bytes: size }, "merkle_root"],
        [{ id: "proof-model", merkle_root: root.slice(2), size_bytes: size }, "merkle_root"],
        [{ id: "", merkle_root: root, size_bytes: size }, "id"],
        [{ id: "proof-model", merkle_root: root }, "size_bytes"],
        [{ id: "proof-model", merkle_root: root, size_bytes: -1 }, "size_bytes"]]) {
        const refused = await call(coordinator, "POST", "/v1/admin/models", { body });
        assert.equal(refused.status, 400, JSON.stringify(body));
        assert.equal(refused.json.error.param, param, refused.text);
      }
      const apiKey = await createKey(coordinator);
      assert.equal((await call(coordinator, "POST", "/v1/admin/models", { key: apiKey,
        body: { id: "proof-model", merkle_root: root, size_bytes: size } })).status, 401);
      assert.deepEqual((await call(coordinator, "GET", "/v1/admin/models")).json.data, []);

      // First catalogued with another file's root: the real provider is refused for it.
      const other = modelHash(path.join(otherDir, "proof-model.gguf"));
      assert.notEqual(other.merkle_root, root);
      const set = await call(coordinator, "POST", "/v1/admin/models",
        { body: { id: "proof-model", merkle_root: other.merkle_root, size_bytes: other.size_bytes } });
      assert.equal(set.status, 200, set.text);
      assert.equal(set.json.data.length, 1);
      const refused = await startProcess(DARKBLOOM, ["--log-level", "info", "start", "--coordinator", coordinator.wsUrl,
        "--model", model, "--threads", "1", "--state-dir", tempDir("darkbloom-state-")],
      { ready: /connection to the coordinator ended: .*model refused: its file's Merkle root/, name: "refused provider" });
      await refused.kill();

      // The entry replaced with this file's root: registered, and its challenges ask for chunks.
      const replaced = await call(coordinator, "POST", "/v1/admin/models",
        { body: { id: "proof-model", merkle_root: root, size_bytes: size } });
      assert.deepEqual(replaced.json.data.map((m) => [m.id, m.merkle_root, m.size_bytes]), [["proof-model", root, size]]);
      const provider = await startProvider(coordinator, model);
      await waitForOutput(provider, /trust level self_signed \(challenge passed\)/);
      const entry = await attestationOf(coordinator, provider.id, (e) => e.challenges.passed >= 3);
      assert.ok(entry.challenges.passed >= 3, JSON.stringify(entry));
      assert.equal(entry.challenges.failed, 0);
      assert.equal(entry.trust_level, "self_signed");
      // The consumer sees which file the model is.
      const models = await call(coordinator, "GET", "/v1/models", { key: apiKey });
      assert.equal(models.status, 200);
      const listed = models.json.data.find((m) => m.id === "proof-model");
      assert.equal(listed.metadata.merkle_root, root);
      assert.equal(listed.metadata.size_bytes, size);

      // The file changed under the running provider: its next model proof (within 10 s) fails, and
      // it is closed.
      // (Replaced by a rename, as an update would: never a half-written file, and the engine's
      // mapping keeps the old one.)
      const bytes = fs.readFileSync(model);
      const changed = Buffer.from(bytes);
      for (let at = 0; at < changed.length; at += MERKLE_CHUNK) changed[at + 100] ^= 0xff;  // every chunk
      const replace = (content) => {
        fs.writeFileSync(`${model}.new`, content);
        fs.renameSync(`${model}.new`, model);
      };
      replace(changed);
      try {
        await waitForOutput(provider,
          /connection to the coordinator ended: closed by peer: model challenge failed: model 'proof-model': chunk \d+ \(\d+ bytes\) does not lead/,
          30000);
        assert.match(provider.output.stderr, /changed since it was hashed at start/);
      } finally {
        replace(bytes);
      }
      await provider.kill();
    } finally {
      await coordinator.kill();
    }
  });

  it("takes a fake provider's proofs from its own Merkle tree, and drops it at the first wrong answer", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c2") });
    try {
      const bytes = crypto.randomBytes(2 * MERKLE_CHUNK + 12345);
      const tree = merkleTree(bytes);
      const catalogued = await call(coordinator, "POST", "/v1/admin/models",
        { body: { id: "fake-catalogued", merkle_root: tree.root, size_bytes: tree.size } });
      assert.equal(catalogued.status, 200, catalogued.text);

      // Outside the catalogue, against its own root; inside, against the catalogue's.
      for (const model of ["fake-free", "fake-catalogued"]) {
        const honest = await FakeProvider.connect(coordinator.port, { model, files: { [model]: bytes } });
        const [challenge] = honest.challenges;
        assert.equal(challenge.model_chunks.length, 2);
        for (const asked of challenge.model_chunks) {
          assert.equal(asked.model, model);
          assert.ok(asked.index >= 0 && asked.index < 3);
        }
        assert.notEqual(challenge.model_chunks[0].index, challenge.model_chunks[1].index, "distinct chunks");
        honest.socket.socket.destroy();
      }

      // Each gets one thing wrong; each is `none` at its first challenge, with the reason.
      const otherBytes = crypto.randomBytes(bytes.length);
      const cases = [
        // Claims the catalogued root, holds another file of the same size.
        ["another file", { files: { "fake-catalogued": otherBytes },
          models: [{ id: "fake-catalogued", size_bytes: tree.size, quantization: "q8_0", weight_hash: "00", merkle_root: tree.root }] },
        /does not lead to the model's Merkle root/],
        // The right chunk with another chunk's path.
        ["wrong path", { files: { "fake-catalogued": bytes }, prove: (model, index, t) =>
          ({ model, index, chunk: t.chunk(index).toString("base64"), path: t.path((index + 1) % t.chunks) }) },
        /does not lead to the model's Merkle root/],
        // A chunk it was not asked for, proved correctly.
        ["other chunk", { files: { "fake-catalogued": bytes }, prove: (model, index, t) => {
          const other = (index + 1) % t.chunks;
          return { model, index: other, chunk: t.chunk(other).toString("base64"), path: t.path(other) };
        } }, /for another chunk than the one asked/],
        // Its own root for an uncatalogued model, without the file behind it.
        ["own root, no file", { model: "fake-free", models: [{ id: "fake-free", size_bytes: tree.size, quantization: "q8_0",
          weight_hash: "00", merkle_root: tree.root }], prove: (model, index) =>
          ({ model, index, chunk: crypto.randomBytes(index === 2 ? tree.size - 2 * MERKLE_CHUNK : MERKLE_CHUNK).toString("base64"), path: tree.path(index) }) },
        /does not lead to the model's Merkle root/],
      ];
      // Claims the root and does not hold the file: answers with no proofs. A strike (honest
      // providers withhold proofs past their budget), and never served.
      const empty = await FakeProvider.connect(coordinator.port, { model: "fake-catalogued", waitForTrust: false,
        answerChallenges: false, models: [{ id: "fake-catalogued", size_bytes: tree.size, quantization: "q8_0",
          weight_hash: "00", merkle_root: tree.root }] });
      const withheld = await waitFor(() => empty.challenges[0]);
      empty.socket.send(JSON.stringify(empty.challengeAnswer(withheld)));
      const strike = await empty.waitForTrust(/challenge failed/);
      assert.match(strike.reason, /^challenge failed: no proof of model 'fake-catalogued'/);
      empty.socket.socket.destroy();

      for (const [name, { prove, ...options }, reason] of cases) {
        const fake = await FakeProvider.connect(coordinator.port, { model: "fake-catalogued", waitForTrust: false, answerChallenges: false, ...options });
        const challenge = await waitFor(() => fake.challenges[0]);
        fake.socket.send(JSON.stringify(fake.challengeAnswer(challenge, { prove })));
        await fake.socket.closed;  // at once, whatever the coordinator's --min-trust
        assert.match(fake.socket.closeReason, /^model challenge failed: /, name);
        assert.match(fake.socket.closeReason, reason, name);
      }
    } finally {
      await coordinator.kill();
    }
  });

  it("refuses a catalogued model with another root and registers the provider's other models", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c3") });
    try {
      const bytes = crypto.randomBytes(1000);
      const tree = merkleTree(bytes);
      await call(coordinator, "POST", "/v1/admin/models", { body: { id: "listed", merkle_root: tree.root, size_bytes: 1000 } });
      const entry = (id, root, size = 1000) => ({ id, size_bytes: size, quantization: "q8_0", weight_hash: "00",
        ...(root ? { merkle_root: root } : {}) });
      const wrongRoot = "0".repeat(64);
      const fake = await FakeProvider.connect(coordinator.port, { files: { listed: bytes },
        models: [entry("listed", wrongRoot), entry("unlisted", null)], waitForTrust: false });
      assert.deepEqual(fake.registered.refused_models.map((m) => m.model), ["listed"]);
      assert.match(fake.registered.refused_models[0].reason, /^model refused: its file's Merkle root 0{16} is not the catalogue's/);
      const listing = await attestationOf(coordinator, fake.registered.provider_id);
      assert.deepEqual(listing?.models, ["unlisted"], "registered with its other model");
      // A provider from before model proofs (no root) and one with the right root but another size.
      for (const [models, reason] of [[[entry("listed", null)], /no merkle_root announced for a catalogued model/],
        [[entry("listed", tree.root, 999)], /its file is 999 bytes, the catalogue's is 1000/]]) {
        const refused = await FakeProvider.connect(coordinator.port, { models, waitForTrust: false });
        assert.equal(refused.registered, null);
        assert.match(refused.socket.closeReason, reason);
      }
      // With only a model outside the catalogue and no root, there is nothing to prove: no chunks asked.
      const challenge = await waitFor(() => fake.challenges[0]);
      assert.equal(challenge.model_chunks, undefined);
      fake.socket.socket.destroy();
    } finally {
      await coordinator.kill();
    }
  });

  it("serves a model only once its chunks are proven, and re-judges connected providers when the catalogue changes", async () => {
    const coordinator = await startCoordinator({ dataDir: path.join(dir, "c4"), args: ["--queue-wait", "0.5"] });
    try {
      const apiKey = await createKey(coordinator);
      const junk = crypto.randomBytes(5000);
      const real = crypto.randomBytes(MERKLE_CHUNK + 77);
      const realTree = merkleTree(real);
      await call(coordinator, "POST", "/v1/admin/models",
        { body: { id: "valuable", merkle_root: realTree.root, size_bytes: realTree.size } });
      const listed = async () => (await call(coordinator, "GET", "/v1/models", { key: apiKey })).json.data.map((m) => m.id).sort();

      // A cheap model it holds and a catalogued one it claims (root copied, no file). The first
      // challenge asks for the first; the second, right after, for the claimed one.
      const entry = (id, tree) => ({ id, size_bytes: tree.size, quantization: "q8_0", weight_hash: "00", merkle_root: tree.root });
      const fake = await FakeProvider.connect(coordinator.port, { files: { junk },
        models: [entry("junk", merkleTree(junk)), entry("valuable", realTree)], answerChallenges: false, waitForTrust: false });
      const first = await waitFor(() => fake.challenges[0]);
      assert.equal(first.model_chunks[0].model, "junk");
      fake.socket.send(JSON.stringify(fake.challengeAnswer(first)));
      await fake.waitForTrust(/challenge passed/);
      const second = await waitFor(() => fake.challenges[1]);
      assert.equal(second.model_chunks[0].model, "valuable", "the next unproven model, at once");
      // Routable, and serving only what it proved.
      assert.deepEqual(await listed(), ["junk"]);
      const response = await fetch(`${coordinator.url}/v1/chat/completions`, { method: "POST",
        headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "valuable", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }) });
      // Waits in the queue as for a provider not yet routable, and runs out of time there.
      assert.equal(response.status, 429, await response.clone().text());
      assert.equal(await fake.socket.next(200).catch(() => "none"), "none", "no request reached it");
      fake.socket.socket.destroy();

      // An honest provider of an uncatalogued model; then the catalogue names another file for it.
      const holder = await FakeProvider.connect(coordinator.port, { model: "drifting", files: { drifting: junk } });
      assert.deepEqual(await listed(), ["drifting"]);
      const set = await call(coordinator, "POST", "/v1/admin/models",
        { body: { id: "drifting", merkle_root: realTree.root, size_bytes: realTree.size } });
      assert.equal(set.status, 200);
      await holder.socket.closed;
      assert.match(holder.socket.closeReason, /^model refused after a catalogue change: its file's Merkle root/);
      assert.deepEqual(await listed(), []);
    } finally {
      await coordinator.kill();
    }
  });
});

async function waitFor(get, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = get();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
