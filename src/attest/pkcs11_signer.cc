// The pkcs11 backend: a P-256 key in a PKCS#11 token (a smart card, an HSM, SoftHSM in tests),
// created sensitive and non-extractable and checked to be so when found. Hashing happens here
// and the token signs the digest with CKM_ECDSA (SoftHSM 2.6 has no CKM_ECDSA_SHA256).
#include <dlfcn.h>
#include <fmt/format.h>
#include <p11-kit/pkcs11.h>

#include <cstring>
#include <mutex>
#include <optional>

#include "attest/signer.h"
#include "base/encoding.h"
#include "crypto/hash.h"
#include "crypto/p256.h"

namespace darkbloom::attest {
namespace {

// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the CKA_EC_PARAMS of a P-256 key.
constexpr uint8_t kP256Params[] = {0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07};

Error ck_error(CK_RV rv, std::string_view what) {
  const std::string message = fmt::format("{}: CKR 0x{:X}", what, static_cast<unsigned long>(rv));
  if (rv == CKR_PIN_INCORRECT) return make_error(Errc::permission_denied, fmt::format("{}: wrong PIN", what));
  if (rv == CKR_PIN_LOCKED) return make_error(Errc::permission_denied, fmt::format("{}: the PIN is locked", what));
  if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR) {
    return make_error(Errc::unavailable, message);
  }
  return make_error(Errc::unavailable, message);
}

class Module {
 public:
  static Result<std::shared_ptr<Module>> load(const std::string& path) {
    auto module = std::shared_ptr<Module>(new Module());
    module->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (module->handle_ == nullptr) {
      return make_error(Errc::unavailable, fmt::format("cannot load PKCS#11 module {}: {}", path, dlerror()));
    }
    auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(module->handle_, "C_GetFunctionList"));
    if (get_list == nullptr || get_list(&module->functions_) != CKR_OK) {
      return make_error(Errc::unavailable, path + " is not a PKCS#11 module");
    }
    const CK_RV rv = module->functions_->C_Initialize(nullptr);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return ck_error(rv, "C_Initialize");
    module->initialized_ = rv == CKR_OK;
    return module;
  }
  ~Module() {
    if (initialized_) functions_->C_Finalize(nullptr);
    if (handle_ != nullptr) dlclose(handle_);
  }
  CK_FUNCTION_LIST* f() const { return functions_; }

 private:
  Module() = default;
  void* handle_ = nullptr;
  CK_FUNCTION_LIST* functions_ = nullptr;
  bool initialized_ = false;
};

std::string token_label(const CK_TOKEN_INFO& info) {
  std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
  while (!label.empty() && label.back() == ' ') label.pop_back();  // labels are blank-padded
  return label;
}

class Session {
 public:
  Session(std::shared_ptr<Module> module, CK_SESSION_HANDLE handle) : module_(std::move(module)), handle_(handle) {}
  ~Session() { module_->f()->C_CloseSession(handle_); }
  CK_FUNCTION_LIST* f() const { return module_->f(); }
  CK_SESSION_HANDLE get() const { return handle_; }

