#include "apps/coordinator/flags.h"

#include <chrono>

#include <fmt/format.h>

#include "apps/common/secrets.h"
#include "http/server.h"
#include "http/tls.h"
#include "proto/provider_messages.h"

namespace darkbloom::apps {
namespace {

using coordinator::CoordinatorConfig;

// A duration flag in (fractional) seconds, bound to `field`, whose current value is the default.
template <class Duration>
CLI::Option* add_seconds(CLI::App& app, const std::string& name, Duration& field, const std::string& description,
                         double min, double max) {
  const double seconds = std::chrono::duration<double>(field).count();
  return app
      .add_option_function<double>(
          name,
          [&field](double value) {
            field = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(value));
          },
          description)
      ->check(CLI::Range(min, max))
      ->default_val(seconds);
}

CLI::Validator coordinator_id_check() {
  return CLI::Validator(
      [](const std::string& id) {
        const bool ok = !id.empty() && id.size() <= 32 &&
                        id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
        return ok ? std::string() : std::string("1 to 32 of a-z, 0-9 and '-'");
      },
      "ID");
}

void add_store_flags(CLI::App& app, CoordinatorConfig& config, CoordinatorFlags& flags) {
  app.add_option("--data-dir", config.data_dir, "directory for the database (coordinator.db)")->capture_default_str();
  app.add_option("--admin-token-file", flags.admin_token_file,
                 "file holding the token for /v1/admin/* (at least 32 characters, mode 0600; none disables the "
                 "admin API)");
  app.add_option("--admin-token", config.admin_token,
                 "the admin token itself: prefer --admin-token-file or DARKBLOOM_ADMIN_TOKEN, a flag shows in ps");
  app.add_option("--database-url-file", flags.database_url_file,
                 "file holding the PostgreSQL URL (mode 0600), for a URL with a password");
  app.add_option("--database-url", config.database_url,
                 "PostgreSQL URL (postgresql://USER@HOST:PORT/DB) shared by several coordinators; empty = SQLite "
                 "in --data-dir");
  app.add_option("--hold-requests", config.billing.hold_requests,
                 "worst cases one escrow hold covers: a database transaction per that many reservations")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--coordinator-id", config.billing.coordinator_id,
                 "name of this coordinator's escrow accounts; give each coordinator on one database its own")
      ->check(coordinator_id_check())
      ->capture_default_str();
}

void add_tls_flags(CLI::App& app, CoordinatorConfig& config) {
  app.add_option("--tls-cert", config.tls_cert_file,
                 "PEM certificate chain: serve HTTPS and WSS (reloaded with the key on SIGHUP)");
  app.add_option("--tls-key", config.tls_key_file, "PEM private key of --tls-cert (mode 0600 or stricter)");
  app.add_flag("--allow-plaintext", config.allow_plaintext,
               "serve plain HTTP on a non-loopback --listen without TLS (only behind a TLS proxy), and "
               "--metrics-listen off loopback");
}

void add_trust_flags(CLI::App& app, CoordinatorConfig& config, CoordinatorFlags& flags) {
  app.add_option("--min-trust", flags.min_trust,
                 "lowest provider trust level that receives requests (none = open mode: unattested providers too)")
      ->check(CLI::IsMember({"none", "self_signed", "hardware"}))
      ->capture_default_str();
  add_seconds(app, "--challenge-interval", config.challenge_interval,
              "seconds between attestation challenges to a provider", 0.1, 86400.0);
  add_seconds(app, "--challenge-timeout", config.challenge_timeout, "seconds a provider has to answer a challenge", 0.1,
              3600.0);
  add_seconds(app, "--challenge-grace", config.challenge_grace,
              "seconds beyond the interval a passed challenge keeps a provider routable", 0.0, 86400.0);
  app.add_option("--tpm-ek-ca", config.tpm_ek_ca,
                 "PEM CA certificates (roots and intermediates of the TPM makers) an EK certificate must chain to "
                 "for the hardware trust level (repeat for several files; needs --tpm-release-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tpm-release-key", config.tpm_release_key,
                 "PEM P-256 release public key: a hardware-level key must be usable only under its PolicyAuthorize")
      ->check(CLI::ExistingFile);
  app.add_option("--model-challenge-chunks", config.model_challenge_chunks,
                 "1 MiB chunks of a model file each challenge asks the provider to prove (0: none)")
      ->check(CLI::Range(size_t{0}, proto::kMaxChallengeChunks))
      ->capture_default_str();
  add_seconds(app, "--model-challenge-interval", config.model_challenge_interval,
              "seconds between model-chunk proofs asked of a provider (a model not yet proven is asked at once)", 1.0,
              86400.0);
  add_seconds(app, "--attestation-max-skew", config.attestation_max_skew,
              "seconds an attestation's timestamp may be from the coordinator's clock", 1.0, 86400.0);
}

