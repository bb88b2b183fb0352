"""The ``thunder_terminal`` tool: OpenHands' terminal tool, executed in the scheduler's runtime.

Register-once tool spec ``Tool(name="thunder_terminal")``. It resolves to the SDK's own
``TerminalTool`` (the LLM sees the usual ``terminal`` tool, same schema and description):

* in a conversation whose workspace is a Docker-backed ``ThunderWorkspace``, with
  :class:`RuntimeExecExecutor`, which runs each command in the container through the tool
  manager's exec API;
* anywhere else (a local-process runtime, a plain local workspace), with the SDK's own executor
  (``terminal_type`` from the tool params, default ``subprocess``), i.e. exactly
  ``Tool(name="terminal")``.

What the exec executor keeps and drops compared with the SDK's persistent shell: each command
is one ``sh -c`` in the container; the working directory is carried from call to call (the
command ends by printing ``pwd`` after a marker line that is cut from the output), environment
variables and background jobs are not. ``is_input`` (keystrokes to a running process) and
``reset`` are answered with an error observation. A command without ``timeout`` gets
:data:`DEFAULT_TIMEOUT_S`; a timeout comes back as ``exit_code -1`` with ``timeout=True``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from openhands.sdk.tool import ToolExecutor, register_tool
from openhands.tools.terminal import TerminalAction, TerminalObservation, TerminalTool

from thunder_core.client import ThunderAPIError

if TYPE_CHECKING:
    from openhands.sdk.conversation.state import ConversationState

    from thunder_openhands.workspace import ThunderWorkspace

TOOL_NAME: Final = "thunder_terminal"
DEFAULT_TIMEOUT_S: Final = 120.0
"""The SDK's terminal asks the model after 30 s without output (``NO_CHANGE_TIMEOUT_SECONDS``);
an exec cannot stream, so a fixed bound stands in: two minutes covers installs and test runs in
the shared traces' median tool call and leaves the per-call limit to ``timeout``."""
PWD_MARKER: Final = "__THUNDER_PWD__"


class RuntimeExecExecutor(ToolExecutor[TerminalAction, TerminalObservation]):
    """Terminal commands through ``POST .../runtimes/{rid}/exec`` (see the module docstring)."""

    def __init__(self, workspace: ThunderWorkspace, cwd: str | None = None) -> None:
        self.workspace = workspace
        self.cwd = cwd

    def __call__(self, action: TerminalAction, conversation: Any = None) -> TerminalObservation:
        if action.is_input or action.reset:
            return TerminalObservation.from_text(
                "this terminal runs each command in the sandbox through the scheduler's exec "
                "API: input to a running process and reset are not supported",
                is_error=True, command=action.command,
            )
        timeout_s = action.timeout or DEFAULT_TIMEOUT_S
        script = f"{action.command}\n__thunder_rc=$?; echo; echo {PWD_MARKER}; pwd; " \
                 "exit $__thunder_rc"
        if self.cwd is not None:
            script = f"cd {shlex.quote(self.cwd)} || exit 1\n{script}"
        try:
            result = self.workspace.exec(script, timeout_s=timeout_s)
        except ThunderAPIError as exc:
            if exc.status_code == 504:
                return TerminalObservation.from_text(
                    f"command timed out after {timeout_s:g} s and was killed",
                    is_error=True, command=action.command, exit_code=-1, timeout=True,
                )
            raise
        stdout = result.stdout
        head, marker, tail = stdout.rpartition(f"\n{PWD_MARKER}\n")
        if marker:
            stdout = head
            self.cwd = tail.strip() or self.cwd
        text = stdout + (("\n" + result.stderr) if result.stderr else "")
        return TerminalObservation.from_text(
            text.rstrip("\n"), is_error=result.exit_code != 0, command=action.command,
            exit_code=result.exit_code,
        )


class ThunderTerminalTool(TerminalTool):
    """Resolver for ``Tool(name="thunder_terminal")``; the tools it returns are ``terminal``."""

    name = TOOL_NAME

    @classmethod
    def create(  # type: ignore[override]
        cls, conv_state: ConversationState, **params: Any
    ) -> Sequence[TerminalTool]:
        from thunder_openhands.workspace import ThunderWorkspace

        workspace = conv_state.workspace
        if isinstance(workspace, ThunderWorkspace) and workspace.runtime_backend != "local":
            executor = RuntimeExecExecutor(workspace)
            return TerminalTool.create(conv_state, executor=executor)
        params.setdefault("terminal_type", "subprocess")
        return TerminalTool.create(conv_state, **params)


def register() -> None:
    """Make ``Tool(name="thunder_terminal")`` resolvable (idempotent)."""
    from openhands.sdk.tool.registry import list_registered_tools

    if TOOL_NAME not in list_registered_tools():
        register_tool(TOOL_NAME, ThunderTerminalTool)


register()

__all__ = ["DEFAULT_TIMEOUT_S", "TOOL_NAME", "RuntimeExecExecutor", "ThunderTerminalTool",
           "register"]
