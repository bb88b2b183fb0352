"""Bearer-key authentication: an optional client key and a separate admin key.

The client key guards the OpenAI / SGLang endpoints the agents call; the admin key guards the
lifecycle and admin endpoints (program start/end, tools, runtimes). Either is off when unset.
``/health``, ``/ready`` and ``/metrics`` are open so probes and Prometheus need no secret.
Keys travel as ``Authorization: Bearer <key>`` and are compared in constant time
(``hmac.compare_digest``) so the comparison leaks no prefix length. A 401 carries
``WWW-Authenticate: Bearer realm="thunder"`` (RFC 6750 section 3: a resource server answering
401 to a bearer-token request MUST include the header); a wrong key adds
``error="invalid_token"``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from thunder_scheduler.errors import ServiceError, error_response

__all__ = ["KeyCheck", "KeyFirstMiddleware", "bearer_token", "require_key"]

KeyCheck = Callable[[Request], Awaitable[None]]

REALM = "thunder"


def _challenge(error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"'
    if error is not None:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_key(key: str | None, role: str) -> KeyCheck:
    """A FastAPI dependency that answers 401 unless the request carries ``key``.

    With ``key`` None the dependency lets everything through.
    """
    expected = key.encode() if key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ServiceError(
                401, f"missing {role} key: send 'Authorization: Bearer <key>'",
                headers=_challenge(),
            )
        if not hmac.compare_digest(token.encode(), expected):
            raise ServiceError(401, f"invalid {role} key", headers=_challenge("invalid_token"))

    return check


class KeyFirstMiddleware:
    """Checks the key of every keyed route before anything reads the request body (pure ASGI).

    FastAPI parses a route's body before it runs the route's dependencies, so with the key
    check only as a dependency an unauthenticated client with a malformed body would learn
    400 (and make the service parse its body) instead of getting 401. ``rules`` maps path
    prefixes to the check that guards them; the first matching prefix wins.
    """

    def __init__(self, app: ASGIApp, rules: list[tuple[tuple[str, ...], KeyCheck]]) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for prefixes, check in self.rules:
                if path.startswith(prefixes):
                    try:
                        await check(Request(scope))
                    except ServiceError as exc:
                        response = error_response(exc.status, exc.reason, headers=exc.headers)
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
