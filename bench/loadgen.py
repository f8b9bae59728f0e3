"""Load generators: wrk with a Lua script when it is installed, else an asyncio client.

Both run as a separate process from the system under test, so on a 2-core machine the
client's work does not come out of the engine's core. The asyncio client is also the
streaming client (wrk cannot time individual SSE chunks): it records when each content
chunk arrives, for time to first token and the gaps between chunks.

As a process: `python bench/loadgen.py http|stream --url URL --body JSON ...` prints one
JSON object (raw latencies for `http`, raw TTFTs and gaps for `stream`).
Every loop is bounded both by a request count and by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d},"latency_us":{"p50":%%d,"p95":%%d,"p99":%%d,"max":%%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def run_wrk(url: str, body: str, concurrency: int, duration_s: int, *, timeout_s: int = 10,
            headers: dict[str, str] | None = None) -> dict:
    """One wrk run (1 thread: wrk's one core is enough for ~90k req/s); returns report.summarise's shape."""
    lua_headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA % {"body": body, "headers": lua_headers})
    try:
        proc = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, int(duration_s))}s",
                               "--timeout", f"{timeout_s}s", "-s", script.name, url],
                              capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    errors = sum(raw["errors"].values())
    duration = raw["duration_us"] / 1e6
    ok = max(0, raw["requests"] - raw["errors"]["status"])
    lat = raw["latency_us"]
    if ok == 0:  # nothing completed within the run: no latency to speak of
        lat = {"p50": None, "p95": None, "p99": None, "max": None}
    ms = lambda us: None if us is None else us / 1000  # noqa: E731
    return {"requests": raw["requests"], "ok": ok, "errors": errors, "duration_s": round(duration, 3),
            "rps": round(ok / duration, 1) if duration else 0.0,
            "p50_ms": ms(lat["p50"]), "p95_ms": ms(lat["p95"]), "p99_ms": ms(lat["p99"]),
            "max_ms": ms(lat["max"]), "error_kinds": raw["errors"]}


# ------------------------------------------------------------------------------------------ asyncio client

def request_bytes(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: */*\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    return host, port, head.encode() + body


async def read_response(reader: asyncio.StreamReader, on_data=None) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response; `on_data(bytes)` sees each body piece as it arrives."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    pieces = []
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent by any target
                break
            data = (await reader.readexactly(size + 2))[:-2]
            if on_data:
                on_data(data)
            pieces.append(data)
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
        if on_data:
            on_data(data)
        pieces.append(data)
    else:
        data = await reader.read()
        if on_data:
            on_data(data)
        pieces.append(data)
    return status, headers, b"".join(pieces)


async def http_load(url: str, body: bytes, concurrency: int, requests: int, duration_s: float,
                    headers: dict[str, str] | None = None) -> dict:
    """`concurrency` keep-alive connections sending until `requests` are done or time is up."""
    host, port, raw = request_bytes(url, body, headers)
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        nonlocal remaining, errors
        reader = writer = None
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(raw)
                status, resp_headers, _ = await asyncio.wait_for(read_response(reader), 30)
                elapsed = (time.perf_counter() - started) * 1000
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1
                if resp_headers.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"latencies_ms": latencies, "errors": errors, "duration_s": time.perf_counter() - started}


def content_of(event: bytes) -> str | None:
    """The delta content of one SSE event, or None (finish, usage, [DONE], not JSON)."""
    data = event.strip()
    if not data.startswith(b"data:"):
        return None
    try:
        chunk = json.loads(data[5:])
    except ValueError:
        return None
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            return content
    return None


async def stream_load(url: str, body: bytes, concurrency: int, streams: int, duration_s: float,
                      headers: dict[str, str] | None = None) -> dict:
    """Streamed requests; per stream, the arrival time of each content chunk."""
    host, port, raw = request_bytes(url, body, headers)
    ttfts: list[float] = []
    gaps: list[float] = []
    chunks: list[int] = []
    errors = 0
    remaining = streams
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        nonlocal remaining, errors
        reader = writer = None
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            arrivals: list[float] = []
            buffer = bytearray()
            done = False

            def on_data(data: bytes, buffer: bytearray = buffer, arrivals: list[float] = arrivals) -> None:
                nonlocal done
                now = time.perf_counter()
                buffer.extend(data)
                while (end := buffer.find(b"\n\n")) >= 0:
                    event = bytes(buffer[:end])
                    del buffer[:end + 2]
                    if event.strip() == b"data: [DONE]":
                        done = True
                    elif content_of(event):
                        arrivals.append(now)

            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(raw)
                status, _, _ = await asyncio.wait_for(read_response(reader, on_data), 60)
                if status != 200 or not arrivals or not done:
                    errors += 1
                    continue
                ttfts.append((arrivals[0] - started) * 1000)
                gaps.extend((b - a) * 1000 for a, b in zip(arrivals, arrivals[1:]))
                chunks.append(len(arrivals))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"ttfts_ms": ttfts, "gaps_ms": gaps, "chunks": chunks, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="asyncio load generator (prints one JSON object)")
    parser.add_argument("kind", choices=["http", "stream"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; the run stops at either bound")
    parser.add_argument("--header", action="append", default=[], help="extra request header, 'Name: value'")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    body = args.body.encode()
    if args.kind == "http":
        work = http_load(args.url, body, args.concurrency, args.requests, args.duration, headers)
    else:
        work = stream_load(args.url, body, args.concurrency, args.requests, args.duration, headers)
    try:
        import uvloop  # optional: a faster client loop leaves more CPU for the system under test
        result = uvloop.run(work)
    except ImportError:
        result = asyncio.run(work)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
