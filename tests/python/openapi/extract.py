"""Extracts the response schemas Switchback is checked against from OpenAI's OpenAPI spec.

Usage: extract.py OPENAPI_YAML COMMIT > schemas.json

OPENAPI_YAML is `openapi.yaml` of https://github.com/openai/openai-openapi at COMMIT. The
output is one JSON Schema (Draft 2020-12) document whose `$defs` hold the root schemas below
and every schema they `$ref`, rewritten so that plain `jsonschema` validates with OpenAPI 3.1
meaning:

- `$ref: #/components/schemas/X` becomes `#/$defs/X`;
- `nullable: true`, an OpenAPI 3.0 keyword the 3.1 spec still uses in places, becomes a
  `"null"` in `type` (and a `null` in `enum`), which is what it means;
- annotations that never change a validation result (`description`, `title`, `example`,
  `default`, `deprecated`, `discriminator`, `x-*` extensions) are dropped, to keep the
  pinned file small. `discriminator` only tells code generators which `oneOf` branch to
  pick; the `oneOf` itself is kept.
"""
import json
import sys

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
]
PREFIX = "#/components/schemas/"
DROPPED = {"description", "title", "example", "examples", "default", "deprecated", "discriminator"}
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
SCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems"}
SCHEMA_ONE = {
    "items", "additionalProperties", "not", "contains", "if", "then", "else",
    "propertyNames", "unevaluatedProperties", "unevaluatedItems",
}


def refs(schema):
    """Every `$ref` target name under `schema`."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref":
                if not value.startswith(PREFIX):
                    raise ValueError(f"unexpected $ref {value}")
                yield value[len(PREFIX):]
            else:
                yield from refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from refs(value)


def closure(schemas, roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(refs(schemas[name]))
    return sorted(seen)


def convert(schema):
    """One schema in OpenAPI 3.1 form to plain Draft 2020-12, annotations dropped."""
    if not isinstance(schema, dict):
        return schema  # `true` / `false` schemas
    out = {}
    for key, value in schema.items():
        if key in DROPPED or key.startswith("x-") or key == "nullable":
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + value[len(PREFIX):]
        elif key in SCHEMA_MAPS:
            out[key] = {name: convert(v) for name, v in value.items()}
        elif key in SCHEMA_LISTS:
            out[key] = [convert(v) for v in value]
        elif key in SCHEMA_ONE:
            out[key] = convert(value)
        else:
            out[key] = value
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"] if "null" not in types else types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
        if "type" not in out and "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def main():
    path, commit = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    schemas = spec["components"]["schemas"]
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"Extracted by extract.py from openapi.yaml of openai/openai-openapi at {commit} "
            f"(OpenAPI {spec['openapi']}, API version {spec['info']['version']})"
        ),
        "$defs": {name: convert(schemas[name]) for name in closure(schemas, ROOTS)},
    }
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
