// JSON Schema (the subset structured output needs) and plain JSON, compiled to grammars whose
// every complete match is a JSON text the schema accepts.
//
// Supported: type (one or a list), properties, required, additionalProperties (false, true or a
// schema), enum, const, items, prefixItems, minItems/maxItems, minLength/maxLength, pattern,
// format (date, time, date-time, uuid, email), minimum/maximum/exclusiveMinimum/
// exclusiveMaximum on integers, anyOf, oneOf (generated as anyOf), allOf of object schemas,
// $ref into $defs/definitions (recursion included), nullable, and the annotations (title,
// description, default, examples, $schema, $id, $comment, deprecated, readOnly, writeOnly).
// Anything else is refused with the keyword and its path.
//
// Generation choices (each output is still valid): properties come in the schema's order,
// properties the schema does not declare are produced only where additionalProperties allows
// them explicitly or the schema declares no properties at all, whitespace between tokens is bounded (kMaxWhitespace),
// numbers have at most 16 integer and 16 fraction digits.
#pragma once

#include "base/json.h"
#include "base/result.h"
#include "engine/grammar/grammar.h"

namespace darkbloom::engine::grammar {

// A grammar for JSON texts `schema` accepts. Errors (Errc::invalid_argument) read
// "the keyword 'minProperties' at #/properties/a is not supported".
Result<Grammar> compile_json_schema(const json::bj::value& schema);

// A grammar for any JSON object (response_format json_object).
Grammar json_object_grammar();

}  // namespace darkbloom::engine::grammar
