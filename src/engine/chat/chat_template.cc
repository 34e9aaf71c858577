#include "engine/chat/chat_template.h"

namespace darkbloom::engine {
namespace {

// A prompt as alternating pieces: markers (parsed for control tokens) and contents (not).
struct Piece {
  std::string text;
  bool marker;
};

std::string trim(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const size_t last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

// "developer" is OpenAI's newer name for the system role; the open formats know "system".
std::string_view model_role(std::string_view role) {
  return role == "developer" ? "system" : role;
}

std::vector<Piece> pieces(ChatFormat format, std::span<const ChatTurn> turns) {
  std::vector<Piece> out;
  switch (format) {
    case ChatFormat::chatml:
      for (const auto& turn : turns) {
        out.push_back({"<|im_start|>" + std::string(model_role(turn.role)) + "\n", true});
        out.push_back({turn.content, false});
        out.push_back({"<|im_end|>\n", true});
      }
      out.push_back({"<|im_start|>assistant\n", true});
      break;
    case ChatFormat::llama3:
      out.push_back({"<|begin_of_text|>", true});
      for (const auto& turn : turns) {
        out.push_back({"<|start_header_id|>" + std::string(model_role(turn.role)) + "<|end_header_id|>\n\n", true});
        out.push_back({trim(turn.content), false});
        out.push_back({"<|eot_id|>", true});
      }
      out.push_back({"<|start_header_id|>assistant<|end_header_id|>\n\n", true});
      break;
    case ChatFormat::plain:
      for (const auto& turn : turns) {
        out.push_back({std::string(model_role(turn.role)) + ": ", true});
        out.push_back({turn.content, false});
        out.push_back({"\n", true});
      }
      out.push_back({"assistant:", true});
      break;
  }
  return out;
}

}  // namespace

ChatFormat detect_chat_format(std::string_view chat_template) {
  if (chat_template.find("<|start_header_id|>") != std::string_view::npos) return ChatFormat::llama3;
  if (chat_template.find("<|im_start|>") != std::string_view::npos) return ChatFormat::chatml;
  return ChatFormat::plain;
}

std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, ChatFormat format, std::span<const ChatTurn> turns) {
  std::vector<int32_t> ids;
  // The Llama 3 format spells its BOS; the others get BOS where the vocabulary asks for it.
  if (format != ChatFormat::llama3 && tokenizer.adds_bos() && tokenizer.bos()) ids.push_back(*tokenizer.bos());
  EncodeOptions marker_options;
  marker_options.add_special = false;
  marker_options.parse_special = true;
  EncodeOptions content_options;
  content_options.add_special = false;
  content_options.parse_special = false;
  for (const Piece& piece : pieces(format, turns)) {
    if (piece.text.empty()) continue;
    const auto piece_ids = tokenizer.encode(piece.text, piece.marker ? marker_options : content_options);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  return ids;
}

std::string render_chat(ChatFormat format, std::span<const ChatTurn> turns) {
  std::string text;
  for (const Piece& piece : pieces(format, turns)) text += piece.text;
  return text;
}

}  // namespace darkbloom::engine
