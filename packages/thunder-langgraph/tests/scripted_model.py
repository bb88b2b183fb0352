"""TEST SUPPORT: a scripted streaming chat model (not a real model) for streaming-dispatch tests.

Each turn is a list of ``AIMessageChunk``s played in order; the turn is chosen by the number of
tool results already in the conversation, so one script drives a whole agent loop. ``pause``
lets a test stop the stream before chunk *k* of a turn until a condition holds (for example,
until a tool has started), which shows that dispatch happened while the model was still
streaming without timing anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult


def call_chunks(index: int, call_id: str, name: str, args: dict[str, Any] | str,
                pieces: int = 3) -> list[AIMessageChunk]:
    """A tool call as an OpenAI-style stream: header, then the arguments in ``pieces``."""
    text = args if isinstance(args, str) else json.dumps(args)
    step = max(1, -(-len(text) // pieces))
    out = [AIMessageChunk(content="", tool_call_chunks=[
        {"index": index, "id": call_id, "name": name, "args": "", "type": "tool_call_chunk"}])]
    for start in range(0, len(text), step):
        out.append(AIMessageChunk(content="", tool_call_chunks=[
            {"index": index, "id": None, "name": None, "args": text[start:start + step],
             "type": "tool_call_chunk"}]))
    return out


def text_chunks(text: str) -> list[AIMessageChunk]:
    return [AIMessageChunk(content=word + " ") for word in text.split(" ")]


def finish() -> AIMessageChunk:
    return AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})


def usage() -> AIMessageChunk:
    """The trailing usage chunk OpenAI-compatible servers send after the finish chunk."""
    return AIMessageChunk(content="", usage_metadata={
        "input_tokens": 10, "output_tokens": 5, "total_tokens": 15})


class ScriptedStreamingModel(BaseChatModel):
    """Plays ``turns``; ``pauses[(turn, k)]`` is waited on before chunk k of that turn."""

    turns: list[list[AIMessageChunk]]
    pauses: dict[tuple[int, int], Callable[[], bool]] = {}
    pause_timeout_s: float = 5.0
    streamed: list[int] = []   # turns played through the streaming API
    met: dict[tuple[int, int], bool] = {}   # pause -> whether its condition came true in time
    raise_at: tuple[int, int] | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted-streaming-test-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedStreamingModel:
        return self

    def _turn(self, messages: list[BaseMessage]) -> int:
        return min(sum(isinstance(m, ToolMessage) for m in messages), len(self.turns) - 1)

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[tuple[int, int, AIMessageChunk]]:
        turn = self._turn(messages)
        for k, chunk in enumerate(self.turns[turn]):
            yield turn, k, chunk.model_copy(deep=True)

    def _wait(self, turn: int, k: int) -> None:
        if self.raise_at == (turn, k):
            raise ConnectionError("stream broke")
        condition = self.pauses.get((turn, k))
        if condition is None:
            return
        done = threading.Event()
        self.met[(turn, k)] = False
        for _ in range(int(self.pause_timeout_s / 0.01)):
            if condition():
                self.met[(turn, k)] = True
                return
            done.wait(0.01)

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for turn, k, chunk in self._chunks(messages):
            if k == 0:
                self.streamed.append(turn)
            self._wait(turn, k)
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        import asyncio

        for turn, k, chunk in self._chunks(messages):
            if k == 0:
                self.streamed.append(turn)
            if self.raise_at == (turn, k):
                raise ConnectionError("stream broke")
            condition = self.pauses.get((turn, k))
            if condition is not None:
                self.met[(turn, k)] = False
            for _ in range(int(self.pause_timeout_s / 0.01) if condition else 0):
                if condition is not None and condition():
                    self.met[(turn, k)] = True
                    break
                await asyncio.sleep(0.01)
            yield ChatGenerationChunk(message=chunk)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(
            ChatGenerationChunk(message=chunk) for _, _, chunk in self._chunks(messages)
        )
