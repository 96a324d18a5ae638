"""docs/api.md is the OpenAPI document of the real app, rendered: it cannot go stale."""

from __future__ import annotations

from pathlib import Path

from gateway.openapi_doc import openapi_document, render, type_of

API_MD = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def test_docs_api_md_matches_the_app() -> None:
    document = openapi_document()
    expected = render(document)
    assert API_MD.read_text(encoding="utf-8") == expected, (
        "docs/api.md is stale: run `make docs` (python -m gateway.openapi_doc -o docs/api.md)"
    )
    for path, item in document["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in expected
    for name in document.get("components", {}).get("schemas", {}):
        assert f'<a id="schema-{name.lower()}"></a>' in expected


def test_rendering_is_deterministic_and_reads_json_schema() -> None:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "T", "version": "1"},
        "paths": {
            "/v1/things/{id}": {
                "get": {
                    "summary": "Read Thing",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "authorization", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Thing"}
                                }
                            },
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "description": "A thing | with a pipe.",
                    "properties": {
                        "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 3},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    "required": ["n"],
                    "additionalProperties": False,
                }
            }
        },
    }
    text = render(document)
    assert text == render(document)
    assert "Authentication: `Authorization: Bearer <key>`." in text
    assert "| `id` | path | string | yes |  |" in text
    assert "`authorization`" not in text  # the key header is said once, not as a parameter
    assert "| `n` | integer \\| null | yes | default `3` |" in text
    assert "| `tags` | object of string | no |  |" in text
    assert "No other fields are accepted." in text
    assert "[`Thing`](#schema-thing)" in text
    assert type_of({"enum": ["a", "b"]}) == '`"a"` | `"b"`'
    assert type_of({"type": "string", "format": "binary"}) == "string (binary)"
