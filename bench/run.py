"""`make benchmark`: what the engine costs a request, side by side with the alternatives.

Overhead mode (default) starts a fake backend that answers at once, the engine twice (a
one-step graph, and the shipped routes.yaml with every backend pointed at the fake), and,
when available, nginx and LiteLLM's proxy in front of the same fake. It measures each
target at 1, 16 and 64 clients, then streaming, then the engine's memory; prints a table
and writes JSON + Markdown under bench/results/. See bench/README.md.

Live mode (`--live`, `make benchmark LIVE=1`) measures a running stack at $ENGINE_URL:
see bench/live.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402

ROOT = BENCH.parent
ONE_STEP = BENCH / "graphs" / "one-step.yaml"
SHIPPED = ROOT / "routes.yaml"
PROMPT = "Explain how a hash map works, in two sentences."
BODY = json.dumps({"model": "ai-router", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64},
                  separators=(",", ":"))
STREAM_BODY = json.dumps({"model": "ai-router", "messages": [{"role": "user", "content": PROMPT}],
                          "max_tokens": 64, "stream": True}, separators=(",", ":"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--live", action="store_true", help="measure a running stack at $ENGINE_URL instead")
    p.add_argument("--concurrency", default="1,16,64", help="client counts (default 1,16,64)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per target and client count (default 5)")
    p.add_argument("--requests", type=int, default=200_000,
                   help="at most this many requests per target and client count (the asyncio client)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                   help="auto: wrk when on PATH, else the asyncio client")
    p.add_argument("--streams", type=int, default=30, help="streamed requests per target at 1 client")
    p.add_argument("--stream-concurrency", default="1,16")
    p.add_argument("--chunks", type=int, default=10, help="content chunks per streamed answer")
    p.add_argument("--gap-ms", type=float, default=20.0,
                   help="the fake backend's gap between chunks (large enough that a scheduler hiccup "
                        "on a busy 2-core machine does not look like batching)")
    p.add_argument("--long-requests", type=int, default=0,
                   help="long run: this many requests to the one-step engine, RSS at half and at the end "
                        "(100000 for the issue's 50k/100k check; 0 skips it)")
    p.add_argument("--long-timeout", type=float, default=900, help="the long run's time limit in seconds")
    p.add_argument("--engine-workers", type=int, default=int(os.environ.get("ENGINE_WORKERS") or 1))
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--litellm-python", help="python of a venv with litellm[proxy] (or $BENCH_LITELLM_PYTHON)")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--only", help="comma-separated targets to measure (direct is always measured)")
    p.add_argument("--results", type=Path, default=BENCH / "results", help="where JSON and Markdown go")
    p.add_argument("--name", help="file name stem for the results (default: <mode>-<UTC time>)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: few requests, asyncio client, no nginx/LiteLLM (tests use it)")
    # live mode
    p.add_argument("--engine-url", default=os.environ.get("ENGINE_URL", "http://localhost:8000"))
    p.add_argument("--api-key", default=os.environ.get("ENGINE_API_KEY"))
    p.add_argument("--session-log-dir", type=Path,
                   default=Path(os.environ["SESSION_LOG_DIR"]) if os.environ.get("SESSION_LOG_DIR") else None)
    p.add_argument("--users", default="1,4,16", help="live: concurrent users")
    p.add_argument("--per-route", type=int, default=3, help="live: requests per route at each user count")
    p.add_argument("--live-timeout", type=float, default=600, help="live: time limit for the whole run")
    args = p.parse_args(argv)
    if args.quick:
        args.loadgen = "python"
        args.no_nginx = args.no_litellm = True
        args.requests = min(args.requests, 100)
        args.duration = min(args.duration, 5)
        args.streams = min(args.streams, 4)
        args.chunks = min(args.chunks, 5)
        args.gap_ms = min(args.gap_ms, 5.0)
    return args


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty(engine)" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load when the run started: other work skews every number."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def meta(args, loadgen_name: str) -> dict:
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": git_commit(),
            "machine": machine(), "python": platform.python_version(), "aiohttp": version_of("aiohttp"),
            "uvloop": version_of("uvloop"), "orjson": version_of("orjson"), "loadgen": loadgen_name,
            "engine_workers": args.engine_workers, "load_average": load_average(),
            "settings": {"duration_s": args.duration, "max_requests": args.requests,
                         "concurrency": ints(args.concurrency), "streams": args.streams,
                         "chunks": args.chunks, "gap_ms": args.gap_ms, "body": json.loads(BODY)}}


class Load:
    """Runs one measurement with wrk or with the asyncio client (a separate process either way)."""

    def __init__(self, kind: str, python: str):
        self.kind = kind
        self.python = python

    def http(self, target: targets.Target, concurrency: int, duration: float, requests: int) -> dict:
        headers = target.extra.get("headers") or {}
        if self.kind == "wrk":
            return loadgen.run_wrk(target.url, BODY, concurrency, max(1, round(duration)), headers=headers)
        raw = self._python("http", target.url, BODY, concurrency, requests, duration, headers)
        return report.summarise(raw["latencies_ms"], raw["duration_s"], raw["errors"])

    def stream(self, target: targets.Target, concurrency: int, streams: int, duration: float) -> dict:
        return self._python("stream", target.url, STREAM_BODY, concurrency, streams, duration,
                            target.extra.get("headers") or {})

    def _python(self, kind, url, body, concurrency, requests, duration, headers) -> dict:
        proc = subprocess.run([self.python, str(BENCH / "loadgen.py"), kind, "--url", url, "--body", body,
                               "--concurrency", str(concurrency), "--requests", str(requests),
                               "--duration", str(duration)] +
                              [arg for k, v in headers.items() for arg in ("--header", f"{k}: {v}")],
                              capture_output=True, text=True, timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout)


def engine_stats(target: targets.Target) -> dict:
    try:
        with urllib.request.urlopen(target.extra["base"] + "/stats", timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return {}


def start_targets(args, workdir: Path, fake: targets.Target, python: str) -> tuple[dict, dict]:
    started: dict[str, targets.Target] = {"direct": fake}
    skipped: dict[str, str] = {}
    fake_v1 = f"http://127.0.0.1:{fake.extra['port']}/v1"
    wanted = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    if want("engine-one-step"):
        started["engine-one-step"] = targets.start_engine("engine-one-step", python, workdir, ONE_STEP,
                                                          {"BENCH_BACKEND_URL": fake_v1}, args.engine_workers)
    if want("engine-shipped"):
        started["engine-shipped"] = targets.start_engine(
            "engine-shipped", python, workdir, SHIPPED,
            {"ROUTER_URL": fake_v1, "PRIMARY_URL": fake_v1, "XAI_URL": fake_v1, "XAI_API_KEY": "bench-key"},
            args.engine_workers)
    if want("nginx"):
        if args.no_nginx:
            skipped["nginx"] = "--no-nginx"
        else:
            got = targets.start_nginx(workdir, fake.extra["port"])
            if isinstance(got, str):
                skipped["nginx"] = got
            else:
                started["nginx"] = got
    if want("litellm"):
        litellm = targets.litellm_python(args.litellm_python)
        if args.no_litellm:
            skipped["litellm"] = "--no-litellm"
        elif litellm is None:
            skipped["litellm"] = "no venv with litellm given (--litellm-python or $BENCH_LITELLM_PYTHON)"
        else:
            print(f"starting LiteLLM's proxy ({litellm}); it takes a while ...", flush=True)
            got = targets.start_litellm(litellm, workdir, fake.extra["port"])
            if isinstance(got, str):
                skipped["litellm"] = got
            else:
                started["litellm"] = got
    return started, skipped


def long_run(args, load: Load, engine: targets.Target) -> dict:
    """Requests to the one-step engine in short slices; RSS when passing half and all of them."""
    total, errors = 0, 0
    first_mark, second_mark = args.long_requests // 2, args.long_requests
    out: dict = {"first_at": None, "second_at": None, "target": engine.name, "concurrency": 16}
    started = time.monotonic()
    slice_s = 2.0
    while total < second_mark and time.monotonic() - started < args.long_timeout:
        goal = first_mark if out["first_at"] is None else second_mark
        row = load.http(engine, 16, slice_s, goal - total)
        total += row["requests"]
        errors += row["errors"]
        if out["first_at"] is None and total >= first_mark:
            out["first_at"], out["rss_first_mb"] = total, targets.rss_mb(engine.proc.pid)["rss_mb"]
        elif out["first_at"] is not None and total >= second_mark:
            out["second_at"], out["rss_second_mb"] = total, targets.rss_mb(engine.proc.pid)["rss_mb"]
        print(f"  long run: {total} requests, RSS {targets.rss_mb(engine.proc.pid)['rss_mb']} MB", flush=True)
    out["errors"] = errors
    out["duration_s"] = round(time.monotonic() - started, 1)
    out["completed"] = total
    if out.get("rss_first_mb") is not None and out.get("rss_second_mb") is not None:
        out["growth_mb"] = round(out["rss_second_mb"] - out["rss_first_mb"], 1)
    else:
        out["growth_mb"] = None
    out["session_logs"] = engine_stats(engine).get("session_logs")
    return out


def overhead(args) -> dict:
    python = targets.python_for_engine()
    kind = "wrk" if args.loadgen == "wrk" or (args.loadgen == "auto" and loadgen.wrk_available()) else "python"
    if kind == "wrk" and not loadgen.wrk_available():
        raise SystemExit("bench: --loadgen wrk, but wrk is not on PATH")
    load = Load(kind, python)
    loadgen_name = loadgen.wrk_version() + " (1 thread, Lua script)" if kind == "wrk" else "asyncio client"
    result = {"mode": "overhead", "meta": meta(args, loadgen_name), "throughput": [], "streaming": [],
              "memory": {"engines": {}, "long_run": None}, "skipped": {}, "checks": []}
    workdir = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    print(f"bench: work directory {workdir} (session logs, process logs); load: {loadgen_name}", flush=True)
    started: dict[str, targets.Target] = {}
    fake = targets.start_fake(python, workdir, chunks=args.chunks, gap_ms=args.gap_ms)
    try:
        started, skipped = start_targets(args, workdir, fake, python)
        result["skipped"] = skipped
        if "litellm" in started:
            result["meta"]["litellm"] = started["litellm"].extra.get("version")
        for name, target in started.items():  # warm-up: connections, caches, first-call imports
            load.http(target, 4, 1.0, 50 if args.quick else 2000)
        engines = {n: t for n, t in started.items() if n.startswith("engine")}
        for name, target in engines.items():
            result["memory"]["engines"][name] = {"rss_start_mb": targets.rss_mb(target.proc.pid)["rss_mb"]}

        for concurrency in ints(args.concurrency):
            for name, target in started.items():
                cpu_before = targets.cpu_seconds(target.proc.pid)
                row = load.http(target, concurrency, args.duration, args.requests)
                cpu_after = targets.cpu_seconds(target.proc.pid)
                row.update(target=name, concurrency=concurrency,
                           cpu_us_per_request=round((cpu_after - cpu_before) / row["ok"] * 1e6, 1)
                           if row["ok"] and cpu_before is not None and cpu_after is not None else None)
                result["throughput"].append(row)
                print(f"  {name:16} c={concurrency:<3} {row['rps']:>9.1f} req/s  p50 {report.fmt(row['p50_ms'])} ms"
                      f"  p99 {report.fmt(row['p99_ms'])} ms  CPU/request {report.fmt(row['cpu_us_per_request'])} us"
                      f"  errors {row['errors']}", flush=True)
        report.add_overheads(result["throughput"])

        for concurrency in ints(args.stream_concurrency):
            streams = args.streams * max(1, concurrency // 4) if concurrency > 1 else args.streams
            for name, target in started.items():
                raw = load.stream(target, concurrency, streams, max(args.duration * 3, 10))
                row = report.stream_summary(raw["ttfts_ms"], raw["gaps_ms"], args.gap_ms,
                                            len(raw["ttfts_ms"]), raw["errors"], raw["chunks"])
                row.update(target=name, concurrency=concurrency)
                result["streaming"].append(row)
                print(f"  {name:16} stream c={concurrency:<3} TTFT p50 {report.fmt(row['ttft_p50_ms'])} ms"
                      f"  gap p50 {report.fmt(row['gap_p50_ms'])} ms  batched {row['batched_fraction']}"
                      f"  errors {row['errors']}", flush=True)
        report.add_overheads(result["streaming"], "ttft_p50_ms", "added_ttft_p50_ms")

        if args.long_requests and "engine-one-step" in engines:
            result["memory"]["long_run"] = long_run(args, load, engines["engine-one-step"])
        for name, target in engines.items():
            now = targets.rss_mb(target.proc.pid)
            result["memory"]["engines"][name].update(rss_end_mb=now["rss_mb"], rss_peak_mb=now["peak_mb"])
            result["memory"]["engines"][name]["stats"] = {k: v for k, v in engine_stats(target).items()
                                                          if k in ("requests", "outcomes", "routes", "session_logs")}
    finally:
        for target in reversed(list(started.values()) or [fake]):
            target.stop()
        fake.stop()
    result["meta"]["workdir"] = str(workdir)
    result["meta"]["load_average_end"] = load_average()
    result["checks"] = report.check_targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.live:
        import live
        result = live.run(args, meta(args, "aiohttp client (live)"))
        text = live.render_text(result)
    else:
        result = overhead(args)
        text = report.render_text(result)
    print()
    print(text)
    name = args.name or f"{result['mode']}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    if args.live:
        json_path, md_path = live.write(result, args.results, name)
    else:
        json_path, md_path = report.write(result, args.results, name)
    print(f"bench: wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
