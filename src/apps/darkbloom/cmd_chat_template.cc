// `darkbloom chat-template`: renders a chat template over conversations given as JSON, the way
// the provider renders prompts, to check a model's template or compare with another renderer.
#include <fmt/format.h>

#include <cstdio>
#include <ctime>

#include "apps/darkbloom/commands.h"
#include "base/file.h"
#include "base/json.h"
#include "engine/chat/jinja_template.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::apps {
namespace {

struct ChatTemplateArgs {
  std::string model;
  std::string template_file;
  std::string jsonl;
  std::string bos_token;
  std::string eos_token;
};

struct LoadedTemplate {
  std::string source, bos_token, eos_token;
};

Result<LoadedTemplate> load_template(const ChatTemplateArgs& args) {
  LoadedTemplate out{{}, args.bos_token, args.eos_token};
  if (!args.template_file.empty()) {
    auto source = read_file(args.template_file);
    if (!source) return source.error();
    out.source = std::move(*source);
    return out;
  }
  auto file = engine::GgufFile::open(args.model);
  if (!file) return file.error();
  const engine::GgufValue* value = file->find("tokenizer.chat_template");
  if (value == nullptr || value->as_string() == nullptr) {
    return make_error(Errc::not_found, args.model + " has no tokenizer.chat_template");
  }
  out.source = *value->as_string();
  auto tokenizer = engine::Tokenizer::from_gguf(*file);
  if (!tokenizer) return tokenizer.error();
  if (tokenizer->bos()) out.bos_token = tokenizer->token_text(*tokenizer->bos());
  if (tokenizer->eos()) out.eos_token = tokenizer->token_text(*tokenizer->eos());
  return out;
}

int run_chat_template(const ChatTemplateArgs& args) {
  auto loaded = load_template(args);
  if (!loaded) return fail(loaded.error().message);
  auto compiled = engine::jinja::Template::compile(loaded->source);
  if (!compiled) return fail("the chat template: " + compiled.error().message);
  const auto status = for_each_jsonl_object(args.jsonl, [&](const json::bj::object& conversation, int) -> Status {
    // Every field is a variable of the template, as the client's data (its text is client text).
    std::vector<std::pair<std::string, engine::jinja::Value>> variables;
    variables.emplace_back("bos_token", engine::jinja::Value::literal(loaded->bos_token));
    variables.emplace_back("eos_token", engine::jinja::Value::literal(loaded->eos_token));
    for (const auto& [key, value] : conversation) {
      variables.emplace_back(std::string(key), engine::jinja::Value::from_client_json(value));
    }
    auto rendered = compiled->render(variables, std::time(nullptr));
    boost::json::object out;
    if (rendered) {
      out["text"] = rendered->bytes();
    } else {
      out["error"] = rendered.error().message;
    }
    std::printf("%s\n", json::dump(out).c_str());
    return {};
  });
  return status ? 0 : fail(status.error().message);
}

}  // namespace

void register_chat_template(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<ChatTemplateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "chat-template",
      "Render a model's chat template over conversations: one {\"messages\": [...], ...} per line in, "
      "one {\"text\": ...} or {\"error\": ...} per line out");
  auto* model = cmd->add_option("-m,--model", args->model, "GGUF file whose tokenizer.chat_template to render")
                    ->check(CLI::ExistingFile);
  auto* file = cmd->add_option("--template", args->template_file, "a Jinja chat template in a text file instead")
                   ->check(CLI::ExistingFile)
                   ->excludes(model);
  model->excludes(file);
  cmd->add_option("--jsonl", args->jsonl,
                  "conversations, one JSON object per line; its fields (messages, tools, add_generation_prompt, "
                  "...) are the template's variables")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--bos-token", args->bos_token, "what bos_token prints (with --template; a model's own otherwise)");
  cmd->add_option("--eos-token", args->eos_token, "what eos_token prints (with --template; a model's own otherwise)");
  cmd->callback([runner, args, model, file] {
    if (model->count() == 0 && file->count() == 0) throw CLI::RequiredError("--model or --template");
    *runner = [args] { return run_chat_template(*args); };
  });
}

}  // namespace darkbloom::apps
