"""An unmodified OpenHands SDK agent, run under the Thunder scheduler.

    export THUNDER_SCHEDULER_URL=http://127.0.0.1:8300     # the toggle (the .pth hook reads it)
    export LLM_BASE_URL=http://127.0.0.1:8080/v1           # your engine; the toggle re-points it
    export MODEL=smollm2                                   # a model a scheduler backend serves
    export THUNDER_RUNTIME_SPEC=my-spec                    # optional: sandbox from the warm pool
    python examples/openhands/run_agent.py "List the files here, then say done."

Nothing in this file mentions Thunder except the optional workspace: with
``THUNDER_SCHEDULER_URL`` set, installing thunder-openhands is enough (its ``.pth`` file
enables the toggle when the SDK is imported). Prints the conversation id, which is the
program id; ``curl $THUNDER_SCHEDULER_URL/v1/programs/<id>`` shows what the scheduler saw.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

import sys
import tempfile

from openhands.sdk import LLM, Agent, Conversation, Tool
from openhands.sdk.workspace import LocalWorkspace
from openhands.tools.terminal import TerminalTool  # noqa: F401  (registers "terminal")


def main(task: str) -> int:
    llm = LLM(model="openai/" + os.environ.get("MODEL", "smollm2"),
              base_url=os.environ.get("LLM_BASE_URL"), api_key=os.environ.get("LLM_API_KEY",
                                                                              "unused"),
              usage_id="agent", max_output_tokens=int(os.environ.get("MAX_OUTPUT_TOKENS", "256")))
    spec = os.environ.get("THUNDER_RUNTIME_SPEC")
    workspace: LocalWorkspace
    if spec:
        from thunder_openhands import ThunderWorkspace
        from thunder_openhands.runtime_terminal import TOOL_NAME

        workspace = ThunderWorkspace.acquire(spec)
        tools = [Tool(name=TOOL_NAME)]      # runs in the runtime whatever its backend
    else:
        workspace = LocalWorkspace(working_dir=tempfile.mkdtemp(prefix="oh-example-"))
        tools = [Tool(name="terminal", params={"terminal_type": "subprocess"})]
    conversation = Conversation(agent=Agent(llm=llm, tools=tools), workspace=workspace,
                                visualizer=None)
    try:
        conversation.send_message(task)
        conversation.run()
    finally:
        conversation.close()
    status = conversation.state.execution_status.value
    print(f"conversation {conversation.id} {status}")
    return 0 if status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "Print the working directory, then say done."))
