"""Session logs: one JSON file per routed request, written off the request path.

The record (`build_record`) is the trace of the request plus what the origin project's
logs held (`user_query` cut at 500 characters, `route`, `classification_raw`,
`classification_ms`, `steps[]`, `total_ms`, `error`) and what the improvement loop needs
(the full request as received, for replay). It matches `schemas/session.schema.json`.

`SessionLogWriter.submit()` only puts the record on a queue; a background task writes it
with temp file + rename (a reader never sees half a file) in a worker thread, so a slow
disk never delays a response. Rotation (max age, max count) runs every few hundred writes.
API keys never reach a record: of the request headers only the user agent and the client's
task headers (`routing_headers`) are logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from engine.context import RequestContext

log = structlog.get_logger("engine.sessionlog")

USER_QUERY_LIMIT = 500
ROTATE_EVERY = 200


def build_record(ctx: RequestContext, *, status: int, outcome: str, error: str | None,
                 virtual_model: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    classification = ctx.classification or {}
    return {
        "id": ctx.id,
        "timestamp": ctx.received_at.isoformat(),
        "virtual_model": virtual_model,
        "stream": ctx.stream,
        "user_query": ctx.query[:USER_QUERY_LIMIT],
        "route": ctx.route,
        "classification_label": classification.get("label"),
        "classification_raw": classification.get("raw"),
        "classification_source": classification.get("source"),
        "classification_ms": classification.get("ms"),
        "steps": [step.as_dict() for step in ctx.trace],
        "fallbacks": ctx.fallbacks,
        "retries": ctx.retries,
        "total_ms": ctx.elapsed_ms(),
        "status": status,
        "outcome": outcome,
        "error": error,
        "usage": usage,
        "client": {"user_agent": ctx.headers.get("User-Agent")},
        "request": {"messages": ctx.body.get("messages"), "params": ctx.params,
                    "headers": routing_headers(ctx.headers)},
    }


def routing_headers(headers) -> dict[str, str]:
    """The client's task headers (`X-OpenWebUI-Task`, ...), which detect-meta may route on.

    Replay needs them to reach the same decision. Only `X-OpenWebUI-*` headers are kept,
    and not the user-info ones (name, email, id, role): no credentials, no personal data.
    """
    return {name: value for name, value in headers.items()
            if name.lower().startswith("x-openwebui-") and "user" not in name.lower()}


def file_name(record: dict[str, Any]) -> str:
    # Timestamp first, so names sort by time and rotation can drop the oldest by name.
    stamp = record["timestamp"][:19].replace("-", "").replace(":", "")
    return f"{stamp}_{record['id']}.json"


def write_record(directory: Path, record: dict[str, Any]) -> Path:
    """Write one record atomically: a temp file in the same directory, then rename."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / file_name(record)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, ensure_ascii=False, indent=1, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def rotate(directory: Path, max_days: float, max_files: int, now: float | None = None) -> int:
    """Delete logs older than `max_days` and the oldest beyond `max_files`; return how many."""
    if not directory.is_dir():
        return 0
    now = time.time() if now is None else now
    files = sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))
    removed = 0
    keep = []
    for path in files:
        try:
            too_old = now - path.stat().st_mtime > max_days * 86400
        except FileNotFoundError:
            continue
        if too_old:
            path.unlink(missing_ok=True)
            removed += 1
        else:
            keep.append(path)
    for path in keep[: max(0, len(keep) - max_files)]:
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class SessionLogWriter:
    """Queue of records written by one background task."""

    def __init__(self, directory: Path, max_days: float = 7, max_files: int = 5000):
        self.directory = directory
        self.max_days = max_days
        self.max_files = max_files
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.written = 0
        self.failed = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, rotate, self.directory, self.max_days, self.max_files)
        self._task = asyncio.create_task(self._worker())

    def submit(self, record: dict[str, Any]) -> None:
        self.queue.put_nowait(record)

    async def flush(self) -> None:
        """Wait until every submitted record is on disk (tests, shutdown)."""
        await self.queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task:
            self.queue.put_nowait(None)
            await self._task

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            record = await self.queue.get()
            try:
                if record is None:
                    return
                await loop.run_in_executor(None, write_record, self.directory, record)
                self.written += 1
                if self.written % ROTATE_EVERY == 0:
                    await loop.run_in_executor(None, rotate, self.directory, self.max_days, self.max_files)
            except Exception as exc:  # a full disk must not kill the writer
                self.failed += 1
                log.error("session_log_write_failed", error=str(exc))
            finally:
                self.queue.task_done()
