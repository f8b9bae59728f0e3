"""The benchmark's pure parts: percentiles, summaries, target checks, the table, JSON and Markdown.

Nothing here starts a process or opens a socket, so tests/test_bench.py checks it directly.
Latencies are held in milliseconds throughout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The targets (measured as ratios within one run, on the machine at hand).
TARGET_ADDED_P50_MS = 0.5       # one-step graph, 1 client, median over direct
TARGET_LITELLM_RATIO = 20.0     # one-step graph, 16 clients, req/s over LiteLLM's
TARGET_P99_64_MS = 50.0         # one-step graph, 64 clients
TARGET_ADDED_TTFT_MS = 1.0      # one-step graph, streaming, median over direct
TARGET_RSS_GROWTH_MB = 5.0      # one-step graph, between 50k and 100k requests
BATCHED_LIMIT = 0.01            # at most 1% of chunk gaps may look batched

ENGINE_ONE_STEP = "engine-one-step"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when there are none.

    Nearest rank, not interpolation: every reported latency is one that really happened.
    """
    if not values:
        return None
    data = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[min(rank, len(data)) - 1]


def summarise(latencies_ms: list[float], duration_s: float, errors: int) -> dict[str, Any]:
    """A load run's numbers from its raw latencies (the asyncio load generator's path)."""
    ok = len(latencies_ms)
    return {
        "requests": ok + errors, "ok": ok, "errors": errors, "duration_s": round(duration_s, 3),
        "rps": round(ok / duration_s, 1) if duration_s > 0 else 0.0,
        "p50_ms": _round(percentile(latencies_ms, 50)), "p95_ms": _round(percentile(latencies_ms, 95)),
        "p99_ms": _round(percentile(latencies_ms, 99)), "max_ms": _round(max(latencies_ms, default=None)),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def stream_summary(ttfts_ms: list[float], gaps_ms: list[float], backend_gap_ms: float,
                   streams: int, errors: int, chunks: list[int]) -> dict[str, Any]:
    """Streaming numbers: time to first token, gaps between content chunks, and batching.

    A gap far below the backend's own gap means two chunks arrived together: the proxy held
    one back. `batched_fraction` is the share of gaps under half the backend's gap.
    """
    batched = sum(1 for gap in gaps_ms if gap < backend_gap_ms / 2)
    return {
        "streams": streams, "errors": errors, "backend_gap_ms": backend_gap_ms,
        "chunks_per_stream": min(chunks) if chunks else None,
        "ttft_p50_ms": _round(percentile(ttfts_ms, 50)), "ttft_p95_ms": _round(percentile(ttfts_ms, 95)),
        "gap_p50_ms": _round(percentile(gaps_ms, 50)), "gap_p95_ms": _round(percentile(gaps_ms, 95)),
        "gap_min_ms": _round(min(gaps_ms, default=None)),
        "batched_fraction": round(batched / len(gaps_ms), 4) if gaps_ms else None,
    }


def add_overheads(rows: list[dict[str, Any]], key: str = "p50_ms", added: str = "added_p50_ms") -> None:
    """Fill in `added` (row's `key` minus the direct row's at the same concurrency)."""
    direct = {r["concurrency"]: r for r in rows if r["target"] == "direct"}
    for row in rows:
        base = direct.get(row["concurrency"])
        if row["target"] == "direct" or base is None or row.get(key) is None or base.get(key) is None:
            row[added] = None if row["target"] != "direct" else 0.0
        else:
            row[added] = round(row[key] - base[key], 3)


def find(rows: list[dict[str, Any]], target: str, concurrency: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r["concurrency"] == concurrency), None)


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and pass / miss / not measured (None)."""
    rows, streams = result["throughput"], result["streaming"]
    checks = []

    def add(name: str, value: Any, limit: str, passed: bool | None, note: str = "") -> None:
        checks.append({"target": name, "value": value, "limit": limit, "pass": passed, "note": note})

    one = find(rows, ENGINE_ONE_STEP, 1)
    added = one.get("added_p50_ms") if one else None
    add("added median latency, 1 client, one-step", added, f"<= {TARGET_ADDED_P50_MS} ms",
        None if added is None else added <= TARGET_ADDED_P50_MS)

    engine16, litellm16 = find(rows, ENGINE_ONE_STEP, 16), find(rows, "litellm", 16)
    if engine16 and litellm16 and litellm16.get("rps"):
        ratio = round(engine16["rps"] / litellm16["rps"], 1)
        add("throughput, 16 clients, one-step vs LiteLLM", ratio, f">= {TARGET_LITELLM_RATIO:g}x",
            ratio >= TARGET_LITELLM_RATIO)
    else:
        add("throughput, 16 clients, one-step vs LiteLLM", None, f">= {TARGET_LITELLM_RATIO:g}x", None,
            "LiteLLM not measured in this run")

    engine64 = find(rows, ENGINE_ONE_STEP, 64)
    if engine64:
        add("p99, 64 clients, one-step, no errors", engine64["p99_ms"], f"<= {TARGET_P99_64_MS:g} ms, 0 errors",
            engine64["p99_ms"] is not None and engine64["p99_ms"] <= TARGET_P99_64_MS
            and engine64["errors"] == 0, f"{engine64['errors']} errors")
    else:
        add("p99, 64 clients, one-step, no errors", None, f"<= {TARGET_P99_64_MS:g} ms", None, "not measured")

    stream = next((s for s in streams if s["target"] == ENGINE_ONE_STEP), None)
    if stream:
        ttft = stream.get("added_ttft_p50_ms")
        batched = stream.get("batched_fraction")
        add("streaming added TTFT median, one-step", ttft, f"<= {TARGET_ADDED_TTFT_MS:g} ms",
            None if ttft is None else ttft <= TARGET_ADDED_TTFT_MS)
        add("streaming chunks relayed as they arrive", batched, f"batched <= {BATCHED_LIMIT:.0%} of gaps",
            None if batched is None else batched <= BATCHED_LIMIT and stream["errors"] == 0,
            f"gap p50 {stream['gap_p50_ms']} ms vs backend {stream['backend_gap_ms']} ms")
    long_run = (result.get("memory") or {}).get("long_run")
    if long_run and long_run.get("growth_mb") is not None:
        add(f"RSS growth {long_run['first_at']}->{long_run['second_at']} requests", long_run["growth_mb"],
            f"<= {TARGET_RSS_GROWTH_MB:g} MB", long_run["growth_mb"] <= TARGET_RSS_GROWTH_MB)
    else:
        add("RSS growth 50k->100k requests", None, f"<= {TARGET_RSS_GROWTH_MB:g} MB", None,
            "long run not done (--long-requests)")
    return checks


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[list[str]]:
    return [header] + [[fmt(v) for v in row] for row in rows]


def tables(result: dict[str, Any]) -> dict[str, list[list[str]]]:
    """The result as tables (title -> rows, header first), shared by terminal and Markdown."""
    out = {}
    out["Throughput and latency (non-streamed)"] = table(
        ["target", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "added p50 ms", "CPU µs/req", "errors",
         "requests"],
        [[r["target"], r["concurrency"], r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r.get("added_p50_ms"),
          r.get("cpu_us_per_request"), r["errors"], r["requests"]] for r in result["throughput"]])
    out["Streaming"] = table(
        ["target", "clients", "TTFT p50 ms", "TTFT p95 ms", "added TTFT p50 ms", "gap p50 ms", "gap p95 ms",
         "batched", "streams", "errors"],
        [[s["target"], s["concurrency"], s["ttft_p50_ms"], s["ttft_p95_ms"], s.get("added_ttft_p50_ms"),
          s["gap_p50_ms"], s["gap_p95_ms"], s["batched_fraction"], s["streams"], s["errors"]]
         for s in result["streaming"]])
    memory = result.get("memory") or {}
    mem_rows = [[name, m.get("rss_start_mb"), m.get("rss_end_mb"), m.get("rss_peak_mb")]
                for name, m in (memory.get("engines") or {}).items()]
    out["Engine memory (MB)"] = table(["engine", "RSS after warm-up", "RSS at end", "peak RSS"], mem_rows)
    long_run = memory.get("long_run")
    if long_run:
        out["Long run (one-step, MB)"] = table(
            ["requests", "RSS at first mark", "RSS at second mark", "growth", "errors", "seconds"],
            [[f"{long_run['first_at']} / {long_run['second_at']}", long_run.get("rss_first_mb"),
              long_run.get("rss_second_mb"), long_run.get("growth_mb"), long_run.get("errors"),
              long_run.get("duration_s")]])
    out["Targets"] = table(["target", "measured", "limit", "result", "note"],
                           [[c["target"], c["value"], c["limit"],
                             {True: "PASS", False: "MISS", None: "not measured"}[c["pass"]], c["note"]]
                            for c in result["checks"]])
    return out


def render_text(result: dict[str, Any]) -> str:
    lines = [describe(result), ""]
    for title, rows in tables(result).items():
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append(f"== {title}")
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    for name, reason in (result.get("skipped") or {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines).rstrip() + "\n"


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Benchmark ({result['mode']}): {result['meta']['date']}", "", describe(result), ""]
    for title, rows in tables(result).items():
        lines += [f"## {title}", "", "| " + " | ".join(rows[0]) + " |",
                  "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
        lines.append("")
    if result.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()] + [""]
    return "\n".join(lines)


def describe(result: dict[str, Any]) -> str:
    m = result["meta"]
    return (f"{m['date']} · commit {m['git_commit']} · {m['machine']['cpu']} × {m['machine']['cores']} cores, "
            f"{m['machine']['memory_gb']} GB · Python {m['python']} · aiohttp {m['aiohttp']} · "
            f"uvloop {m.get('uvloop') or 'no'} · orjson {m.get('orjson') or 'no'} · load: {m['loadgen']} · "
            f"engine workers: {m.get('engine_workers', 1)} · load average at start "
            f"{'/'.join(map(str, m.get('load_average') or [])) or '-'}, at end "
            f"{'/'.join(map(str, m.get('load_average_end') or [])) or '-'}")


def write(result: dict[str, Any], directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path
