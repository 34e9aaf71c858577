// POST /v1/chat/completions and /v1/completions on the coordinator: parse, authenticate,
// reserve, route (or queue), seal to the chosen provider, dispatch, and relay its sealed chunks
// to the client as SSE or as one JSON response. Up to max_attempts tries on different providers,
// each under a new request id, until the first chunk commits the request to one provider.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "coordinator/coordinator.h"
#include "coordinator/timing.h"

namespace darkbloom::coordinator {

class ProviderGateway;

class CompletionService {
 public:
  CompletionService(http::net::any_io_executor executor, const CoordinatorConfig& config, ApiKeys& keys, Router& router,
                    ProviderGateway& gateway, Ledger& ledger);

  http::awaitable<void> handle(http::Exchange& exchange, proto::Endpoint endpoint);

 public:
  struct Request;

 private:
  struct AttemptResult;

  // Charges what the provider reports (or, after a failure, the chunks delivered) and pays it.
  void settle(Request& request, const ProviderSession& provider, int64_t prompt_tokens, int64_t completion_tokens);

  http::awaitable<void> relay(http::Exchange& exchange, Request& request, std::shared_ptr<ProviderSession> provider,
                              std::shared_ptr<Attempt> attempt, ProviderEvent first_event);
  std::vector<std::pair<std::string, std::string>> response_headers(const Request& request,
                                                                    const ProviderSession& provider) const;
  // A new attempt for `provider`: its session key pair and the request sealed with it.
  struct SealedAttempt {
    crypto::KeyPair session_keys;
    std::shared_ptr<Attempt> attempt;
    std::vector<uint8_t> ciphertext;
  };
  Result<SealedAttempt> seal_attempt(const Request& request, const ProviderSession& provider) const;

  http::net::any_io_executor executor_;
  const CoordinatorConfig& config_;
  ApiKeys& keys_;
  Router& router_;
  ProviderGateway& gateway_;
  Ledger& ledger_;
};

}  // namespace darkbloom::coordinator
