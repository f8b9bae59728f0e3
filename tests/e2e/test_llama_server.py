"""The real llama.cpp server, spoken to directly (not through the engine).

These pin down the wire behaviour the engine relies on (docs/local-model.md has the raw
captures): a non-streaming answer with content and usage, SSE chunks ending in
`data: [DONE]`, `max_tokens` and `stop` honoured, a prompt longer than the context refused
with a 4xx OpenAI-shaped error, and a server crash mid-stream visible to the client.
If llama-cpp-python changes any of this, these fail before the engine's e2e tests do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine.localmodel import LlamaServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def chat(http: aiohttp.ClientSession, server: LlamaServer,
               **body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{server.url}/chat/completions", json=body) as response:
        return response.status, await response.json(content_type=None)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream, in order (comments/pings skipped)."""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            yield line[len("data:"):].strip()


async def test_non_streaming_chat_returns_content_and_usage(http, llama_server) -> None:
    status, body = await chat(http, llama_server, model="local", messages=QUESTION,
                              max_tokens=16, **GREEDY)
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= 16


async def test_streaming_yields_several_content_chunks_then_done(http, llama_server) -> None:
    async with http.post(f"{llama_server.url}/chat/completions", json={
            "messages": QUESTION, "max_tokens": 12, "stream": True, **GREEDY}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [event async for event in sse_events(response)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([text for text in contents if text]) > 1
    # The last chunk before [DONE] carries the finish reason; the engine forwards it.
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_max_tokens_caps_the_completion(http, llama_server) -> None:
    status, body = await chat(http, llama_server, messages=[
        {"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        max_tokens=5, **GREEDY)
    assert status == 200, body
    used = body["usage"]["completion_tokens"]
    assert 0 < used <= 5
    if used == 5:
        assert body["choices"][0]["finish_reason"] == "length"


async def test_stop_sequence_cuts_the_answer(http, llama_server) -> None:
    # Greedy decoding makes the answer repeatable: find a word the model does produce, then
    # ask again with that word as a stop sequence. It must end just before it.
    prompt = {"messages": [{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6,"}],
              "max_tokens": 16, **GREEDY}
    status, free = await chat(http, llama_server, **prompt)
    assert status == 200, free
    text = free["choices"][0]["message"]["content"]
    words = text.split()
    assert len(words) >= 3, f"model answered too little to test stop: {text!r}"
    stop_word = words[2]
    status, stopped = await chat(http, llama_server, stop=[stop_word], **prompt)
    assert status == 200, stopped
    cut = stopped["choices"][0]["message"]["content"]
    assert stop_word not in cut
    assert text.startswith(cut.rstrip()) or cut.strip() in text
    assert stopped["choices"][0]["finish_reason"] == "stop"


async def test_prompt_longer_than_the_context_is_a_4xx_openai_error(http, llama_server) -> None:
    too_long = [{"role": "user", "content": "hello " * (llama_server.n_ctx + 500)}]
    status, body = await chat(http, llama_server, messages=too_long, max_tokens=8)
    assert 400 <= status < 500, (status, body)
    error = body["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert str(llama_server.n_ctx) in error["message"]


async def test_prompt_longer_than_the_context_when_streaming_is_an_empty_200_stream(
        http, llama_server) -> None:
    # The server checks the length only once the SSE response has started: the client gets
    # 200 text/event-stream and a cleanly closed body with no event and no [DONE]. The engine
    # must treat "ended without [DONE]" as a backend error. If this test starts failing,
    # llama-cpp-python changed this and the engine's handling can be simplified.
    too_long = [{"role": "user", "content": "hello " * (llama_server.n_ctx + 500)}]
    async with http.post(f"{llama_server.url}/chat/completions", json={
            "messages": too_long, "max_tokens": 8, "stream": True}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        body = await response.read()
    assert body == b""


async def test_killing_the_server_mid_stream_fails_the_clients_read(
        http, disposable_llama_server) -> None:
    server = disposable_llama_server
    events: list[str] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{server.url}/chat/completions", json={
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 400, "stream": True, **GREEDY}) as response:
            assert response.status == 200
            async for event in sse_events(response):
                events.append(event)
                if len(events) == 2:
                    server.kill()
    # The stream must not look finished: no [DONE], so the engine can tell a crash from an end.
    assert len(events) >= 2
    assert "[DONE]" not in events
