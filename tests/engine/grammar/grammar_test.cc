// The grammar engine: JSON Schema compiled to grammars that accept exactly the texts they should
// (checked byte by byte), refusals that name the keyword and its path, and token masks that
// agree with a check of every token of a real vocabulary.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "base/json.h"
#include "engine/gguf/gguf_file.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/json_text.h"
#include "engine/grammar/matcher.h"
#include "engine/model/model_synth.h"
#include "engine/tokenizer/tokenizer.h"
#include "support/temp_dir.h"

namespace darkbloom::engine::grammar {
namespace {

json::bj::value parse(std::string_view text) {
  auto value = json::parse(text, "test schema");
  EXPECT_TRUE(value) << text;
  return value ? *value : json::bj::value();
}

GrammarRuntime compile(std::string_view schema) {
  auto grammar = compile_json_schema(parse(schema));
  EXPECT_TRUE(grammar) << (grammar ? "" : grammar.error().message);
  return GrammarRuntime(grammar ? std::move(*grammar) : json_object_grammar(), nullptr);
}

bool matches(GrammarRuntime& runtime, std::string_view text) {
  MatchState state = runtime.initial();
  MatchState next;
  for (char c : text) {
    runtime.advance(state, static_cast<uint8_t>(c), &next);
    if (next.dead()) return false;
    std::swap(state, next);
  }
  return state.accepting;
}

std::string refusal(std::string_view schema) {
  auto grammar = compile_json_schema(parse(schema));
  return grammar ? std::string("(compiled)") : grammar.error().message;
}

struct Case {
  std::string schema;
  std::vector<std::string> valid;
  std::vector<std::string> invalid;
};

TEST(JsonSchemaGrammar, accepts_exactly_the_texts_the_schema_allows) {
  const std::vector<Case> cases = {
      {R"({"type":"object","properties":{"name":{"type":"string","maxLength":3},"age":{"type":"integer"}},"required":["name"]})",
       {R"({"name":"ab"})", R"({"name":"","age":42})", R"( { "name" : "abc" , "age" : -7 } )",
        R"({"name":"\u00e9\n"})"},
       {R"({})", R"({"age":1})", R"({"name":"abcd"})", R"({"age":1,"name":"a"})", R"({"name":"a","extra":1})",
        R"({"name":"a",})", R"({"name":"a"}x)", R"({"name":"a","age":1.5})", R"({"name":"a","age":01})"}},
      {R"({"enum":["red","green",3,null]})", {R"("red")", R"(3)", R"(null)"}, {R"("blue")", R"("Red")", R"(4)"}},
      {R"({"const":{"a":[1,true]}})", {R"({"a":[1,true]})"}, {R"({"a":[1,false]})", R"({"a": [1,true]})"}},
      {R"({"type":["string","null"]})", {R"("x")", R"(null)"}, {R"(1)", R"(true)"}},
      {R"({"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":3})",
       {R"([true])", R"([true, false ,true])"},
       {R"([])", R"([true,true,true,true])", R"([1])", R"([true,])"}},
      {R"({"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"items":false})",
       {R"([])", R"([1])", R"([1,"a"])"},
       {R"([1,"a",2])", R"(["a"])"}},
      {R"({"type":"string","minLength":2,"maxLength":2})",
       {R"("ab")", R"("\"\\")", R"("é字")"},
       {R"("a")", R"("abc")"}},
      {R"({"type":"string","pattern":"^[a-c]{2}-\\d+$"})",
       {R"("ab-1")", R"("cc-0042")"},
       {R"("ad-1")", R"("ab-")", R"("ab-1x")"}},
      {R"({"type":"string","pattern":"x"})", {R"("x")", R"("abxcd")"}, {R"("abc")"}},
      {R"({"type":"string","format":"date"})",
       {R"("2024-02-28")", R"("1999-12-31")"},
       {R"("2024-02-30")", R"("2024-13-01")", R"("24-01-01")"}},
      {R"({"type":"string","format":"uuid"})", {R"("123e4567-e89b-12d3-a456-426614174000")"}, {R"("123e4567")"}},
      {R"({"type":"integer","minimum":-37,"maximum":1234})",
       {"-37", "0", "9", "10", "999", "1234", "-1"},
       {"-38", "1235", "-0", "007", "12345", "1.0"}},
      {R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10})", {"1", "9"}, {"0", "10"}},
      {R"({"type":"number"})", {"0", "-1.5", "3e10", "2.50E-3"}, {"01", "1.", ".5", "+1", "1e"}},
      {R"({"anyOf":[{"type":"integer"},{"type":"object","properties":{"k":{"const":1}},"required":["k"]}]})",
       {"5", R"({"k":1})"},
       {R"({"k":2})", R"("5")"}},
      {R"({"allOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"properties":{"b":{"type":"boolean"}},"required":["b"]}]})",
       {R"({"a":1,"b":true})"},
       {R"({"a":1})", R"({"b":true})"}},
      {R"({"$defs":{"node":{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["next"]}},"$ref":"#/$defs/node"})",
       {R"({"next":null})", R"({"next":{"next":{"next":null}}})"},
       {R"({"next":{}})", R"({})"}},
      {R"({"type":"string","nullable":true,"maxLength":1})", {R"("a")", "null"}, {R"("ab")"}},
      {R"({"type":"object","properties":{"id":{"type":"integer"}},"additionalProperties":{"type":"boolean"}})",
       {R"({"id":1,"x":true})", R"({"idx":false,"i":true})", R"({})"},
       {R"({"id":1,"id":true})", R"({"x":1})"}},
      {R"({"type":"object","additionalProperties":true})", {R"({"a":[1,{"b":null}]})", R"({})"}, {R"([])"}},
      {R"({"title":"anything","description":"annotations only"})", {"1", R"("s")", R"({"a":[]})"}, {"", "nul"}},
  };
  for (const Case& c : cases) {
    GrammarRuntime runtime = compile(c.schema);
    for (const std::string& text : c.valid)
      EXPECT_TRUE(matches(runtime, text)) << c.schema << "\n  should accept " << text;
    for (const std::string& text : c.invalid)
      EXPECT_FALSE(matches(runtime, text)) << c.schema << "\n  should refuse " << text;
  }
}

