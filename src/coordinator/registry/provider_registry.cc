#include "coordinator/registry/provider_registry.h"

#include "base/encoding.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {

const char* trust_level_name(TrustLevel level) {
  switch (level) {
    case TrustLevel::none:
      return "none";
    case TrustLevel::self_signed:
      return "self_signed";
    case TrustLevel::hardware:
      return "hardware";
  }
  return "none";
}

std::optional<TrustLevel> parse_trust_level(std::string_view text) {
  if (text == "none") return TrustLevel::none;
  if (text == "self_signed") return TrustLevel::self_signed;
  if (text == "hardware") return TrustLevel::hardware;
  return std::nullopt;
}

bool ProviderSession::serves(const std::string& model) const {
  for (const auto& m : info.models) {
    if (m.id == model) return true;
  }
  return false;
}

int64_t ProviderSession::queued_tokens() const {
  int64_t total = 0;
  for (const auto& [id, attempt] : in_flight) total += attempt->max_tokens;
  return total;
}

std::shared_ptr<ProviderSession> ProviderRegistry::add(std::shared_ptr<http::WebSocket> socket) {
  auto session = std::make_shared<ProviderSession>();
  session->id = "prov_" + hex_encode(crypto::random_bytes(6));
  session->socket = std::move(socket);
  session->connected_at = session->last_seen = std::chrono::steady_clock::now();
  sessions_[session->id] = session;
  return session;
}

void ProviderRegistry::remove(const std::string& id) {
  sessions_.erase(id);
}

std::shared_ptr<ProviderSession> ProviderRegistry::find(const std::string& id) const {
  const auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::serving(const std::string& model,
                                                                        TrustLevel min_trust) const {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<ProviderSession>> out;
  for (const auto& [id, session] : sessions_) {
    if (session->registered && !session->dropped && session->routable(min_trust, now) && session->serves(model)) {
      out.push_back(session);
    }
  }
  return out;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::trusted(const std::string& model,
                                                                        TrustLevel min_trust) const {
  std::vector<std::shared_ptr<ProviderSession>> out;
  for (const auto& [id, session] : sessions_) {
    if (session->registered && !session->dropped && session->trust >= min_trust && session->serves(model)) {
      out.push_back(session);
    }
  }
  return out;
}

bool ProviderRegistry::any_serving(const std::string& model) const {
  for (const auto& [id, session] : sessions_) {
    if (session->registered && !session->dropped && session->serves(model)) return true;
  }
  return false;
}

size_t ProviderRegistry::registered_count() const {
  size_t n = 0;
  for (const auto& [id, session] : sessions_) n += session->registered && !session->dropped ? 1 : 0;
  return n;
}

std::vector<std::shared_ptr<ProviderSession>> ProviderRegistry::all() const {
  std::vector<std::shared_ptr<ProviderSession>> out;
  out.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) out.push_back(session);
  return out;
}

}  // namespace darkbloom::coordinator
