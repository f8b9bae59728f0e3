"""Live mode: measure a running stack (real models) route by route, at 1, 4 and 16 users.

Each prompt below is written to land on one route; the route actually taken is read from
the `x-engine-route` response header, so a misrouted prompt is reported under the route
it took (and counted in `misrouted`). Every request is streamed with usage, which gives:
end-to-end latency, time to first token (first content or reasoning chunk), and tokens
per second after the first token (usage's completion_tokens, else the chunk count).
Classification latency comes from the request's session log (`x-engine-session` names
it; needs --session-log-dir / $SESSION_LOG_DIR on this machine), else from GET /stats
(then only as percentiles over the whole run, not per route).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import report

TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
              "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
              "<chat_history>\nUSER: How do I make sourdough bread?\nASSISTANT: Start with a starter...\n"
              "</chat_history>")

# intended route -> the user message that should reach it
PROMPTS: dict[str, str] = {
    "router": "Hi there! Thanks a lot for your help earlier.",
    "primary": "Write a Python function that merges two sorted lists in linear time and explain why it is O(n).",
    "xai": ("Propose a novel research programme for proving lower bounds on the circuit complexity of "
            "matrix multiplication, and identify where current barrier results would block it."),
    "enrich": "What are today's most important news headlines about the European stock markets?",
    "meta": TITLE_TASK,
}


async def one_request(session: aiohttp.ClientSession, url: str, intended: str, headers: dict,
                      timeout: float) -> dict[str, Any]:
    body = {"model": "ai-router", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": PROMPTS[intended]}]}
    out: dict[str, Any] = {"intended": intended, "route": None, "session": None, "ok": False}
    started = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    try:
        async with session.post(url, json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            out["status"] = resp.status
            out["route"] = resp.headers.get("x-engine-route")
            out["session"] = resp.headers.get("x-engine-session")
            if resp.status != 200:
                out["error"] = (await resp.text())[:300]
                return out
            async for line in resp.content:
                line = line.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("error"):
                    out["error"] = str(chunk["error"])[:300]
                    return out
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    end = time.perf_counter()
    tokens = (usage or {}).get("completion_tokens") or chunks
    out.update(ok=True, e2e_ms=(end - started) * 1000, tokens=tokens,
               ttft_ms=None if first is None else (first - started) * 1000,
               tokens_per_s=(tokens / (end - first)) if first is not None and end > first else None)
    return out


def classification_from_log(directory: Path, session: str | None) -> float | None:
    if not session:
        return None
    for path in directory.glob(f"*_{session}.json"):
        try:
            return json.loads(path.read_text()).get("classification_ms")
        except (OSError, ValueError):
            return None
    return None


async def get_stats(session: aiohttp.ClientSession, base: str, headers: dict) -> dict:
    try:
        async with session.get(base + "/stats", headers=headers) as resp:
            return await resp.json() if resp.status == 200 else {}
    except aiohttp.ClientError:
        return {}


async def level(session, url, users: int, per_route: int, headers: dict, deadline: float) -> list[dict]:
    """`per_route` requests for each route, shared out among `users` concurrent users."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(per_route):
        for intended in PROMPTS:
            queue.put_nowait(intended)
    results: list[dict] = []

    async def user() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            intended = queue.get_nowait()
            results.append(await one_request(session, url, intended, headers, max(1, deadline - time.monotonic())))

    await asyncio.gather(*(user() for _ in range(users)))
    return results


def summarise_level(users: int, results: list[dict], duration: float, stats_ms: dict | None) -> dict:
    routes: dict[str, Any] = {}
    for route in sorted({r["route"] or "(none)" for r in results}):
        mine = [r for r in results if (r["route"] or "(none)") == route]
        ok = [r for r in mine if r["ok"]]

        def p(key: str, q: float, rows=ok) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            value = report.percentile(values, q)
            return None if value is None else round(value, 1)

        routes[route] = {"requests": len(mine), "errors": len(mine) - len(ok),
                         "e2e_p50_ms": p("e2e_ms", 50), "e2e_p95_ms": p("e2e_ms", 95),
                         "ttft_p50_ms": p("ttft_ms", 50), "ttft_p95_ms": p("ttft_ms", 95),
                         "tokens_per_s_p50": p("tokens_per_s", 50),
                         "classification_p50_ms": p("classification_ms", 50, mine),
                         "misrouted": sum(1 for r in mine if r["intended"] != route)}
    ok_count = sum(1 for r in results if r["ok"])
    return {"users": users, "requests": len(results), "errors": len(results) - ok_count,
            "duration_s": round(duration, 2), "rps": round(ok_count / duration, 2) if duration else 0.0,
            "routes": routes, "stats_classification_ms": stats_ms,
            "failures": [r.get("error") for r in results if not r["ok"]][:5]}


async def measure(args) -> dict:
    base = args.engine_url.rstrip("/")
    url = base + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    deadline = time.monotonic() + args.live_timeout
    levels = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        for users in [int(u) for u in args.users.split(",") if u.strip()]:
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            results = await level(session, url, users, args.per_route, headers, deadline)
            duration = time.perf_counter() - started
            if args.session_log_dir:
                await asyncio.sleep(0.3)  # the engine writes session logs in the background
                for r in results:
                    r["classification_ms"] = classification_from_log(args.session_log_dir, r["session"])
            stats = await get_stats(session, base, headers)
            levels.append(summarise_level(users, results, duration,
                                          (stats.get("classification") or {}).get("latency_ms")))
    return {"engine_url": base, "levels": levels,
            "classification_source": "session logs" if args.session_log_dir else "GET /stats (whole run)"}


def run(args, meta: dict) -> dict:
    result = {"mode": "live", "meta": meta}
    result.update(asyncio.run(measure(args)))
    return result


def tables(result: dict) -> dict[str, list[list[str]]]:
    rows = []
    for lvl in result["levels"]:
        for route, r in lvl["routes"].items():
            rows.append([lvl["users"], route, r["requests"], r["errors"], r["misrouted"], r["e2e_p50_ms"],
                         r["e2e_p95_ms"], r["ttft_p50_ms"], r["ttft_p95_ms"], r["tokens_per_s_p50"],
                         r["classification_p50_ms"]])
    by_route = report.table(["users", "route", "requests", "errors", "misrouted", "e2e p50 ms", "e2e p95 ms",
                             "TTFT p50 ms", "TTFT p95 ms", "tokens/s p50", "classification p50 ms"], rows)
    levels = report.table(["users", "requests", "errors", "req/s", "seconds", "classification p50/p95 ms (/stats)"],
                          [[lvl["users"], lvl["requests"], lvl["errors"], lvl["rps"], lvl["duration_s"],
                            "/".join(report.fmt((lvl["stats_classification_ms"] or {}).get(k))
                                     for k in ("p50", "p95"))] for lvl in result["levels"]])
    return {"Per route": by_route, "Per user count": levels}


def render_text(result: dict) -> str:
    view = dict(result)
    lines = [f"live: {result['engine_url']} · {result['meta']['date']} · classification from "
             f"{result['classification_source']}", ""]
    for title, rows in tables(view).items():
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append(f"== {title}")
        for n, row in enumerate(rows):
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    return "\n".join(lines)


def write(result: dict, directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Benchmark (live): {result['meta']['date']}", "",
             f"{result['engine_url']}; classification latency from {result['classification_source']}.", ""]
    for title, rows in tables(result).items():
        lines += [f"## {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]] + [""]
    md_path.write_text("\n".join(lines))
    return json_path, md_path
