"""Soak: at least 100,000 mixed requests against `engine serve` run as a real subprocess.

    python bench/soak.py [--requests 100000] [--concurrency 48] [--max-minutes 40] [--json FILE]

Three processes, loopback only: this driver, the fake backend (bench/soak_backend.py, which
injects faults on request), and the engine (`python -m engine serve`, the shipped
routes.yaml with every backend pointed at the fake). The mix, per request, drawn from a
seeded random generator (one per request) so every run sends the same requests:

  ok          non-streamed chat, a random label (SIMPLE/MODERATE/COMPLEX/ENRICH) or an
              Open WebUI title task (meta route)                       expect 200
  stream      the same, streamed                                       expect 200, ends in [DONE]
  bad         malformed bodies: broken JSON, invalid UTF-8, wrong types, empty, too large
                                                                       expect 400 / 413
  abort       streamed; the client hangs up after the first chunk
  fault-500   the backend answers 500 to every call (streamed or not)  expect 502/503 (retries and
                                                                       fallbacks fail too)
  fault-once  the backend answers 500 once, then recovers              expect 200 (a retry)
  fault-cut   streamed; the backend drops the connection after two chunks
                                                                       expect 200 + error event (502
                                                                       if no byte had left yet)
  fault-slow  the backend waits before the first byte and between chunks
                                                                       expect 200
  other       GET /v1/models, /stats, /openapi.json, and a 404         not routed: no session log

What it checks:
- the engine never answers 500, every non-2xx body is OpenAI-shaped JSON, and no stream
  ends silently (each ends in `[DONE]` or an error event);
- memory and file descriptors stay flat: RSS and the fds of the engine process are read
  from /proc/<pid>/status and /proc/<pid>/fd at checkpoints with no load (the driver's
  connections closed, then a 17 s pause). Flat means: RSS at 100% of the run at most 5 MB
  above RSS at 50%; the fds at 100% no more than at 50%, not counting established
  connections to the backend (the engine's connection pool, bounded by its limit of 256,
  whose idle size depends on the last burst); and no socket ever in CLOSE_WAIT (a peer
  hung up and the engine never closed its end: the leak to look for);
- every routed request has its session log: each POST /v1/chat/completions that got an
  answer carries `x-engine-session: <id>`; at the end there is exactly one log per such id,
  none partial (each parses and matches schemas/session.schema.json) and no `.tmp-` file
  left. Rotation would delete logs mid-run (SESSION_LOG_MAX_FILES defaults to 5000), so the
  soak sets SESSION_LOG_MAX_FILES=100000000 and, to keep the engine's log directory as small
  as in production, moves finished logs to an archive directory every two seconds.

The graph is the shipped routes.yaml (copied with its prompts into the work directory)
with one change: each backend's circuit breaker opens after 8 failures in a row instead of
5, and retries after 2 s instead of 30 (--breaker). With the shipped setting, a fault rate
this high keeps every breaker open most of the time and the soak would mostly measure fast
`circuit_open` failures; with the looser one a breaker still opens now and then under the
fault mix. `--breaker shipped` keeps routes.yaml's breakers; `--classify-method` swaps the
classify node's method, to tell whether a change in memory comes from the classifier.

Exit status 0 when every check passes. The run is bounded by --max-minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import targets  # noqa: E402  (bench/targets.py: process RSS, waiting for a port)
MIX = {"ok": 36, "stream": 27, "bad": 10, "abort": 6, "fault-500": 1, "fault-once": 3, "fault-cut": 3,
       "fault-slow": 6, "other": 8}
LABELS = ("SIMPLE", "MODERATE", "COMPLEX", "ENRICH")
MAX_BODY_BYTES = 65536
IDLE_WAIT_S = float(os.environ.get("SOAK_IDLE_WAIT_S", 17))  # aiohttp closes idle pooled connections after 15 s
TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
              "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
              "<chat_history>\nUSER: how do tides work? label:SIMPLE\n</chat_history>")
BAD_BODIES = [
    b"{not json",
    b"",
    b"[1, 2, 3]",
    b'{"messages": "hello"}',
    b'{"messages": []}',
    b'{"messages": [{"role": "wizard", "content": "hi"}]}',
    b'{"messages": [{"role": "user", "content": "\xff\xfe bad utf-8"}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "n": 4}',
    b'{"messages": [{"role": "user", "content": 42}]}',
    b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"messages": [{"role": "user", "content": "' + b"x" * (MAX_BODY_BYTES + 100) + b'"}]}',
]


@dataclass
class Tally:
    sent: Counter = field(default_factory=Counter)             # by kind
    statuses: Counter = field(default_factory=Counter)         # (kind, status)
    session_ids: set = field(default_factory=set)
    problems: list = field(default_factory=list)               # first few of each, as text
    problem_counts: Counter = field(default_factory=Counter)
    stream_endings: Counter = field(default_factory=Counter)   # (kind, done|error-event|silent)

    def problem(self, name: str, detail: str) -> None:
        self.problem_counts[name] += 1
        if self.problem_counts[name] <= 3:
            self.problems.append(f"{name}: {detail}")


def chat_body(rng: random.Random, kind: str, i: int) -> dict:
    if rng.random() < 0.08:
        content = TITLE_TASK
    else:
        content = f"soak request {i}: tell me something. label:{rng.choice(LABELS)}"
    if kind == "fault-once":
        content += f" fault:once#{i}"
    elif kind.startswith("fault-"):
        content += f" fault:{kind[6:]}"
    messages = [{"role": "user", "content": content}]
    if rng.random() < 0.3:
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "earlier question"},
                    {"role": "assistant", "content": "earlier answer"}] + messages
    body = {"model": "ai-router", "messages": messages}
    if rng.random() < 0.5:
        body["temperature"] = round(rng.uniform(0, 2), 2)
    return body


def is_openai_error(data) -> bool:
    return (isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], dict)
            and {"message", "type", "param", "code"} <= set(data["error"]))


async def send(http: aiohttp.ClientSession, base: str, seed: int, kind: str, i: int,
               tally: Tally) -> None:
    rng = random.Random(seed * 1_000_003 + i)  # per request, so the order of completion does not matter
    tally.sent[kind] += 1
    url = base + "/v1/chat/completions"
    if kind == "other":
        path = rng.choice(["/v1/models", "/stats", "/openapi.json", "/no-such-path"])
        async with http.get(base + path) as resp:
            await resp.read()
            tally.statuses[(kind, resp.status)] += 1
            if resp.status >= 500:
                tally.problem("5xx", f"GET {path} -> {resp.status}")
        return
    if kind == "bad":
        async with http.post(url, data=rng.choice(BAD_BODIES),
                             headers={"Content-Type": "application/json"}) as resp:
            await check_plain(resp, kind, tally)
        return
    stream = kind in ("stream", "abort", "fault-cut") or (kind.startswith("fault-") and rng.random() < 0.5)
    body = chat_body(rng, kind, i)
    body["stream"] = stream
    if stream and rng.random() < 0.3:
        body["stream_options"] = {"include_usage": True}
    async with http.post(url, json=body) as resp:
        if resp.content_type != "text/event-stream":
            await check_plain(resp, kind, tally)
            return
        tally.statuses[(kind, resp.status)] += 1
        remember_session(resp, kind, tally)
        ending = "silent"
        while True:
            line = await resp.content.readline()
            if not line:
                break
            if kind == "abort" and line.startswith(b"data:"):
                resp.close()  # the user closed the tab
                ending = "aborted"
                break
            if line.startswith(b"data: [DONE]"):
                ending = "done"
            elif line.startswith(b'data: {"error"'):
                ending = "error-event"
        tally.stream_endings[(kind, ending)] += 1
        if ending == "silent":
            tally.problem("silent_truncation", f"{kind} request {i}: stream ended without [DONE] or error")


async def check_plain(resp: aiohttp.ClientResponse, kind: str, tally: Tally) -> None:
    raw = await resp.read()
    tally.statuses[(kind, resp.status)] += 1
    remember_session(resp, kind, tally)
    if resp.status >= 500 and resp.status not in (502, 503, 504):
        tally.problem("5xx", f"{kind} -> {resp.status}: {raw[:200]!r}")
    if resp.status >= 400:
        try:
            ok = is_openai_error(json.loads(raw))
        except ValueError:
            ok = False
        if not ok:
            tally.problem("not_openai_error", f"{kind} -> {resp.status}: {raw[:200]!r}")
    if b"Traceback" in raw:
        tally.problem("traceback", f"{kind} -> {resp.status}")


def remember_session(resp: aiohttp.ClientResponse, kind: str, tally: Tally) -> None:
    session = resp.headers.get("x-engine-session")
    if session:
        tally.session_ids.add(session)
    else:
        tally.problem("no_session_header", f"{kind} -> {resp.status}")


async def run_phase(base: str, seed: int, kinds: list[str], first: int, concurrency: int,
                    tally: Tally, deadline: float) -> None:
    """Send `kinds` with `concurrency` workers over one client session, then close it."""
    queue = list(enumerate(kinds, first))
    queue.reverse()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        async def worker() -> None:
            while queue and time.monotonic() < deadline:
                i, kind = queue.pop()
                try:
                    await send(http, base, seed, kind, i, tally)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    tally.problem("client_error", f"{kind} request {i}: {type(exc).__name__}: {exc}")
        await asyncio.gather(*(worker() for _ in range(concurrency)))


TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}


def proc_sample(pid: int) -> dict:
    return {"rss_mb": targets.rss_mb(pid)["rss_mb"], "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def fd_kinds(pid: int, backend_port: int) -> dict:
    """What the engine's fds are: TCP sockets by state, other sockets, pipes, files, ...

    A socket in close_wait is one whose peer hung up and the engine never closed: the leak
    the soak looks for. Established ones to the backend at an idle checkpoint are pooled
    connections waiting for reuse.
    """
    sockets = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            peer = "backend_" if int(fields[2].split(":")[1], 16) == backend_port else ""
            sockets[fields[9]] = peer + TCP_STATES.get(fields[3], "tcp_other")
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            kinds["tcp_" + sockets[target[8:-1]] if target[8:-1] in sockets else "socket_other"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target[11:].strip("[]")] += 1
        else:
            kinds["file"] += 1
    return dict(sorted(kinds.items()))


class Harvester:
    """Moves finished session logs out of the engine's directory, so it stays production-sized."""

    def __init__(self, sessions: Path, archive: Path):
        self.sessions, self.archive = sessions, archive
        archive.mkdir(parents=True, exist_ok=True)

    def harvest(self) -> int:
        moved = 0
        if not self.sessions.is_dir():
            return 0
        for entry in os.scandir(self.sessions):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                os.replace(entry.path, self.archive / entry.name)
                moved += 1
        return moved

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.harvest)
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except asyncio.TimeoutError:
                pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_backend(workdir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "soak_backend.py"), "--port", "0",
                             "--slow-ms", "100"], stdout=subprocess.PIPE,
                            stderr=open(workdir / "backend.err", "wb"), text=True)
    line = proc.stdout.readline()  # "ready <port>"; the backend starts in well under a second
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"soak: the fake backend did not start: {line!r}")
    return proc, int(line.split()[1])