TEST(JsonSchemaGrammar, bounded_integers_are_exactly_the_range) {
  for (auto [low, high] :
       std::vector<std::pair<int, int>>{{-37, 1234}, {5, 5}, {-200, -100}, {0, 99}, {100, 109}, {1, 1000}}) {
    GrammarRuntime runtime = compile(fmt::format(R"({{"type":"integer","minimum":{},"maximum":{}}})", low, high));
    for (int n = -1100; n <= 1100; ++n) {
      EXPECT_EQ(matches(runtime, std::to_string(n)), n >= low && n <= high)
          << n << " in [" << low << ", " << high << "]";
    }
  }
}

TEST(JsonSchemaGrammar, whitespace_and_digits_are_bounded) {
  GrammarRuntime array = compile(R"({"type":"array","items":{"type":"integer"}})");
  EXPECT_TRUE(matches(array, "[1" + std::string(kMaxWhitespace, ' ') + "]"));
  EXPECT_FALSE(matches(array, "[1" + std::string(kMaxWhitespace + 1, ' ') + "]"));
  GrammarRuntime integer = compile(R"({"type":"integer"})");
  EXPECT_TRUE(matches(integer, std::string(16, '9')));
  EXPECT_FALSE(matches(integer, std::string(17, '9')));
}

TEST(JsonSchemaGrammar, enum_values_of_another_type_are_left_out_and_large_bounds_are_exact) {
  GrammarRuntime strings = compile(R"({"type":"string","enum":["a",1,null]})");
  EXPECT_TRUE(matches(strings, R"("a")"));
  EXPECT_FALSE(matches(strings, "1"));
  GrammarRuntime big = compile(R"({"type":"integer","minimum":9007199254740993,"maximum":9007199254740995})");
  EXPECT_FALSE(matches(big, "9007199254740992"));
  EXPECT_TRUE(matches(big, "9007199254740993"));
}

