"""The zero-code toggle: with ``THUNDER_SCHEDULER_URL`` set, thunder-openhands enables itself.

The wheel installs ``thunder_openhands.pth`` into site-packages. Python runs its one line at
every interpreter start; it imports this module only when ``THUNDER_SCHEDULER_URL`` is set, so
processes without the variable pay one ``os.environ`` lookup. Importing this module calls
``thunder_openhands.enable()`` with the URL from the environment (``THUNDER_OPENHANDS_ROUTE=0``:
tag requests without re-pointing ``base_url``). A failure (a bad URL, an unsupported SDK) is
printed to stderr by the ``.pth`` line and the program runs untouched.

Importing openhands-sdk at interpreter start would cost every Python process on the machine
about a second (litellm), so the toggle is armed lazily: a meta-path finder waits for the first
import of ``openhands.sdk.conversation.impl.local_conversation`` and enables the toggle right
after it. Processes that never use OpenHands never import it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final

from thunder_core.client import SCHEDULER_URL_ENV

ROUTE_ENV: Final = "THUNDER_OPENHANDS_ROUTE"
TRIGGER_MODULE: Final = "openhands.sdk.conversation.impl.local_conversation"


def _enable_from_env() -> None:
    from thunder_openhands.toggle import enable

    route = os.environ.get(ROUTE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    enable(os.environ[SCHEDULER_URL_ENV], route=route)


class _EnableAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``TRIGGER_MODULE`` through the other finders, then enables after it executed."""

    def __init__(self) -> None:
        self._spec: importlib.machinery.ModuleSpec | None = None

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TRIGGER_MODULE:
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is None or spec.loader is None:
            return None
        self._spec = spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            _enable_from_env()
        except Exception as exc:  # never break the importing program
            print(f"thunder-openhands: toggle not enabled: {exc!r}", file=sys.stderr)

    _loader: Any


def arm() -> None:
    """Enable now if the SDK is already imported, else right after its first import."""
    if not os.environ.get(SCHEDULER_URL_ENV):
        return
    if TRIGGER_MODULE in sys.modules:
        _enable_from_env()
        return
    if not any(isinstance(finder, _EnableAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _EnableAfterImport())


arm()
