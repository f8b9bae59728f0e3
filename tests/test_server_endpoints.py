"""/v1/models, /health, /stats and optional API keys."""

from __future__ import annotations

import pytest

from engine.app import create_app
from engine.settings import Settings
from tests.conftest import llm_graph, XAI_TEST_KEY


async def test_models_lists_exactly_the_virtual_model(client):
    data = await (await client.get("/v1/models")).json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["ai-router"]


async def test_virtual_model_name_comes_from_the_environment(aiohttp_client, settings, env):
    graph = llm_graph({**env, "VIRTUAL_MODEL": "homelab"})
    client = await aiohttp_client(create_app(settings, graph))
    data = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in data["data"]] == ["homelab"]


async def test_health_reports_each_backend_without_failing_when_one_is_down(aiohttp_client, settings, env, graph):
    graph = llm_graph({**env, "PRIMARY_URL": "http://127.0.0.1:9/v1"})
    client = await aiohttp_client(create_app(settings, graph))
    resp = await client.get("/health")
    assert resp.status == 200
    data = await resp.json()
    assert data["engine"] == "ok" and data["status"] == "degraded"
    assert data["backends"]["router"]["reachable"] is True
    assert data["backends"]["xai"]["reachable"] is True
    assert data["backends"]["primary"]["reachable"] is False and data["backends"]["primary"]["error"]
    assert XAI_TEST_KEY not in await resp.text()


async def test_stats_counts_real_requests(client, backends):
    backends.classify_as("SIMPLE")
    for _ in range(3):
        await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    backends.classify_as("MODERATE")
    await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "code"}]})
    await client.post("/v1/chat/completions", json={"messages": []})
    stats = await (await client.get("/stats")).json()
    assert stats["requests"] == 5
    assert stats["routes"] == {"router": 3, "primary": 1, "none": 1}
    assert stats["outcomes"] == {"ok": 4, "error": 1}
    assert stats["classification"]["latency_ms"]["count"] == 4
    assert stats["latency_ms"]["p50"] is not None and stats["latency_ms"]["count"] == 5


@pytest.fixture
async def locked_client(aiohttp_client, graph, tmp_path):
    settings = Settings(session_log_dir=tmp_path, api_keys=frozenset({"k1", "k2"}))
    return await aiohttp_client(create_app(settings, graph))


@pytest.mark.parametrize("path", ["/v1/models", "/stats"])
async def test_api_keys_protect_every_endpoint_but_health(locked_client, path):
    resp = await locked_client.get(path)
    assert resp.status == 401
    error = (await resp.json())["error"]
    assert error["type"] == "authentication_error" and "Bearer" in error["message"]
    assert (await locked_client.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await locked_client.get(path, headers={"Authorization": "Bearer k2"})).status == 200
    assert (await locked_client.get("/health")).status == 200


async def test_api_key_guards_chat(locked_client, backends):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert (await locked_client.post("/v1/chat/completions", json=body)).status == 401
    assert backends.calls("router") == []
    resp = await locked_client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1"})
    assert resp.status == 200


def test_stats_window_keeps_only_the_last_values():
    from engine.stats import Window, percentiles

    window = Window(size=4)
    for value in range(1, 11):
        window.append(float(value))
    assert sorted(window) == [7.0, 8.0, 9.0, 10.0] and len(window) == 4
    assert percentiles(window)["p50"] == 9.0
