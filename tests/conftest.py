"""Shared fixtures: three fake backends on loopback and the real app built by `create_app`."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from engine.app import create_app
from engine.graph import load_graph
from engine.settings import Settings
from engine.state import STATE
from tests.fakes import Answer, FakeBackend, is_classifier_call

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "openwebui"
XAI_TEST_KEY = "xai-test-key-DO-NOT-LOG-4f9a"


class Backends(dict):
    """name -> FakeBackend, plus `label`: what the fake classifier answers."""

    label = "SIMPLE"

    def classify_as(self, raw: str) -> None:
        router = self["router"]

        def answer(body):
            if is_classifier_call(body):
                return Answer(content=raw)
            return Answer(content="router answer")

        router.answer = answer

    def calls(self, name: str, *, classifier: bool | None = None) -> list[dict]:
        out = self[name].requests
        if classifier is None:
            return out
        return [b for b in out if is_classifier_call(b) == classifier]


@pytest.fixture
async def backends(aiohttp_server) -> Backends:
    fakes = Backends()
    for name in ("router", "primary", "xai"):
        fake = FakeBackend(name)
        server = await aiohttp_server(fake.app)
        fake.url = str(server.make_url("/v1"))
        fakes[name] = fake
    fakes.classify_as("SIMPLE")
    return fakes


@pytest.fixture
def env(backends) -> dict[str, str]:
    return {
        "ROUTER_URL": backends["router"].url, "ROUTER_MODEL": "router-model",
        "PRIMARY_URL": backends["primary"].url, "PRIMARY_MODEL": "primary-model",
        "XAI_URL": backends["xai"].url, "XAI_MODEL": "grok-test", "XAI_API_KEY": XAI_TEST_KEY,
    }


def llm_routes_text() -> str:
    """The shipped routes.yaml with its classifier set to the LLM method alone.

    Most tests drive routing through the fake classifier backend (`backends.classify_as`);
    with the shipped cascade, the similarity stage would decide clear queries before the
    classifier is asked. tests/test_cascade.py covers the shipped cascade itself.
    """
    return re.sub(r"(?m)^    method: \S+.*$", "    method: llm", (ROOT / "routes.yaml").read_text())


def llm_routes_file() -> Path:
    """llm_routes_text() in a file; its templates resolve against the repository (root=ROOT)."""
    path = Path(tempfile.gettempdir()) / f"engine-tests-routes.llm.{os.getpid()}.yaml"
    path.write_text(llm_routes_text())
    return path


def llm_graph(env: dict[str, str]):
    return load_graph(llm_routes_file(), env, root=ROOT)


@pytest.fixture
def graph(env, monkeypatch):
    # Keys are read from the process environment at call time, as in production.
    monkeypatch.setenv("XAI_API_KEY", env["XAI_API_KEY"])
    return llm_graph(env)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(session_log_dir=tmp_path / "sessions")


@pytest.fixture
async def client(aiohttp_client, settings, graph):
    return await aiohttp_client(create_app(settings, graph))


async def session_logs(client) -> list[dict]:
    """Every session log written so far, oldest first (waits for the background writer)."""
    state = client.app[STATE]
    await state.writer.flush()
    directory = state.settings.session_log_dir
    records = [json.loads(p.read_text()) for p in directory.glob("*.json")] if directory.exists() else []
    return sorted(records, key=lambda r: r["timestamp"])


def fixture_request(name: str) -> dict:
    return json.loads((FIXTURES / "requests" / name).read_text())


async def read_sse(response) -> tuple[list[dict], bool]:
    """Parse an SSE body into (events, saw_done)."""
    events, done = [], False
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        events.append(json.loads(data))
    return events, done