def soak_graph(workdir: Path, routes: Path, breaker: str, classify_method: str | None) -> Path:
    """The graph to serve: `routes` as it is, or a copy (with its prompts) with looser breakers
    (and, to compare, another classify method)."""
    if breaker == "shipped" and not classify_method:
        return routes
    graph = yaml.safe_load(routes.read_text(encoding="utf-8"))
    if breaker != "shipped":
        failures, cooldown = (float(x.split("=")[1]) for x in breaker.split(","))
        for backend in graph["backends"].values():
            backend["breaker"] = {"failures": int(failures), "cooldown": cooldown}
    if classify_method:
        for node in graph["nodes"].values():
            if node.get("type") == "classify":
                node["method"] = classify_method
    shutil.copytree(routes.parent / "prompts", workdir / "prompts")
    target = workdir / "routes.yaml"
    target.write_text(yaml.safe_dump(graph, sort_keys=False), encoding="utf-8")
    return target


def start_engine(workdir: Path, backend_port: int, routes: Path,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    backend = f"http://127.0.0.1:{backend_port}/v1"
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_API_KEYS"}
    env.update({"ROUTER_URL": backend, "PRIMARY_URL": backend, "XAI_URL": backend,
                "XAI_API_KEY": "soak-xai-key", "SESSION_LOG_DIR": str(workdir / "sessions"),
                "SESSION_LOG_MAX_FILES": "100000000", "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
                "LOG_LEVEL": "info"})
    env.update(extra_env or {})  # --engine-env, e.g. PYTHONMALLOC=malloc: the engine only, not this driver
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--routes", str(routes)], cwd=ROOT, env=env,
                            stdout=open(workdir / "engine.log", "wb"), stderr=open(workdir / "engine.err", "wb"))
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(base: str, proc: subprocess.Popen, workdir: Path) -> None:
    try:
        await asyncio.to_thread(targets.wait_http, base + "/v1/models", proc, 30, workdir / "engine.err")
    except RuntimeError as err:
        raise SystemExit(f"soak: the engine did not start: {err}") from None


