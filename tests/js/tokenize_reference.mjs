#!/usr/bin/env node
// Reference tokenization with @huggingface/tokenizers (pure JS).
//
// Usage:
//   node tokenize_reference.mjs --tokenizer-json PATH [--tokenizer-config PATH]
//                               --corpus CORPUS.jsonl|- [--no-clean-up]
//                               [--no-roundtrip-check]
//
// Reads JSONL lines {"text": "..."} (blank lines are skipped; "-" reads stdin)
// and writes to stdout one JSON line per input line, in order:
//   {"text": ..., "ids": [...], "decoded": "..."}
// where
//   ids     = tokenizer.encode(text) with the library defaults
//             (add_special_tokens = true, i.e. whatever the tokenizer.json
//             post_processor adds; special/added-token text in the input is
//             matched as the added token, like split_special_tokens=false);
//   decoded = tokenizer.decode(ids, {skip_special_tokens: true}); "" for no ids.
//
// NOTE on decoded: like transformers, the library applies
// clean_up_tokenization_spaces (" ." -> ".", " n't" -> "n't", ...) when the
// tokenizer_config says so, and *defaults it to true* when the config does not
// mention it or no config is given. --no-clean-up forces it off.
//
// Checks (any failure -> exit 1 with a one-line message on stderr):
//   - files/lines parse, every line is an object with a string "text";
//   - every id is an integer inside the vocabulary;
//   - round trip (ByteLevel decoders only, unless --no-roundtrip-check):
//     decode(ids) without skipping special tokens and without clean-up must
//     equal the normalized input text. This catches pieces the BPE model would
//     silently drop (the library drops unknown pieces when unk_token is null).
// Exit status: 0 ok, 1 failure, 2 usage error.

import fs from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const USAGE =
  "usage: node tokenize_reference.mjs --tokenizer-json PATH [--tokenizer-config PATH] " +
  "--corpus CORPUS.jsonl|- [--no-clean-up] [--no-roundtrip-check]";

class Failure extends Error {
  constructor(message, code = 1) {
    super(message);
    this.code = code;
  }
}

function oneLine(s) {
  return String(s).replace(/\s*\n\s*/g, " ").slice(0, 2000);
}

function parseArgs(argv) {
  const opts = {
    tokenizerJson: null,
    tokenizerConfig: null,
    corpus: null,
    cleanUp: true,
    roundtripCheck: true,
  };
  const valued = {
    "--tokenizer-json": "tokenizerJson",
    "--tokenizer-config": "tokenizerConfig",
    "--corpus": "corpus",
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value = null;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    if (Object.hasOwn(valued, a)) {
      if (value === null) {
        if (i + 1 >= argv.length) throw new Failure(`${a} needs a value; ${USAGE}`, 2);
        value = argv[++i];
      }
      if (value === "") throw new Failure(`${a} needs a non-empty value; ${USAGE}`, 2);
      opts[valued[a]] = value;
    } else if (a === "--no-clean-up" && value === null) {
      opts.cleanUp = false;
    } else if (a === "--no-roundtrip-check" && value === null) {
      opts.roundtripCheck = false;
    } else if ((a === "-h" || a === "--help") && value === null) {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    } else {
      throw new Failure(`unknown argument ${argv[i]}; ${USAGE}`, 2);
    }
  }
  if (opts.tokenizerJson === null) throw new Failure(`--tokenizer-json is required; ${USAGE}`, 2);
  if (opts.corpus === null) throw new Failure(`--corpus is required; ${USAGE}`, 2);
  return opts;
}

function readJsonFile(path, what) {
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (e) {
    throw new Failure(`cannot read ${what} ${path}: ${e.message}`);
  }
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new Failure(`${what} ${path} is not valid JSON: ${e.message}`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new Failure(`${what} ${path} must contain a JSON object`);
  }
  return obj;
}

function readCorpus(path) {
  let text;
  try {
    text = fs.readFileSync(path === "-" ? 0 : path, "utf8");
  } catch (e) {
    throw new Failure(`cannot read corpus ${path}: ${e.message}`);
  }
  const entries = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (line.trim() === "") continue;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Failure(`corpus ${path} line ${i + 1}: invalid JSON: ${e.message}`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Failure(`corpus ${path} line ${i + 1}: expected a JSON object`);
    }
    if (typeof obj.text !== "string") {
      throw new Failure(`corpus ${path} line ${i + 1}: missing string field "text"`);
    }
    if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(obj.text)) {
      throw new Failure(`corpus ${path} line ${i + 1}: "text" contains a lone UTF-16 surrogate (not valid Unicode)`);
    }
    entries.push({ lineNo: i + 1, text: obj.text });
  }
  if (entries.length === 0) throw new Failure(`corpus ${path} has no entries`);
  return entries;
}

function isByteLevelDecoder(cfg) {
  if (!cfg || typeof cfg !== "object") return false;
  if (cfg.type === "ByteLevel") return true;
  if (cfg.type === "Sequence" && Array.isArray(cfg.decoders)) {
    return cfg.decoders.some((d) => d && d.type === "ByteLevel");
  }
  return false;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const tokenizerJson = readJsonFile(opts.tokenizerJson, "tokenizer json");
  const tokenizerConfig =
    opts.tokenizerConfig === null ? {} : readJsonFile(opts.tokenizerConfig, "tokenizer config");
  const entries = readCorpus(opts.corpus);

  let tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  } catch (e) {
    throw new Failure(`cannot build tokenizer from ${opts.tokenizerJson}: ${e.message}`);
  }

  const vocabSize = tokenizer.model.vocab.length;
  const roundtrip = opts.roundtripCheck && isByteLevelDecoder(tokenizerJson.decoder);
  const decodeOptions = { skip_special_tokens: true };
  if (!opts.cleanUp) decodeOptions.clean_up_tokenization_spaces = false;

  const out = [];
  for (const { lineNo, text } of entries) {
    const where = `corpus line ${lineNo}`;
    let ids;
    try {
      ids = tokenizer.encode(text).ids;
    } catch (e) {
      throw new Failure(`${where}: encode failed: ${e.message}`);
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize || tokenizer.model.vocab[id] === undefined) {
        throw new Failure(`${where}: encode produced an invalid id ${JSON.stringify(id)} (unknown token?)`);
      }
    }
    let decoded = "";
    if (ids.length > 0) {
      try {
        decoded = tokenizer.decode(ids, decodeOptions);
      } catch (e) {
        throw new Failure(`${where}: decode failed: ${e.message}`);
      }
    }
    if (roundtrip) {
      const raw =
        ids.length > 0
          ? tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false })
          : "";
      const expected = tokenizer.normalizer ? tokenizer.normalizer(text) : text;
      if (raw !== expected && raw !== text) {
        throw new Failure(
          `${where}: round trip mismatch: decode(encode(text)) = ${JSON.stringify(raw).slice(0, 200)} ` +
            `but text = ${JSON.stringify(text).slice(0, 200)}`,
        );
      }
    }
    out.push(JSON.stringify({ text, ids, decoded }));
  }
  out.push("");
  process.stdout.write(out.join("\n"));
}

process.stdout.on("error", (e) => {
  if (e.code === "EPIPE") process.exit(1);
  process.stderr.write(`tokenize_reference: error: cannot write output: ${oneLine(e.message)}\n`);
  process.exit(1);
});

try {
  main();
} catch (e) {
  const code = e instanceof Failure ? e.code : 1;
  const msg = e && e.message !== undefined ? e.message : e;
  process.stderr.write(`tokenize_reference: error: ${oneLine(msg)}\n`);
  process.exitCode = code;
}
