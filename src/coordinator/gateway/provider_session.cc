#include "coordinator/gateway/provider_session.h"

namespace darkbloom::coordinator {

bool ProviderSession::serves(const std::string& model) const {
  for (const auto& m : info_.models) {
    if (m.id == model) return true;
  }
  return false;
}

int64_t ProviderSession::queued_tokens() const {
  int64_t total = 0;
  for (const auto& [id, attempt] : in_flight_) total += attempt->max_tokens;
  return total;
}

}  // namespace darkbloom::coordinator
