"""The proxy data plane: OpenAI / SGLang-native endpoints forwarded to engines (see routes)."""

from thunder_scheduler.proxy.fast_path import FastPathApp
from thunder_scheduler.proxy.routes import ProxyEndpoints, create_proxy_router
from thunder_scheduler.proxy.settings import ProxySettings, UpstreamClientName
from thunder_scheduler.proxy.upstream import (
    UPSTREAM_CLIENTS,
    UpstreamClient,
    UpstreamResponse,
    create_upstream_client,
)

__all__ = [
    "UPSTREAM_CLIENTS",
    "FastPathApp",
    "ProxyEndpoints",
    "ProxySettings",
    "UpstreamClient",
    "UpstreamClientName",
    "UpstreamResponse",
    "create_proxy_router",
    "create_upstream_client",
]
