"""The proxy data plane: OpenAI / SGLang-native endpoints forwarded to engines (see routes)."""

from thunder_scheduler.proxy.routes import create_proxy_router
from thunder_scheduler.proxy.settings import ProxySettings, UpstreamClientName
from thunder_scheduler.proxy.upstream import (
    UPSTREAM_CLIENTS,
    UpstreamClient,
    UpstreamResponse,
    create_upstream_client,
)

__all__ = [
    "UPSTREAM_CLIENTS",
    "ProxySettings",
    "UpstreamClient",
    "UpstreamClientName",
    "UpstreamResponse",
    "create_proxy_router",
    "create_upstream_client",
]
