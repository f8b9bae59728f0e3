"""Backend failures: before the first byte a 502/504 (or a fallback); after it, an error event."""

from __future__ import annotations

from engine.app import create_app
from tests.conftest import llm_graph, read_sse, session_logs
from tests.fakes import Answer

CHAT = {"messages": [{"role": "user", "content": "explain closures"}]}


async def test_primary_5xx_is_retried_then_falls_back_to_the_small_model(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(status=500)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200 and resp.headers["x-engine-route"] == "router"
    events, done = await read_sse(resp)
    assert done
    assert len(backends.calls("primary")) == 3  # the first try and two retries
    [log] = await session_logs(client)
    assert [r["kind"] for r in log["retries"]] == ["http_5xx", "http_5xx"]
    assert log["fallbacks"][0]["from"] == "answer-primary" and log["fallbacks"][0]["to"] == "answer-router-backup"


async def test_every_backend_down_is_a_502_naming_the_last_failure(aiohttp_client, settings, env, backends):
    env = {**env, "PRIMARY_URL": "http://127.0.0.1:9/v1", "ROUTER_URL": "http://127.0.0.1:9/v1"}
    client = await aiohttp_client(create_app(settings, llm_graph(env)))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "connect" and "unreachable" in error["message"]
    [log] = await session_logs(client)
    assert log["classification_source"] == "default"  # the classifier was down too
    assert [s["node"] for s in log["steps"]] == ["meta", "classify", "answer-primary", "answer-router-backup"]
    assert log["outcome"] == "error" and log["status"] == 502


async def test_stream_cut_mid_answer_ends_with_an_error_event(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content="one two three four five", cut_after=3)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    events, done = await read_sse(resp)
    assert not done, "a cut stream must not look finished"
    assert "error" in events[-1] and events[-1]["error"]["code"] == "stream_cut"
    assert any(e.get("choices") for e in events[:-1])  # the client did get the start of the answer
    [log] = await session_logs(client)
    assert log["outcome"] == "error" and "ended the stream" in log["error"]
    assert log["steps"][-1]["response_content"] == "one two three "  # what the client saw


async def test_malformed_chunk_mid_stream_is_an_error_event(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content="a b c", malformed_after=2)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events, done = await read_sse(resp)
    assert not done and events[-1]["error"]["code"] == "bad_response"


async def test_context_length_error_is_a_clear_400(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(status=400, error_body={"error": {
        "message": "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens."}})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length" in error["message"]


async def test_missing_cloud_key_falls_back_to_primary_visibly(aiohttp_client, settings, env, backends, monkeypatch):
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    backends.classify_as("COMPLEX")
    client = await aiohttp_client(create_app(settings, llm_graph(env)))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200 and resp.headers["x-engine-route"] == "primary"
    assert backends.calls("xai") == []
    [log] = await session_logs(client)
    assert log["fallbacks"] == [{"from": "answer-xai", "to": "answer-primary", "kind": "no_api_key",
                                 "backend": "xai", "error": "backend 'xai': XAI_API_KEY is not set"}]
    assert [s["status"] for s in log["steps"]] == ["ok", "ok", "fallback", "ok"]


async def test_classifier_failure_uses_the_default_label(client, backends):
    backends["router"].answer = lambda body: Answer(status=503)
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200 and resp.headers["x-engine-route"] == "primary"
    [log] = await session_logs(client)
    assert log["classification_source"] == "default" and log["classification_raw"] is None
    assert log["steps"][1]["error_kind"] == "http_5xx"


async def test_reasoning_field_is_passed_as_reasoning_content(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content="42", reasoning="let me think", reasoning_field="reasoning")
    resp = await client.post("/v1/chat/completions", json=CHAT)
    message = (await resp.json())["choices"][0]["message"]
    assert message["reasoning_content"] == "let me think" and "reasoning" not in message
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events, _ = await read_sse(resp)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"reasoning_content": "let me think"}


async def test_usage_chunk_only_when_the_client_asks(client, backends):
    backends.classify_as("MODERATE")
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events, _ = await read_sse(resp)
    assert all(e["choices"] for e in events)
    resp = await client.post("/v1/chat/completions",
                             json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    events, _ = await read_sse(resp)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 12
    logs = await session_logs(client)
    assert all(log["usage"]["total_tokens"] == 12 for log in logs)


async def test_client_disconnect_mid_stream_is_logged(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content=" ".join(["word"] * 50), gap=0.05)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await resp.content.readline()
    resp.close()  # the user closed the tab
    import asyncio

    for _ in range(100):
        await asyncio.sleep(0.05)
        logs = await session_logs(client)
        if logs:
            break
    [log] = logs
    assert log["outcome"] == "client_disconnected"
    assert log["steps"][-1]["status"] == "cancelled"
