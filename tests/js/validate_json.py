#!/usr/bin/python3
"""Validates answers against JSON Schemas with an independent validator (Debian's
python3-jsonschema, draft 2020-12, formats checked). Reads a JSON array of {"schema", "text"}
on stdin; prints a JSON array of {"valid": bool, "error": str}."""
import json
import sys

import jsonschema


def check(schema, text):
    try:
        instance = json.loads(text)
    except ValueError as e:
        return {"valid": False, "error": f"not JSON: {e}"}
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        return {"valid": False, "error": errors[0].message}
    return {"valid": True, "error": ""}


def main():
    cases = json.load(sys.stdin)
    json.dump([check(case["schema"], case["text"]) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
