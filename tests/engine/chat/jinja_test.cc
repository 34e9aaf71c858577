#include <gtest/gtest.h>

#include <algorithm>

#include "base/json.h"
#include "engine/chat/jinja_template.h"

namespace darkbloom::engine {
namespace {

using jinja::Template;
using jinja::Text;
using jinja::Value;

using Variables = std::vector<std::pair<std::string, Value>>;

// Renders `source` with `variables` given as client JSON; "ERROR: <message>" on failure.
std::string render(std::string_view source, std::string_view variables_json = "{}",
                   const jinja::RenderLimits& limits = {}) {
  auto compiled = Template::compile(source);
  if (!compiled) return "COMPILE: " + compiled.error().message;
  auto parsed = json::parse(variables_json, "variables");
  if (!parsed) return "JSON: " + parsed.error().message;
  Variables variables;
  for (const auto& [key, value] : parsed->as_object()) variables.emplace_back(key, Value::from_client_json(value));
  auto text = compiled->render(variables, 0, limits);
  if (!text) return "ERROR: " + text.error().message;
  return text->bytes();
}

TEST(Jinja, expressions_follow_jinja_precedence_and_types) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ 2 ** 10 }}"),
            "7|9|3|-4|1|1024");
  EXPECT_EQ(render("{{ 7 / 2 }}|{{ 4 / 2 }}|{{ 1.5 + 1 }}"), "3.5|2.0|2.5");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none_var }}|{{ 'x' + 'y' }}|{{ 'ab' * 3 }}"), "a1|xy|ababab");
  EXPECT_EQ(render("{{ not true and false }}|{{ 1 if 0 else 2 }}|{{ 'y' if 1 }}|{{ 'n' if 0 }}"), "false|2|y|");
  EXPECT_EQ(render("{{ 'b' in 'abc' }}|{{ 2 in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ 'z' not in 'abc' }}"),
            "true|true|true|true");
  EXPECT_EQ(render("{{ x | length - 1 }}", R"({"x": [1, 2, 3]})"), "2");
  EXPECT_EQ(
      render("{{ 1 == 1.0 }}|{{ 'a' == 'a' }}|{{ none == undefined_thing }}|{{ [1, {'a': 2}] == [1, {'a': 2}] }}"),
      "true|true|true|true");
  EXPECT_EQ(render("{{ -x | abs }}|{{ x is sameas 3 }}|{{ f is sameas false }}", R"({"x": 3, "f": false})"),
            "3|true|true");
}

TEST(Jinja, loops_expose_loop_variables_else_and_filters) {
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
                   "{{ loop.revindex }}{{ loop.length }},{% endfor %}",
                   R"({"xs": ["a", "b"]})"),
            "10truefalse22,21falsetrue12,");
  EXPECT_EQ(render("{% for x in xs if x > 1 %}{{ x }}{% else %}none{% endfor %}", R"({"xs": [1, 2, 3]})"), "23");
  EXPECT_EQ(render("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 1, "a": 2}})"),
            "b=1;a=2;");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
                   "{{ x }}{% endfor %}",
                   R"({"xs": [1, 2, 3, 4, 5]})"),
            "13");
  EXPECT_EQ(render("{% for m in messages[::-1] %}{{ m }}{% endfor %}|{{ 'hello'[1:3] }}|{{ 'hello'[-1] }}",
                   R"({"messages": [1, 2, 3]})"),
            "321|el|o");
}

TEST(Jinja, namespaces_macros_and_set_blocks) {
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for x in [1, 2, 3] %}{% set ns.n = ns.n + x %}{% endfor %}"
                   "{{ ns.n }}"),
            "6");
  // A plain set inside a loop stays in the loop, as in Jinja.
  EXPECT_EQ(render("{% set n = 1 %}{% for x in [5] %}{% set n = x %}{% endfor %}{{ n }}"), "1");
  EXPECT_EQ(render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
                   "{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }}"),
            "Hello, Ann! Hi, Bob!");
  EXPECT_EQ(render("{% set block %}a{{ 1 + 1 }}b{% endset %}[{{ block }}]"), "[a2b]");
  EXPECT_EQ(render("{% filter upper %}shout {{ 'this' }}{% endfilter %}"), "SHOUT THIS");
  EXPECT_EQ(render("{% filter trim | upper %}  both  {% endfilter %}|"), "BOTH|");
}