  Result<std::optional<CK_OBJECT_HANDLE>> find(CK_OBJECT_CLASS object_class, const std::string& label) const {
    CK_ATTRIBUTE query[] = {{CKA_CLASS, &object_class, sizeof object_class},
                            {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
    CK_RV rv = f()->C_FindObjectsInit(handle_, query, 2);
    if (rv != CKR_OK) return ck_error(rv, "C_FindObjectsInit");
    CK_OBJECT_HANDLE objects[2];
    CK_ULONG count = 0;
    rv = f()->C_FindObjects(handle_, objects, 2, &count);
    f()->C_FindObjectsFinal(handle_);
    if (rv != CKR_OK) return ck_error(rv, "C_FindObjects");
    if (count == 0) return std::optional<CK_OBJECT_HANDLE>{};
    if (count > 1) return make_error(Errc::bad_format, fmt::format("more than one key labelled '{}'", label));
    return std::optional<CK_OBJECT_HANDLE>{objects[0]};
  }

  Result<std::vector<uint8_t>> attribute(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) const {
    CK_ATTRIBUTE query{type, nullptr, 0};
    CK_RV rv = f()->C_GetAttributeValue(handle_, object, &query, 1);
    if (rv != CKR_OK) return ck_error(rv, "C_GetAttributeValue");
    std::vector<uint8_t> value(query.ulValueLen);
    query.pValue = value.data();
    rv = f()->C_GetAttributeValue(handle_, object, &query, 1);
    if (rv != CKR_OK) return ck_error(rv, "C_GetAttributeValue");
    return value;
  }

  Result<bool> flag(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) const {
    auto value = attribute(object, type);
    if (!value) return value.error();
    return value->size() == sizeof(CK_BBOOL) && (*value)[0] == CK_TRUE;
  }

 private:
  std::shared_ptr<Module> module_;
  CK_SESSION_HANDLE handle_;
};

Result<std::unique_ptr<Session>> open_session(const Pkcs11Config& config) {
  if (config.module.empty()) return make_error(Errc::unavailable, "no PKCS#11 module configured");
  auto module = Module::load(config.module);
  if (!module) return module.error();
  CK_FUNCTION_LIST* f = (*module)->f();
  CK_ULONG count = 0;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count);
  if (rv != CKR_OK) return ck_error(rv, "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(count);
  rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) return ck_error(rv, "C_GetSlotList");
  for (CK_ULONG i = 0; i < count; ++i) {
    CK_TOKEN_INFO info{};
    if (f->C_GetTokenInfo(slots[i], &info) != CKR_OK || token_label(info) != config.token) continue;
    CK_SESSION_HANDLE handle = 0;
    rv = f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &handle);
    if (rv != CKR_OK) return ck_error(rv, "C_OpenSession");
    auto session = std::make_unique<Session>(*module, handle);
    rv = f->C_Login(handle, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(config.pin.data())),
                    config.pin.size());
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
      return ck_error(rv, fmt::format("login to token '{}'", config.token));
    }
    return session;
  }
  return make_error(Errc::unavailable,
                    fmt::format("no PKCS#11 token labelled '{}' in {}", config.token, config.module));
}

Result<std::vector<uint8_t>> public_key_of(const Session& session, CK_OBJECT_HANDLE public_key) {
  auto params = session.attribute(public_key, CKA_EC_PARAMS);
  if (!params) return params.error();
  if (params->size() != sizeof kP256Params || std::memcmp(params->data(), kP256Params, sizeof kP256Params) != 0) {
    return make_error(Errc::bad_format, "the token key is not on P-256");
  }
  auto point = session.attribute(public_key, CKA_EC_POINT);
  if (!point) return point.error();
  // CKA_EC_POINT is a DER OCTET STRING around 04 ‖ X ‖ Y.
  if (point->size() == 67 && (*point)[0] == 0x04 && (*point)[1] == 65) {
    return crypto::p256_raw_public_key(std::span<const uint8_t>(*point).subspan(2));
  }
  return crypto::p256_raw_public_key(*point);
}

// A token key must have been made inside the token and never left it: sensitive since creation,
// never extractable, generated on the token (an imported key was outside it once).
Status check_private_key(const Session& session, CK_OBJECT_HANDLE key, const std::string& label) {
  auto sensitive = session.flag(key, CKA_SENSITIVE);
  auto always_sensitive = session.flag(key, CKA_ALWAYS_SENSITIVE);
  auto extractable = session.flag(key, CKA_EXTRACTABLE);
  auto never_extractable = session.flag(key, CKA_NEVER_EXTRACTABLE);
  auto local = session.flag(key, CKA_LOCAL);
  if (!sensitive || !always_sensitive || !extractable || !never_extractable || !local) {
    return make_error(Errc::bad_format, "cannot read the key's attributes");
  }
  if (!*sensitive || !*always_sensitive || *extractable || !*never_extractable || !*local) {
    return make_error(Errc::bad_format,
                      fmt::format("the token key '{}' can be or has been exported (sensitive={}, always_sensitive={}, "
                                  "extractable={}, never_extractable={}, local={})",
                                  label, *sensitive, *always_sensitive, *extractable, *never_extractable, *local));
  }
  return {};
}

