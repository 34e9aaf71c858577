// How far a provider's reported usage is believed (docs/billing.md, "What is billed"). The
// coordinator cannot count a provider's tokens, but it sees the bytes: every generated token but
// the last (an end-of-sequence token) is at least one byte of relayed text, and every prompt token
// is at least one byte of the request body, apart from what a chat template adds per message.
// Reports above that bound are billed at the bound; reports above what any honest provider can
// send are a provider lying about its work.
#pragma once

#include <cstdint>

namespace darkbloom::coordinator {

// Prompt tokens a chat template may add per message (role markers, separators) and per request
// (a default system prompt, the generation prompt) beyond the bytes of the body.
inline constexpr int64_t kTemplateTokensPerMessage = 16;
inline constexpr int64_t kTemplateTokensPerRequest = 64;
// How far past the bound an honest provider can go: tokens of a stop string it held back (a stop
// string is at most 256 bytes, so at most 256 tokens), tokens that render as no text (control
// tokens in mid-answer) and bytes of an unfinished character. Twice the bound plus this much is
// more than any of those; beyond it the provider is distrusted.
inline constexpr int64_t kHonestSlackTokens = 256 + 16;

struct UsageBound {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t choices = 1;  // each choice may end with its own end token and hold back its own stop string
};

// The most a request can have used: `body_bytes` of request body with `messages` chat messages
// (0 for a completions prompt), and `output_bytes` of text relayed to the client over `choices`
// answers (n).
UsageBound usage_bound(int64_t body_bytes, int64_t messages, int64_t output_bytes, int64_t choices = 1);

struct BilledUsage {
  int64_t prompt_tokens = 0;      // min(reported, bound)
  int64_t completion_tokens = 0;  // min(reported, bound)
  bool beyond_honest = false;     // a report exceeds what an honest provider ever sends
};

BilledUsage bill_usage(int64_t reported_prompt_tokens, int64_t reported_completion_tokens, const UsageBound& bound);

// The most an honest provider reports against a bound of `bound` tokens over `choices` answers.
constexpr int64_t honest_ceiling(int64_t bound, int64_t choices = 1) {
  return 2 * bound + kHonestSlackTokens * choices;
}

}  // namespace darkbloom::coordinator
