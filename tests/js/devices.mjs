// Real key devices for tests, each in a temp directory and stopped when the test process exits
// (also on failure): a software TPM (swtpm on a Unix socket) and a SoftHSM2 token.
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { track } from "./cluster.mjs";

export const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";

// Runs a command to completion; returns { status, stdout, stderr }.
export function run(cmd, args, { env = {}, input } = {}) {
  const result = spawnSync(cmd, args, { env: { ...process.env, ...env }, input, encoding: "utf8" });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Like run, but a non-zero exit is an error carrying the command's output.
export function check(cmd, args, options) {
  const result = run(cmd, args, options);
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${result.status}:\n${result.stderr}`);
  return result.stdout;
}

export class Swtpm {
  constructor(dir) {
    this.dir = dir;
    this.state = path.join(dir, "state");
    this.socket = path.join(dir, "tpm.sock");
    this.tcti = `swtpm:path=${this.socket}`;
    fs.mkdirSync(this.state, { recursive: true });
  }

  // `ekCert`: manufactured first, as a TPM maker would: swtpm_setup creates the endorsement keys
  // and writes their certificates to NV, signed by a local CA of its own in `dir`/ca (its root
  // and intermediate are `caRoot` and `caIssuer`).
  static async start(dir, { ekCert = false } = {}) {
    const tpm = new Swtpm(dir);
    if (ekCert) tpm.manufacture();
    await tpm.start();
    return tpm;
  }

  manufacture() {
    const ca = path.join(this.dir, "ca");
    fs.mkdirSync(ca, { recursive: true });
    const localca = path.join(this.dir, "localca.conf");
    fs.writeFileSync(localca, `statedir = ${ca}\nsigningkey = ${ca}/signkey.pem\nissuercert = ${ca}/issuercert.pem\n` +
      `certserial = ${ca}/certserial\n`);
    const options = path.join(this.dir, "localca.options");
    fs.writeFileSync(options, "--platform-manufacturer Darkbloom\n--platform-version 2.1\n--platform-model TestTPM\n");
    const setup = path.join(this.dir, "swtpm_setup.conf");
    fs.writeFileSync(setup, `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${localca}\n` +
      `create_certs_tool_options = ${options}\n`);
    check("swtpm_setup", ["--tpm2", "--tpmstate", this.state, "--create-ek-cert", "--config", setup, "--overwrite"]);
    this.caRoot = path.join(ca, "swtpm-localca-rootca-cert.pem");
    this.caIssuer = path.join(ca, "issuercert.pem");
  }

  // Powered on and started (TPM2_Startup) by swtpm itself; serves one client at a time.
  async start() {
    fs.rmSync(this.socket, { force: true });
    this.child = track(spawn("swtpm", ["socket", "--tpm2", "--tpmstate", `dir=${this.state}`,
      "--server", `type=unixio,path=${this.socket}`, "--ctrl", `type=unixio,path=${this.socket}.ctrl`,
      "--flags", "not-need-init,startup-clear"], { stdio: "ignore" }));
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
    const deadline = Date.now() + 10000;
    while (!fs.existsSync(this.socket)) {
      if (Date.now() > deadline) throw new Error("swtpm did not create its socket");
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop() {
    this.child.kill("SIGTERM");
    await this.exited;
  }

  // tpm2-tools against this TPM.
  tools(tool, args) { return check(tool, args, { env: { TPM2TOOLS_TCTI: this.tcti } }); }

  // The debug PCR as a fresh boot would leave it after measuring `file`: reset, then one extend.
  measure(pcr, file) {
    const digest = crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
    this.tools("tpm2_pcrreset", [String(pcr)]);
    this.tools("tpm2_pcrextend", [`${pcr}:sha256=${digest}`]);
  }
}

export class SoftHsmToken {
  constructor(dir, { label = "darkbloom", pin = "1234" } = {}) {
    this.dir = dir;
    this.label = label;
    this.pin = pin;
    this.conf = path.join(dir, "softhsm2.conf");
    fs.mkdirSync(path.join(dir, "tokens"), { recursive: true });
    fs.writeFileSync(this.conf, `directories.tokendir = ${path.join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    this.env = { SOFTHSM2_CONF: this.conf };
    check("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678"], { env: this.env });
    this.pinFile = path.join(dir, "pin");
    fs.writeFileSync(this.pinFile, `${pin}\n`, { mode: 0o600 });
  }

  // What OpenSC's pkcs11-tool says about the private keys on the token.
  privateKeys() {
    return check("pkcs11-tool", ["--module", SOFTHSM_MODULE, "--token-label", this.label, "--login", "--pin", this.pin,
      "--list-objects", "--type", "privkey"], { env: this.env });
  }
}

// A PEM public key for a raw P-256 X ‖ Y in base64, made by Node's crypto (not by darkbloom).
export function pemOf(rawBase64) {
  const raw = Buffer.from(rawBase64, "base64");
  const key = crypto.createPublicKey({
    key: { kty: "EC", crv: "P-256", x: raw.subarray(0, 32).toString("base64url"), y: raw.subarray(32).toString("base64url") },
    format: "jwk",
  });
  return key.export({ type: "spki", format: "pem" });
}

// `openssl dgst -sha256 -verify` of a DER signature: true when OpenSSL says "Verified OK".
export function opensslVerifies(dir, publicKeyPem, message, signature) {
  const tag = crypto.randomBytes(4).toString("hex");
  const key = path.join(dir, `key-${tag}.pem`);
  const data = path.join(dir, `data-${tag}`);
  const sig = path.join(dir, `sig-${tag}.der`);
  fs.writeFileSync(key, publicKeyPem);
  fs.writeFileSync(data, message);
  fs.writeFileSync(sig, signature);
  const result = run("openssl", ["dgst", "-sha256", "-verify", key, "-signature", sig, data]);
  return result.status === 0 && /Verified OK/.test(result.stdout);
}

// "key: value" lines of `darkbloom keys show|sign|rotate` output.
export function fields(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const match = line.match(/^\s*([a-z_ ]+):\s(.*)$/);
    if (match && !(match[1] in out)) out[match[1]] = match[2];
  }
  return out;
}