Result<std::vector<uint8_t>> sign_with(const Session& session, CK_OBJECT_HANDLE key, std::span<const uint8_t> message) {
  const auto digest = crypto::sha256(message);
  CK_MECHANISM mechanism{CKM_ECDSA, nullptr, 0};
  CK_RV rv = session.f()->C_SignInit(session.get(), &mechanism, key);
  if (rv != CKR_OK) return ck_error(rv, "C_SignInit");
  uint8_t raw[64];
  CK_ULONG length = sizeof raw;
  rv = session.f()->C_Sign(session.get(), const_cast<uint8_t*>(digest.data()), digest.size(), raw, &length);
  if (rv != CKR_OK) return ck_error(rv, "C_Sign");
  if (length != 64) return make_error(Errc::bad_format, "the token returned a signature of unexpected size");
  return crypto::der_signature_from_rs({raw, 32}, {raw + 32, 32});
}

struct KeyPairHandles {
  CK_OBJECT_HANDLE public_key = 0;
  CK_OBJECT_HANDLE private_key = 0;
};

// A new P-256 pair with every security attribute set explicitly (defaults differ between modules).
Result<KeyPairHandles> generate(const Session& s, std::string label) {
  CK_MECHANISM mechanism{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE public_template[] = {
      {CKA_EC_PARAMS, const_cast<uint8_t*>(kP256Params), sizeof kP256Params},
      {CKA_TOKEN, &yes, sizeof yes},
      {CKA_PRIVATE, &no, sizeof no},
      {CKA_VERIFY, &yes, sizeof yes},
      {CKA_LABEL, label.data(), label.size()},
  };
  CK_ATTRIBUTE private_template[] = {
      {CKA_TOKEN, &yes, sizeof yes},     {CKA_PRIVATE, &yes, sizeof yes}, {CKA_SENSITIVE, &yes, sizeof yes},
      {CKA_EXTRACTABLE, &no, sizeof no}, {CKA_SIGN, &yes, sizeof yes},    {CKA_DECRYPT, &no, sizeof no},
      {CKA_UNWRAP, &no, sizeof no},      {CKA_DERIVE, &no, sizeof no},    {CKA_LABEL, label.data(), label.size()},
  };
  KeyPairHandles pair;
  const CK_RV rv =
      s.f()->C_GenerateKeyPair(s.get(), &mechanism, public_template, std::size(public_template), private_template,
                               std::size(private_template), &pair.public_key, &pair.private_key);
  if (rv != CKR_OK) return ck_error(rv, "C_GenerateKeyPair (P-256)");
  return pair;
}

// The pair labelled `label`, checked: both halves present, the private one non-exportable.
Result<std::optional<KeyPairHandles>> find_pair(const Session& s, const std::string& label) {
  auto private_key = s.find(CKO_PRIVATE_KEY, label);
  if (!private_key) return private_key.error();
  auto public_key = s.find(CKO_PUBLIC_KEY, label);
  if (!public_key) return public_key.error();
  if (!*private_key) return std::optional<KeyPairHandles>{};
  if (!*public_key) return make_error(Errc::bad_format, fmt::format("token key '{}' has no public half", label));
  DARKBLOOM_RETURN_IF_ERROR(check_private_key(s, **private_key, label));
  return std::optional<KeyPairHandles>{KeyPairHandles{**public_key, **private_key}};
}

class Pkcs11Signer final : public AttestationSigner {
 public:
  Pkcs11Signer(std::unique_ptr<Session> session, CK_OBJECT_HANDLE key, std::vector<uint8_t> public_key, std::string ref)
      : session_(std::move(session)), key_(key), public_key_(std::move(public_key)), ref_(std::move(ref)) {}

  const std::vector<uint8_t>& public_key() const override { return public_key_; }

  Result<std::vector<uint8_t>> sign(std::span<const uint8_t> message) override {
    std::lock_guard lock(mutex_);
    return sign_with(*session_, key_, message);
  }

 protected:
  SignerInfo describe() const override { return {"pkcs11", true, true, ref_, {}}; }

 private:
  std::unique_ptr<Session> session_;
  CK_OBJECT_HANDLE key_;
  std::vector<uint8_t> public_key_;
  std::string ref_;
  std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<AttestationSigner>> make_pkcs11_signer(const Pkcs11Config& config) {
  auto session = open_session(config);
  if (!session) return session.error();
  const Session& s = **session;
  auto found = find_pair(s, config.label);
  if (!found) return found.error();
  KeyPairHandles pair;
  if (*found) {
    pair = **found;
  } else {
    if (!config.create_if_missing) {
      return make_error(Errc::not_found, fmt::format("no key labelled '{}' on token '{}'", config.label, config.token));
    }
    auto created = generate(s, config.label);  // only "not found" creates a key
    if (!created) return created.error();
    pair = *created;
  }
  auto raw = public_key_of(s, pair.public_key);
  if (!raw) return raw.error();
  // The two halves are found by label only: prove they belong together before announcing the key.
  auto probe = sign_with(s, pair.private_key, as_bytes("darkbloom-pkcs11-probe"));
  if (!probe) return probe.error();
  auto matches = crypto::p256_verify(*raw, as_bytes("darkbloom-pkcs11-probe"), *probe);
  if (!matches || !*matches) {
    return make_error(Errc::bad_format,
                      fmt::format("the public key labelled '{}' does not belong to the private key", config.label));
  }
  const std::string ref = fmt::format("pkcs11:token={};object={}", config.token, config.label);
  return std::unique_ptr<AttestationSigner>(
      std::make_unique<Pkcs11Signer>(std::move(*session), pair.private_key, std::move(*raw), ref));
}

Result<Rotation> rotate_pkcs11_key(const Pkcs11Config& config) {
  auto session = open_session(config);
  if (!session) return session.error();
  const Session& s = **session;
  auto found = find_pair(s, config.label);
  if (!found) return found.error();
  if (!*found) return make_error(Errc::not_found, fmt::format("no key labelled '{}' to rotate", config.label));
  const KeyPairHandles old_pair = **found;
  auto old_public = public_key_of(s, old_pair.public_key);
  if (!old_public) return old_public.error();
  // The new pair is made under a temporary label and renamed only once the old key has signed.
  const std::string staging = config.label + ".rotating";
  for (CK_OBJECT_CLASS object_class : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
    auto stale = s.find(object_class, staging);  // left by a rotation that failed half way
    if (stale && *stale) s.f()->C_DestroyObject(s.get(), **stale);
  }
  auto created = generate(s, staging);
  if (!created) return created.error();
  auto new_public = public_key_of(s, created->public_key);
  if (!new_public) return new_public.error();
  auto rotation = sign_rotation(std::move(*old_public), std::move(*new_public), [&](std::span<const uint8_t> message) {
    return sign_with(s, old_pair.private_key, message);
  });
  if (!rotation) return rotation.error();
  for (CK_OBJECT_HANDLE object : {old_pair.private_key, old_pair.public_key}) {
    const CK_RV rv = s.f()->C_DestroyObject(s.get(), object);
    if (rv != CKR_OK) return ck_error(rv, "C_DestroyObject (old key)");
  }
  std::string label = config.label;
  for (CK_OBJECT_HANDLE object : {created->private_key, created->public_key}) {
    CK_ATTRIBUTE rename{CKA_LABEL, label.data(), label.size()};
    const CK_RV rv = s.f()->C_SetAttributeValue(s.get(), object, &rename, 1);
    if (rv != CKR_OK) return ck_error(rv, "C_SetAttributeValue (label of the new key)");
  }
  return rotation;
}

Status delete_pkcs11_key(const Pkcs11Config& config) {
  auto session = open_session(config);
  if (!session) return session.error();
  bool found = false;
  for (CK_OBJECT_CLASS object_class : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
    auto object = (*session)->find(object_class, config.label);
    if (!object) return object.error();
    if (!*object) continue;
    found = true;
    const CK_RV rv = (*session)->f()->C_DestroyObject((*session)->get(), **object);
    if (rv != CKR_OK) return ck_error(rv, "C_DestroyObject");
  }
  if (!found) return make_error(Errc::not_found, fmt::format("no token key labelled '{}'", config.label));
  return {};
}

}  // namespace darkbloom::attest
