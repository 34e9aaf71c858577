#include "coordinator/billing/usage_bounds.h"

#include <algorithm>

namespace darkbloom::coordinator {

UsageBound usage_bound(int64_t body_bytes, int64_t messages, int64_t output_bytes, int64_t choices) {
  UsageBound bound;
  bound.choices = std::max<int64_t>(1, choices);
  bound.prompt_tokens = std::max<int64_t>(0, body_bytes) + std::max<int64_t>(0, messages) * kTemplateTokensPerMessage +
                        kTemplateTokensPerRequest;
  bound.completion_tokens = std::max<int64_t>(0, output_bytes) + bound.choices;  // + each end-of-sequence token
  return bound;
}

BilledUsage bill_usage(int64_t reported_prompt_tokens, int64_t reported_completion_tokens, const UsageBound& bound) {
  BilledUsage billed;
  billed.prompt_tokens = std::clamp<int64_t>(reported_prompt_tokens, 0, bound.prompt_tokens);
  billed.completion_tokens = std::clamp<int64_t>(reported_completion_tokens, 0, bound.completion_tokens);
  billed.beyond_honest = reported_prompt_tokens > honest_ceiling(bound.prompt_tokens) ||
                         reported_completion_tokens > honest_ceiling(bound.completion_tokens, bound.choices);
  return billed;
}

}  // namespace darkbloom::coordinator