TEST(Jinja, filters_tests_and_methods_the_templates_call) {
  EXPECT_EQ(render("{{ '  x  ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ [3, 1] | first }}{{ [3, 1] | last }}"),
            "x|ABab|31");
  EXPECT_EQ(render("{{ d | tojson }}|{{ d | tojson(indent=2) }}", R"({"d": {"a": [1, "x\n"], "b": null}})"),
            "{\"a\": [1, \"x\\n\"], \"b\": null}|{\n  \"a\": [\n    1,\n    \"x\\n\"\n  ],\n  \"b\": null\n}");
  EXPECT_EQ(
      render("{{ x is defined }}{{ y is defined }}{{ x is string }}{{ n is none }}{{ 3 is odd }}{{ x is not none }}",
             R"({"x": "s", "n": null})"),
      "truefalsetruetruetruetrue");
  EXPECT_EQ(render("{{ ' a\\n'.strip() }}|{{ '\\n\\na\\n'.lstrip('\\n') }}|{{ 'a,b,,c'.split(',') | length }}"
                   "|{{ 'a b'.split() | join('-') }}|{{ 'x</think>y'.split('</think>')[-1] }}"),
            "a|a\n|4|a-b|y");
  EXPECT_EQ(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXbX'.replace('X', '-') }}"
                   "|{{ 'hello world'.title() }}|{{ d.get('k') }}{{ d.get('z', 'dflt') }}",
                   R"({"d": {"k": "v"}})"),
            "truetrue|a-b-|Hello World|vdflt");
  EXPECT_EQ(render("{{ xs | selectattr('ok') | map(attribute='n') | join(',') }}|{{ xs | rejectattr('ok') | length }}",
                   R"({"xs": [{"n": "a", "ok": true}, {"n": "b", "ok": false}, {"n": "c", "ok": true}]})"),
            "a,c|1");
  EXPECT_EQ(render("{{ missing | default('fallback') }}|{{ '' | default('e', true) }}|{{ range(3) | list | length }}"),
            "fallback|e|3");
  EXPECT_EQ(render("{{ t | reject('equalto', 'b') | join(',') }}|{{ [3, 1, 2] | select('odd') | join }}"
                   "|{{ ['b', 'A', 'c'] | sort | join }}|{{ d | dictsort | first | first }}",
                   R"({"t": ["a", "b", "c"], "d": {"z": 1, "k": 2}})"),
            "a,c|31|Abc|k");
  EXPECT_EQ(render("{{ d.items() | length }}|{{ d.get('items') }}|{{ true | abs }}|{{ nothing | length }}",
                   R"({"d": {"items": "field", "keys": 2}})"),
            "2|field|1|0");
  EXPECT_EQ(render("{{ 10 is divisibleby 5 }}{{ (-9223372036854775807 - 1) is divisibleby(-1) }}"), "truetrue");
}

