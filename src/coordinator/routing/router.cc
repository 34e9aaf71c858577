#include "coordinator/routing/router.h"

#include <algorithm>
#include <limits>

namespace darkbloom::coordinator {
namespace {

constexpr double kMemoryPressurePenaltyMs = 4000;  // a provider close to swapping is slow to start
constexpr double kNearTieMs = 50;                  // below this, expected times count as equal
constexpr double kNearTieFraction = 0.1;
constexpr double kMaxClaimedDecodeRate = 500;  // tokens/s: a claim is believed only up to this
constexpr double kUnknownDecodeRate = 10;      // tokens/s for a provider that claims nothing

}  // namespace

Router::Router(net::Executor executor, net::Clock& clock, RandomSource& random, ProviderRegistry& registry,
               RoutingOptions options)
    : executor_(std::move(executor)), clock_(clock), random_(random), registry_(registry), options_(options) {}

double Router::claimed_decode_rate(const ProviderSession& session) {
  return session.info().decode_tps > 0 ? std::min(session.info().decode_tps, kMaxClaimedDecodeRate)
                                       : kUnknownDecodeRate;
}

double Router::expected_ms(const ProviderSession& session, int max_tokens) const {
  double rate = session.observed_decode_tps();
  if (rate <= 0) rate = claimed_decode_rate(session);
  double ms = static_cast<double>(session.queued_tokens() + max_tokens) / rate * 1000.0;
  if (session.heartbeat().memory_pressure > 0.8) ms += kMemoryPressurePenaltyMs;
  return ms;
}

std::shared_ptr<ProviderSession> Router::pick(const std::string& model, int max_tokens,
                                              const std::set<std::string>& excluded, const ProviderNeeds& needs) {
  std::vector<std::pair<double, std::shared_ptr<ProviderSession>>> candidates;
  for (auto& session : registry_.serving(model, options_.min_trust)) {
    if (excluded.count(session->id()) || !session->has_capacity(needs.sequences) || !session->is_open() ||
        !needs.met_by(*session)) {
      continue;
    }
    candidates.emplace_back(expected_ms(*session, max_tokens), session);
  }
  if (candidates.empty()) return nullptr;
  double best = std::numeric_limits<double>::max();
  for (const auto& [ms, session] : candidates) best = std::min(best, ms);
  const double tie = std::max(kNearTieMs, best * kNearTieFraction);
  std::vector<std::shared_ptr<ProviderSession>> near;
  size_t fewest = std::numeric_limits<size_t>::max();
  for (const auto& [ms, session] : candidates) {
    if (ms > best + tie) continue;
    if (session->in_flight() < fewest) {
      fewest = session->in_flight();
      near.clear();
    }
    if (session->in_flight() == fewest) near.push_back(session);
  }
  return near[random_.below(near.size())];
}

bool Router::model_known(const std::string& model) const {
  return !registry_.trusted(model, options_.min_trust).empty();
}

bool Router::has_candidates(const std::string& model, const std::set<std::string>& excluded,
                            const ProviderNeeds& needs) const {
  for (const auto& session : registry_.trusted(model, options_.min_trust)) {
    if (!excluded.count(session->id()) && needs.met_by(*session)) return true;
  }
  return false;
}

bool Router::has_free_provider(const std::string& model, const std::set<std::string>& excluded) const {
  for (const auto& session : registry_.serving(model, options_.min_trust)) {
    if (!excluded.count(session->id()) && session->has_capacity() && session->is_open()) return true;
  }
  return false;
}

size_t Router::largest_frame(const std::string& model) const {
  size_t largest = 0;
  for (const auto& session : registry_.trusted(model, options_.min_trust)) {
    largest = std::max(largest, session->max_frame_bytes());
  }
  return largest;
}

std::shared_ptr<Router::Waiter> Router::make_waiter() {
  return std::make_shared<Waiter>(clock_, executor_, clock_.now() + options_.queue_wait);
}

net::awaitable<QueueOutcome> Router::wait_for_capacity(const std::string& model, std::shared_ptr<Waiter> waiter,
                                                       bool front) {
  auto& queue = queues_[model];
  if (!front && queue.size() >= options_.queue_depth) co_return QueueOutcome::full;
  if (clock_.now() >= waiter->deadline) co_return QueueOutcome::expired;
  waiter->woken = false;
  if (front) {
    queue.push_front(waiter);
  } else {
    queue.push_back(waiter);
  }
  waiter->timer.expires_at(waiter->deadline);
  co_await waiter->timer.wait();
  // The waiter leaves the queue only now, so arrivals see it (and queue behind it) until it has
  // had its turn at the freed capacity.
  auto& same = queues_[model];
  same.erase(std::remove(same.begin(), same.end(), waiter), same.end());
  if (waiter->abandoned) co_return QueueOutcome::abandoned;
  if (waiter->woken) co_return QueueOutcome::ready;
  capacity_changed(model);  // pass a wake-up that may have been meant for us to the next in line
  co_return QueueOutcome::expired;
}

void Router::abandon(const std::shared_ptr<Waiter>& waiter) {
  waiter->abandoned = true;
  waiter->timer.cancel();
}

void Router::pass_wake_up(const std::string& model, Waiter& passing) {
  const uint64_t generation = capacity_generation_[model];
  if (passing.passed_generation == generation) return;  // passed this event on once already
  passing.passed_generation = generation;
  auto it = queues_.find(model);
  if (it == queues_.end()) return;
  for (auto& waiter : it->second) {
    if (!waiter->woken && !waiter->abandoned && waiter->passed_generation != generation) {
      waiter->woken = true;
      waiter->timer.cancel();
      return;
    }
  }
}

void Router::capacity_changed(const std::string& model, int slots) {
  capacity_generation_[model] += 1;
  auto it = queues_.find(model);
  if (it == queues_.end()) return;
  for (auto& waiter : it->second) {
    if (slots <= 0) return;
    if (!waiter->woken && !waiter->abandoned) {
      waiter->woken = true;
      waiter->timer.cancel();
      --slots;
    }
  }
}

void Router::wake_all(const std::string& model) {
  auto it = queues_.find(model);
  if (it != queues_.end()) capacity_changed(model, static_cast<int>(it->second.size()));
}

size_t Router::queued(const std::string& model) const {
  const auto it = queues_.find(model);
  return it == queues_.end() ? 0 : it->second.size();
}

size_t Router::queued_total() const {
  size_t total = 0;
  for (const auto& [model, queue] : queues_) total += queue.size();
  return total;
}

}  // namespace darkbloom::coordinator
