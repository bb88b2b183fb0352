"""Every collected test that starts a real llama-server is marked ``llama``.

The ``llama`` marker lets a run select or deselect real-engine tests
(``-m "not llama"``); a test that uses the engine fixtures without the marker would
slip through that filter. This check runs over whatever the session collected.
"""

from __future__ import annotations

import pytest

LLAMA_FIXTURES = {"llama_engines", "llama_server_bin"}


def test_llama_fixture_users_are_marked(request: pytest.FixtureRequest) -> None:
    unmarked = [
        item.nodeid
        for item in request.session.items
        if LLAMA_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("llama") is None
    ]
    assert unmarked == [], (
        f"tests using llama-server fixtures without @pytest.mark.llama: {unmarked}"
    )