async def engine_stats(base: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/stats") as resp:
            return await resp.json()


async def idle_checkpoint(pid: int, backend_port: int, label: str, done: int, started: float) -> dict:
    """Sample the engine with no load: client connections closed, idle backend connections expired."""
    await asyncio.sleep(IDLE_WAIT_S)
    sample = {"at": label, "requests_done": done, "elapsed_s": round(time.monotonic() - started, 1),
              **proc_sample(pid), "fd_kinds": fd_kinds(pid, backend_port)}
    print(f"soak: checkpoint {label:>5}: {done} requests, RSS {sample['rss_mb']} MB, "
          f"{sample['fds']} fds {sample['fd_kinds']}, {sample['elapsed_s']} s", flush=True)
    return sample


def check_logs(archive: Path, sessions: Path, expected: set[str]) -> dict:
    schema = json.loads((ROOT / "schemas" / "session.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found, bad_json, bad_schema = set(), [], []
    outcomes: Counter = Counter()
    for entry in os.scandir(archive):
        try:
            record = json.loads(Path(entry.path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            bad_json.append(f"{entry.name}: {exc}")
            continue
        error = next(validator.iter_errors(record), None)
        if error is not None:
            bad_schema.append(f"{entry.name}: {'.'.join(map(str, error.absolute_path))}: {error.message[:200]}")
        found.add(record.get("id"))
        outcomes[record.get("outcome")] += 1
    leftovers = sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []
    files = sum(1 for _ in os.scandir(archive))
    return {"files": files, "expected": len(expected), "missing": len(expected - found),
            "unexpected": len(found - expected), "duplicates": files - len(found),
            "not_json": len(bad_json), "schema_errors": len(bad_schema), "left_in_dir": leftovers[:10],
            "outcomes": dict(outcomes), "examples": (bad_json + bad_schema)[:5]}


def plan(total: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    kinds = list(MIX)
    return rng.choices(kinds, weights=[MIX[k] for k in kinds], k=total)


async def soak(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="engine-soak-"))
    sessions, archive = workdir / "sessions", workdir / "archive"
    print(f"soak: work directory {workdir}", flush=True)
    backend, backend_port = start_backend(workdir)
    graph = soak_graph(workdir, args.routes, args.breaker, args.classify_method)
    engine, base = start_engine(workdir, backend_port, graph, dict(kv.split("=", 1) for kv in args.engine_env))
    tally, samples, peak = Tally(), [], {"rss_mb": 0.0, "fds": 0, "log_backlog": 0}
    series: list[list] = []  # [elapsed s, requests done, RSS MB, session logs queued], every second
    done = 0
    stop = asyncio.Event()
    harvester = Harvester(sessions, archive)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    try:
        await wait_ready(base, engine, workdir)
        harvest_task = asyncio.create_task(harvester.run(stop))

        async def sample_peaks() -> None:
            """Once a second: RSS and fds, and the session-log backlog (records not yet on disk).

            The backlog matters for memory: a burst of fast failures (an open breaker) used to
            queue thousands of records, whose memory stayed resident after they were written.
            """
            while not stop.is_set():
                now = proc_sample(engine.pid)
                peak["rss_mb"], peak["fds"] = max(peak["rss_mb"], now["rss_mb"]), max(peak["fds"], now["fds"])
                try:
                    queued = (await engine_stats(base)).get("session_logs", {}).get("queued", 0)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                    queued = None
                peak["log_backlog"] = max(peak["log_backlog"], queued or 0)
                series.append([round(time.monotonic() - started, 1), done, now["rss_mb"], queued])
                await asyncio.sleep(1)
        peak_task = asyncio.create_task(sample_peaks())

        kinds = plan(args.requests, args.seed)
        warmup = min(len(kinds), max(1000, len(kinds) // 50))
        # Checkpoints: after warm-up ("start"), then every 10% of the run.
        marks = [warmup] + [len(kinds) * k // 10 for k in range(1, 11)]
        marks = sorted(set(m for m in marks if m >= warmup))
        idle_marks = {warmup: "start", len(kinds) // 2: "50%", len(kinds): "100%"}
        for mark in marks:
            await run_phase(base, args.seed, kinds[done:mark], done, args.concurrency, tally, deadline)
            done = mark
            if time.monotonic() > deadline:
                tally.problem("deadline", f"stopped after {done} requests at --max-minutes {args.max_minutes}")
                break
            if mark in idle_marks:
                samples.append(await idle_checkpoint(engine.pid, backend_port, idle_marks[mark], done, started))
            else:
                sample = {"at": f"{round(100 * mark / len(kinds))}%", "requests_done": done,
                          "elapsed_s": round(time.monotonic() - started, 1), "idle": False,
                          **proc_sample(engine.pid)}
                samples.append(sample)
                print(f"soak: {sample['at']:>5}: {done} requests, RSS {sample['rss_mb']} MB, "
                      f"{sample['fds']} fds (under load), {sample['elapsed_s']} s", flush=True)
        load_s = round(time.monotonic() - started, 1)
        stats = await engine_stats(base)
        for _ in range(600):  # the writer drains its queue; bounded at 60 s
            if stats.get("session_logs", {}).get("queued", 1) == 0:
                break
            await asyncio.sleep(0.1)
            stats = await engine_stats(base)
        stop.set()
        await harvest_task
        await peak_task
    finally:
        stop.set()
        engine.send_signal(signal.SIGTERM)
        try:
            engine_rc = engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine_rc = "killed after 60 s"
        backend.terminate()
        backend.wait(timeout=10)
    harvester.harvest()
    logs = check_logs(archive, sessions, tally.session_ids)
    engine_log = (workdir / "engine.log").read_bytes()
    return {"workdir": str(workdir), "breaker": args.breaker, "classify_method": args.classify_method,
            "requests": sum(tally.sent.values()), "by_kind": dict(tally.sent),
            "concurrency": args.concurrency, "load_seconds": load_s,
            "statuses": {f"{k} {s}": n for (k, s), n in sorted(tally.statuses.items())},
            "stream_endings": {f"{k} {e}": n for (k, e), n in sorted(tally.stream_endings.items())},
            "samples": samples, "peak": peak, "rss_series": series, "engine_stats": stats, "engine_exit": engine_rc,
            "engine_log_lines": engine_log.count(b"\n"),
            "engine_unhandled_errors": engine_log.count(b"unhandled_error"),
            "session_logs": logs, "problems": tally.problems, "problem_counts": dict(tally.problem_counts)}


def verdict(result: dict) -> list[str]:
    """Every failed check, as a sentence; empty when the soak passed."""
    failures = []
    by_at = {s["at"]: s for s in result["samples"] if s.get("idle", True)}
    if "50%" in by_at and "100%" in by_at:
        growth = by_at["100%"]["rss_mb"] - by_at["50%"]["rss_mb"]
        if growth > 5:
            failures.append(f"RSS grew {growth:.1f} MB between 50% and 100% of the run (limit 5 MB)")
        own = {at: by_at[at]["fds"] - by_at[at]["fd_kinds"].get("tcp_backend_established", 0) for at in by_at}
        if own["100%"] > own["50%"]:
            failures.append(f"open fds other than pooled backend connections grew from {own['50%']} to "
                            f"{own['100%']} (idle)")
        for at, sample in by_at.items():
            stuck = sum(n for kind, n in sample["fd_kinds"].items() if kind.endswith("close_wait"))
            if stuck:
                failures.append(f"{stuck} sockets in CLOSE_WAIT at {at} (hung up by the peer, never closed)")
    else:
        failures.append("the run did not reach its 50% and 100% checkpoints")
    logs = result["session_logs"]
    for key in ("missing", "unexpected", "duplicates", "not_json", "schema_errors"):
        if logs[key]:
            failures.append(f"session logs: {logs[key]} {key}")
    if logs["left_in_dir"]:
        failures.append(f"session logs: files left behind: {logs['left_in_dir']}")
    if result["engine_unhandled_errors"]:
        failures.append(f"the engine logged {result['engine_unhandled_errors']} unhandled errors")
    for name, count in result["problem_counts"].items():
        failures.append(f"{count} x {name}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--max-minutes", type=float, default=40, help="stop sending after this long")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--routes", type=Path, default=ROOT / "routes.yaml")
    parser.add_argument("--breaker", default="failures=8,cooldown=2",
                        help="each backend's breaker for the soak, or `shipped` to keep routes.yaml's")
    parser.add_argument("--classify-method", choices=["llm", "similarity", "cascade"],
                        help="override the classify node's method (default: as routes.yaml ships it)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--engine-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in the engine's environment only (repeatable), e.g. PYTHONMALLOC=malloc")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    failures = verdict(result)
    result["failures"] = failures
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("engine_stats", "rss_series")}, indent=1,
                     default=str))
    print("soak: PASS" if not failures else "soak: FAIL\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