void add_routing_flags(CLI::App& app, CoordinatorConfig& config) {
  app.add_option("--queue-depth", config.queue_depth, "requests that may wait per model when all providers are busy")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  add_seconds(app, "--queue-wait", config.queue_wait, "seconds a request may wait in the queue before a 429", 0.0,
              3600.0);
  app.add_option("--max-attempts", config.max_attempts, "providers tried per request before giving up")
      ->check(CLI::Range(1, 10))
      ->capture_default_str();
  add_seconds(app, "--first-chunk-timeout", config.first_chunk_timeout, "seconds a provider has to start answering",
              0.1, 3600.0);
  add_seconds(app, "--inference-timeout", config.inference_timeout,
              "seconds a streaming answer may fall silent before it fails", 0.1, 86400.0);
  add_seconds(app, "--heartbeat-timeout", config.heartbeat_timeout,
              "seconds of silence after which a provider is evicted", 0.5, 86400.0);
  app.add_option("--default-max-tokens", config.default_max_tokens, "max_tokens injected when a request sets none")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-body-bytes", config.limits.body_bytes, "largest request body accepted (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option(
         "--rate-limit", config.rate_limits.requests_per_second,
         "requests per second per account by default (0 = unlimited; PUT /v1/admin/limits sets an account's own)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--rate-burst", config.rate_limits.burst,
                 "requests an account may send at once before --rate-limit applies")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--offload-threads", config.offload_threads,
                 "threads that parse and seal request bodies of 64 KiB and more off the network thread (0 = on "
                 "the network thread, which then stalls every other client while it works)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--max-admin-failures", config.max_admin_failures,
                 "failed admin-token attempts per address before its admin requests wait (0 = no throttle; "
                 "behind a proxy every client shares one address)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--max-concurrent-per-key", config.rate_limits.max_concurrent,
                 "completion requests in flight per account by default (0 = unlimited)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--max-connections", config.limits.max_connections,
                 "HTTP and WebSocket connections at once (also kept below the open-file limit)")
      ->check(CLI::Range(16, 1 << 24))
      ->capture_default_str();
  app.add_option("--max-connections-per-address", config.limits.max_connections_per_address,
                 "connections at once from one IP address or IPv6 /64 (429 beyond)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
}

void add_registry_flags(CLI::App& app, CoordinatorConfig& config) {
  add_seconds(app, "--register-timeout", config.register_timeout,
              "seconds a new provider connection has to send a valid register", 0.1, 3600.0);
  add_seconds(app, "--unroutable-timeout", config.unroutable_timeout,
              "seconds a registered provider below --min-trust stays connected (not in open mode)", 1.0, 86400.0);
  app.add_option("--max-untrusted-providers", config.max_untrusted_providers,
                 "provider connections at once that serve nothing yet (not registered, or below --min-trust)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-providers-per-address", config.max_providers_per_address,
                 "provider connections at once from one IP address or IPv6 /64")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-models-per-provider", config.max_models_per_provider,
                 "models one provider may register (the protocol allows 64)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
}

}  // namespace