TEST(Jinja, whitespace_control_matches_transformers_settings) {
  // trim_blocks drops the newline after a tag; lstrip_blocks the indent before one.
  EXPECT_EQ(render("{% if true %}\n    yes\n    {% endif %}\nend\n"), "    yes\nend");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a {{- 'b' -}} c {# note #}d{#- trimmed -#} e"), "abc de");
}

TEST(Jinja, raise_exception_gives_the_template_message) {
  EXPECT_EQ(render("{{ raise_exception('Roles must alternate') }}"), "ERROR: Roles must alternate");
}

TEST(Jinja, unsupported_tags_and_syntax_errors_name_their_line) {
  auto include = Template::compile("line one\n{% if x %}\n{% include 'other.jinja' %}\n{% endif %}");
  ASSERT_FALSE(include);
  EXPECT_EQ(include.error().code, Errc::unsupported);
  EXPECT_NE(include.error().message.find("line 3"), std::string::npos) << include.error().message;
  EXPECT_NE(include.error().message.find("include"), std::string::npos);
  for (std::string_view broken : {"{% if x %}open", "{{ 1 + }}", "{% for %}{% endfor %}", "{{ 'unterminated }}",
                                  "{% endif %}", "{{ a.b( }}", "{% set %}", "{{ '\\q' }}", "{% macro m( %}"}) {
    auto compiled = Template::compile(broken);
    ASSERT_FALSE(compiled) << broken;
    EXPECT_NE(compiled.error().message.find("line 1"), std::string::npos) << compiled.error().message;
  }
  auto unclosed = Template::compile("a\nb\n{% for x in y %}\n{{ x }}");
  ASSERT_FALSE(unclosed);
  EXPECT_NE(unclosed.error().message.find("endfor"), std::string::npos) << unclosed.error().message;
}

// A template comes from a model file: nothing in it may run unbounded.
TEST(Jinja, hostile_templates_hit_limits_not_the_machine) {
  jinja::RenderLimits small;  // the defaults are larger; the mechanisms are the same
  small.max_steps = 50'000;
  small.max_text_bytes = 1u << 20;
  small.max_bytes_made = 4u << 20;
  EXPECT_NE(render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "{}", small)
                .find("too many steps"),
            std::string::npos);
  EXPECT_NE(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("too deeply"), std::string::npos);
  EXPECT_NE(render("{% set s = namespace(t='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set s.t = s.t ~ s.t %}"
                   "{% endfor %}",
                   "{}", small)
                .find("longer than"),
            std::string::npos);
  // Many strings, each within bounds, are bounded together.
  EXPECT_NE(
      render("{% set big = 'x' * 100000 %}{% for i in range(200) %}{% set y = big ~ i %}{% endfor %}", "{}", small)
          .find("bytes of text"),
      std::string::npos);
  EXPECT_NE(render("{{ 'x' * 1000000000000 }}").find("longer than"), std::string::npos);
  // Work is counted by what it copies, not only by what it evaluates: this list grows quadratically.
  EXPECT_NE(render("{% set ns = namespace(l=[]) %}{% for i in range(20000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
                   "{}", small)
                .find("too many steps"),
            std::string::npos);
  EXPECT_NE(render("{{ range(100000000) | length }}").find("range()"), std::string::npos);
  std::string deep(5000, '(');
  auto nested = Template::compile("{{ " + deep + "1" + std::string(5000, ')') + " }}");
  ASSERT_FALSE(nested);
  EXPECT_NE(nested.error().message.find("nests too deeply"), std::string::npos);
  EXPECT_EQ(render("{{ 9223372036854775807 + 1 }}"), "ERROR: integer overflow");
  // Chains build deep trees as surely as parentheses do.
  for (const std::string& chain : {"{{ 1" + std::string(1, ' ') +
                                       [] {
                                         std::string out;
                                         for (int i = 0; i < 5000; ++i) out += "+ 1 ";
                                         return out;
                                       }() +
                                       "}}",
                                   "{{ x" +
                                       [] {
                                         std::string out;
                                         for (int i = 0; i < 5000; ++i) out += ".a";
                                         return out;
                                       }() +
                                       " }}",
                                   "{{ x" +
                                       [] {
                                         std::string out;
                                         for (int i = 0; i < 5000; ++i) out += " | trim";
                                         return out;
                                       }() +
                                       " }}"}) {
    auto compiled = Template::compile(chain);
    ASSERT_FALSE(compiled);
    EXPECT_NE(compiled.error().message.find("nests too deeply"), std::string::npos);
  }
  std::string elifs = "{% if a %}";
  for (int i = 0; i < 5000; ++i) elifs += "{% elif a %}";
  EXPECT_FALSE(Template::compile(elifs + "{% endif %}"));
  // Values cannot nest deeper than JSON may, and a namespace that holds itself is freed.
  EXPECT_NE(render("{% set a = [] %}{% for i in range(1000) %}{% set a = [a] %}{% endfor %}{{ a | length }}")
                .find("nest too deeply"),
            std::string::npos);
  // A loop object holds items too: saved and chained, it is held to the same depth.
  EXPECT_NE(render("{% set ns = namespace(v=0) %}{% for i in range(1000) %}{% for x in [ns.v, 0] %}{% if loop.last %}"
                   "{% set ns.v = [loop] %}{% endif %}{% endfor %}{% endfor %}")
                .find("nest too deeply"),
            std::string::npos);
  // A strided slice of a long text makes only what it selects.
  EXPECT_EQ(render("{{ ('ab' * 500000)[::100000] }}|{{ ('ab' * 500000)[-3:] }}|{{ 'héllo'[::-2] }}"),
            "aaaaaaaaaa|bab|olh");
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% set ns.me = ns %}{% set ns.big = 'y' * 1000 %}{{ ns.me.x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(a=[1, 2]) %}{% for i in range(30) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}"
                   "{{ ns.a | tojson }}",
                   "{}", small),
            "ERROR: tojson: the text is longer than 1048576 bytes");
  EXPECT_EQ(render("{{ '' * 9223372036854775807 }}|{{ ('a' * 1000).replace('a', 'b' * 10000) | length }}", "{}", small),
            "ERROR: the template made a text longer than 1048576 bytes");
  EXPECT_EQ(render("{{ 1 // 0 }}"), "ERROR: integer division or modulo by zero");
}

// Client text keeps its provenance through the string operations templates apply to it, so the
// tokenizer can tell the template's markers from text a client typed.
TEST(Jinja, client_bytes_stay_marked_through_string_operations) {
  auto compiled = Template::compile(
      "<|im_start|>{{ m.content.strip().split('|')[0] }}<|im_end|>{{ (m.content ~ '!')[1:] }}{{ m.content | upper }}");
  ASSERT_TRUE(compiled);
  Variables variables;
  auto parsed = json::parse(R"({"content": "  ab|cd "})", "m");
  variables.emplace_back("m", Value::from_client_json(*parsed));
  auto text = compiled->render(variables);
  ASSERT_TRUE(text);
  EXPECT_EQ(text->bytes(), "<|im_start|>ab<|im_end|> ab|cd !  AB|CD ");
  std::string mask(text->size(), 't');
  for (const auto& span : text->client_spans()) std::fill(mask.begin() + span.begin, mask.begin() + span.end, 'c');
  // template | client "ab" | template | client " ab|cd " then template "!" | client (upper)
  EXPECT_EQ(mask, std::string(12, 't') + "cc" + std::string(10, 't') + std::string(7, 'c') + "t" + std::string(8, 'c'));
}

}  // namespace
}  // namespace darkbloom::engine
