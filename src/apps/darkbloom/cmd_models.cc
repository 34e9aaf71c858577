#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

#include <unistd.h>

#include "apps/darkbloom/commands.h"
#include "base/encoding.h"
#include "crypto/merkle.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model.h"
#include "engine/model/model_synth.h"
#include "engine/model/quant_recipe.h"
#include "engine/tokenizer/tokenizer.h"
#include "proto/provider_messages.h"

namespace darkbloom::apps {
namespace {

struct InspectArgs {
  std::string path;
  bool tensors = false;
};

struct HashArgs {
  std::string path;
  bool json = false;
};

struct ProofBenchArgs {
  std::string path;
  int chunks = 2;
  int iterations = 20;
};

// What one model challenge costs, on this machine, for this file: the provider reads the chunks
// named and builds its answer (the frame it sends), and the coordinator decodes that frame and
// checks every chunk against the root. Random chunks each time, from the page cache after the
// first pass (the hash reads the whole file first).
int run_proof_bench(const ProofBenchArgs& args) {
  using Clock = std::chrono::steady_clock;
  const auto hash_started = Clock::now();
  auto tree = crypto::merkle_tree_of_file(args.path);
  if (!tree) return fail(tree.error().message);
  const double hash_s = std::chrono::duration<double>(Clock::now() - hash_started).count();
  std::mt19937_64 random(42);
  std::vector<double> provider_ms;
  std::vector<double> coordinator_ms;
  size_t frame_bytes = 0;
  for (int i = 0; i < args.iterations; ++i) {
    const auto started = Clock::now();
    proto::AttestationResponse answer;
    answer.nonce = std::string(44, 'n');
    answer.timestamp = "2026-12-08T00:00:00Z";
    answer.signature = std::string(96, 's');
    answer.status = "{}";
    answer.status_signature = std::string(96, 's');
    std::vector<uint64_t> asked;
    for (int c = 0; c < args.chunks; ++c) {
      const uint64_t index = random() % tree->chunk_count();
      asked.push_back(index);
      auto chunk = crypto::read_merkle_chunk(args.path, tree->size(), index);
      if (!chunk) return fail(chunk.error().message);
      proto::ModelChunkProof proof{"model", index, std::move(*chunk), {}};
      for (const auto& hash : tree->path(index)) proof.path.push_back(hex_encode(hash));
      answer.model_proofs.push_back(std::move(proof));
    }
    const std::string frame = proto::encode(answer);
    const auto sent = Clock::now();
    auto decoded = proto::decode_provider_message(frame);
    if (!decoded) return fail(decoded.error().message);
    const auto& received = std::get<proto::AttestationResponse>(*decoded);
    for (size_t c = 0; c < received.model_proofs.size(); ++c) {
      const auto& proof = received.model_proofs[c];
      std::vector<crypto::Sha256> path;
      for (const auto& hex : proof.path) path.push_back(crypto::sha256_from_hex(hex).value());  // checked by decoding
      if (proof.index != asked[c] ||
          !crypto::verify_merkle_chunk(tree->root(), tree->size(), proof.index, proof.chunk, path)) {
        return fail("a chunk did not verify: the file changed during the benchmark");
      }
    }
    const auto checked = Clock::now();
    provider_ms.push_back(std::chrono::duration<double, std::milli>(sent - started).count());
    coordinator_ms.push_back(std::chrono::duration<double, std::milli>(checked - sent).count());
    frame_bytes = frame.size();
  }
  std::printf("file: %s (%.1f MiB, %llu chunks)\n", args.path.c_str(), static_cast<double>(tree->size()) / (1 << 20),
              static_cast<unsigned long long>(tree->chunk_count()));
  std::printf("hash at start: %.2f s (%.0f MiB/s)\n", hash_s, static_cast<double>(tree->size()) / (1 << 20) / hash_s);
  std::printf("challenge of %d chunks: answer frame %.2f MB\n", args.chunks, static_cast<double>(frame_bytes) / 1e6);
  std::printf("provider (read, path, encode): median %.2f ms\n", median(provider_ms));
  std::printf("coordinator (decode, verify): median %.2f ms\n", median(coordinator_ms));
  return 0;
}

// The Merkle root over the file's 1 MiB chunks, its size and chunk count: what the
// coordinator's model catalogue records and challenges check (crypto/merkle.h).
int run_hash(const HashArgs& args) {
  // Progress on a terminal only, for files that take a while.
  const bool show_progress = isatty(STDERR_FILENO) != 0;
  uint64_t shown_mib = 0;
  auto progress = [&](uint64_t done, uint64_t total) {
    const uint64_t mib = done >> 20;
    if (!show_progress || total < (uint64_t{256} << 20) || (mib - shown_mib < 256 && done != total)) return;
    shown_mib = mib;
    std::fprintf(stderr, "\rhashing %s: %llu of %llu MiB", args.path.c_str(), static_cast<unsigned long long>(mib),
                 static_cast<unsigned long long>(total >> 20));
    if (done == total) std::fputc('\n', stderr);
  };
  auto tree = crypto::merkle_tree_of_file(args.path, progress);
  if (!tree) {
    if (shown_mib > 0) std::fputc('\n', stderr);  // end the progress line before the error
    return fail(tree.error().message);
  }
  const std::string root = hex_encode(tree->root());
  if (args.json) {
    json::bj::object out{{"file", args.path},
                         {"size_bytes", tree->size()},
                         {"chunk_bytes", crypto::kMerkleChunkBytes},
                         {"chunks", tree->chunk_count()},
                         {"merkle_root", root}};
    std::printf("%s\n", json::dump(json::bj::value(std::move(out))).c_str());
  } else {
    std::printf("file    %s\nsize    %llu bytes\nchunks  %llu of 1 MiB\nmerkle  %s\n", args.path.c_str(),
                static_cast<unsigned long long>(tree->size()), static_cast<unsigned long long>(tree->chunk_count()),
                root.c_str());
  }
  return 0;
}

std::string value_summary(const engine::GgufValue& value) {
  using engine::GgufValueType;
  if (const auto* s = value.as_string()) {
    std::string shown = s->size() > 80 ? s->substr(0, 77) + "..." : *s;
    for (char& c : shown) {
      if (c == '\n') c = ' ';
    }
    return fmt::format("\"{}\"", shown);
  }
  if (const auto* array = value.as_array()) {
    std::string out = fmt::format("[{} x {}]", array->size(), engine::gguf_value_type_name(array->element_type));
    if (array->element_type == GgufValueType::string && !array->strings.empty()) {
      out += fmt::format(" \"{}\", ...", array->strings[0].substr(0, 20));
    }
    return out;
  }
  if (const auto b = value.as_bool()) return *b ? "true" : "false";
  if (value.type == GgufValueType::f32 || value.type == GgufValueType::f64)
    return fmt::format("{}", *value.as_double());
  if (const auto i = value.as_int()) return fmt::format("{}", *i);
  if (const auto u = value.as_uint()) return fmt::format("{}", *u);
  return "?";
}

int run_inspect(const InspectArgs& args) {
  auto file = engine::GgufFile::open(args.path);
  if (!file) return fail(file.error().message);
  std::string out = fmt::format("file: {} ({:.1f} MiB, GGUF v{}, {} tensors, {} metadata keys)\n", args.path,
                                static_cast<double>(file->file_size()) / (1 << 20), file->version(),
                                file->tensors().size(), file->metadata().size());
  std::map<std::string, std::pair<size_t, uint64_t>> by_type;  // type → (tensors, elements)
  uint64_t parameters = 0;
  for (const auto& tensor : file->tensors()) {
    auto& entry = by_type[std::string(engine::ggml_type_name(tensor.type))];
    entry.first += 1;
    entry.second += tensor.n_elements;
    parameters += tensor.n_elements;
  }
  auto config = engine::read_model_config(*file);
  if (config) {
    const auto& c = *config;
    out += fmt::format("architecture: {}{}\n", c.architecture_name, c.name.empty() ? "" : " (" + c.name + ")");
    out +=
        fmt::format("shape: {} layers, width {}, {} heads ({} KV) of {}, FFN {}, vocabulary {}, trained context {}\n",
                    c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab, c.context_length);
    out += fmt::format("rope: theta {}, {} dims, {} pairing, linear scale {}\n", c.rope_theta, c.rope_dims,
                       c.rope_style == engine::RopeStyle::normal ? "adjacent" : "neox", c.rope_linear_scale);
    if (c.sliding_window > 0) {
      out += fmt::format("attention: sliding window of {} positions on {}{}\n", c.sliding_window,
                         c.sliding_period == 0
                             ? std::string("every layer")
                             : fmt::format("{} of every {} layers", c.sliding_period - 1, c.sliding_period),
                         c.rope_theta_sliding > 0 ? fmt::format(" (RoPE base {} there)", c.rope_theta_sliding) : "");
    }
    if (c.attn_softcap > 0 || c.final_softcap > 0) {
      out += fmt::format("soft-caps: attention {}, logits {}\n", c.attn_softcap, c.final_softcap);
    }
    if (c.is_moe()) {
      out += fmt::format("experts: {} per layer, {} per token{}, FFN {} each{}\n", c.n_expert, c.n_expert_used,
                         c.normalize_expert_weights ? " (weights renormalised)" : "", c.n_ff_expert,
                         c.n_ff_shared > 0 ? fmt::format(", shared expert FFN {}", c.n_ff_shared) : "");
    }
  } else {
    out += fmt::format("architecture: not loadable: {}\n", config.error().message);
  }
  out += fmt::format("parameters: {:.2f} M\n", static_cast<double>(parameters) / 1e6);
  out += "tensor types:";
  for (const auto& [type, entry] : by_type) {
    out +=
        fmt::format(" {} ({} tensors, {:.1f}% of parameters)", type, entry.first,
                    100.0 * static_cast<double>(entry.second) / static_cast<double>(std::max<uint64_t>(parameters, 1)));
  }
  out += "\n";
  auto tokenizer = engine::Tokenizer::from_gguf(*file);
  if (tokenizer) {
    out += fmt::format(
        "tokenizer: {}{}, {} tokens, BOS {}{}, EOS {}\n",
        tokenizer->kind() == engine::Tokenizer::Kind::spm ? "llama (SentencePiece)" : "gpt2 (byte-level BPE)",
        tokenizer->pre_name().empty() ? "" : fmt::format(", pre-tokenizer '{}'", tokenizer->pre_name()),
        tokenizer->n_vocab(),
        tokenizer->bos() ? fmt::format("{} '{}'", *tokenizer->bos(), tokenizer->token_text(*tokenizer->bos())) : "none",
        tokenizer->adds_bos() ? " (added)" : "",
        tokenizer->eos() ? fmt::format("{} '{}'", *tokenizer->eos(), tokenizer->token_text(*tokenizer->eos()))
                         : "none");
  } else {
    out += fmt::format("tokenizer: {}\n", tokenizer.error().message);
  }
  if (config) {
    auto model = engine::Model::from_file(std::move(*file));
    out +=
        model ? "status: loadable by this engine\n" : fmt::format("status: not loadable: {}\n", model.error().message);
    if (model) {
      out += "metadata:\n";
      for (const auto& kv : (*model)->file().metadata())
        out += fmt::format("  {} = {}\n", kv.key, value_summary(kv.value));
      if (args.tensors) {
        out += "tensors:\n";
        for (const auto& t : (*model)->file().tensors()) {
          std::string dims;
          for (size_t i = 0; i < t.dims.size(); ++i) dims += (i ? ", " : "") + std::to_string(t.dims[i]);
          out += fmt::format("  {} {} [{}] {} bytes\n", t.name, engine::ggml_type_name(t.type), dims, t.n_bytes);
        }
      }
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int run_synth(const engine::SynthOptions& options, const std::string& out_path) {
  // Progress on a terminal only; logs and pipes get the final line alone.
  const bool show_progress = isatty(fileno(stderr)) != 0;
  auto status = engine::synthesize_model(options, out_path, [&](size_t done, size_t total) {
    if (show_progress) std::fprintf(stderr, "\rwriting %s: %zu/%zu tensors", out_path.c_str(), done, total);
  });
  if (show_progress) std::fputc('\n', stderr);
  if (!status) return fail(status.error().message);
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}

}  // namespace

void add_model_proof_bench(CLI::App* bench, CommandRunner* runner) {
  auto args = std::make_shared<ProofBenchArgs>();
  CLI::App* cmd = bench->add_subcommand(
      "model-proof", "What a model challenge costs: the provider's answer and the coordinator's check, per challenge");
  cmd->add_option("-m,--model", args->path, "GGUF model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--chunks", args->chunks, "1 MiB chunks per challenge")
      ->check(CLI::Range(1, static_cast<int>(proto::kMaxChallengeChunks)))
      ->capture_default_str();
  cmd->add_option("-n,--iterations", args->iterations, "challenges to time")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  cmd->callback([runner, args] { *runner = [args] { return run_proof_bench(*args); }; });
}

void register_models(CLI::App& app, CommandRunner* runner) {
  CLI::App* models = app.add_subcommand("models", "Inspect, hash and synthesise GGUF models");
  models->alias("model");
  models->require_subcommand(1);

  auto inspect = std::make_shared<InspectArgs>();
  CLI::App* inspect_cmd =
      models->add_subcommand("inspect", "Print a GGUF file's architecture, shapes, types and metadata");
  inspect_cmd->add_option("file", inspect->path, "GGUF file")->required()->check(CLI::ExistingFile);
  inspect_cmd->add_flag("--tensors", inspect->tensors, "also list every tensor");
  inspect_cmd->callback([runner, inspect] { *runner = [inspect] { return run_inspect(*inspect); }; });

  auto hash = std::make_shared<HashArgs>();
  CLI::App* hash_cmd = models->add_subcommand(
      "hash", "Print a file's Merkle root over 1 MiB chunks and its size (what a model catalogue entry records)");
  hash_cmd->add_option("file", hash->path, "GGUF file")->required()->check(CLI::ExistingFile);
  hash_cmd->add_flag("--json", hash->json, "print JSON instead of lines");
  hash_cmd->callback([runner, hash] { *runner = [hash] { return run_hash(*hash); }; });

  auto synth = std::make_shared<engine::SynthOptions>();
  auto out_path = std::make_shared<std::string>();
  CLI::App* synth_cmd =
      models->add_subcommand("synth", "Write a GGUF model with random weights (for tests and benchmarks)");
  synth_cmd->add_option("-o,--out", *out_path, "output file")->required();
  synth_cmd
      ->add_option("--arch", synth->architecture, "llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3 or phi3")
      ->check(CLI::IsMember({"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "phi3"}))
      ->capture_default_str();
  synth_cmd->add_option("--layers", synth->n_layer, "transformer blocks")->capture_default_str();
  synth_cmd->add_option("--embd", synth->n_embd, "model width")->capture_default_str();
  synth_cmd->add_option("--heads", synth->n_head, "attention heads")->capture_default_str();
  synth_cmd->add_option("--kv-heads", synth->n_head_kv, "key/value heads")->capture_default_str();
  synth_cmd->add_option("--head-dim", synth->head_dim, "head size (0 = embd / heads)")->capture_default_str();
  synth_cmd->add_option("--ffn", synth->n_ff, "feed-forward width")->capture_default_str();
  synth_cmd->add_option("--experts", synth->n_expert, "experts per layer (qwen2moe, qwen3moe)")->capture_default_str();
  synth_cmd->add_option("--experts-used", synth->n_expert_used, "experts each token is routed to")
      ->capture_default_str();
  synth_cmd->add_option("--expert-ffn", synth->n_ff_expert, "each expert's FFN width (0 = --ffn)")
      ->capture_default_str();
  synth_cmd->add_option("--rope-dims", synth->rope_dims, "dimensions of each head RoPE rotates (0 = all)")
      ->capture_default_str();
  synth_cmd
      ->add_option("--sliding-window", synth->sliding_window,
                   "gemma2, gemma3, phi3: positions a sliding layer sees (-1 = the published default, 0 = none)")
      ->capture_default_str();
  synth_cmd->add_option("--attn-softcap", synth->attn_softcap, "gemma2: attention soft-cap (0 = 50)")
      ->capture_default_str();
  synth_cmd->add_option("--final-softcap", synth->final_softcap, "gemma2: final logit soft-cap (0 = 30)")
      ->capture_default_str();
  synth_cmd->add_option("--shared-ffn", synth->n_ff_shared, "the shared expert's FFN width, qwen2moe (0 = --ffn)")
      ->capture_default_str();
  synth_cmd
      ->add_option("--vocab", synth->n_vocab,
                   "vocabulary size: of the synthetic vocabulary (0 = 512); with --tokenizer-json the embedding\n"
                   "rows, padded past the tokenizer with unused tokens as published models are (0 = its size)")
      ->capture_default_str();
  synth_cmd->add_option("--ctx", synth->context_length, "training context to record")->capture_default_str();
  synth_cmd->add_option("--rope-theta", synth->rope_theta, "RoPE base frequency")->capture_default_str();
  CLI::Option* type_option =
      synth_cmd
          ->add_option("--type", synth->weight_type,
                       "one weight type for every matrix: " + engine::supported_ggml_type_names())
          ->capture_default_str();
  synth_cmd
      ->add_option("--recipe", synth->recipe,
                   "a quantization recipe instead of one type: each matrix gets the type llama-quantize gives\n"
                   "it (" +
                       fmt::format("{}", fmt::join(engine::quant_recipe_names(), ", ")) + "; see docs/engine.md)")
      ->excludes(type_option);
  synth_cmd->add_flag("--tied", synth->tied_output, "share the embedding as the output matrix");
  synth_cmd->add_option("--seed", synth->seed, "random seed")->capture_default_str();
  synth_cmd->add_option("--name", synth->name, "general.name")->capture_default_str();
  synth_cmd->add_option("--tokenizer-json", synth->tokenizer_json, "embed this Hugging Face tokenizer.json")
      ->check(CLI::ExistingFile);
  synth_cmd
      ->add_option("--tokenizer-config", synth->tokenizer_config,
                   "tokenizer_config.json for BOS/EOS and the chat template")
      ->check(CLI::ExistingFile);
  synth_cmd->callback(
      [runner, synth, out_path] { *runner = [synth, out_path] { return run_synth(*synth, *out_path); }; });
}

}  // namespace darkbloom::apps
