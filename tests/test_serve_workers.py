"""`engine serve` with ENGINE_WORKERS: several processes on one port, stopped together.

Also the settings that choose the workers and the event loop, and the session-log write
path the benchmark rewrote (a missing directory is created on the first write).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.sessionlog import write_record
from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc").is_dir(), reason="needs fork and /proc")
def test_two_workers_share_the_port_and_stop_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "ENGINE_WORKERS": "2", "ENGINE_PORT": str(port), "ENGINE_HOST": "127.0.0.1",
           "SESSION_LOG_DIR": str(tmp_path / "sessions"), "BENCH_BACKEND_URL": "http://127.0.0.1:9/v1",
           "ENGINE_DRAIN_SECONDS": "2"}
    env.pop("ENGINE_API_KEYS", None)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--routes", "bench/graphs/one-step.yaml"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    assert json.loads(resp.read())["data"][0]["id"] == "ai-router"
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the workers never answered"
                time.sleep(0.1)
        workers = children_of(proc.pid)
        assert len(workers) == 2
        # many connections, each answered by one of the two workers
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        for pid in workers:  # no orphan keeps the port
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        assert "2 workers" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_worker_and_event_loop_settings(monkeypatch):
    monkeypatch.setenv("ENGINE_WORKERS", "3")
    monkeypatch.setenv("ENGINE_EVENT_LOOP", "uvloop")
    settings = Settings.from_env()
    assert settings.workers == 3 and settings.event_loop == "uvloop"
    monkeypatch.delenv("ENGINE_WORKERS")
    monkeypatch.delenv("ENGINE_EVENT_LOOP")
    assert Settings.from_env().workers == 1 and Settings.from_env().event_loop == "asyncio"
    for name, bad in (("ENGINE_WORKERS", "0"), ("ENGINE_EVENT_LOOP", "trio")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(SystemExit):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_first_write_creates_the_log_directory(tmp_path):
    directory = tmp_path / "not" / "yet"
    record = {"id": "b" * 32, "timestamp": "2026-11-27T10:00:00+00:00", "text": "é ü", "big": 2**70}
    path = write_record(directory, record)
    assert json.loads(path.read_text(encoding="utf-8")) == record  # beyond 64-bit ints: the stdlib path
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temp file left behind
