"""Find the program of the code making an HTTP request, from LangChain's run context.

LangChain keeps the current child config in ``var_child_runnable_config`` (a contextvar that
LangGraph carries into sync nodes' worker threads and async tasks). The wrapper puts the program
id in the root config's metadata, which every child run inherits; the zero-code handler instead
maps run ids to programs and we look up the parent run of the current config. Registered with
``thunder_core.add_program_resolver`` so the httpx hook tags requests from any client
(``ChatOpenAI``, the ``openai`` SDK, raw httpx) without touching the nodes.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.runnables.config import var_child_runnable_config

from thunder_core import add_program_resolver

PROGRAM_METADATA_KEY = "thunder_program_id"

_run_programs: dict[UUID, str] = {}
_run_lock = threading.Lock()


def remember_run(run_id: UUID, program_id: str) -> None:
    with _run_lock:
        _run_programs[run_id] = program_id


def forget_run(run_id: UUID) -> None:
    with _run_lock:
        _run_programs.pop(run_id, None)


def program_of_run(run_id: UUID | None) -> str | None:
    if run_id is None:
        return None
    return _run_programs.get(run_id)


def program_from_config(config: Any) -> str | None:
    if not config:
        return None
    metadata = config.get("metadata") or {}
    program_id = metadata.get(PROGRAM_METADATA_KEY)
    if isinstance(program_id, str):
        return program_id
    callbacks = config.get("callbacks")
    return program_of_run(getattr(callbacks, "parent_run_id", None))


def _resolve() -> str | None:
    return program_from_config(var_child_runnable_config.get())


def install() -> None:
    """Register the resolver (idempotent) and the httpx hook it feeds."""
    add_program_resolver(_resolve)
