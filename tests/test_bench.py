"""The benchmark harness (bench/): its maths, its report, its fake backend, and a tiny real run.

Correctness only: no timing thresholds here (STYLE.md: benchmarks measure, tests check).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402


SHIPPED_ROUTES = {"router", "primary", "xai", "enrich", "meta"}


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 95) == 95
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 100) == 100
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([3, 1, 2], 50) == 2  # unsorted input
    assert report.percentile([], 50) is None
    assert report.percentile([10, 20], 0) == 10


def test_summary_and_batching_fraction():
    row = report.summarise([1.0, 2.0, 3.0, 4.0], duration_s=2.0, errors=1)
    assert row["requests"] == 5 and row["ok"] == 4 and row["errors"] == 1
    assert row["rps"] == 2.0 and row["p50_ms"] == 2.0 and row["p99_ms"] == 4.0 and row["max_ms"] == 4.0
    stream = report.stream_summary([1.0, 3.0], [5.0, 5.1, 0.1, 9.9], backend_gap_ms=5.0, streams=2, errors=0,
                                   chunks=[3, 3])
    # 0.1 ms is under half the backend's gap: two chunks came together once in four gaps.
    assert stream["batched_fraction"] == 0.25
    assert stream["ttft_p50_ms"] == 1.0 and stream["gap_min_ms"] == 0.1


def synthetic_result(one_step_p50: float = 0.4, litellm_rps: float = 50.0) -> dict:
    rows = []
    for c in (1, 16, 64):
        rows.append({"target": "direct", "concurrency": c, "rps": 20000.0, "p50_ms": 0.1, "p95_ms": 0.2,
                     "p99_ms": 0.3, "errors": 0, "requests": 1000})
        rows.append({"target": "engine-one-step", "concurrency": c, "rps": 2000.0, "p50_ms": one_step_p50,
                     "p95_ms": 1.0, "p99_ms": 40.0 if c == 64 else 2.0, "errors": 0, "requests": 1000})
        rows.append({"target": "litellm", "concurrency": c, "rps": litellm_rps, "p50_ms": 14.0, "p95_ms": 20.0,
                     "p99_ms": 30.0, "errors": 0, "requests": 100})
    report.add_overheads(rows)
    streams = [dict(report.stream_summary([1.0], [5.0], 5.0, 1, 0, [2]), target=t, concurrency=1)
               for t in ("direct", "engine-one-step")]
    streams[1]["ttft_p50_ms"] = 2.3  # 1.3 ms over direct: a miss
    report.add_overheads(streams, "ttft_p50_ms", "added_ttft_p50_ms")
    result = {"mode": "overhead", "throughput": rows, "streaming": streams, "skipped": {"nginx": "not installed"},
              "memory": {"engines": {"engine-one-step": {"rss_start_mb": 40.0, "rss_end_mb": 42.0, "rss_peak_mb": 43.0}},
                         "long_run": {"first_at": 50000, "second_at": 100000, "rss_first_mb": 50.0,
                                      "rss_second_mb": 57.5, "growth_mb": 7.5, "errors": 0, "duration_s": 60}},
              "meta": {"date": "2026-11-27 12:00 UTC", "git_commit": "abc1234", "python": "3.11.7",
                       "aiohttp": "3.9", "loadgen": "wrk", "machine": {"cpu": "CPU", "cores": 2, "memory_gb": 24}}}
    result["checks"] = report.check_targets(result)
    return result


def test_overheads_and_targets_pass_and_miss():
    result = synthetic_result(one_step_p50=0.4, litellm_rps=50.0)
    by_name = {c["target"].split(",")[0]: c for c in result["checks"]}
    one = report.find(result["throughput"], "engine-one-step", 1)
    assert one["added_p50_ms"] == pytest.approx(0.3)
    assert report.find(result["throughput"], "direct", 1)["added_p50_ms"] == 0.0
    assert by_name["added median latency"]["pass"] is True
    assert by_name["throughput"]["value"] == 40.0 and by_name["throughput"]["pass"] is True
    assert by_name["p99"]["pass"] is True
    assert by_name["streaming added TTFT median"]["value"] == pytest.approx(1.3)
    assert by_name["streaming added TTFT median"]["pass"] is False
    assert by_name["RSS growth 50000->100000 requests"]["pass"] is False  # 7.5 MB > 5 MB

    slow = synthetic_result(one_step_p50=0.9, litellm_rps=500.0)
    by_name = {c["target"].split(",")[0]: c for c in slow["checks"]}
    assert by_name["added median latency"]["pass"] is False
    assert by_name["throughput"]["pass"] is False  # 4x only


def test_missing_comparisons_are_not_measured_rather_than_passed():
    result = synthetic_result()
    result["throughput"] = [r for r in result["throughput"] if r["target"] != "litellm"]
    result["memory"]["long_run"] = None
    checks = {c["target"].split(",")[0]: c for c in report.check_targets(result)}
    assert checks["throughput"]["pass"] is None
    assert checks["RSS growth 50k->100k requests"]["pass"] is None


def test_table_markdown_and_json_shape(tmp_path):
    result = synthetic_result()
    text = report.render_text(result)
    for title in ("Throughput and latency", "Streaming", "Engine memory", "Long run", "Targets"):
        assert f"== {title}" in text
    assert "MISS" in text and "PASS" in text and "skipped nginx: not installed" in text
    json_path, md_path = report.write(result, tmp_path, "run")
    assert json.loads(json_path.read_text())["checks"] == result["checks"]
    markdown = md_path.read_text()
    assert markdown.startswith("# Benchmark (overhead)")
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    # every Markdown row has as many cells as its header
    assert table_lines and all(line.count("|") >= 3 for line in table_lines)
    header = next(line for line in table_lines if line.startswith("| target | clients | req/s"))
    rows = [line for line in table_lines if line.startswith("| engine-one-step | 16 |")]
    assert rows and rows[0].count("|") == header.count("|")


@pytest.fixture
def fake(tmp_path):
    target = targets.start_fake(sys.executable, tmp_path, chunks=4, gap_ms=1.0, label="COMPLEX")
    yield target
    target.stop()


async def post(url: str, body: dict) -> tuple[int, dict, bytes, list[bytes]]:
    host, port, raw = loadgen.request_bytes(url, json.dumps(body).encode())
    reader, writer = await asyncio.open_connection(host, port)
    pieces: list[bytes] = []
    try:
        writer.write(raw)
        status, headers, payload = await asyncio.wait_for(loadgen.read_response(reader, pieces.append), 5)
        # keep-alive: a second request on the same connection is answered too
        writer.write(raw)
        again, _, _ = await asyncio.wait_for(loadgen.read_response(reader), 5)
        assert again == 200
    finally:
        writer.close()
    return status, headers, payload, pieces


async def test_fake_backend_answers_like_an_openai_server(fake):
    status, headers, payload, _ = await post(fake.url, {"messages": [{"role": "user", "content": "hi"}]})
    answer = json.loads(payload)
    assert status == 200 and headers["content-type"] == "application/json"
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] > 0
    # the shipped graph's classifier prompt gets the configured label
    _, _, payload, _ = await post(fake.url, {"messages": [
        {"role": "system", "content": "You are the request classifier of an AI router."},
        {"role": "user", "content": "prove P != NP"}]})
    assert json.loads(payload)["choices"][0]["message"]["content"] == "COMPLEX"


async def test_fake_backend_streams_n_chunks_each_as_its_own_piece(fake):
    status, headers, payload, pieces = await post(fake.url, {"stream": True, "stream_options": {"include_usage": True},
                                                            "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = [e for e in payload.decode().split("\n\n") if e]
    contents = [loadgen.content_of(e.encode()) for e in events]
    assert [c for c in contents if c] == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][5:])["usage"]["completion_tokens"] == 4  # include_usage honoured
    # the content chunks leave one at a time (the gap), not in one write
    assert sum(1 for p in pieces if loadgen.content_of(p)) == 4


def test_short_overhead_run_writes_every_section(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--requests", "60", "--concurrency", "1,4",
         "--streams", "2", "--stream-concurrency", "1", "--long-requests", "200", "--results", str(tmp_path),
         "--name", "smoke"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert {"meta", "throughput", "streaming", "memory", "checks", "skipped"} <= set(result)
    assert {r["target"] for r in result["throughput"]} == {"direct", "engine-one-step", "engine-shipped"}
    assert {r["concurrency"] for r in result["throughput"]} == {1, 4}
    for row in result["throughput"]:
        assert row["errors"] == 0 and row["requests"] == 60 and row["p50_ms"] > 0
    for row in result["streaming"]:
        assert row["errors"] == 0 and row["streams"] == 2 and row["chunks_per_stream"] == 5
    engines = result["memory"]["engines"]
    assert engines["engine-one-step"]["rss_start_mb"] > 0
    # session logs stayed on: every request that reached an engine was logged
    assert engines["engine-one-step"]["stats"]["session_logs"]["failed"] == 0
    assert engines["engine-one-step"]["stats"]["session_logs"]["written"] > 0
    shipped_routes = engines["engine-shipped"]["stats"]["routes"]
    # classified (by whatever method routes.yaml ships), then answered on one of its routes
    assert shipped_routes and set(shipped_routes) <= SHIPPED_ROUTES - {"meta"}
    long_run = result["memory"]["long_run"]
    assert long_run["first_at"] >= 100 and long_run["second_at"] >= 200 and long_run["growth_mb"] is not None
    assert len(result["checks"]) == 6
    assert result["meta"]["git_commit"] and result["meta"]["machine"]["cores"]
    assert (tmp_path / "smoke.md").read_text().count("## ") >= 4
    assert "== Targets" in proc.stdout


def test_live_mode_against_an_engine_with_fake_backends(tmp_path, fake):
    fake_v1 = f"http://127.0.0.1:{fake.extra['port']}/v1"
    engine = targets.start_engine("engine-live", sys.executable, tmp_path, ROOT / "routes.yaml",
                                  {"ROUTER_URL": fake_v1, "PRIMARY_URL": fake_v1, "XAI_URL": fake_v1,
                                   "XAI_API_KEY": "bench-key"})
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "run.py"), "--live", "--engine-url", engine.extra["base"],
             "--session-log-dir", str(engine.extra["sessions"]), "--users", "1,4", "--per-route", "1",
             "--results", str(tmp_path), "--name", "live"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        engine.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "live.json").read_text())
    assert [lvl["users"] for lvl in result["levels"]] == [1, 4]
    for lvl in result["levels"]:
        assert lvl["errors"] == 0 and lvl["requests"] == 5
        routes = lvl["routes"]
        # Every prompt got an answer on a route of the shipped graph. Which one depends on the
        # classifier (the fake model says COMPLEX; a similarity stage may decide first).
        assert set(routes) <= SHIPPED_ROUTES and sum(r["requests"] for r in routes.values()) == 5
        assert routes["meta"]["requests"] == 1 and routes["meta"]["misrouted"] == 0  # the title task
        assert routes["meta"]["classification_p50_ms"] is None  # meta skips classification
        for name, route in routes.items():
            assert route["errors"] == 0 and route["ttft_p50_ms"] > 0 and route["tokens_per_s_p50"] > 0
            if name != "meta":  # read from the session log named by x-engine-session
                assert route["classification_p50_ms"] is not None
    assert "== Per route" in proc.stdout
