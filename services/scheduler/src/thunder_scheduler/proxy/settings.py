"""Settings of the proxy data plane (embedded by the service's ``settings.py``).

Defaults and where they come from:

* ``max_body_bytes`` = 16 MiB: our choice. A 16k-token chat prompt is about 64 KB of JSON
  (four bytes per token, OpenAI's rule of thumb) and a base64 image a few MB, so 16 MiB leaves
  room for several images while refusing a runaway body before it is parsed.
* ``upstream_connect_timeout_s`` = 5 s: a loopback or LAN engine accepts a connection in
  milliseconds; five seconds separates "down" from "slow" (our choice).
* ``upstream_read_timeout_s`` = 600 s: the longest silence allowed between two bytes of an
  engine's answer. On the 2-core test machines llama-server prefills about 130 tokens/s
  (``../shared/reference/engines-and-frameworks.md``: 969 tokens in 7.6 s), so a cold 64k-token
  prompt needs about 500 s before its first byte; 600 s covers it.
* ``upstream_max_connections`` = 1024: the pool size over all engines. It must exceed the
  number of requests in flight (the benchmark drives 256 at once), or requests queue inside
  the client (aiohttp's default of 100 would).
* ``upstream_client`` = ``"raw"`` (asyncio + httptools, ``upstream_raw``): chosen by
  measurement against ``aiohttp`` and ``httpx``, see ``bench/results/proxy/results.md``.
* ``abort_timeout_s`` = 2 s: how long an explicit engine abort (SGLang ``/abort_request``)
  may take after a client left, before we give up on it (the connection is closed anyway).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ProxySettings", "UpstreamClientName"]

UpstreamClientName = Literal["aiohttp", "httpx", "raw"]


class ProxySettings(BaseModel):
    """Knobs of the data plane; validated by pydantic, errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="largest request body accepted (413 above)"
    )
    upstream_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="time to open a connection to an engine (504 after)"
    )
    upstream_read_timeout_s: float = Field(
        default=600.0, gt=0, description="longest silence between two bytes of an engine answer"
    )
    upstream_max_connections: int = Field(
        default=1024, gt=0, description="pooled connections to all engines together"
    )
    upstream_client: UpstreamClientName = Field(
        default="raw", description="HTTP client used to reach the engines"
    )
    abort_timeout_s: float = Field(
        default=2.0, gt=0, description="time allowed for an explicit engine abort"
    )
