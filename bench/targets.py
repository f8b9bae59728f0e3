"""The processes a benchmark run starts and stops: the fake backend, engines, nginx, LiteLLM.

Each runs as its own process on loopback, with its output in the run's temp directory.
Only what this module started is ever stopped, by its own pid. The nginx and LiteLLM
configs are small templates written into the temp directory at run time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Target:
    """A started process and the URL of its chat-completions endpoint."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path | None = None
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll `url` until it answers (any HTTP status) or the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before answering {url}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def start_fake(python: str, workdir: Path, *, chunks: int, gap_ms: float, label: str = "SIMPLE") -> Target:
    log = workdir / "fake.log"
    proc = subprocess.Popen([python, str(BENCH / "fakebackend.py"), "--port", "0", "--chunks", str(chunks),
                             "--gap-ms", str(gap_ms), "--label", label],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"fake backend did not start: {line!r} {log.read_text()[-500:]}")
    port = int(line.split()[1])
    return Target("direct", proc, f"http://127.0.0.1:{port}/v1/chat/completions", log, {"port": port})


def start_engine(name: str, python: str, workdir: Path, routes: Path, env: dict[str, str],
                 workers: int = 1) -> Target:
    """`engine serve` with session logs on, in a directory of this run's own."""
    port = free_port()
    log = workdir / f"{name}.log"
    sessions = workdir / f"{name}-sessions"
    full_env = {**os.environ, **env, "ENGINE_HOST": "127.0.0.1", "ENGINE_PORT": str(port),
                "SESSION_LOG_DIR": str(sessions), "ENGINE_WORKERS": str(workers), "LOG_LEVEL": "info"}
    full_env.pop("ENGINE_API_KEYS", None)
    proc = subprocess.Popen([python, "-m", "engine", "serve", "--routes", str(routes)], cwd=ROOT, env=full_env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v1/models", proc, 30, log)
    return Target(name, proc, base + "/v1/chat/completions", log, {"base": base, "sessions": sessions})


NGINX_CONF = """\
%(user)s
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/client_body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    upstream fake { server 127.0.0.1:%(fake_port)d; keepalive 128; }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
"""


def start_nginx(workdir: Path, fake_port: int) -> Target | str:
    """nginx (one worker) as a plain reverse proxy in front of the fake; a reason string if not."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if not binary:
        return "nginx is not installed"
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF % {"dir": workdir, "port": port, "fake_port": fake_port,
                                  "user": "user root;" if os.geteuid() == 0 else ""})
    log = workdir / "nginx.out"
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir)], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, 10, log)
    except RuntimeError as exc:
        Target("nginx", proc, "").stop()
        return f"nginx did not start: {exc}"
    return Target("nginx", proc, f"http://127.0.0.1:{port}/v1/chat/completions", log)


LITELLM_CONF = """\
model_list:
  - model_name: ai-router
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:%(fake_port)d/v1
      api_key: bench-key
litellm_settings:
  drop_params: true
general_settings:
  master_key: %(master_key)s
"""


def litellm_python(explicit: str | None) -> str | None:
    """The Python of a venv where litellm is importable: --litellm-python, $BENCH_LITELLM_PYTHON."""
    candidate = explicit or os.environ.get("BENCH_LITELLM_PYTHON")
    if not candidate:
        return None
    return candidate if Path(candidate).exists() else None


def start_litellm(python: str, workdir: Path, fake_port: int, timeout: float = 120) -> Target | str:
    """LiteLLM's proxy (1 worker) in front of the fake; a reason string when it cannot run."""
    check = subprocess.run([python, "-c", "import litellm.proxy.proxy_cli"], capture_output=True, text=True,
                           timeout=120)
    if check.returncode != 0:
        return f"litellm[proxy] is not importable with {python}: {check.stderr.strip()[-300:]}"
    conf = workdir / "litellm.yaml"
    # LiteLLM refuses to start without a master key; a throwaway one, sent by the load generator.
    master_key = "sk-bench-" + secrets.token_hex(16)
    conf.write_text(LITELLM_CONF % {"fake_port": fake_port, "master_key": master_key})
    port = free_port()
    log = workdir / "litellm.log"
    cli = Path(python).parent / "litellm"
    cmd = [str(cli)] if cli.exists() else [python, "-m", "litellm"]
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"}
    proc = subprocess.Popen(cmd + ["--config", str(conf), "--host", "127.0.0.1", "--port", str(port),
                                   "--num_workers", "1"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout, log)
    except RuntimeError as exc:
        Target("litellm", proc, "").stop()
        return f"LiteLLM proxy did not start: {exc}"
    version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True).stdout.strip()
    return Target("litellm", proc, f"http://127.0.0.1:{port}/v1/chat/completions", log,
                  {"version": version, "headers": {"Authorization": f"Bearer {master_key}"}})


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (ENGINE_WORKERS > 1 forks workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return out


def rss_mb(pid: int) -> dict[str, float | None]:
    """Current and peak resident memory of a process tree, in MB (Linux /proc; None elsewhere)."""
    rss = peak = 0.0
    found = False
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = True
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return {"rss_mb": round(rss, 1), "peak_mb": round(peak, 1)} if found else {"rss_mb": None, "peak_mb": None}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time used so far by a process tree (all threads), in seconds.

    CPU per request is the benchmark's steadiest number: on a busy machine wall-clock
    latency also measures the neighbours, CPU time measures only the target.
    """
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, found = 0, False
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found = True
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks if found else None


def python_for_engine() -> str:
    return sys.executable
