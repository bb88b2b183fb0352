"""The wire contract: identity precedence, validation, stripping, event models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import thunder_core
from thunder_core.contract import (
    LITELLM_SESSION_HEADER,
    PROGRAM_ID_HEADER,
    InvalidProgramId,
    ProgramEnd,
    ProgramEndStatus,
    ProgramStart,
    ToolStart,
    engine_request_id,
    program_id_from,
    strip_identity,
)


def test_header_wins_over_body_and_litellm() -> None:
    headers = {PROGRAM_ID_HEADER: "from-header", LITELLM_SESSION_HEADER: "conv"}
    body = {"program_id": "from-body"}
    assert program_id_from(headers, body) == "from-header"


def test_header_lookup_is_case_insensitive_for_plain_dicts() -> None:
    assert program_id_from({"x-thunder-program-id": "a1"}, None) == "a1"
    assert program_id_from({"X-LiteLLM-Session-Id": "conv-9"}, {}) == "conv-9"


def test_body_field_top_level_then_extra_body() -> None:
    assert program_id_from({}, {"program_id": "top"}) == "top"
    assert program_id_from({}, {"extra_body": {"program_id": "nested"}}) == "nested"
    assert program_id_from({}, {"program_id": "top", "extra_body": {"program_id": "n"}}) == "top"


def test_litellm_session_header_is_the_fallback() -> None:
    assert program_id_from({LITELLM_SESSION_HEADER: "conv-1"}, {"model": "m"}) == "conv-1"


def test_thunderagents_session_ids_are_program_ids_in_its_order() -> None:
    """What ThunderAgent's proxy also reads (``app.py`` ``get_program_id``): Dynamo's session
    header, then ``X-Session-ID``, then ``nvext.agent_context.session_id``; all after the body's
    ``program_id`` and before litellm's header."""
    nvext = {"model": "m", "nvext": {"agent_context": {"session_id": "from-nvext"}}}
    assert program_id_from({"x-dynamo-session-id": "dyn"}, {"model": "m"}) == "dyn"
    assert program_id_from({"X-Session-ID": "skyrl-7"}, {"model": "m"}) == "skyrl-7"
    assert program_id_from({"x-session-id": "lower"}, None) == "lower"
    assert program_id_from({}, nvext) == "from-nvext"
    assert program_id_from({"X-Session-ID": "s", "x-dynamo-session-id": "d"}, nvext) == "d"
    assert program_id_from({"X-Session-ID": "s"}, nvext) == "s"
    assert program_id_from({"X-Session-ID": "s"}, {"program_id": "body"}) == "body"
    assert program_id_from({LITELLM_SESSION_HEADER: "conv"}, nvext) == "from-nvext"
    assert program_id_from({}, {"nvext": {"agent_context": "not an object"}}) is None
    with pytest.raises(InvalidProgramId, match=r"nvext\.agent_context\.session_id"):
        program_id_from({}, {"nvext": {"agent_context": {"session_id": 7}}})
    with pytest.raises(InvalidProgramId):
        program_id_from({"X-Session-ID": "has space"}, None)


def test_untagged_request_has_no_program() -> None:
    assert program_id_from({"content-type": "application/json"}, {"model": "m"}) is None


@pytest.mark.parametrize(
    "bad", ["", "has space", "x" * 257, "caf\u00e9", "parent/child", "a?b", "a#b", "50%"]
)
def test_malformed_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidProgramId):
        program_id_from({PROGRAM_ID_HEADER: bad}, None)


def test_non_string_body_id_is_rejected() -> None:
    with pytest.raises(InvalidProgramId, match="must be a string"):
        program_id_from({}, {"program_id": 42})


def test_strip_identity_removes_our_fields_only() -> None:
    body = {"model": "m", "program_id": "p", "extra_body": {"program_id": "p"}, "rid": "r"}
    assert strip_identity(body) == {"model": "m", "rid": "r"}
    keep = {"extra_body": {"program_id": "p", "top_k": 3}}
    assert strip_identity(keep) == {"extra_body": {"top_k": 3}}


def test_engine_request_id_format() -> None:
    assert engine_request_id("agent-7", 3) == "agent-7:3"


def test_event_models_validate_and_forbid_unknown_fields() -> None:
    start = ProgramStart(program_id="p1", framework="langgraph", priority=5, tags={"team": "a"})
    assert start.model_dump(exclude_none=True)["tags"] == {"team": "a"}
    with pytest.raises(ValidationError):
        ProgramStart(program_id="p1", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ProgramStart(program_id="bad id")
    with pytest.raises(ValidationError):
        ToolStart(call_id="", tool_name="bash")
    assert ProgramEnd(status="cancelled").status is ProgramEndStatus.CANCELLED  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ProgramEnd(status="exploded")  # type: ignore[arg-type]


def test_public_api_is_curated() -> None:
    exported = set(thunder_core.__all__)
    assert exported == {name for name in dir(thunder_core) if name in exported}
    for name in exported:
        assert getattr(thunder_core, name) is not None
    assert "PROGRAM_ID_HEADER" in exported and "LifecycleEmitter" in exported
    # the runtime API (thunder_core.runtimes) is public from the top level too
    assert thunder_core.runtimes.__all__  # the module's own curated list
    assert set(thunder_core.runtimes.__all__) <= exported
    assert thunder_core.RuntimeClient is thunder_core.runtimes.RuntimeClient