TEST(JsonSchemaGrammar, huge_closures_are_cut_short_not_fatal) {
  // 65536 optional characters in a row: the closure after the opening quote is cut short (paths
  // beyond it are dropped, which only narrows what may come), never a stack overflow. 1024
  // optional properties stay within the bound.
  GrammarRuntime optional_chars = compile(R"({"type":"string","pattern":"^((a?){1024}){64}$"})");
  EXPECT_FALSE(matches(optional_chars, R"("ab")"));
  std::string properties;
  for (int i = 0; i < 1024; ++i) properties += fmt::format(R"({}"p{}":{{"type":"integer"}})", i ? "," : "", i);
  GrammarRuntime wide = compile(R"({"type":"object","properties":{)" + properties + "}}");
  EXPECT_TRUE(matches(wide, R"({"p0":1})"));
  EXPECT_TRUE(matches(wide, R"({})"));
}

TEST(JsonSchemaGrammar, plain_json_objects) {
  GrammarRuntime runtime(json_object_grammar(), nullptr);
  for (const char* text : {R"({})", R"({"a":1,"b":[true,null,"x",{"c":-2.5e3}]})", "\n{ \"k\" : \"v\" }\n"}) {
    EXPECT_TRUE(matches(runtime, text)) << text;
  }
  for (const char* text : {R"([])", R"("a")", R"({"a"})", R"({"a":1,})", R"({'a':1})", "{\"a\":\"\x01\"}"}) {
    EXPECT_FALSE(matches(runtime, text)) << text;
  }
}

TEST(JsonSchemaGrammar, unsupported_keywords_are_refused_with_their_path) {
  EXPECT_EQ(refusal(R"({"type":"object","properties":{"a":{"type":"object","minProperties":1}}})"),
            "the keyword 'minProperties' is not supported at #/properties/a");
  EXPECT_EQ(refusal(R"({"type":"array","items":{"not":{"type":"string"}}})"),
            "the keyword 'not' is not supported at #/items");
  EXPECT_NE(refusal(R"({"type":"string","format":"hostname"})").find("the format 'hostname' is not supported"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type":"string","pattern":"(a)\\1"})").find("backreferences"), std::string::npos);
  EXPECT_NE(refusal(R"j({"type":"string","pattern":"(?=a)"})j").find("lookaround"), std::string::npos);
  EXPECT_NE(refusal(R"({"$ref":"#/$defs/missing"})").find("does not exist"), std::string::npos);
  EXPECT_NE(refusal(R"({"$ref":"https://example.com/schema"})").find("'$ref'"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"number","minimum":0})").find("'minimum' on a number"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"strng"})").find("'strng'"), std::string::npos);
  EXPECT_NE(refusal(R"(false)").find("accepts nothing"), std::string::npos);
  EXPECT_NE(refusal(R"(17)").find("must be an object or a boolean"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"string","maxLength":100000})").find("'maxLength' above"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"integer","minimum":5,"maximum":4})").find("no integer"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"string","pattern":"a{1,2,3}"})").find("{m}, {m,} or {m,n}"), std::string::npos);
  EXPECT_NE(refusal(R"({"type":"string","pattern":")" + std::string(40, '(') + "a" + std::string(40, ')') + R"("})")
                .find("nested more than"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"allOf":[{"properties":{"a":{}},"additionalProperties":false},{"properties":{"b":{}}}]})")
                .find("excludes 'b'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"allOf":[{"properties":{"a":{}}},{"allOf":[{"required":["x"]}]}]})").find("'allOf'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type":"string","enum":[1,2]})").find("no 'enum' value"), std::string::npos);
}

class TokenMaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new darkbloom::testing::TempDir();
    SynthOptions options;
    options.n_layer = 1;
    options.n_embd = 64;
    options.n_head = 2;
    options.n_head_kv = 1;
    options.n_ff = 64;
    options.n_vocab = 600;
    const std::string path = dir_->file("vocab.gguf");
    ASSERT_TRUE(synthesize_model(options, path));
    auto file = GgufFile::open(path);
    ASSERT_TRUE(file);
    auto tokenizer = Tokenizer::from_gguf(*file);
    ASSERT_TRUE(tokenizer);
    tokenizer_ = new Tokenizer(std::move(*tokenizer));
    trie_ = new TokenTrie(*tokenizer_);
  }
  static void TearDownTestSuite() {
    delete trie_;
    delete tokenizer_;
    delete dir_;
  }

  // The mask a check of every token gives: its bytes keep the state alive, or it ends the text.
  static TokenMask brute_force_mask(GrammarRuntime& runtime, const MatchState& state) {
    TokenMask mask((static_cast<size_t>(trie_->n_vocab()) + 63) / 64, 0);
    for (int32_t token = 0; token < trie_->n_vocab(); ++token) {
      bool allowed = false;
      if (tokenizer_->is_end_of_generation(token)) {
        allowed = state.accepting;
      } else if (!trie_->piece(token).empty()) {
        MatchState current = state;
        MatchState next;
        allowed = true;
        for (char c : trie_->piece(token)) {
          runtime.advance(current, static_cast<uint8_t>(c), &next);
          if (next.dead()) {
            allowed = false;
            break;
          }
          std::swap(current, next);
        }
      }
      if (allowed) mask[static_cast<size_t>(token) >> 6] |= uint64_t{1} << (token & 63);
    }
    return mask;
  }

  static darkbloom::testing::TempDir* dir_;
  static Tokenizer* tokenizer_;
  static TokenTrie* trie_;
};
darkbloom::testing::TempDir* TokenMaskTest::dir_ = nullptr;
Tokenizer* TokenMaskTest::tokenizer_ = nullptr;
TokenTrie* TokenMaskTest::trie_ = nullptr;

