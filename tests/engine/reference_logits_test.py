#!/usr/bin/python3
"""The engine's logits against an independent NumPy forward pass (tests/reference/gguf_reference.py).

For one architecture, every weight type and the common quantization recipes (each matrix its own
type, with the fallbacks of rows that no block fits): synthesise a small model with `darkbloom models synth`,
compute logits for a token sequence with the engine (tool `dump_logits`) and with the reference,
and compare. Also checks `darkbloom perplexity` against a perplexity computed from the
reference's logits.

Tolerances (relative RMS of the logit difference):
- kernels "float" (weights dequantized, activations kept in f32): 1e-5 for every type. Both
  sides compute the same real numbers; only float32 summation order differs.
- default kernels with F32/F16/BF16 weights: 1e-5, for the same reason.
- default kernels with quantized weights: 5e-2. These round each activation row to
  8 bits per block of 32 (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) or 256 (K-quants, IQ4_XS) values
  before the integer dot product,
  a relative step of 1/127 per value; over two layers of seven products the logits move by 1-3 %
  of their spread (measured), as llama.cpp's do. A wrong block layout gives errors of order 1.
- F16 and Q8_0 KV caches (on the F32 model): see check_kv_types.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import gguf_reference  # noqa: E402

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k",
         "q6_k", "iq4_xs"]
FLOAT_TYPES = {"f32", "f16", "bf16"}
# Recipes run on a 288-wide model, so the 288-element rows fall back to 32-element types while the
# FFN's 512-element rows keep K-quants.
RECIPES = ["Q4_K_M", "Q5_K_M", "Q3_K_M", "Q2_K", "IQ4_XS"]
# Mixture-of-experts shapes: 8 experts of width 256, 2 per token (the 8-expert recipe rules apply),
# and a shared expert for qwen2moe.
MOE_FLAGS = ["--experts", "8", "--experts-used", "2", "--expert-ffn", "256", "--shared-ffn", "256"]
# Per architecture: small sliding windows so that 11 tokens cross them, soft-caps low enough to
# bend the scores and logits, partial RoPE for phi3, and for gemma3 six layers so that one of them
# is global (five of six slide).
ARCH_FLAGS = {
    "gemma2": ["--sliding-window", "4", "--attn-softcap", "3", "--final-softcap", "8"],
    "gemma3": ["--sliding-window", "4"],
    "phi3": ["--sliding-window", "5", "--rope-dims", "32"],
}
ARCH_LAYERS = {"gemma3": 6}

# With 8-bit activations a router logit moves by up to about 5e-2 (measured), a gap between two by
# twice that. Where the reference's
# last chosen and first unchosen expert are closer than ROUTING_MARGIN, the two sides may route a
# token differently. So for mixtures of experts the default kernels run on a one-layer copy of the
# model, where a token's route changes only its own logits, and tokens routed that closely are
# left out of the comparison; the float kernels, which route as the reference does, run on the
# two-layer model.
ROUTING_MARGIN = 0.2
TOKENS = [1, 17, 300, 42, 42, 7, 255, 100, 3, 64, 199]


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")
    return result.stdout


def relative_rms(ours, reference):
    return float(np.sqrt(np.mean((ours - reference) ** 2) / np.mean(reference ** 2)))


def engine_logits(tool, model, kernels, n_vocab, kv_type="f32"):
    with tempfile.NamedTemporaryFile(suffix=".f32") as out:
        run([tool, model, ",".join(map(str, TOKENS)), out.name, kernels, kv_type])
        return np.fromfile(out.name, dtype="<f4").reshape(len(TOKENS), n_vocab).astype(np.float64)


def check_kv_types(args, model, reference, n_vocab, failures):
    """The F16 and Q8_0 caches on F32 weights, where the default kernels round nothing else.

    The float kernels attend in f32 over the cache's stored values: F16 rounding moves the logits
    by ~3e-4 of their spread, Q8_0 by ~8e-3 (measured); limits 1e-3 and 2e-2 against the
    reference. (Not for mixtures of experts: there the rounding moves a few tokens to other
    experts, as 8-bit activations do; see ROUTING_MARGIN.) The default and scalar kernels read F16
    rows as the float kernels do (7e-5 apart at most over gemma3's six layers: summation order),
    and score Q8_0 keys in int8 against each query quantized to Q8_0, which adds 3e-3 to 7e-3
    (measured); limit 1e-2 against the float kernels on the same cache. A wrong scale or block
    layout there gives errors of order 1.
    """
    for kv_type, cache_limit, kernel_limit in (("f16", 1e-3, 2e-4), ("q8_0", 2e-2, 1e-2)):
        exact = engine_logits(args.dump_logits, model, "float", n_vocab, kv_type)
        if not args.arch.endswith("moe"):
            cache_error = relative_rms(exact, reference)
            print(f"{args.arch} f32 weights, {kv_type} cache: float kernels {cache_error:.2e} (limit {cache_limit:.0e})")
            if not cache_error <= cache_limit:
                failures.append(f"{kv_type} cache: float-kernel logits differ by {cache_error:.2e}")
        else:
            print(f"{args.arch} f32 weights, {kv_type} cache:")
        for kernels in ("auto", "scalar"):
            error = relative_rms(engine_logits(args.dump_logits, model, kernels, n_vocab, kv_type), exact)
            print(f"  {kernels} kernels against them: {error:.2e} (limit {kernel_limit:.0e})")
            if not error <= kernel_limit:
                failures.append(f"{kv_type} cache: {kernels}-kernel logits differ from the float kernels' by {error:.2e}")


def check_long_windows(args, workdir):
    """40 tokens through windows of 20 and 16 positions: the window then starts inside a later KV
    block (16 positions each) or on its boundary, where the engine skips whole blocks."""
    tokens = [(7 * i + 3) % 384 for i in range(40)]
    for window in (20, 16):
        model = os.path.join(workdir, f"{args.arch}-window-{window}.gguf")
        flags = list(ARCH_FLAGS[args.arch])
        flags[flags.index("--sliding-window") + 1] = str(window)
        run([args.darkbloom, "models", "synth", "-o", model, "--arch", args.arch, "--type", "f32", "--embd", "256",
             "--layers", str(ARCH_LAYERS.get(args.arch, 2)), "--heads", "4", "--kv-heads", "2", "--ffn", "512",
             "--vocab", "384", "--seed", "7", *flags])
        reference = gguf_reference.forward(gguf_reference.read_gguf(model), tokens)
        with tempfile.NamedTemporaryFile(suffix=".f32") as out:
            run([args.dump_logits, model, ",".join(map(str, tokens)), out.name, "float"])
            ours = np.fromfile(out.name, dtype="<f4").reshape(len(tokens), -1).astype(np.float64)
        error = relative_rms(ours, reference)
        print(f"{args.arch} window {window} over {len(tokens)} tokens: float kernels {error:.2e} (limit 1e-5)")
        if not error <= 1e-5:
            raise SystemExit(f"window {window}: float-kernel logits differ by {error:.2e}")


def check_perplexity(darkbloom, model, workdir):
    text = "The river ran fast under the old stone bridge while people walked to work. " * 3
    text_path = os.path.join(workdir, "text.txt")
    with open(text_path, "w") as f:
        f.write(text)
    ctx = 24
    out = run([darkbloom, "perplexity", "-m", model, "-f", text_path, "--ctx", str(ctx), "--kernels", "float"])
    ours = float(out.split("perplexity: ")[1].split()[0])
    ids = [int(t) for t in run([darkbloom, "tokenize", "-m", model, "--no-bos", text]).split()]
    parsed = gguf_reference.read_gguf(model)
    # Same windowing as the engine: windows of ctx tokens (no BOS in this vocabulary), second half scored.
    nll, count = 0.0, 0
    for w in range(max(1, len(ids) // ctx)):
        window = ids[w * ctx:(w + 1) * ctx]
        logits = gguf_reference.forward(parsed, window)
        for t in range(len(window) // 2, len(window) - 1):
            row = logits[t] - logits[t].max()
            nll -= row[window[t + 1]] - np.log(np.exp(row).sum())
            count += 1
    expected = float(np.exp(nll / count))
    if abs(ours - expected) > 1e-3 * expected:
        raise SystemExit(f"perplexity {ours} differs from the reference's {expected}")
    print(f"perplexity: engine {ours:.4f}, reference {expected:.4f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--darkbloom", required=True)
    parser.add_argument("--dump-logits", required=True)
    parser.add_argument("--arch", required=True)
    args = parser.parse_args()
    failures = []
    cases = [(t, ["--type", t, "--embd", "256"]) for t in TYPES]
    cases += [(r, ["--recipe", r, "--embd", "288"]) for r in RECIPES]
    with tempfile.TemporaryDirectory() as workdir:
        for i, (label, weights) in enumerate(cases):
            def synth(out, layers):
                command = [args.darkbloom, "models", "synth", "-o", out, "--arch", args.arch, *weights,
                           "--layers", str(ARCH_LAYERS.get(args.arch, layers)), "--heads", "4", "--kv-heads", "2", "--ffn", "512",
                           "--vocab", "384", "--seed", str(100 + i), "--rope-theta", "500000"]
                if label in ("q4_0", "Q4_K_M"):
                    command.append("--tied")  # tied-output cases per architecture
                if args.arch.endswith("moe"):
                    command += MOE_FLAGS
                command += ARCH_FLAGS.get(args.arch, [])
                run(command)
            model = os.path.join(workdir, f"{args.arch}-{label}.gguf")
            synth(model, 2)
            reference = gguf_reference.forward(gguf_reference.read_gguf(model), TOKENS)
            n_vocab = reference.shape[1]
            exact = relative_rms(engine_logits(args.dump_logits, model, "float", n_vocab), reference)
            rows = np.ones(len(TOKENS), dtype=bool)
            fast_model, fast_reference = model, reference
            if args.arch.endswith("moe") and label not in FLOAT_TYPES:
                fast_model = os.path.join(workdir, f"{args.arch}-{label}-one-layer.gguf")
                synth(fast_model, 1)
                margins = []
                fast_reference = gguf_reference.forward(gguf_reference.read_gguf(fast_model), TOKENS, trace=margins)
                rows = margins[0] >= ROUTING_MARGIN
            ours = engine_logits(args.dump_logits, fast_model, "auto", n_vocab)
            fast = relative_rms(ours[rows], fast_reference[rows])
            fast_limit = 1e-5 if label in FLOAT_TYPES else 5e-2
            print(f"{args.arch} {label:6s}: float kernels {exact:.2e} (limit 1e-5), "
                  f"default kernels {fast:.2e} (limit {fast_limit:.0e})"
                  + (f" (one layer, the {rows.sum()} of {len(TOKENS)} tokens routed clearly)"
                     if fast_model != model else ""))
            if rows.sum() < 3:
                failures.append(f"{label}: only {rows.sum()} tokens are routed clearly enough to compare")
            if not exact <= 1e-5:
                failures.append(f"{label}: float-kernel logits differ by {exact:.2e}")
            if not fast <= fast_limit:
                failures.append(f"{label}: default-kernel logits differ by {fast:.2e}")
            if label == "f32":
                check_kv_types(args, model, reference, n_vocab, failures)
                check_perplexity(args.darkbloom, model, workdir)
                if args.arch in ARCH_FLAGS:
                    check_long_windows(args, workdir)
    if failures:
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
