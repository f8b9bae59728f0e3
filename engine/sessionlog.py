"""Session logs: one JSON file per routed request, written off the request path.

The record (`build_record`) is the trace of the request plus what the origin project's
logs held (`user_query` cut at 500 characters, `route`, `classification_raw`,
`classification_ms`, `steps[]`, `total_ms`, `error`) and what the improvement loop needs
(the full request as received, for replay). It matches `schemas/session.schema.json`.

`SessionLogWriter.submit()` encodes the record and puts the bytes on a queue; a background
task writes them with temp file + rename (a reader never sees half a file) in a worker
thread, so a slow disk never delays a response. Rotation (max age, max count) runs every few hundred writes.
API keys never reach a record: of the request headers only the user agent and the client's
task headers (`routing_headers`) are logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import structlog

from engine.context import RequestContext
from engine.jsonbytes import indented

log = structlog.get_logger("engine.sessionlog")

USER_QUERY_LIMIT = 500
ROTATE_EVERY = 200
BATCH_LIMIT = 256  # records per worker-thread hop
# How long the writer lets a record wait before writing it (bench/README.md, "Session logs
# and the next request"): the file system work then falls between requests rather than on
# top of the one that follows (Open WebUI sends its title and tag requests the moment an
# answer ends), and under load one thread hop carries many records.
LINGER_SECONDS = 0.02
# Encoded records waiting for the disk, at most (SESSION_LOG_MAX_BACKLOG_MB). Past it, new
# requests wait for room (`SessionLogWriter.room`): a disk slower than the traffic slows the
# traffic down instead of filling memory, and no record is dropped.
DEFAULT_MAX_BACKLOG_BYTES = 8 * 1024 * 1024


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
    """Write one record atomically (see `write_file`)."""
    return write_file(directory, file_name(record), indented(record))


def write_file(directory: Path, name: str, payload: bytes) -> Path:
    """Write one encoded record atomically: a temp file in the same directory, then rename.

    Plain `os.open`/`os.write` with a temp name made from the file's unique name: each
    file costs a handful of system calls and nothing more (mkstemp's random names,
    a buffered file object and a mkdir per write were a third of the write's cost).
    """
    target = directory / name
    tmp = os.path.join(directory, f".tmp-{name}-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:  # first write, or the directory was removed meanwhile
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_batch(directory: Path, files: list[tuple[str, bytes]]) -> list[str | None]:
    """Write several encoded records in one worker-thread hop; per record, None or the error."""
    errors: list[str | None] = []
    for name, payload in files:
        try:
            write_file(directory, name, payload)
            errors.append(None)
        except Exception as exc:  # one bad record must not lose the others
            errors.append(str(exc))
    return errors


def rotate(directory: Path, max_days: float, max_files: int, now: float | None = None) -> int:
    """Delete logs older than `max_days` and the oldest beyond `max_files`; return how many.

    This runs every few hundred writes over up to thousands of files, so it reads the
    listing once (`scandir`) and works on names, which sort by time (`file_name`). Only
    the oldest files are stat'ed for their age: walking from the oldest name, it stops at
    the first file young enough to keep, since every later name was written later. (The
    first version stat'ed all 5000 files each time: a fifth of the engine's CPU per
    request in the benchmark.)
    """
    if not directory.is_dir():
        return 0
    now = time.time() if now is None else now
    with os.scandir(directory) as listing:
        names = sorted(e.name for e in listing if e.name.endswith(".json") and not e.name.startswith("."))
    oldest_allowed = now - max_days * 86400
    removed = 0
    first_kept = 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            too_old = os.stat(path).st_mtime < oldest_allowed
        except FileNotFoundError:
            first_kept += 1
            continue
        if not too_old:
            break
        _unlink(path)
        removed += 1
        first_kept += 1
    keep = names[first_kept:]
    for name in keep[: max(0, len(keep) - max_files)]:
        _unlink(os.path.join(directory, name))
        removed += 1
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SessionLogWriter:
    """Queue of records written by one background task, bounded in bytes.

    Every file costs the file system a create, a rename and (once rotation keeps 5,000) a
    delete. On the benchmark's shared disk that went from 50 us to over 500 us a file as
    other work loaded it, while one engine answers about 3,000 requests a second: the queue
    then grew by thousands of records a second (bench/README.md, the long run). So the
    backlog has a limit; past it, `has_room` is false and new requests wait in `room()`
    until the writer's next batch is on disk.
    """

    def __init__(self, directory: Path, max_days: float = 7, max_files: int = 5000,
                 max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES):
        self.directory = directory
        self.max_days = max_days
        self.max_files = max_files
        self.max_backlog_bytes = max_backlog_bytes
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self.written = 0
        self.failed = 0
        self.backlog_bytes = 0
        self.held = 0  # requests that had to wait for room
        self._warned_at = float("-inf")
        self._room = asyncio.Event()  # set while has_room: what held requests wait on
        self._room.set()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, rotate, self.directory, self.max_days, self.max_files)
        self._task = asyncio.create_task(self._worker())

    def submit(self, record: dict[str, Any]) -> None:
        """Queue the record for writing, encoded now.

        Bytes rather than the record's dicts and lists: a queued record is then one object
        the garbage collector does not scan, not fifty it must. Under load the queue holds
        a few hundred records, and with them in it every young-generation collection took
        4 to 15 ms, each one a stall of every request in flight (bench/README.md).
        """
        try:
            item = (file_name(record), indented(record))
        except Exception as exc:  # a record that cannot be encoded must not fail the request
            self.failed += 1
            log.error("session_log_write_failed", id=record.get("id"), error=f"cannot encode: {exc}")
            return
        self.queue.put_nowait(item)
        self.backlog_bytes += len(item[1])
        if not self.has_room and self._room.is_set():
            self._room.clear()
            if time.monotonic() - self._warned_at > 60:  # once a minute under sustained overload
                self._warned_at = time.monotonic()
                log.warning("session_log_backlog_full", queued=self.queue.qsize(), held_so_far=self.held,
                            detail="the disk is slower than the traffic: new requests wait until the "
                                   "session logs catch up (SESSION_LOG_MAX_BACKLOG_MB)")

    @property
    def has_room(self) -> bool:
        return self.backlog_bytes < self.max_backlog_bytes

    async def room(self) -> None:
        """Wait until the backlog is below its limit again (call only when `has_room` is false)."""
        self.held += 1
        await self._room.wait()

    def _written(self, files: list[tuple[str, bytes]]) -> None:
        self.backlog_bytes -= sum(len(payload) for _, payload in files)
        # Room again as soon as a batch is on disk: the traffic then moves at the disk's pace.
        # (Waiting for half the backlog to drain held every request for a second or more.)
        if self.has_room and not self._room.is_set():
            self._room.set()

    async def flush(self) -> None:
        """Wait until every submitted record is on disk (tests, shutdown)."""
        await self.queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task:
            self.queue.put_nowait(None)
            await self._task

    async def _worker(self) -> None:
        """Write what is queued, in batches: one thread hop for everything that piled up.

        Under load many records arrive between two writes; handing them over one by one
        cost an executor round trip (and a loop wake-up) per request.
        """
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            if batch[0] is not None and LINGER_SECONDS and self.queue.qsize() < BATCH_LIMIT:
                await asyncio.sleep(LINGER_SECONDS)  # not when behind: then every moment counts
            while len(batch) < BATCH_LIMIT and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stop = None in batch
            records = [r for r in batch if r is not None]
            try:
                if records:
                    errors = await loop.run_in_executor(None, write_batch, self.directory, records)
                    for error in errors:
                        if error is None:
                            self.written += 1
                            if self.written % ROTATE_EVERY == 0:
                                await loop.run_in_executor(None, rotate, self.directory, self.max_days,
                                                           self.max_files)
                        else:
                            self.failed += 1
                            log.error("session_log_write_failed", error=error)
            except Exception as exc:  # a full disk must not kill the writer
                self.failed += len(records)
                log.error("session_log_write_failed", error=str(exc))
            finally:
                self._written(records)
                for _ in batch:
                    self.queue.task_done()
            if stop:
                return
