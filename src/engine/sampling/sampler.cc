#include "engine/sampling/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_set>

namespace darkbloom::engine {
namespace {

// Sorting the whole vocabulary for top-p is slow; most of the mass sits in the first few
// hundred candidates, so sort those first and fall back to a full sort only when needed.
constexpr size_t kTopPFirstPass = 1024;

Error invalid(const char* field, const std::string& rule) {
  return make_error(Errc::invalid_argument, fmt::format("{} {}", field, rule));
}

}  // namespace

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f && temperature <= 100.0f)) return invalid("temperature", "must be between 0 and 100");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid("top_p", "must be in (0, 1]");
  if (top_k < 0) return invalid("top_k", "must be 0 (off) or positive");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid("min_p", "must be between 0 and 1");
  if (!(repetition_penalty > 0.0f && repetition_penalty <= 10.0f))
    return invalid("repetition_penalty", "must be in (0, 10]");
  if (repetition_window < 0) return invalid("repetition_window", "must not be negative");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return invalid("presence_penalty", "must be between -2 and 2");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return invalid("frequency_penalty", "must be between -2 and 2");
  return {};
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt)
    : params_(params),
      seed_(params.seed ? *params.seed : std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}()),
      rng_(seed_) {
  const size_t keep = std::min(prompt.size(), static_cast<size_t>(params_.repetition_window));
  recent_.assign(prompt.end() - static_cast<std::ptrdiff_t>(keep), prompt.end());
}

void Sampler::accept(int32_t token) {
  recent_.push_back(token);
  if (recent_.size() > static_cast<size_t>(params_.repetition_window)) recent_.erase(recent_.begin());
  ++output_counts_[token];
}

double Sampler::uniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::apply_penalties(std::span<float> logits) const {
  if (params_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
    for (int32_t token : seen) {
      float& logit = logits[static_cast<size_t>(token)];
      // Dividing a positive logit and multiplying a negative one both make the token less likely.
      logit = logit > 0 ? logit / params_.repetition_penalty : logit * params_.repetition_penalty;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [token, count] : output_counts_) {
      logits[static_cast<size_t>(token)] -=
          params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
  }
}

int32_t Sampler::sample(std::span<float> logits, SampledToken* info, int top) {
  // A model that produced NaN (broken weights, overflow) must end the request, not feed NaN
  // into comparisons that sorting and filtering rely on.
  float best = -INFINITY;
  for (float& logit : logits) {
    if (std::isnan(logit)) logit = -INFINITY;
    best = std::max(best, logit);
  }
  if (!std::isfinite(best)) throw std::runtime_error("the model produced no finite logits");
  apply_penalties(logits);
  if (info == nullptr) return choose(logits);
  // The distribution sampled from, before temperature and truncation: log-softmax of the logits.
  float max_logit = -INFINITY;
  for (float logit : logits) max_logit = std::max(max_logit, logit);
  double total = 0.0;
  for (float logit : logits) total += std::exp(static_cast<double>(logit - max_logit));
  const float log_total = max_logit + static_cast<float>(std::log(total));
  info->top.clear();
  if (top > 0) {
    // The `top` largest logits, ties to the lower id: a small heap with the weakest on top.
    auto stronger = [](const TokenLogprob& a, const TokenLogprob& b) {
      return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
    };
    std::vector<TokenLogprob>& heap = info->top;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == -INFINITY) continue;  // masked out: not a possible token (and -inf is not JSON)
      const TokenLogprob candidate{static_cast<int32_t>(i), logits[i]};
      if (heap.size() < static_cast<size_t>(top)) {
        heap.push_back(candidate);
        std::push_heap(heap.begin(), heap.end(), stronger);
      } else if (stronger(candidate, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), stronger);
        heap.back() = candidate;
        std::push_heap(heap.begin(), heap.end(), stronger);
      }
    }
    std::sort_heap(heap.begin(), heap.end(), stronger);
    for (TokenLogprob& entry : heap) entry.logprob -= log_total;
  }
  const int32_t token = choose(logits);
  info->token = token;
  info->logprob = logits[static_cast<size_t>(token)] - log_total;
  return token;
}

// NOLINTNEXTLINE(readability-function-size): a kernel: the sampling chain in its documented order, one pass per step.
int32_t Sampler::choose(std::span<float> logits) {
  if (params_.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

  candidates_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = candidates_.size();
  size_t sorted = 0;  // candidates_[0, sorted) are in descending order
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    n = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n), candidates_.end(),
                      by_logit);
    sorted = n;
  }

  // Softmax at temperature over the n candidates.
  float max_logit = -INFINITY;
  for (size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, candidates_[i].first);
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float p = std::exp((candidates_[i].first - max_logit) / params_.temperature);
    candidates_[i].first = p;
    total += p;
  }
  // Probabilities are monotone in logits, so sorted order is preserved.

  if (params_.top_p < 1.0f) {
    auto keep_top_p = [&](size_t limit) -> bool {
      double cumulative = 0.0;
      for (size_t i = 0; i < limit; ++i) {
        cumulative += candidates_[i].first / total;
        if (cumulative >= params_.top_p) {
          n = i + 1;
          return true;
        }
      }
      return false;
    };
    if (sorted < n) {
      const size_t first = std::min(n, kTopPFirstPass);
      std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(first),
                        candidates_.begin() + static_cast<std::ptrdiff_t>(n), by_logit);
      sorted = first;
      if (!keep_top_p(first) && first < n) {
        std::sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n), by_logit);
        sorted = n;
        keep_top_p(n);
      }
    } else {
      keep_top_p(n);
    }
  }
  if (params_.min_p > 0.0f) {
    float max_p = 0.0f;
    for (size_t i = 0; i < n; ++i) max_p = std::max(max_p, candidates_[i].first);
    const float threshold = params_.min_p * max_p;
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      if (candidates_[i].first >= threshold) candidates_[kept++] = candidates_[i];
    }
    n = std::max<size_t>(kept, 1);  // the most likely candidate always survives
  }

  double remaining = 0.0;
  for (size_t i = 0; i < n; ++i) remaining += candidates_[i].first;
  double target = uniform() * remaining;
  for (size_t i = 0; i < n; ++i) {
    target -= candidates_[i].first;
    if (target < 0.0) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

}  // namespace darkbloom::engine