TEST_F(TokenMaskTest, masks_from_the_trie_equal_a_check_of_every_token_along_random_answers) {
  const char* schemas[] = {
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},"tags":{"type":"array","items":{"enum":["a","bc"]},"maxItems":3},"n":{"type":"integer","minimum":-5,"maximum":500}},"required":["name","n"]})",
      R"({"type":"string","pattern":"^[a-f]+(-[0-9]{1,3})?$"})",
      R"({"$defs":{"n":{"type":"object","properties":{"k":{"type":"string","maxLength":3},"next":{"anyOf":[{"$ref":"#/$defs/n"},{"type":"null"}]}},"required":["k","next"]}},"$ref":"#/$defs/n"})",
      R"({"type":"array","items":{"anyOf":[{"type":"string","format":"date"},{"type":"number"},{"const":"done"}]},"maxItems":4})",
  };
  std::mt19937 rng(7);
  for (const char* schema : schemas) {
    auto grammar = compile_json_schema(parse(schema));
    ASSERT_TRUE(grammar);
    auto runtime = std::make_shared<GrammarRuntime>(std::move(*grammar), trie_);
    for (int answer = 0; answer < 12; ++answer) {
      Matcher matcher(runtime);
      MatchState state = runtime->initial();
      for (int step = 0; step < 40 && !matcher.finished(); ++step) {
        const TokenMask fast = *matcher.allowed_tokens();
        ASSERT_EQ(fast, brute_force_mask(*runtime, state)) << schema << " step " << step;
        std::vector<int32_t> allowed;
        for (int32_t t = 0; t < trie_->n_vocab(); ++t) {
          if (mask_allows(fast, t)) allowed.push_back(t);
        }
        ASSERT_FALSE(allowed.empty());
        const int32_t token = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(rng)];
        if (tokenizer_->is_end_of_generation(token)) break;
        ASSERT_TRUE(matcher.accept(token));
        MatchState next;
        for (char c : trie_->piece(token)) {
          runtime->advance(state, static_cast<uint8_t>(c), &next);
          std::swap(state, next);
        }
      }
    }
    EXPECT_GT(runtime->cached_masks(), 0u);
  }
}

}  // namespace
}  // namespace darkbloom::engine::grammar
