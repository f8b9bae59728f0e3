"""Every malformed request gets an OpenAI-shaped 4xx that says what is wrong, and a session log."""

from __future__ import annotations

import json

import pytest

from engine.app import create_app
from engine.settings import Settings
from tests.conftest import session_logs


def assert_openai_error(data: dict, *, contains: str, param: str | None = None) -> None:
    assert set(data) == {"error"}
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert contains in error["message"], error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("body,contains,param", [
    (b"{not json", "not valid JSON", None),
    (b"", "body is empty", None),
    (b"[1, 2]", "must be a JSON object, not an array", None),
    (b'{"model": "ai-router"}', "`messages` is required", "messages"),
    (b'{"messages": []}', "must not be empty", "messages"),
    (b'{"messages": "hello"}', "must be an array, not a string", "messages"),
    (b'{"messages": ["hello"]}', "`messages[0]` must be an object", "messages[0]"),
    (b'{"messages": [{"content": "hi"}]}', "`messages[0].role` is required", "messages[0].role"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "'wizard'; expected one of", "messages[0].role"),
    (b'{"messages": [{"role": "user"}]}', "`messages[0].content` is required", "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": 42}]}', "must be a string or an array", "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": [{"text": "x"}]}]}', "must be an object with a `type`",
     "messages[0].content[0]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "`stream` must be a boolean", "stream"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "`temperature` must be a number",
     "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 7}', "between 0 and 2", "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', "positive integer", "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', "positive integer", "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": 5}', "`stop` must be a string", "stop"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', "`n` other than 1", "n"),
])
async def test_malformed_request_gets_a_clear_400(client, backends, body, contains, param):
    resp = await client.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_openai_error(await resp.json(), contains=contains, param=param)
    assert backends.calls("router") == [] and backends.calls("primary") == []
    [log] = await session_logs(client)
    assert log["outcome"] == "error" and log["status"] == 400 and contains in log["error"]


async def test_body_over_the_size_limit_is_413(aiohttp_client, graph, tmp_path):
    client = await aiohttp_client(create_app(Settings(session_log_dir=tmp_path, max_body_bytes=1000), graph))
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]})
    resp = await client.post("/v1/chat/completions", data=body)
    assert resp.status == 413
    assert_openai_error(await resp.json(), contains="larger than the limit of 1000 bytes")


async def test_content_parts_with_text_and_image_are_accepted(client, backends):
    backends.classify_as("MODERATE")
    parts = [{"type": "text", "text": "what is in this picture?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": parts}]})
    assert resp.status == 200
    [call] = backends.calls("primary")
    assert call["messages"][-1]["content"] == parts
    [classifier_call] = backends.calls("router", classifier=True)
    assert "what is in this picture?" in classifier_call["messages"][1]["content"]


async def test_unknown_fields_are_ignored_and_unlisted_params_not_forwarded(client, backends):
    backends.classify_as("MODERATE")
    resp = await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "frobnicate": True, "temperature": 0.3,
        "max_tokens": 999999, "top_p": 0.5, "stop": ["END"], "seed": 7})
    assert resp.status == 200
    [call] = backends.calls("primary")
    assert "frobnicate" not in call
    assert call["temperature"] == 0.3 and call["top_p"] == 0.5 and call["stop"] == ["END"] and call["seed"] == 7
    assert call["max_tokens"] == 16384  # clamped to the primary's profile


async def test_cloud_profile_drops_params_grok_rejects(client, backends):
    backends.classify_as("COMPLEX")
    await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "stop": ["x"], "presence_penalty": 1, "temperature": 1})
    [call] = backends.calls("xai")
    assert "stop" not in call and "presence_penalty" not in call and call["temperature"] == 1


@pytest.mark.parametrize("method,path,status", [("GET", "/nope", 404), ("DELETE", "/v1/models", 405),
                                                ("GET", "/v1/chat/completions", 405)])
async def test_unknown_paths_and_methods_are_openai_shaped(client, method, path, status):
    resp = await client.request(method, path)
    assert resp.status == status
    data = await resp.json()
    assert data["error"]["message"] and data["error"]["type"] == "invalid_request_error"


async def test_an_internal_error_is_a_generic_500_and_still_logged(client, backends, monkeypatch):
    import engine.views

    async def broken(graph, ctx):
        raise ZeroDivisionError("a bug in a node")

    monkeypatch.setattr(engine.views, "run_graph", broken)
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert resp.status == 500
    data = await resp.json()
    assert data["error"]["type"] == "server_error" and "ZeroDivisionError" not in data["error"]["message"]
    [log] = await session_logs(client)
    assert log["outcome"] == "error" and log["status"] == 500 and "ZeroDivisionError" in log["error"]


async def test_a_client_that_hangs_up_mid_upload_is_a_disconnect_not_a_500(client, backends):
    import asyncio

    # Half a body, then the socket closes: what a closed tab or a killed script does.
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{\"messages\": [")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        logs = await session_logs(client)
        if logs:
            break
        await asyncio.sleep(0.02)
    [log] = logs
    assert (log["outcome"], log["status"]) == ("client_disconnected", 499)
    assert "before its answer began" in log["error"] and "internal" not in log["error"]
    stats = await (await client.get("/stats")).json()
    assert "500" not in stats["statuses"]
    assert backends["primary"].requests == [] and backends["router"].requests == []
