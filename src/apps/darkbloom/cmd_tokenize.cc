#include <fmt/format.h>

#include <cstdio>

#include "apps/darkbloom/commands.h"
#include "base/json.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::apps {
namespace {

struct TokenizeArgs {
  std::string model;
  std::string text;
  std::string jsonl;
  bool no_bos = false;
  bool no_special = false;
};

int run_tokenize(const TokenizeArgs& args) {
  auto file = engine::GgufFile::open(args.model);
  if (!file) return fail(file.error().message);
  auto tokenizer = engine::Tokenizer::from_gguf(*file);
  if (!tokenizer) return fail(tokenizer.error().message);
  engine::EncodeOptions options;
  options.add_special = !args.no_bos;
  options.parse_special = !args.no_special;

  if (args.jsonl.empty()) {
    const auto ids = tokenizer->encode(args.text, options);
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) out += fmt::format("{}{}", i ? " " : "", ids[i]);
    std::printf("%s\n", out.c_str());
    return 0;
  }
  // One JSON object per line in and out: {"text": ...} → {"ids": [...], "decoded": ...}.
  const auto status = for_each_jsonl_object(args.jsonl, [&](const json::bj::object& object, int line) -> Status {
    const auto* text = object.if_contains("text");
    if (text == nullptr || !text->is_string()) {
      return make_error(Errc::bad_format, fmt::format("{} line {}: needs a \"text\" string", args.jsonl, line));
    }
    const auto ids = tokenizer->encode(std::string_view(text->as_string()), options);
    boost::json::object out;
    boost::json::array id_array;
    for (int32_t id : ids) id_array.push_back(id);
    out["ids"] = std::move(id_array);
    out["decoded"] = tokenizer->decode(ids, /*render_special=*/true);
    std::printf("%s\n", json::dump(out).c_str());
    return {};
  });
  return status ? 0 : fail(status.error().message);
}

}  // namespace

void register_tokenize(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text under a model's vocabulary");
  cmd->add_option("-m,--model", args->model, "GGUF file (only its vocabulary is read)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* text = cmd->add_option("text", args->text, "text to tokenize");
  cmd->add_option("--jsonl", args->jsonl,
                  "tokenize each {\"text\": ...} line of a file; prints {\"ids\", \"decoded\"} lines")
      ->excludes(text)
      ->check(CLI::ExistingFile);
  cmd->add_flag("--no-bos", args->no_bos, "do not add BOS/EOS even if the vocabulary asks for them");
  cmd->add_flag("--no-special", args->no_special, "treat control-token text such as <|im_start|> as plain text");
  cmd->callback([runner, args] { *runner = [args] { return run_tokenize(*args); }; });
}

}  // namespace darkbloom::apps
