"""The OpenAPI document describes the proxy bodies and the security schemes."""

from __future__ import annotations

from pydantic import SecretStr

from thunder_scheduler.app import create_app
from thunder_scheduler.settings import ServiceSettings


def _ops(spec: dict) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    return {(m.upper(), p): op for p, ops in spec["paths"].items() for m, op in ops.items()}


def test_keys_give_security_schemes_on_their_routes() -> None:
    app = create_app(ServiceSettings(api_key=SecretStr("c"), admin_key=SecretStr("a")))
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ClientKey"]["scheme"] == schemes["AdminKey"]["scheme"] == "bearer"
    ops = _ops(spec)
    assert ops[("POST", "/v1/chat/completions")]["security"] == [{"ClientKey": []}]
    assert ops[("GET", "/v1/models")]["security"] == [{"ClientKey": []}]
    assert ops[("POST", "/v1/programs")]["security"] == [{"AdminKey": []}]
    assert "security" not in ops[("GET", "/health")]
    assert app.openapi() is spec  # built once


def test_proxy_routes_have_bodies_and_the_program_header_without_keys() -> None:
    spec = create_app(ServiceSettings()).openapi()
    assert "securitySchemes" not in spec.get("components", {}) or not \
        spec["components"]["securitySchemes"]
    ops = _ops(spec)
    for path, required in (("/v1/chat/completions", ["messages"]),
                           ("/v1/completions", ["prompt"]), ("/generate", None)):
        op = ops[("POST", path)]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body.get("required") == required and body["additionalProperties"] is True
        assert any(p["name"] == "X-Thunder-Program-Id" for p in op["parameters"])
        assert "security" not in op
