#include "coordinator/registry/provider_registry.h"

#include <algorithm>

#include "http/server.h"

namespace darkbloom::coordinator {

std::shared_ptr<ProviderSession> ProviderRegistry::add(std::shared_ptr<ProviderLink> link) {
  auto session = std::make_shared<ProviderSession>(random_.id("prov_", 6), std::move(link), clock_.now());
  sessions_[session->id()] = session;
  return session;
}

void ProviderRegistry::remove(const std::string& id, bool was_serving) {
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  const auto now = clock_.now();
  if (was_serving) {
    for (const auto& model : it->second->info().models) last_served_[model.id] = now;
  }
  sessions_.erase(it);
  if (last_served_.size() > kMaxRememberedModels) {
    std::erase_if(last_served_, [&](const auto& entry) { return now - entry.second > kRecentlyServed; });
  }
  while (last_served_.size() > kMaxRememberedModels) {  // the oldest go first
    auto oldest = std::min_element(last_served_.begin(), last_served_.end(),
                                   [](const auto& a, const auto& b) { return a.second < b.second; });
    last_served_.erase(oldest);
  }
}

bool ProviderRegistry::served_recently(const std::string& model) const {
  const auto it = last_served_.find(model);
  return it != last_served_.end() && clock_.now() - it->second <= kRecentlyServed;
}

std::shared_ptr<ProviderSession> ProviderRegistry::find(const std::string& id) const {
  const auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::serving(const std::string& model,
                                                                        TrustLevel min_trust) const {
  const auto now = clock_.now();
  std::vector<std::shared_ptr<ProviderSession>> out;
  for (const auto& [id, session] : sessions_) {
    if (session->active() && session->routable(min_trust, now) && session->serves(model) && session->proven(model)) {
      out.push_back(session);
    }
  }
  return out;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::trusted(const std::string& model,
                                                                        TrustLevel min_trust) const {
  std::vector<std::shared_ptr<ProviderSession>> out;
  for (const auto& [id, session] : sessions_) {
    if (session->active() && session->trust() >= min_trust && session->serves(model)) out.push_back(session);
  }
  return out;
}

bool ProviderRegistry::any_serving(const std::string& model) const {
  for (const auto& [id, session] : sessions_) {
    if (session->active() && session->serves(model)) return true;
  }
  return false;
}

size_t ProviderRegistry::registered_count() const {
  size_t n = 0;
  for (const auto& [id, session] : sessions_) n += session->active() ? 1 : 0;
  return n;
}

size_t ProviderRegistry::routable_count(TrustLevel min_trust) const {
  const auto now = clock_.now();
  size_t n = 0;
  for (const auto& [id, session] : sessions_) n += session->active() && session->routable(min_trust, now) ? 1 : 0;
  return n;
}

size_t ProviderRegistry::idle_count(TrustLevel min_trust) const {
  const auto now = clock_.now();
  size_t n = 0;
  for (const auto& [id, session] : sessions_) {
    n += session->active() && (session->routable(min_trust, now) || session->draining()) ? 0 : 1;
  }
  return n;
}

size_t ProviderRegistry::count_from(std::string_view address) const {
  size_t n = 0;
  for (const auto& [id, session] : sessions_) n += http::address_key(session->remote()) == address ? 1 : 0;
  return n;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::all() const {
  std::vector<std::shared_ptr<ProviderSession>> out;
  out.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) out.push_back(session);
  return out;
}

}  // namespace darkbloom::coordinator
