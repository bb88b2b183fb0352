"""The service's OpenAPI document: FastAPI's, plus what it cannot infer by itself.

The proxy routes read their bodies raw (they stream them to the engine unparsed), so FastAPI
sees no request body there; this module adds one per route, written from the OpenAI and SGLang
APIs the proxy speaks (the fields the scheduler itself reads, the common sampling fields, and
``additionalProperties: true`` since everything else is passed to the engine as is), and the
``X-Thunder-Program-Id`` header. It also declares the two security schemes, both HTTP bearer:
``ClientKey`` (``api_key``) on the OpenAI / SGLang routes and ``AdminKey`` (``admin_key``) on
the lifecycle and tool routes, each only when its key is configured; ``/health``, ``/ready``
and ``/metrics`` stay open.

``describe(app, ...)`` wraps ``app.openapi`` once; the document is built on first request of
``/openapi.json`` and cached by FastAPI as usual.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI

from thunder_core.contract import PROGRAM_ID_HEADER, PROGRAM_ID_MAX_LEN

_STRINGS: Final = {"type": "array", "items": {"type": "string"}}
_MESSAGE: Final = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}},
                              {"type": "null"}]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
_SAMPLING: Final[dict[str, Any]] = {
    "model": {"type": "string", "description": "as the engine serves it"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "n": {"type": "integer", "minimum": 1, "maximum": 1},
    "stop": {"anyOf": [{"type": "string"}, _STRINGS]},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object",
                       "properties": {"include_usage": {"type": "boolean"}}},
    "seed": {"type": "integer"},
    "user": {"type": "string"},
    "program_id": {"type": "string", "minLength": 1, "maxLength": PROGRAM_ID_MAX_LEN,
                   "description": "the program this request belongs to (or the header)"},
    "extra_body": {"type": "object", "description": "may carry program_id too"},
}
BODIES: Final[dict[str, dict[str, Any]]] = {
    "/v1/chat/completions": {
        "type": "object", "required": ["messages"],
        "properties": {
            **_SAMPLING,
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        },
        "additionalProperties": True,
    },
    "/v1/completions": {
        "type": "object", "required": ["prompt"],
        "properties": {
            **_SAMPLING,
            "prompt": {"anyOf": [{"type": "string"}, _STRINGS,
                                 {"type": "array", "items": {"type": "integer", "minimum": 0}}]},
        },
        "additionalProperties": True,
    },
    "/generate": {
        "type": "object",
        "description": "SGLang native: text or input_ids",
        "properties": {
            "text": {"anyOf": [{"type": "string"}, _STRINGS]},
            "input_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "sampling_params": {
                "type": "object",
                "properties": {"max_new_tokens": {"type": "integer", "minimum": 1},
                               "temperature": {"type": "number", "minimum": 0}},
                "additionalProperties": True,
            },
            "stream": {"type": "boolean"},
            "rid": {"type": "string"},
            "program_id": _SAMPLING["program_id"],
        },
        "additionalProperties": True,
    },
}
PROXY_PATHS: Final = (*BODIES, "/v1/models")
OPEN_PATHS: Final = ("/health", "/ready", "/metrics")


def describe(app: FastAPI, *, client_key: bool, admin_key: bool) -> None:
    """Make ``app.openapi()`` describe the proxy bodies and the security schemes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _complete(schema, client_key=client_key, admin_key=admin_key)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(schema: dict[str, Any], *, client_key: bool, admin_key: bool) -> None:
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    if client_key:
        schemes["ClientKey"] = {"type": "http", "scheme": "bearer",
                                "description": "the service's api_key (OpenAI / SGLang routes)"}
    if admin_key:
        schemes["AdminKey"] = {"type": "http", "scheme": "bearer",
                               "description": "the service's admin_key (lifecycle, tools)"}
    header = {"name": PROGRAM_ID_HEADER, "in": "header", "required": False,
              "description": "the program this request belongs to",
              "schema": {"type": "string", "minLength": 1, "maxLength": PROGRAM_ID_MAX_LEN}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if path in BODIES and method == "post":
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": BODIES[path]}},
                }
                operation.setdefault("parameters", []).append(header)
            if path in PROXY_PATHS:
                if client_key:
                    operation["security"] = [{"ClientKey": []}]
            elif path not in OPEN_PATHS and admin_key:
                operation["security"] = [{"AdminKey": []}]


__all__ = ["BODIES", "describe"]
