#!/usr/bin/python3
"""The `darkbloom` command line: the main commands work, and bad input gets one line naming the
problem, a non-zero exit code and never a crash (a signal)."""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import urllib.request

DARKBLOOM = None
COORDINATOR = None


def run(*args, expect_ok=True):
    result = subprocess.run([DARKBLOOM, *args], capture_output=True, text=True, timeout=120)
    if expect_ok and result.returncode != 0:
        raise AssertionError(f"darkbloom {' '.join(args)} failed: {result.stderr}")
    return result


def gguf_with_metadata(path, pairs):
    """A GGUF file with string metadata only."""
    def s(text):
        data = text.encode()
        return struct.pack("<Q", len(data)) + data
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, value in pairs:
        body += s(key) + struct.pack("<I", 8) + s(value)
    with open(path, "wb") as f:
        f.write(body)


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "tiny.gguf")
        run("models", "synth", "-o", cls.model, "--layers", "2", "--embd", "128", "--heads", "2", "--kv-heads", "1",
            "--ffn", "256", "--vocab", "400")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def assert_one_line_error(self, result, *needles, code=None):
        self.assertGreater(result.returncode, 0, f"expected failure, got {result.returncode}: {result.stderr}")
        if code is not None:
            self.assertEqual(result.returncode, code)
        message = result.stderr.strip()
        self.assertEqual(len(message.splitlines()), 1, f"not one line: {message!r}")
        self.assertTrue(message.startswith("darkbloom: error: "), message)
        for needle in needles:
            self.assertIn(needle, message)

    def test_generate_streams_text_and_reports_speed(self):
        result = run("generate", "-m", self.model, "-p", "The river", "-n", "12", "--temperature", "0")
        self.assertTrue(result.stdout.strip())
        self.assertIn("generated 12 tokens", result.stderr)
        again = run("generate", "-m", self.model, "-p", "The river", "-n", "12", "--temperature", "0")
        self.assertEqual(result.stdout, again.stdout)

    def test_missing_model_file(self):
        result = run("generate", "-m", self.path("nope.gguf"), "-p", "x", expect_ok=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn("nope.gguf", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)

    def test_wrong_magic(self):
        with open(self.path("text.gguf"), "w") as f:
            f.write("this is not a model\n")
        self.assert_one_line_error(run("generate", "-m", self.path("text.gguf"), "-p", "x", expect_ok=False),
                                   "not a GGUF file (wrong magic)")

    def test_truncated_file(self):
        with open(self.model, "rb") as f:
            data = f.read()
        with open(self.path("cut.gguf"), "wb") as f:
            f.write(data[: len(data) // 2])
        self.assert_one_line_error(run("generate", "-m", self.path("cut.gguf"), "-p", "x", expect_ok=False), "truncated")

    def test_unknown_architecture(self):
        gguf_with_metadata(self.path("gptj.gguf"), [("general.architecture", "gptj")])
        self.assert_one_line_error(run("generate", "-m", self.path("gptj.gguf"), "-p", "x", expect_ok=False),
                                   "architecture 'gptj' is not supported")

    def test_unsupported_tensor_type(self):
        with open(self.model, "rb") as f:
            data = bytearray(f.read())

        def retyped(name, type_id, path):
            at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
            n_dims = struct.unpack_from("<I", data, at)[0]
            copy = bytearray(data)
            struct.pack_into("<I", copy, at + 4 + 8 * n_dims, type_id)
            with open(self.path(path), "wb") as f:
                f.write(copy)
            return self.path(path)

        # iq4_nl: the same block length as q8_0 and fewer bytes, so it now loads.
        self.assertIn("status: loadable", run("models", "inspect", retyped(b"blk.0.attn_q.weight", 20, "iq4_nl.gguf")).stdout)
        # iq2_xxs: blocks of 256 (the FFN's 256-wide rows), fewer bytes, not computed with.
        self.assert_one_line_error(
            run("generate", "-m", retyped(b"blk.0.ffn_down.weight", 16, "iq2_xxs.gguf"), "-p", "x", expect_ok=False),
            "blk.0.ffn_down.weight", "iq2_xxs", "does not support")

    def test_prompt_longer_than_context(self):
        self.assert_one_line_error(run("generate", "-m", self.model, "--ctx", "16", "-p", "word " * 50, expect_ok=False),
                                   "context holds 16")

    def test_out_of_range_flags(self):
        for args in (["--temperature", "-1"], ["--threads", "5000"], ["--top-p", "7"], ["-n", "0"]):
            result = run("generate", "-m", self.model, "-p", "x", *args, expect_ok=False)
            self.assertEqual(result.returncode, 2, args)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)

    def test_unknown_subcommand_and_missing_subcommand(self):
        self.assertEqual(run("fly", expect_ok=False).returncode, 2)
        self.assertEqual(run(expect_ok=False).returncode, 2)

    def test_help_tells_the_commands(self):
        result = run("--help")
        for command in ("start", "serve", "generate", "perplexity", "models", "bench", "tokenize", "keys", "doctor"):
            self.assertIn(command, result.stdout)

    def test_keys_reject_bad_input_in_one_line(self):
        release = self.path("release.pem")
        subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", release], check=True)
        self.assert_one_line_error(run("keys", "approve", "--release-key", release, "--out", self.path("a"), expect_ok=False),
                                   "exactly one of --pcr-value")
        self.assert_one_line_error(run("keys", "approve", "--release-key", release, "--pcr-value", "abcd",
                                       "--out", self.path("a"), expect_ok=False), "64 hex digits")
        self.assert_one_line_error(run("keys", "approve", "--release-key", self.model, "--pcr-value", "00" * 32,
                                       "--out", self.path("a"), expect_ok=False), self.model)
        self.assert_one_line_error(run("keys", "show", "--tpm-handle", "0x1234", expect_ok=False), "--tpm-handle")
        self.assert_one_line_error(run("keys", "rotate", expect_ok=False), "--key-backend tpm2 or pkcs11")
        self.assert_one_line_error(run("keys", "rotate", "--key-backend", "ephemeral", expect_ok=False), "nothing to rotate")
        self.assert_one_line_error(run("keys", "delete", "--key-backend", "tpm2", expect_ok=False), "--yes")
        self.assert_one_line_error(run("keys", "show", "--pkcs11-pin-file", self.path("absent-pin"), expect_ok=False),
                                   "--pkcs11-pin-file")
        approved = run("keys", "approve", "--release-key", release, "--pcr-value", "00" * 32, "--out", self.path("ok"))
        self.assertIn("approved policy:", approved.stdout)
        self.assertEqual(os.path.getsize(self.path("ok.policy")), 32)

    def test_doctor_reports_posture_and_key_without_creating_one(self):
        result = run("doctor", "--key-backend", "tpm2", "--tpm-tcti", "swtpm:path=" + self.path("no-tpm.sock"),
                     "--model", self.model)
        for needle in ("core_dumps_disabled: true", "env_clean: true", "backend: ephemeral",
                       "degraded_reason: tpm2:", "fits in memory", "binary_hash: "):
            self.assertIn(needle, result.stdout)

    def test_models_inspect(self):
        out = run("models", "inspect", self.model).stdout
        self.assertIn("architecture: llama", out)
        self.assertIn("2 layers, width 128, 2 heads (1 KV) of 64, FFN 256, vocabulary 400", out)
        self.assertIn("status: loadable", out)
        self.assertIn("tokenizer.ggml.merges", out)

    def test_models_hash_is_a_merkle_root_over_1_mib_chunks(self):
        def merkle_root(data):
            chunk = 1 << 20
            level = [hashlib.sha256(b"\x00" + data[i:i + chunk]).digest()
                     for i in range(0, max(len(data), 1), chunk)]
            while len(level) > 1:
                up = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
                if len(level) % 2:
                    up.append(level[-1])
                level = up
            return level[0].hex()
        for size in (0, 1, 1 << 20, 3 * (1 << 20) + 5, 5 * (1 << 20)):
            path = self.path(f"hash-{size}.bin")
            data = os.urandom(size)
            with open(path, "wb") as f:
                f.write(data)
            out = json.loads(run("models", "hash", "--json", path).stdout)
            self.assertEqual(out["merkle_root"], merkle_root(data), size)
            self.assertEqual(out["size_bytes"], size)
            self.assertEqual(out["chunks"], max(1, -(-size // (1 << 20))))
            self.assertEqual(out["chunk_bytes"], 1 << 20)
        text = run("models", "hash", self.model).stdout
        with open(self.model, "rb") as f:
            self.assertIn(f"merkle  {merkle_root(f.read())}", text)
        self.assertIn(f"size    {os.path.getsize(self.model)} bytes", text)
        self.assert_one_line_error(run("models", "hash", self.path("missing.gguf"), expect_ok=False), "missing.gguf")

    def test_synth_rejects_impossible_shapes(self):
        self.assert_one_line_error(run("model", "synth", "-o", self.path("x.gguf"), "--heads", "3", "--kv-heads", "2",
                                       expect_ok=False), "heads")
        self.assert_one_line_error(run("model", "synth", "-o", self.path("x.gguf"), "--type", "iq2_xxs", expect_ok=False),
                                   "weight type 'iq2_xxs'")
        self.assert_one_line_error(run("model", "synth", "-o", self.path("x.gguf"), "--type", "q4_k_m", expect_ok=False),
                                   "is a recipe", "--recipe Q4_K_M")
        self.assert_one_line_error(run("model", "synth", "-o", self.path("x.gguf"), "--recipe", "Q4_K_X",
                                       expect_ok=False), "recipe 'Q4_K_X' is unknown", "IQ4_XS")
        self.assertFalse(os.path.exists(self.path("x.gguf")))

    def test_synth_writes_every_architecture_and_type(self):
        for arch in ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "phi3"):
            for weights in (["--recipe", "Q4_K_M"], ["--type", "bf16"]):
                out = self.path(f"{arch}-{weights[1]}.gguf")
                run("models", "synth", "-o", out, "--arch", arch, *weights, "--layers", "1", "--embd", "256",
                    "--ffn", "512")
                self.assertIn("status: loadable", run("models", "inspect", out).stdout)
        out = self.path("moe.gguf")
        run("models", "synth", "-o", out, "--arch", "qwen2moe", "--layers", "1", "--embd", "256", "--ffn", "512",
            "--experts", "6", "--experts-used", "3", "--expert-ffn", "128", "--shared-ffn", "256")
        self.assertIn("experts: 6 per layer, 3 per token, FFN 128 each, shared expert FFN 256",
                      run("models", "inspect", out).stdout)
        out = self.path("gemma2.gguf")
        run("models", "synth", "-o", out, "--arch", "gemma2", "--layers", "2", "--embd", "256", "--ffn", "512")
        info = run("models", "inspect", out).stdout
        self.assertIn("attention: sliding window of 4096 positions on 1 of every 2 layers", info)
        self.assertIn("soft-caps: attention 50, logits 30", info)
        self.assert_one_line_error(run("models", "synth", "-o", self.path("x.gguf"), "--arch", "qwen3moe",
                                       "--experts", "4", "--experts-used", "5", expect_ok=False), "experts-used")
        # A Q4_K_M recipe on rows that Q4_K blocks do not fit: the fallbacks of llama-quantize.
        out = self.path("fallback.gguf")
        run("models", "synth", "-o", out, "--recipe", "Q4_K_M", "--layers", "1", "--embd", "288", "--heads", "4",
            "--kv-heads", "1", "--ffn", "512")
        types = {line.split()[0]: line.split()[1] for line in run("models", "inspect", out, "--tensors").stdout.splitlines()
                 if line.split() and line.split()[0].endswith(".weight") and len(line.split()) > 1}
        self.assertEqual(types["blk.0.attn_q.weight"], "q5_0")
        self.assertEqual(types["blk.0.attn_v.weight"], "q8_0")  # Q6_K (layer 0 of 1 gets more bits) -> Q8_0
        self.assertEqual(types["blk.0.ffn_down.weight"], "q6_k")
        self.assertEqual(types["output.weight"], "q8_0")
        self.assertIn("general.file_type = 15", run("models", "inspect", out).stdout)  # llama.cpp's Q4_K_M

    def test_bench_engine_prints_a_table_and_json(self):
        out = run("bench", "engine", "-m", self.model, "--prompt", "16", "--gen", "8", "--repeat", "1", "--threads", "1,2").stdout
        lines = out.strip().splitlines()
        self.assertIn("decode t/s", lines[0])
        self.assertIn("aggregate", lines[0])
        self.assertIn("of BW", lines[0])
        rows = [[cell.strip() for cell in line.split("|")] for line in lines[1:] if "|" in line]
        self.assertEqual([(r[0], int(r[1]), int(r[2])) for r in rows], [("tiny.gguf", 1, 1), ("tiny.gguf", 2, 1)])
        for r in rows:
            self.assertTrue(r[-2].endswith("%") and r[-1].endswith("%"), r)
        summaries = [line for line in lines if "memory bandwidth" in line]
        self.assertEqual(len(summaries), 2)
        self.assertIn("fp32 FMA peak", summaries[0])
        # Several models in one run: one block of rows per file, in the order given.
        other = self.path("other.gguf")
        run("models", "synth", "-o", other, "--layers", "1", "--embd", "128", "--heads", "2", "--kv-heads", "1",
            "--ffn", "256", "--vocab", "400", "--type", "q5_0")
        data = json.loads(run("bench", "engine", "-m", self.model, "-m", other, "--prompt", "8", "--gen", "4",
                              "--repeat", "1", "--threads", "1", "--json").stdout)
        self.assertEqual([d["model"] for d in data], ["tiny.gguf", "other.gguf"])
        self.assertLess(data[1]["weight_bytes_per_token"], data[0]["weight_bytes_per_token"])
        # The lines read the rows against each other: batch scaling per model, and each model against
        # the first with the ratio of weight bytes it reads (what a MoE is read against its dense twin by).
        out = run("bench", "engine", "-m", self.model, "-m", other, "--prompt", "8", "--gen", "4", "--repeat", "1",
                  "--threads", "1", "--batch", "1,2").stdout
        self.assertIn("tiny.gguf: batch 2 aggregate decode is ", out)
        self.assertIn("other.gguf: batch 2 aggregate decode is ", out)
        against = [line for line in out.splitlines() if line.startswith("other.gguf against tiny.gguf: batch-1 decode")]
        self.assertEqual(len(against), 1, out)
        fewer = float(against[0].split(" as fast, ")[1].split("x fewer")[0])
        self.assertAlmostEqual(fewer, data[0]["weight_bytes_per_token"] / data[1]["weight_bytes_per_token"], places=1)
        data = json.loads(run("bench", "engine", "-m", self.model, "--prompt", "16", "--gen", "8", "--repeat", "1",
                              "--batch", "1,3", "--json").stdout)
        self.assertEqual([d["batch"] for d in data], [1, 3])
        for d in data:
            self.assertGreater(d["decode_tokens_per_second"], 0)
            self.assertGreater(d["prefill_tokens_per_second"], 0)
            self.assertGreater(d["memory_bandwidth_gb_per_second"], 0)
            self.assertGreater(d["fma_peak_gflops"], 0)
            self.assertGreater(d["aggregate_decode_tokens_per_second"], 0)
            self.assertGreater(d["busy_ttft_ms"], 0)
        self.assert_one_line_error(run("bench", "engine", "-m", self.model, "--batch", "0", expect_ok=False), "batch")

    def test_bench_grammar_prints_mask_times_and_decoding(self):
        schema = self.path("schema.json")
        with open(schema, "w") as f:
            json.dump({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, f)
        out = run("bench", "grammar", "-m", self.model, "--schema", schema, "--answers", "3", "--gen", "8",
                  "--batch", "1,2", "--threads", "1").stdout
        self.assertIn("mask step on a", out)
        for row in ("first answer (cold cache)", "later answers (warm cache)", "constrained"):
            self.assertIn(row, out)
        # A schema the engine refuses, and one that is not JSON: one line each.
        with open(schema, "w") as f:
            json.dump({"type": "object", "minProperties": 1}, f)
        self.assert_one_line_error(run("bench", "grammar", "-m", self.model, "--schema", schema, expect_ok=False),
                                   "minProperties")
        with open(schema, "w") as f:
            f.write("{nope")
        self.assert_one_line_error(run("bench", "grammar", "-m", self.model, "--schema", schema, expect_ok=False),
                                   "schema.json")

    def test_perplexity_needs_enough_text(self):
        with open(self.path("short.txt"), "w") as f:
            f.write("hi")
        self.assert_one_line_error(run("perplexity", "-m", self.model, "-f", self.path("short.txt"), expect_ok=False),
                                   "perplexity needs more")

    def test_tokenize_round_trips_through_jsonl(self):
        with open(self.path("lines.jsonl"), "w") as f:
            f.write(json.dumps({"text": "Hello, world! 😀"}) + "\n")
        line = json.loads(run("tokenize", "-m", self.model, "--jsonl", self.path("lines.jsonl")).stdout)
        self.assertEqual(line["decoded"], "Hello, world! 😀")
        self.assertGreater(len(line["ids"]), 3)

    def test_start_validates_the_coordinator_url_and_model(self):
        self.assert_one_line_error(run("start", "--coordinator", "http://127.0.0.1:1", "--model", self.model, expect_ok=False),
                                   "ws://HOST:PORT")
        self.assert_one_line_error(run("start", "--coordinator", "ws://127.0.0.1:0", "--model", self.model, expect_ok=False),
                                   "port must not be 0")
        self.assert_one_line_error(run("start", "--coordinator", "ws://127.0.0.1", "--model", self.model, expect_ok=False),
                                   "HOST:PORT")
        self.assert_one_line_error(run("start", "--model", self.path("missing.gguf"), expect_ok=False), "missing.gguf")
        self.assert_one_line_error(run("start", expect_ok=False), "--model is required")

    def test_proxy_refuses_unsafe_or_incomplete_settings_in_one_line(self):
        key = self.path("proxy-key")
        with open(key, "w") as f:
            f.write("db-some-key\n")
        os.chmod(key, 0o600)
        proxy = lambda *args: run("proxy", "--api-key-file", key, *args, expect_ok=False)
        self.assert_one_line_error(proxy("--listen", "0.0.0.0:8090"), "--listen 0.0.0.0:8090", "loopback")
        self.assert_one_line_error(proxy("--coordinator", "http://192.0.2.1:9"),
                                   "plaintext to a non-loopback host: use https://", "--allow-plaintext")
        self.assert_one_line_error(proxy("--coordinator", "ws://127.0.0.1:9"), "https://HOST:PORT or http://HOST:PORT")
        self.assert_one_line_error(proxy("--coordinator", "http://127.0.0.1:9/v1"), "takes no path")
        self.assert_one_line_error(proxy("--coordinator", "http://127.0.0.1:9", "--coordinator-cert-sha256", "ab"),
                                   "need a https:// --coordinator")
        self.assert_one_line_error(proxy("--min-trust", "hardware"), "--min-trust hardware needs --tpm-ek-ca")
        self.assert_one_line_error(proxy("--release-hash", "XYZ"), "--release-hash XYZ")
        self.assert_one_line_error(proxy("--copies", "4"), "--copies")
        self.assert_one_line_error(run("proxy", expect_ok=False), "--api-key-file is required")
        os.chmod(key, 0o644)
        self.assert_one_line_error(proxy(), "--api-key-file", "chmod 600")

    def test_start_takes_settings_from_the_environment_and_secrets_from_private_files(self):
        # DARKBLOOM_* variables reach `start` (they were once read into a copy and lost).
        env = {**os.environ, "DARKBLOOM_MODEL": self.model, "DARKBLOOM_COORDINATOR": "ws://192.0.2.1:9"}
        result = subprocess.run([DARKBLOOM, "start"], env=env, capture_output=True, text=True, timeout=30)
        self.assert_one_line_error(result, "plaintext to a non-loopback host", "--allow-plaintext")
        token = self.path("account-token")
        with open(token, "w") as f:
            f.write("db-some-token\n")
        os.chmod(token, 0o640)
        self.assert_one_line_error(run("start", "--model", self.model, "--account-token-file", token, expect_ok=False),
                                   "--account-token-file", "may be read by its group (mode 0640)", "chmod 600")
        os.chmod(token, 0o600)
        self.assert_one_line_error(run("start", "--model", self.model, "--account-token-file", token,
                                       "--account-token", "db-other", expect_ok=False), "both set")

    def test_serve_validates_its_port(self):
        self.assertEqual(run("serve", "-m", self.model, "--port", "70000", expect_ok=False).returncode, 2)


class CoordinatorCli(unittest.TestCase):
    """Flags, DARKBLOOM_* variables and the TOML file, in that order of precedence, and one-line errors."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def start(self, *args, env=None):
        """Starts the coordinator and returns (process, first stdout line)."""
        process = subprocess.Popen([COORDINATOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, **(env or {})})
        self.addCleanup(lambda: (process.kill(), process.wait(), process.stdout.close(), process.stderr.close()))
        return process, process.stdout.readline()

    def fails(self, *args, env=None, code=None):
        result = subprocess.run([COORDINATOR, *args], capture_output=True, text=True, timeout=30,
                                env={**os.environ, **(env or {})})
        self.assertNotEqual(result.returncode, 0)
        if code is not None:
            self.assertEqual(result.returncode, code)
        message = result.stderr.strip()
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertTrue(message.startswith("darkbloom-coordinator: error: "), message)
        return message

    def test_flag_beats_environment_beats_config_file(self):
        with open(self.path("coordinator.toml"), "w") as f:
            f.write(f'data_dir = "{self.path("from-file")}"\nlisten = "127.0.0.1:0"\n')
        _, line = self.start("--config", self.path("coordinator.toml"))
        self.assertIn("listening on 127.0.0.1:", line)
        self.assertTrue(os.path.exists(self.path("from-file/coordinator.db")))
        _, line = self.start("--config", self.path("coordinator.toml"), env={"DARKBLOOM_DATA_DIR": self.path("from-env")})
        self.assertTrue(os.path.exists(self.path("from-env/coordinator.db")))
        _, line = self.start("--config", self.path("coordinator.toml"), "--data-dir", self.path("from-flag"),
                             env={"DARKBLOOM_DATA_DIR": self.path("from-env-2")})
        self.assertTrue(os.path.exists(self.path("from-flag/coordinator.db")))
        self.assertFalse(os.path.exists(self.path("from-env-2")))

    def test_bad_values_are_one_line_errors(self):
        data = ["--data-dir", self.path("data")]
        self.assertIn("HOST:PORT", self.fails("--listen", "nowhere", *data, code=2))
        self.assertIn("valid port", self.fails("--listen", "127.0.0.1:99999", *data, code=2))
        self.assertIn("DARKBLOOM_QUEUE_DEPTH",
                      self.fails("--listen", "127.0.0.1:0", *data, env={"DARKBLOOM_QUEUE_DEPTH": "many"}, code=2))
        self.assertIn("min-trust", self.fails("--min-trust", "total", *data, code=2))
        with open(self.path("bad.toml"), "w") as f:
            f.write('listen = "127.0.0.1:0"\nqueue_deep = 3\n')
        self.assertIn("unknown setting 'queue_deep'", self.fails("--config", self.path("bad.toml"), *data, code=2))
        with open(self.path("broken.toml"), "w") as f:
            f.write("listen = [unclosed\n")
        self.assertIn("broken.toml", self.fails("--config", self.path("broken.toml"), *data, code=2))
        self.assertIn("broken.toml", self.fails(*data, env={"DARKBLOOM_CONFIG": self.path("broken.toml")}, code=2))

    def test_variables_for_actions_do_not_break_the_start(self):
        _, line = self.start("--listen", "127.0.0.1:0", "--data-dir", self.path("v"), env={"DARKBLOOM_VERSION": "1"})
        self.assertIn("listening on", line)

    def test_a_port_in_use_is_a_clear_error(self):
        _, line = self.start("--listen", "127.0.0.1:0", "--data-dir", self.path("a"))
        port = line.split("listening on 127.0.0.1:", 1)[1].split()[0]
        self.assertIn("cannot listen", self.fails("--listen", f"127.0.0.1:{port}", "--data-dir", self.path("b"), code=1))

    def test_secrets_come_from_private_files_and_a_typed_one_warns(self):
        data = ["--listen", "127.0.0.1:0", "--data-dir", self.path("data")]
        token_file = self.path("admin-token")
        with open(token_file, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(token_file, 0o644)
        message = self.fails(*data, "--admin-token-file", token_file, code=2)
        self.assertIn("may be read by every user (mode 0644); make it private: chmod 600", message)
        os.chmod(token_file, 0o600)
        self.assertIn("both set", self.fails(*data, "--admin-token-file", token_file, "--admin-token", "x" * 40, code=2))
        self.assertIn("needs at least 32", self.fails(*data, "--admin-token", "short-token", code=2))
        self.assertIn("needs at least 32", self.fails(*data, env={"DARKBLOOM_ADMIN_TOKEN": "short-token"}, code=2))
        with open(self.path("db-url"), "w") as f:
            f.write("postgresql://nobody@127.0.0.1:1/none\n")
        os.chmod(self.path("db-url"), 0o604)
        self.assertIn("--database-url-file", self.fails(*data, "--database-url-file", self.path("db-url"), code=2))
        # From a file: the admin API takes the token, and nothing warns.
        process, line = self.start(*data, "--admin-token-file", token_file)
        port = line.split("listening on 127.0.0.1:", 1)[1].split()[0]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/admin/keys", method="POST",
                                         headers={"Authorization": "Bearer 0123456789abcdef0123456789abcdef"})
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(response.status, 200)
        process.kill()
        self.assertNotIn("warn", process.stderr.read())
        # Typed on the command line: it works, with a warning naming the safer ways.
        process, _ = self.start(*data, "--admin-token", "0123456789abcdef0123456789abcdef", "--log-level", "warn")
        process.kill()
        warning = process.stderr.read()
        self.assertIn("--admin-token on the command line can be read by every local user", warning)
        self.assertIn("use --admin-token-file or DARKBLOOM_ADMIN_TOKEN instead", warning)

    def test_an_unusable_data_dir_is_a_clear_error(self):
        with open(self.path("file"), "w") as f:
            f.write("not a directory")
        self.assertIn("data directory", self.fails("--listen", "127.0.0.1:0", "--data-dir", self.path("file/sub"), code=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--darkbloom", required=True)
    parser.add_argument("--coordinator", required=True)
    args, rest = parser.parse_known_args()
    DARKBLOOM = os.path.abspath(args.darkbloom)
    COORDINATOR = os.path.abspath(args.coordinator)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
