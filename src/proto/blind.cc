#include "proto/blind.h"

#include <fmt/format.h>

#include <set>

#include "base/json.h"

namespace darkbloom::proto {
namespace {

namespace bj = json::bj;

Result<bj::object> parse_object(std::string_view text, std::string_view what) {
  auto value = json::parse(text, what);
  if (!value) return value.error();
  if (!value->is_object()) return make_error(Errc::bad_format, fmt::format("{} is not a JSON object", what));
  return std::move(value->as_object());
}

std::vector<std::string> strings(json::ObjectReader& r, std::string_view key, size_t max_items, size_t max_bytes) {
  std::vector<std::string> out;
  if (!r.has(key)) return out;
  for (const bj::value& item : r.array(key, max_items)) {
    if (!item.is_string() || item.as_string().size() > max_bytes) {
      r.fail(key, "must hold strings");
      return {};
    }
    out.emplace_back(item.as_string());
  }
  return out;
}

}  // namespace

std::string encode(const BlindRequest& request) {
  bj::array copies;
  for (const BlindCopy& copy : request.copies) {
    copies.push_back(bj::object{{"provider_id", copy.provider_id}, {"sealed_body", sealed_to_json(copy.sealed_body)}});
  }
  bj::object object{
      {"model", request.model}, {"max_tokens", request.max_tokens}, {"n", request.n}, {"copies", std::move(copies)}};
  if (request.ignore_eos) object["ignore_eos"] = true;
  return bj::serialize(object);
}

std::optional<BlindRequest> decode_blind_request(std::string_view body, ApiError* error) {
  auto object = parse_object(body, "the blind request");
  if (!object) {
    *error = invalid_request(object.error().message);
    return std::nullopt;
  }
  json::ObjectReader r(*object, "");
  BlindRequest request;
  request.model = r.string("model", kMaxModelIdBytes);
  request.max_tokens = static_cast<int>(r.integer("max_tokens", 1, 1 << 24));
  request.n = static_cast<int>(r.optional_integer("n", 1, kMaxChoices).value_or(1));
  request.ignore_eos = r.optional_boolean("ignore_eos").value_or(false);
  const bj::array& copies = r.array("copies", kMaxBlindCopies);
  if (r.ok() && copies.empty()) r.fail("copies", "must name at least one provider");
  std::set<std::string> seen;
  for (size_t i = 0; i < copies.size() && r.ok(); ++i) {
    const std::string key = fmt::format("copies[{}]", i);
    if (!copies[i].is_object()) {
      r.fail(key, "must be an object");
      break;
    }
    json::ObjectReader c(copies[i].as_object(), key);
    BlindCopy copy;
    copy.provider_id = c.string("provider_id", kMaxProviderIdBytes);
    copy.sealed_body = sealed_from(c, "sealed_body");
    if (c.ok() && !seen.insert(copy.provider_id).second) c.fail("provider_id", "names a provider twice");
    if (!c.ok()) {
      *error = invalid_request(c.error().message, c.failed_field().empty() ? key : c.path(c.failed_field()));
      return std::nullopt;
    }
    request.copies.push_back(std::move(copy));
  }
  if (!r.ok()) {
    *error = invalid_request(r.error().message, r.failed_field());
    return std::nullopt;
  }
  return request;
}

std::string encode_blind_chunk(const SealedPayload& sealed) {
  return bj::serialize(sealed_to_json(sealed));
}

Result<SealedPayload> decode_blind_chunk(std::string_view data) {
  auto object = parse_object(data, "a blind chunk");
  if (!object) return object.error();
  // Read as the one field of a wrapper, so the checks are sealed_from's.
  bj::object wrapper{{"sealed", std::move(*object)}};
  json::ObjectReader r(wrapper, "chunk");
  SealedPayload sealed = sealed_from(r, "sealed");
  if (!r.ok()) return r.error();
  return sealed;
}

std::string encode(const BlindCompletion& completion) {
  return bj::serialize(bj::object{{"sealed", sealed_to_json(completion.sealed)},
                                  {"usage", bj::object{{"prompt_tokens", completion.prompt_tokens},
                                                       {"completion_tokens", completion.completion_tokens}}}});
}

Result<BlindCompletion> decode_blind_completion(std::string_view data) {
  auto object = parse_object(data, "a blind completion");
  if (!object) return object.error();
  json::ObjectReader r(*object, "complete");
  BlindCompletion completion;
  completion.sealed = sealed_from(r, "sealed");
  const bj::object& usage = r.object("usage");
  if (r.ok()) {
    json::ObjectReader u(usage, "usage");
    completion.prompt_tokens = u.integer("prompt_tokens", 0, int64_t{1} << 40);
    completion.completion_tokens = u.integer("completion_tokens", 0, int64_t{1} << 40);
    if (!u.ok()) return u.error();
  }
  if (!r.ok()) return r.error();
  return completion;
}

Result<AttestationPage> decode_attestation_page(std::string_view body) {
  auto object = parse_object(body, "the attestation listing");
  if (!object) return object.error();
  json::ObjectReader r(*object, "listing");
  AttestationPage page;
  page.has_more = r.optional_boolean("has_more").value_or(false);
  const bj::array& data = r.array("data", 1000);
  for (size_t i = 0; i < data.size() && r.ok(); ++i) {
    if (!data[i].is_object()) return make_error(Errc::bad_format, fmt::format("listing data[{}] is not an object", i));
    json::ObjectReader e(data[i].as_object(), fmt::format("data[{}]", i));
    ProviderAttestation entry;
    entry.provider_id = e.string("provider_id", kMaxProviderIdBytes);
    entry.trust_level = e.string("trust_level", 64);
    entry.models = strings(e, "models", kMaxModelsPerProvider, kMaxModelIdBytes);
    entry.features = strings(e, "features", 32, 64);
    entry.attested = e.has("attestation");
    if (entry.attested) {
      entry.public_key = e.string("public_key", 256);
      entry.attestation = e.string("attestation", 64u << 10);
      entry.signature = e.string("signature", 256);
      if (e.has("hardware")) {
        json::ObjectReader h(e.object("hardware"), e.path("hardware"));
        entry.hardware = h.string("status", 4096);
        entry.ek_certificate = h.string("ek_certificate", 2 * kMaxEkCertificateBytes);
        entry.key_public = h.string("key_public", 2 * kMaxKeyPublicBytes);
        if (!h.ok()) return h.error();
      }
    }
    if (!e.ok()) return e.error();
    page.providers.push_back(std::move(entry));
  }
  if (!r.ok()) return r.error();
  return page;
}

}  // namespace darkbloom::proto
