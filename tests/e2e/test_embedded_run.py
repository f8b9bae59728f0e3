"""`engine serve --embedded` (what `make run` does without backends), as a user runs it:
it starts the local model server, reports ready with the URL, and Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from engine.localmodel import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import _local_model_or_skip


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--embedded"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Like a terminal's foreground job: Ctrl-C reaches the whole process group.
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.setpgrp()))


def test_embedded_run_answers_and_ctrl_c_stops_both_processes(tmp_path):
    _local_model_or_skip()
    port, local_port = free_port(), free_port()
    proc = start({"ENGINE_PORT": str(port), "ENGINE_LOCAL_PORT": str(local_port),
                  "SESSION_LOG_DIR": str(tmp_path / "sessions"), "XAI_API_KEY": ""})
    try:
        body = json.dumps({"model": "ai-router", "max_tokens": 8,
                           "messages": [{"role": "user", "content": "hello there!"}]}).encode()
        for _ in range(600):
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as resp:
                    assert resp.headers["x-engine-route"] == "router"
                    assert json.load(resp)["choices"][0]["message"]["content"] is not None
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert f"local model server ready at http://127.0.0.1:{local_port}/v1" in out
    assert f"serving 'ai-router' on http://127.0.0.1:{port}/v1" in out
    assert "local model server stopped" in out
    with socket.socket() as sock:  # the model server's port is free again: it is gone
        # SO_REUSEADDR: a connection to it may linger in TIME_WAIT (whoever closed first),
        # which is not a listener; Linux still refuses the bind while a listener is there.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", local_port))
    assert len(list((tmp_path / "sessions").glob("*.json"))) == 1


def test_embedded_run_with_the_model_port_taken_says_so_in_one_line(tmp_path):
    _local_model_or_skip()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start({"ENGINE_PORT": str(free_port()), "ENGINE_LOCAL_PORT": str(port),
                      "SESSION_LOG_DIR": str(tmp_path / "sessions")})
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    errors = [line for line in out.splitlines() if "cannot start" in line]
    assert errors == [f"engine: cannot start the local model server: port {port} is already in use"]
    assert "Traceback" not in out
