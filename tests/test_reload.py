"""Hot reload (SIGHUP, file watch) and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys

import aiohttp
import pytest

from engine.app import create_app
from engine.graph import load_graph
from engine.reload import reload_graph
from engine.settings import Settings
from tests.conftest import ROOT, llm_routes_text, read_sse
from tests.fakes import Answer


def set_virtual_model(routes, name: str) -> None:
    text = routes.read_text()
    start = text.index("virtual_model:")
    end = text.index("\n", start)
    routes.write_text(text[:start] + f"virtual_model: {name}" + text[end:])


@pytest.fixture
async def app_client(aiohttp_client, env, tmp_path, graph, monkeypatch):
    """The app on an editable copy of the shipped graph and prompts."""
    routes = tmp_path / "routes.yaml"
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copy(ROOT / "routes.yaml", routes)
    for name, value in env.items():  # reloads read the environment, as in production
        monkeypatch.setenv(name, value)
    app = create_app(Settings(session_log_dir=tmp_path / "logs"), load_graph(routes))
    return await aiohttp_client(app), routes


async def model_name(client) -> str:
    return (await (await client.get("/v1/models")).json())["data"][0]["id"]


async def test_reload_swaps_a_good_graph_and_refuses_a_bad_one(app_client):
    client, routes = app_client
    app = client.app
    set_virtual_model(routes, "renamed")
    assert reload_graph(app) is True
    assert await model_name(client) == "renamed"
    good = routes.read_text()
    routes.write_text(good.replace("edges: {meta: answer-meta, other: classify}", "edges: {meta: nowhere, other: classify}"))
    assert reload_graph(app) is False
    assert await model_name(client) == "renamed"  # the old graph keeps serving
    stats = await (await client.get("/stats")).json()
    assert stats["graph"]["reloads"] == {"applied": 1, "refused": 1}


async def test_in_flight_stream_finishes_on_the_graph_it_started_with(app_client, backends):
    client, routes = app_client
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content=" ".join(["w"] * 10), gap=0.05)
    resp = await client.post("/v1/chat/completions", json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
    set_virtual_model(routes, "new-graph")
    assert reload_graph(client.app)
    events, done = await read_sse(resp)
    assert done and {e["model"] for e in events} == {"ai-router"}
    assert await model_name(client) == "new-graph"


async def test_watch_reloads_when_a_file_changes(app_client):
    from engine.reload import watch

    client, routes = app_client
    task = asyncio.create_task(watch(client.app, interval=0.05))
    try:
        await asyncio.sleep(0.1)
        set_virtual_model(routes, "watched")
        os.utime(routes, (routes.stat().st_atime, routes.stat().st_mtime + 5))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await model_name(client) == "watched":
                break
        assert await model_name(client) == "watched"
    finally:
        task.cancel()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until_up(url: str, proc) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if proc.returncode is not None:
                raise AssertionError(f"engine exited early: {(await proc.stderr.read()).decode()}")
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("engine did not come up")


async def test_real_process_reloads_on_sighup_and_drains_on_sigterm(env, backends, tmp_path):
    routes = tmp_path / "routes.yaml"
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    routes.write_text(llm_routes_text())  # the fake classifier decides the route
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", "serve", "--routes", str(routes), "--port", str(port),
        env={**os.environ, **env, "SESSION_LOG_DIR": str(tmp_path / "logs"), "ENGINE_DRAIN_SECONDS": "10"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    try:
        await wait_until_up(url, proc)
        async with aiohttp.ClientSession() as session:
            set_virtual_model(routes, "after-sighup")
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                async with session.get(url + "/v1/models") as resp:
                    if (await resp.json())["data"][0]["id"] == "after-sighup":
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("SIGHUP did not reload")

            backends.classify_as("MODERATE")
            backends["primary"].answer = lambda body: Answer(content=" ".join(["w"] * 20), gap=0.05)
            async with session.post(url + "/v1/chat/completions",
                                    json={"stream": True, "messages": [{"role": "user", "content": "x"}]}) as resp:
                await resp.content.readline()
                proc.send_signal(signal.SIGTERM)  # mid-stream
                events, done = await read_sse(resp)
            assert done and len([e for e in events if e.get("choices")]) >= 10
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        logs = list((tmp_path / "logs").glob("*.json"))
        assert len(logs) == 1  # the drained request was logged before exit
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
