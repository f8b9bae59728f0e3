"""Fixtures that run a real llama.cpp server (llama-cpp-python + Gemma 3 270M) on loopback.

One server serves the whole test session: loading the model takes about a second, but the
first `model_path()` call may assemble the 253 MB GGUF. Tests that have to break a server
(kill it mid-stream) get their own with `disposable_llama_server`.

Without the `local` extra these tests are skipped with the reason. `make test` installs the
extra and sets ENGINE_REQUIRE_LOCAL_MODEL=1, which turns that skip into a failure, so CI
cannot go green by silently skipping the only tests that talk to a real model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.localmodel import LlamaServer, LocalModelError, free_port, model_path, server_installed

START_TIMEOUT_S = 180.0


def _local_model_or_skip() -> Path:
    """The GGUF path, or skip (fail under ENGINE_REQUIRE_LOCAL_MODEL=1) saying what is missing."""
    reason = None
    if not server_installed():
        reason = ("llama-cpp-python[server] is not installed; `pip install -e '.[local]'`"
                  " (make test installs it)")
    else:
        try:
            return model_path()
        except LocalModelError as exc:
            reason = str(exc)
    if os.environ.get("ENGINE_REQUIRE_LOCAL_MODEL") == "1":
        pytest.fail(f"ENGINE_REQUIRE_LOCAL_MODEL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _started(tmp: Path, name: str) -> LlamaServer:
    server = LlamaServer(_local_model_or_skip(), port=free_port(), log_path=tmp / f"{name}.log")
    server.start_sync(timeout=START_TIMEOUT_S)
    return server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One real llama.cpp server for the session, at `llama_server.url` (…/v1), alias `local`."""
    server = _started(tmp_path_factory.mktemp("llama"), "session")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def disposable_llama_server(tmp_path: Path) -> Iterator[LlamaServer]:
    """A server of its own, for a test that kills or otherwise damages it."""
    server = _started(tmp_path, "disposable")
    try:
        yield server
    finally:
        server.stop()
