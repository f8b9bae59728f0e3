"""Session logs: content matches the schema, writes are atomic, rotation keeps limits, no secrets."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from engine.sessionlog import rotate, write_record
from tests.conftest import ROOT, XAI_TEST_KEY, session_logs

SCHEMA = json.loads((ROOT / "schemas" / "session.schema.json").read_text())


def validate(record: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(record)


async def test_log_has_the_origin_fields_and_matches_the_schema(client, backends):
    backends.classify_as("ENRICH")
    long_question = "what happened in the news today? " * 40
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long_question}],
                                                          "temperature": 0.2})
    assert resp.status == 200
    [log] = await session_logs(client)
    validate(log)
    assert log["user_query"] == long_question[:500]
    assert log["request"]["messages"][0]["content"] == long_question  # the full request, for replay
    assert log["request"]["params"] == {"temperature": 0.2}
    assert log["route"] == "enrich" and log["classification_raw"] == "ENRICH"
    assert log["classification_ms"] >= 0 and log["total_ms"] >= log["classification_ms"]
    for step in log["steps"]:
        if step["type"] == "call-backend":
            assert {"provider", "url", "model", "messages_sent", "response_content", "duration_ms", "status"} <= set(step)
    assert log["steps"][-1]["usage"]["total_tokens"] == 12 and log["usage"]["total_tokens"] == 12
    assert resp.headers["x-engine-session"] == log["id"]


async def test_failed_and_streamed_requests_are_logged_too(client, backends):
    backends.classify_as("SIMPLE")
    await client.post("/v1/chat/completions", json={"messages": []})
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": True})
    await resp.read()
    bad, streamed = sorted(await session_logs(client), key=lambda r: r["timestamp"])
    for record in (bad, streamed):
        validate(record)
    assert bad["outcome"] == "error" and bad["route"] is None and bad["status"] == 400
    assert streamed["stream"] is True and streamed["steps"][-1]["response_content"] == "router answer"


async def test_no_api_key_in_any_log(client, backends):
    for label in ("COMPLEX", "ENRICH", "SIMPLE"):
        backends.classify_as(label)
        await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                          headers={"Authorization": "Bearer client-key-xyz"})
    logs = await session_logs(client)
    assert len(logs) == 3
    text = json.dumps(logs)
    assert XAI_TEST_KEY not in text and "client-key-xyz" not in text


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    record = {"id": "a" * 32, "timestamp": "2026-11-27T10:00:00+00:00", "x": 1}
    path = write_record(tmp_path, record)
    assert json.loads(path.read_text()) == record
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.name.startswith("20261127T100000_")


def test_rotation_drops_old_files_and_keeps_at_most_n(tmp_path):
    now = time.time()
    for i in range(10):
        path = tmp_path / f"2026112{i}T000000_{i:032x}.json"
        path.write_text("{}")
        age_days = 10 if i < 3 else 0
        os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    removed = rotate(tmp_path, max_days=7, max_files=5, now=now)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert removed == 5 and len(left) == 5
    assert left[0].startswith("20261125")  # the three old ones by age, then the two oldest by count


@pytest.fixture
def stuck_disk(monkeypatch) -> threading.Event:
    """Every session-log file write waits (in the writer thread) until the event is set."""
    import engine.sessionlog as sessionlog

    release = threading.Event()
    real_write = sessionlog.write_file

    def blocked_write(directory: Path, name: str, payload: bytes):
        release.wait(10)
        return real_write(directory, name, payload)

    monkeypatch.setattr(sessionlog, "write_file", blocked_write)
    yield release
    release.set()  # never leave the writer thread stuck behind a failed test


async def test_writer_never_delays_the_response(client, backends, stuck_disk):
    """The response is sent while the log write is still blocked: the handler does not wait for disk."""
    from engine.state import STATE

    release = stuck_disk
    # If the handler awaited the write, this request could not complete before `release` is set.
    resp = await asyncio.wait_for(
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}), 5)
    assert resp.status == 200 and (await resp.json())["choices"]
    assert not list(client.app[STATE].settings.session_log_dir.glob("*.json"))
    release.set()
    assert len(await session_logs(client)) == 1


async def test_a_disk_slower_than_the_traffic_holds_new_requests_and_loses_no_log(
        aiohttp_client, graph, tmp_path, stuck_disk):
    """Past SESSION_LOG_MAX_BACKLOG_MB of unwritten logs, a new request waits for the disk."""
    from engine.app import create_app
    from engine.settings import Settings

    release = stuck_disk
    # A limit of one byte: the first unwritten log fills it.
    settings = Settings(session_log_dir=tmp_path / "logs", session_log_max_backlog_mb=1 / 1024 / 1024)
    client = await aiohttp_client(create_app(settings, graph))
    ask = {"messages": [{"role": "user", "content": "hi"}]}

    first = await asyncio.wait_for(client.post("/v1/chat/completions", json=ask), 5)
    assert first.status == 200  # answered; its log is stuck on the disk
    second = asyncio.create_task(client.post("/v1/chat/completions", json=ask))
    for _ in range(100):
        stats = await (await client.get("/stats")).json()
        if stats["session_logs"]["requests_held"] == 1:
            break
        await asyncio.sleep(0.05)
    assert stats["session_logs"]["requests_held"] == 1 and stats["session_logs"]["queued_bytes"] > 0
    assert not second.done()
    # A third client gives up while held: its request must still be logged, as a disconnect.
    third = asyncio.create_task(client.post("/v1/chat/completions", json=ask))
    for _ in range(100):
        stats = await (await client.get("/stats")).json()
        if stats["session_logs"]["requests_held"] == 2:
            break
        await asyncio.sleep(0.05)
    third.cancel()
    await asyncio.sleep(0.1)

    release.set()
    assert (await asyncio.wait_for(second, 10)).status == 200
    for _ in range(100):
        logs = await session_logs(client)
        if len(logs) == 3:
            break
        await asyncio.sleep(0.05)
    assert sorted(log["outcome"] for log in logs) == ["client_disconnected", "ok", "ok"]
    [left] = [log for log in logs if log["outcome"] == "client_disconnected"]
    assert left["status"] == 499
    stats = await (await client.get("/stats")).json()
    assert stats["session_logs"]["queued_bytes"] == 0 and stats["session_logs"]["failed"] == 0
