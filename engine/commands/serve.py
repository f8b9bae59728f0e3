"""Run the HTTP server on a graph that lints clean (it refuses to start otherwise)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.commands import load_or_report


def add_arguments(parser) -> None:
    parser.add_argument("--host", help="address to listen on (default: $ENGINE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $ENGINE_PORT or 8000)")
    parser.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")


def run(args, settings) -> int:
    from aiohttp import web

    from engine import reload
    from engine.app import create_app
    from engine.logsetup import configure

    path = args.routes or settings.routes_file
    graph = load_or_report(path)
    if graph is None:
        print(f"engine: not starting: {path} does not lint (problems above)", file=sys.stderr)
        return 1
    configure(settings.log_level)
    host, port = args.host or settings.host, args.port or settings.port
    app = create_app(settings, graph)
    app.on_startup.append(reload.install)
    print(f"engine: serving {graph.virtual_model!r} on http://{host}:{port}/v1 "
          f"(routes: {', '.join(graph.routes())}; session logs: {settings.session_log_dir})", flush=True)
    try:
        # On SIGTERM aiohttp stops accepting, then gives in-flight requests (streams included)
        # up to `shutdown_timeout` to finish; session logs are flushed in the app's cleanup.
        web.run_app(app, host=host, port=port, print=None, access_log=None,
                    shutdown_timeout=settings.drain_seconds)
    except OSError as exc:
        print(f"engine: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