void add_coordinator_flags(CLI::App& app, CoordinatorConfig& config, CoordinatorFlags& flags) {
  app.add_option("--listen", flags.listen, "address to serve on, HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--metrics-listen", flags.metrics_listen,
                 "also serve GET /metrics, without a token, in plain HTTP on HOST:PORT (loopback unless "
                 "--allow-plaintext); without it /metrics on --listen needs the admin token");
  add_tls_flags(app, config);
  add_store_flags(app, config, flags);
  add_trust_flags(app, config, flags);
  add_routing_flags(app, config);
  add_registry_flags(app, config);
  app.add_option("--config", flags.config_file, "TOML file with settings (keys as option names, '-' → '_')")
      ->check(CLI::ExistingFile);
  app.add_option("--log-level", flags.log_level, "debug, info, warn, error or off")->capture_default_str();
}

Status finish_coordinator_config(const CoordinatorFlags& flags, CoordinatorConfig& config) {
  auto address = http::parse_host_port(flags.listen);
  if (!address) return address.error().with_context("--listen");
  config.listen_host = address->first;
  config.listen_port = address->second;
  if (auto loaded = load_secret("--admin-token", config.admin_token, flags.admin_token_file); !loaded) return loaded;
  if (auto loaded = load_secret("--database-url", config.database_url, flags.database_url_file); !loaded) {
    return loaded;
  }
  if (!config.admin_token.empty() && config.admin_token.size() < kMinAdminTokenLength) {
    return make_error(Errc::invalid_argument,
                      fmt::format("the admin token has {} characters; it needs at least {} (make one with `openssl "
                                  "rand -hex 32`)",
                                  config.admin_token.size(), kMinAdminTokenLength));
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return make_error(Errc::invalid_argument, "--tls-cert and --tls-key go together: give both, or neither");
  }
  if (!config.tls_key_file.empty()) {
    // Group-readable is allowed: Debian's ssl-cert group convention.
    if (auto private_key = check_private_file_mode(config.tls_key_file, true); !private_key) {
      return private_key.error().with_context("--tls-key");
    }
  }
  if (config.tls_cert_file.empty() && !config.allow_plaintext && !http::is_loopback_host(config.listen_host)) {
    return make_error(Errc::invalid_argument,
                      fmt::format("--listen {} is not a loopback address: serve TLS there with --tls-cert and "
                                  "--tls-key, or give --allow-plaintext when a TLS proxy stands in front",
                                  flags.listen));
  }
  if (!flags.metrics_listen.empty()) {
    auto metrics = http::parse_host_port(flags.metrics_listen);
    if (!metrics) return metrics.error().with_context("--metrics-listen");
    if (!config.allow_plaintext && !http::is_loopback_host(metrics->first)) {
      return make_error(Errc::invalid_argument,
                        fmt::format("--metrics-listen {} is not a loopback address: metrics are served without a "
                                    "token or TLS there; give --allow-plaintext to do it anyway",
                                    flags.metrics_listen));
    }
    config.metrics_listen_host = metrics->first;
    config.metrics_listen_port = metrics->second;
  }
  warn_if_typed("--admin-token", flags.admin_token_typed);
  warn_if_typed("--database-url", flags.database_url_typed);
  config.min_trust = *coordinator::parse_trust_level(flags.min_trust);
  const double asked = static_cast<double>(config.model_challenge_chunks) /
                       std::chrono::duration<double>(config.model_challenge_interval).count();
  if (asked > proto::kProofChunksPerSecond) {
    return make_error(Errc::invalid_argument,
                      fmt::format("--model-challenge-chunks {} every --model-challenge-interval {:.1f} s asks for "
                                  "more than providers prove (one 1 MiB chunk per {:.0f} s); lengthen the interval",
                                  config.model_challenge_chunks,
                                  std::chrono::duration<double>(config.model_challenge_interval).count(),
                                  1 / proto::kProofChunksPerSecond));
  }
  return {};
}

}  // namespace darkbloom::apps
