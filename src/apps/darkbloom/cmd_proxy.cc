// `darkbloom proxy`: the consumer's sealing proxy (provider/sealing_proxy.h). Wiring only.
#include <fmt/format.h>

#include <csignal>
#include <cstdio>

#include "apps/common/secrets.h"
#include "apps/darkbloom/commands.h"
#include "apps/darkbloom/coordinator_link.h"
#include "base/file.h"
#include "base/log.h"
#include "crypto/sealed_box.h"
#include "http/server.h"
#include "provider/sealing_proxy.h"

namespace darkbloom::apps {
namespace {

struct ProxyArgs {
  std::string coordinator = "http://127.0.0.1:8080";
  std::string coordinator_ca;
  std::string coordinator_pin;
  bool allow_plaintext = false;
  std::string api_key_file;
  std::string listen = "127.0.0.1:8090";
  std::string min_trust = "self_signed";
  std::vector<std::string> tpm_ek_ca;
  std::string tpm_release_key;
  std::vector<std::string> release_hashes;
  int copies = static_cast<int>(proto::kMaxBlindCopies);
  int default_max_tokens = 8192;
  double listing_max_age_s = 5;
  size_t coordinator_body_bytes = proto::kDefaultMaxBodyBytes;
};

int run_proxy(const ProxyArgs& args) {
  crypto::initialize();
  auto url = parse_coordinator_http_url(args.coordinator);
  if (!url) return fail(url.error().message);
  auto tls = coordinator_tls(
      *url, CoordinatorTlsArgs{args.coordinator, args.coordinator_ca, args.coordinator_pin, args.allow_plaintext});
  if (!tls) return fail(tls.error().message);
  auto key = read_secret_file(args.api_key_file);
  if (!key) return fail("--api-key-file: " + key.error().message);
  auto listen = http::parse_host_port(args.listen);
  if (!listen) return fail("--listen: " + listen.error().message);
  if (!http::is_loopback_host(listen->first)) {
    // The proxy spends the account's credit for whoever reaches it: it listens on this machine only.
    return fail(
        fmt::format("--listen {}: the proxy serves this machine only; give a loopback address "
                    "(127.0.0.1:PORT)",
                    args.listen));
  }
  provider::ProxyOptions options;
  options.coordinator_host = url->host;
  options.coordinator_port = url->port;
  options.tls = *tls;
  options.api_key = std::move(*key);
  options.require_hardware = args.min_trust == "hardware";
  auto hardware = attest::load_hardware_policy(args.tpm_ek_ca, args.tpm_release_key);
  if (!hardware) return fail(hardware.error().message);
  if (options.require_hardware && !*hardware) {
    return fail(
        "--min-trust hardware needs --tpm-ek-ca and --tpm-release-key: the proxy checks the EK chain and "
        "the key's policy itself");
  }
  options.hardware = std::move(*hardware);
  for (const std::string& hash : args.release_hashes) {
    if (hash.size() != 64 || hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return fail(fmt::format("--release-hash {}: give the binary's SHA-256 as 64 lowercase hex digits", hash));
    }
    options.allowed_binaries.insert(hash);
  }
  options.max_copies = static_cast<size_t>(args.copies);
  options.coordinator_body_bytes = args.coordinator_body_bytes;
  options.default_max_tokens = args.default_max_tokens;
  options.listing_max_age = std::chrono::milliseconds(static_cast<int64_t>(args.listing_max_age_s * 1000));

  net::asio::io_context io;
  provider::SealingProxy proxy(io.get_executor(), options);
  auto port = proxy.listen(listen->first, listen->second);
  if (!port) return fail("--listen: " + port.error().message);
  std::printf("darkbloom proxy: OpenAI API at http://%s:%u/v1, sealed to providers of %s (min trust %s)\n",
              listen->first.c_str(), static_cast<unsigned>(*port), args.coordinator.c_str(), args.min_trust.c_str());
  std::fflush(stdout);
  net::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const http::error_code&, int) {
    proxy.stop();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace

void register_proxy_command(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<ProxyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "proxy",
      "A local OpenAI endpoint whose requests the coordinator cannot read: each body is sealed here to\n"
      "providers whose attestations this proxy verified, and their answers are opened here");
  cmd->add_option("--coordinator", args->coordinator,
                  "coordinator URL, https://HOST:PORT (http:// only to loopback unless --allow-plaintext)")
      ->capture_default_str();
  cmd->add_option("--coordinator-ca", args->coordinator_ca,
                  "PEM file of the CA(s) that sign the coordinator's certificate (default: the system store)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--coordinator-cert-sha256", args->coordinator_pin,
                  "also require the coordinator's certificate to have this SHA-256 (hex of its DER)");
  cmd->add_flag("--allow-plaintext", args->allow_plaintext,
                "allow an http:// coordinator that is not on loopback (the API key crosses the network in clear)");
  cmd->add_option("--api-key-file", args->api_key_file,
                  "file (only you may read it) holding your API key at the coordinator")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--listen", args->listen, "loopback address and port to serve on (port 0 picks a free one)")
      ->capture_default_str();
  cmd->add_option("--min-trust", args->min_trust,
                  "seal only to providers at this level or above: self_signed (a verified attestation) or hardware "
                  "(a TPM-held key; needs --tpm-ek-ca and --tpm-release-key)")
      ->check(CLI::IsMember({"self_signed", "hardware"}))
      ->capture_default_str();
  cmd->add_option("--tpm-ek-ca", args->tpm_ek_ca, "PEM file of a TPM maker's CA the EK certificate must chain to")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tpm-release-key", args->tpm_release_key,
                  "the release public key (PEM) whose PolicyAuthorize the identity key must carry")
      ->check(CLI::ExistingFile);
  cmd->add_option("--release-hash", args->release_hashes,
                  "only providers whose attested binary has this SHA-256 (repeatable; default: any)");
  cmd->add_option("--copies", args->copies,
                  "providers each request is sealed for; the coordinator picks one, a retry the next")
      ->check(CLI::Range(1, static_cast<int>(proto::kMaxBlindCopies)))
      ->capture_default_str();
  cmd->add_option("--default-max-tokens", args->default_max_tokens,
                  "max_tokens for a request that sets none (the coordinator reserves credit for it)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--coordinator-max-body-bytes", args->coordinator_body_bytes,
                  "the coordinator's --max-body-bytes: a large request is sealed for as many providers as fit (each "
                  "copy is the body again, in base64), and refused with 413 when one does not")
      ->check(CLI::Range(size_t{4096}, size_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--listing-max-age", args->listing_max_age_s,
                  "seconds the provider listing is reused before it is read again")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->callback([runner, args] { *runner = [args] { return run_proxy(*args); }; });
}

}  // namespace darkbloom::apps
