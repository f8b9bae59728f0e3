"""The engine in front of a real model server: llama.cpp's server with Gemma 3 270M.

The app is the one `engine serve` builds, on the shipped routes.yaml, with router and
primary pointed at the real local server (as the embedded default does) and no xAI key,
so the cloud routes take their declared fallback to primary. Nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from engine.app import create_app
from engine.graph import load_graph
from engine.settings import Settings
from tests.conftest import FIXTURES, ROOT, read_sse, session_logs
from tests.e2e.conftest import START_TIMEOUT_S


def local_env(server, method: str) -> dict[str, str]:
    return {"ROUTER_URL": server.url, "PRIMARY_URL": server.url, "ROUTER_MODEL": "local",
            "PRIMARY_MODEL": "local", "CLASSIFY_METHOD": method}


@pytest.fixture
async def engine_on(aiohttp_client, tmp_path, monkeypatch):
    """An engine app on the shipped graph, routing to `server`."""
    monkeypatch.delenv("XAI_API_KEY", raising=False)

    async def build(server, method: str = "similarity"):
        graph = load_graph(ROOT / "routes.yaml", local_env(server, method))
        return await aiohttp_client(create_app(Settings(session_log_dir=tmp_path / "sessions"), graph))

    return build


def ask(text: str, **extra) -> dict:
    return {"model": "ai-router", "messages": [{"role": "user", "content": text}], **extra}


# One query per label, each clear enough for the similarity classifier: (label, body, the route
# header, where the declared fallback starts when there is no xAI key).
ROUTE_QUERIES = [
    ("SIMPLE", ask("hi there! how are you?", max_tokens=12), "router", None),
    ("MODERATE", ask("write a python function that checks whether a string is a palindrome", max_tokens=12),
     "primary", None),
    ("COMPLEX", ask("prove that there are infinitely many primes of the form 4k+3, rigorously", max_tokens=12),
     "primary", "answer-xai"),
    ("ENRICH", ask("what's the weather in Paris today?", max_tokens=12), "primary", "enrich-fetch"),
    (None, json.loads((FIXTURES / "requests" / "title.json").read_text()) | {"max_tokens": 12}, "meta", None),
]


@pytest.mark.parametrize("label,body,route,fallback_from", ROUTE_QUERIES,
                         ids=["simple", "moderate", "complex", "enrich", "meta"])
async def test_each_route_reaches_the_real_server(engine_on, llama_server, label, body, route, fallback_from):
    client = await engine_on(llama_server)
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 200, await resp.text()
    assert resp.headers["x-engine-route"] == route
    data = await resp.json()
    assert data["model"] == "ai-router"
    assert data["choices"][0]["finish_reason"] in ("stop", "length")
    assert data["usage"]["completion_tokens"] >= 1
    [log] = await session_logs(client)
    assert log["classification_label"] == label
    answering = log["steps"][-1]
    assert answering["url"] == llama_server.url and answering["status"] == "ok"
    assert answering["usage"]["completion_tokens"] == data["usage"]["completion_tokens"]
    if fallback_from:  # no xAI key: the cloud hop's declared fallback, visible in the log
        assert log["fallbacks"][0]["from"] == fallback_from and log["fallbacks"][0]["kind"] == "no_api_key"
    else:
        assert log["fallbacks"] == []


async def test_streaming_delivers_many_chunks_and_ends(engine_on, llama_server):
    client = await engine_on(llama_server)
    resp = await client.post("/v1/chat/completions",
                             json=ask("write a python function that reverses a list", max_tokens=24, stream=True))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events, done = await read_sse(resp)
    contents = [e["choices"][0]["delta"]["content"] for e in events
                if e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert done and len(contents) > 1
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    [log] = await session_logs(client)
    assert log["steps"][-1]["response_content"] == "".join(contents)


async def test_real_classifier_output_is_logged_and_mapped(engine_on, llama_server):
    """The LLM classifier on a 270M base model: whatever it says is logged raw and mapped
    onto a label, or onto the default when it names none."""
    client = await engine_on(llama_server, method="llm")
    resp = await client.post("/v1/chat/completions", json=ask("explain how DNS resolution works", max_tokens=8))
    assert resp.status == 200
    [log] = await session_logs(client)
    classify = log["steps"][1]
    assert classify["url"] == llama_server.url and isinstance(log["classification_raw"], str)
    assert classify["messages_sent"][0]["role"] == "system"
    assert log["classification_label"] in ("SIMPLE", "MODERATE", "COMPLEX", "ENRICH")
    if log["classification_source"] == "default":
        assert log["classification_label"] == "MODERATE" and classify["reason"]
    else:
        assert log["classification_source"] == "model"
        assert log["classification_label"].lower() in log["classification_raw"].lower()


async def test_max_tokens_and_stop_reach_the_model(engine_on, llama_server):
    client = await engine_on(llama_server)
    resp = await client.post("/v1/chat/completions", json=ask(
        "write a python function that counts to ten", max_tokens=5))
    data = await resp.json()
    assert data["usage"]["completion_tokens"] <= 5 and data["choices"][0]["finish_reason"] == "length"
    # A stop sequence the model is sure to produce: every token of the answer is cut at "e".
    resp = await client.post("/v1/chat/completions", json=ask(
        "write a python function that counts to ten", max_tokens=40, stop=["e", "E"]))
    data = await resp.json()
    text = data["choices"][0]["message"]["content"]
    assert "e" not in text.lower() and data["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_too_long_for_the_context_is_a_clear_400(engine_on, llama_server, stream):
    client = await engine_on(llama_server)
    long_text = "please summarise this: " + "lorem ipsum dolor sit amet " * 600
    resp = await client.post("/v1/chat/completions", json=ask(long_text, stream=stream))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert re.search(r"maximum context length is \d+ tokens", error["message"])
    logs = await session_logs(client)
    assert logs[-1]["outcome"] == "error" and logs[-1]["status"] == 400


async def test_killing_the_model_server_mid_stream_ends_with_an_error_event(engine_on, disposable_llama_server):
    # This model's answers are short (a dozen tokens, under a second), so the kill can land
    # after the server has already sent the whole answer: then the engine rightly relays a
    # complete stream and there was no cut to observe. Such a try is repeated on a fresh
    # server; a kill that lands mid-answer must end in an error event.
    for attempt in range(5):
        if attempt:
            await asyncio.to_thread(disposable_llama_server.start_sync, START_TIMEOUT_S)
        client = await engine_on(disposable_llama_server)
        resp = await client.post("/v1/chat/completions", json=ask(
            "write a long python program with many functions and comments", max_tokens=400, stream=True))
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        disposable_llama_server.kill()
        events, done = await read_sse(resp)
        if not done:
            break
        assert any(choice.get("finish_reason") for event in events for choice in event.get("choices") or ())
    else:
        pytest.fail("in 5 tries the model finished its answer before the kill reached it")
    assert "error" in events[-1]
    assert events[-1]["error"]["code"] in ("stream_cut", "timeout")
    for _ in range(50):
        logs = [log for log in await session_logs(client) if log["outcome"] == "error"]
        if logs:
            break
        await asyncio.sleep(0.1)
    [log] = logs
    assert log["outcome"] == "error" and log["error"] and log["steps"][-1]["status"] == "error"
