"""Hot reload: swap in a new route graph without dropping a request.

On SIGHUP (and, with ENGINE_WATCH=1, when routes.yaml or a prompt it names changes) the
engine reads and lints the graph file again. A graph that lints clean replaces the old
one in one assignment; requests already running keep the graph object they started with
(views take `state.graph` once), so they finish on the old one. A graph that does not
lint is refused: the old one keeps serving, and every problem is logged.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog
from aiohttp import web

from engine.graph import Graph, read_graph
from engine.nodes import NODES
from engine.state import STATE

log = structlog.get_logger("engine.reload")


def reload_graph(app: web.Application) -> bool:
    state = app[STATE]
    old = state.graph
    graph, problems, warnings = read_graph(old.path, root=old.root)
    if graph is None:
        log.error("reload_refused", file=str(old.path), problems=[str(p) for p in problems],
                  note="the previous graph keeps serving")
        state.reloads["refused"] += 1
        return False
    state.graph = graph
    state.reloads["applied"] += 1
    log.info("reloaded", file=str(graph.path), routes=graph.routes(), warnings=[str(w) for w in warnings])
    return True


def watched_files(graph: Graph) -> list[Path]:
    """The graph file and every template its nodes name."""
    files = [graph.path]
    for node in graph.nodes.values():
        files += [graph.root / relpath for _, relpath in NODES[node.type].templates(node.params)]
    return files


def _mtimes(files: list[Path]) -> dict[Path, float]:
    out = {}
    for path in files:
        try:
            out[path] = path.stat().st_mtime
        except OSError:
            out[path] = -1.0
    return out


async def watch(app: web.Application, interval: float = 1.0) -> None:
    """Poll the graph's files; reload when one changes. Polling: no extra dependency, 2 stats/s."""
    state = app[STATE]
    seen = _mtimes(watched_files(state.graph))
    while True:
        await asyncio.sleep(interval)
        now = _mtimes(list(seen) + [p for p in watched_files(state.graph) if p not in seen])
        if now != seen:
            reload_graph(app)
            seen = _mtimes(watched_files(state.graph))


async def install(app: web.Application) -> None:
    """on_startup hook used by `engine serve`: SIGHUP reloads; ENGINE_WATCH=1 also watches files."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_graph, app)
    except (NotImplementedError, RuntimeError, AttributeError):
        log.warning("no_sighup", note="this platform cannot reload on SIGHUP")
    if app[STATE].settings.watch:
        app[STATE].watcher = asyncio.create_task(watch(app))
