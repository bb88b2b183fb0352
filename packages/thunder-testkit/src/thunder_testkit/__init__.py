"""Thunder's shared test kit (not published): fakes and helpers for every test directory.

Modules (imported one by one, so a test pulls in only what it uses):

* ``polling``: ``until`` / ``until_async``, poll a condition with a deadline.
* ``cores``: ``ScriptedCore``, a fake scheduling core answering events from a script.
* ``engines``: fake SGLang / vLLM / llama.cpp control planes on ``httpx.MockTransport``.
* ``runtimes``: ``FakeRuntimeBackend``, an in-memory tool runtime backend.
* ``proxy``: a scripted upstream, a recording gate and an in-process ASGI driver for the proxy.
* ``openai_server``: ``ScriptedOpenAI``, a scripted tool-calling OpenAI server on loopback.
* ``service``: ``start_service_thread``, the real scheduler app served in this process.
* ``emitter``: ``RecordingEmitter``, records the lifecycle calls an adapter makes.
* ``sockets``: ``sockets_of_this_process``, to check socket options set by the code under test.
"""

from thunder_testkit.polling import until, until_async

__all__ = ["until", "until_async"]
