"""Run the HTTP server on a graph that lints clean (it refuses to start otherwise).

`--embedded` first starts a local model server (llama.cpp + Gemma 3 270M, engine.embedded)
for the router and primary backends, and stops it when the engine exits.

One process serves by default. `ENGINE_WORKERS=N` forks N worker processes after the
graph has linted; each opens its own listening socket on the same port with
SO_REUSEPORT, and the kernel spreads connections over them. Each worker has its own
state: backend session, session-log writer, circuit breakers, and `/stats` (which then
counts only the worker that answered). The parent forwards SIGTERM and SIGHUP to the
workers and exits when they have; if one worker dies, the others are stopped too, so
the container restarts as a whole. Ctrl-C reaches every worker directly.

`ENGINE_EVENT_LOOP=uvloop` runs on uvloop when it is installed. It is not the default:
on the benchmark's 2-core machine it did not measure faster (bench/README.md).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path

from engine.commands import load_or_report


def add_arguments(parser) -> None:
    parser.add_argument("--host", help="address to listen on (default: $ENGINE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $ENGINE_PORT or 8000)")
    parser.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")
    parser.add_argument("--embedded", action="store_true",
                        help="start a local model server (llama.cpp, Gemma 3 270M) for router and primary")


def run(args, settings) -> int:
    local_server = None
    if args.embedded:
        from engine import embedded

        try:
            local_server, local_env = embedded.start(settings.session_log_dir.parent)
        except embedded.LocalModelError as exc:
            print(f"engine: cannot start the local model server: {exc}", file=sys.stderr)
            return 1
        os.environ.update(local_env)
    try:
        return serve(args, settings)
    finally:
        if local_server is not None:
            local_server.stop()
            print("engine: local model server stopped", flush=True)


def serve(args, settings) -> int:
    path = args.routes or settings.routes_file
    graph = load_or_report(path)
    if graph is None:
        print(f"engine: not starting: {path} does not lint (problems above)", file=sys.stderr)
        return 1
    host, port = args.host or settings.host, args.port or settings.port
    workers = settings.workers if hasattr(os, "fork") else 1
    print(f"engine: serving {graph.virtual_model!r} on http://{host}:{port}/v1 "
          f"(routes: {', '.join(graph.routes())}; session logs: {settings.session_log_dir}"
          f"{f'; {workers} workers' if workers > 1 else ''}; event loop: {loop_name(settings)})", flush=True)
    if workers > 1:
        return serve_workers(settings, graph, host, port, workers)
    return serve_one(settings, graph, host, port)


def loop_name(settings) -> str:
    if settings.event_loop != "uvloop":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio (ENGINE_EVENT_LOOP=uvloop, but uvloop is not installed)"
    return "uvloop"


def new_loop(settings) -> asyncio.AbstractEventLoop:
    if loop_name(settings) == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve_one(settings, graph, host: str, port: int, reuse_port: bool = False) -> int:
    from aiohttp import web

    from engine import reload
    from engine.app import create_app
    from engine.logsetup import configure

    configure(settings.log_level)
    app = create_app(settings, graph)
    app.on_startup.append(reload.install)
    app.cleanup_ctx.append(trim_heap_when_quiet)
    tune_gc()
    try:
        # On SIGTERM aiohttp stops accepting, then gives in-flight requests (streams included)
        # up to `shutdown_timeout` to finish; session logs are flushed in the app's cleanup.
        web.run_app(app, host=host, port=port, print=None, access_log=None,
                    shutdown_timeout=settings.drain_seconds, reuse_port=reuse_port or None,
                    loop=new_loop(settings))
    except OSError as exc:
        print(f"engine: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def trim_heap_when_quiet(app):
    """Give the C heap's free pages back to the OS when requests stop (engine.memory says why)."""
    from engine import memory
    from engine.state import STATE

    task = None
    if memory.trim():  # False without glibc: nothing to schedule
        trimmer = memory.Trimmer(lambda: app[STATE].stats.requests)
        task = asyncio.create_task(trimmer.run())
    yield
    if task is not None:
        task.cancel()


def tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes while serving.

    Everything alive at start-up (modules, the graph, compiled templates) is moved out of
    the collector's sight with `gc.freeze()`, and the youngest generation is collected
    every 20,000 container allocations instead of 700: a request allocates hundreds, and
    almost all of it is freed by reference counting anyway. Measured in bench/: about
    15 % less CPU per request at 16 clients, RSS still flat over 100k requests.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def serve_workers(settings, graph, host: str, port: int, workers: int) -> int:
    """Fork `workers` servers sharing the port (SO_REUSEPORT); wait for them."""
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: its own loop, app and sockets, created after the fork
            code = 1
            try:
                code = serve_one(settings, graph, host, port, reuse_port=True)
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.add(pid)

    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = stopping or signum == signal.SIGTERM
        for child in list(children):
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGINT, lambda *_: None)  # the terminal already sent it to every worker
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        child_code = os.waitstatus_to_exitcode(status)
        code = code or (child_code if child_code > 0 else 0)
        if not stopping and children:
            print(f"engine: worker {pid} exited ({child_code}); stopping the others", file=sys.stderr, flush=True)
            stopping = True
            code = code or 1
            for child in list(children):
                try:
                    os.kill(child, signal.SIGTERM)
                except ProcessLookupError:
                    pass
    return code
