// Certificates for tests, made with the openssl command-line tool: a throw-away CA and server
// certificates it signs, valid now or already expired, for the names a test chooses.
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

function openssl(args, cwd) {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

// A CA in `dir` (ca.pem, ca.key) whose certificates `issue` writes. `name` keeps two CAs apart.
export function makeCa(dir, name = "ca") {
  const caDir = path.join(dir, name);
  fs.mkdirSync(caDir, { recursive: true });
  const ca = { dir: caDir, cert: path.join(caDir, "ca.pem"), key: path.join(caDir, "ca.key"), serial: 1 };
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca.key,
    "-out", ca.cert, "-days", "3", "-subj", `/CN=Darkbloom test ${name}`], caDir);
  fs.writeFileSync(path.join(caDir, "index.txt"), "");
  fs.writeFileSync(path.join(caDir, "ca.cnf"), [
    "[ca]", "default_ca = test", "[test]", `database = ${caDir}/index.txt`, `new_certs_dir = ${caDir}`,
    `serial = ${caDir}/serial`, "default_md = sha256", "policy = any", "unique_subject = no",
    "[any]", "commonName = supplied", ""].join("\n"));
  return ca;
}

// A server certificate and key signed by `ca`, for DNS names and IP addresses `names`; `expired`
// dates it in 2020. Returns {cert, key, sha256} (sha256: hex of the certificate's DER).
export function issue(ca, file, { names = ["localhost", "127.0.0.1"], expired = false } = {}) {
  const base = path.join(ca.dir, file);
  const csr = `${base}.csr`;
  const ext = `${base}.ext`;
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${base}.key`,
    "-out", csr, "-subj", `/CN=${names[0]}`], ca.dir);
  const san = names.map((n) => (/^[0-9.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
  fs.writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
  fs.writeFileSync(path.join(ca.dir, "serial"), (ca.serial++).toString(16).padStart(2, "0").padStart(4, "0"));
  const dates = expired ? ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"] : ["-days", "2"];
  openssl(["ca", "-batch", "-config", path.join(ca.dir, "ca.cnf"), "-cert", ca.cert, "-keyfile", ca.key, "-in", csr,
    "-out", `${base}.pem`, "-extfile", ext, "-notext", ...dates], ca.dir);
  fs.chmodSync(`${base}.key`, 0o600);
  const der = new crypto.X509Certificate(fs.readFileSync(`${base}.pem`)).raw;
  return { cert: `${base}.pem`, key: `${base}.key`, sha256: crypto.createHash("sha256").update(der).digest("hex") };
}
