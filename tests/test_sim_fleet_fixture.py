"""The sim_fleet fixture starts real thunder-sim processes that answer the SGLang API."""

from __future__ import annotations

import httpx


def test_sim_fleet_starts_independent_engines(sim_fleet) -> None:  # type: ignore[no-untyped-def]
    urls = sim_fleet(2, time_scale=50.0)
    assert len(set(urls)) == 2
    prompt = {"prompt": "shared prefix " * 100, "max_tokens": 3}
    for url in urls:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/health").status_code == 200
            first = c.post("/v1/completions", json=prompt).json()
            assert first["usage"]["completion_tokens"] == 3
            assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # own cache
            second = c.post("/v1/completions", json=prompt).json()
            assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
