"""The `engine` command: serve, lint, dry-run.

    engine serve   [--host H] [--port P] [--routes FILE]
    engine lint    [FILE]
    engine dry-run [--routes FILE] [--label LABEL] [--messages-file FILE] [--json] [QUERY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from engine.errors import RequestError
from engine.graph import read_graph
from engine.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine", description="An OpenAI-compatible LLM router whose routes are data.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")

    lint = sub.add_parser("lint", help="check a route graph and its prompt files")
    lint.add_argument("file", nargs="?", type=Path)

    dry = sub.add_parser("dry-run", help="trace a request through the graph without answering it")
    dry.add_argument("--routes", type=Path)
    dry.add_argument("--label", help="use this as the classifier's answer instead of asking it")
    dry.add_argument("--messages-file", type=Path, help="a request body (JSON) or a JSON array of messages")
    dry.add_argument("--json", action="store_true", help="print the trace as JSON")
    dry.add_argument("query", nargs="?", help="the user's message")

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "serve":
        return cmd_serve(args, settings)
    if args.command == "lint":
        return cmd_lint(args.file or settings.routes_file)
    return cmd_dry_run(args, settings)


def load_or_report(path: Path):
    graph, problems, warnings = read_graph(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr if graph is None else sys.stdout)
    return graph, problems


def cmd_lint(path: Path) -> int:
    graph, problems, warnings = read_graph(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {path}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(graph.nodes)} nodes, routes: {', '.join(graph.routes())})")
    return 0


def cmd_serve(args, settings: Settings) -> int:
    from aiohttp import web

    from engine.app import create_app
    from engine.logsetup import configure

    path = args.routes or settings.routes_file
    graph, problems = load_or_report(path)
    if graph is None:
        print(f"engine: not starting: {path} has {len(problems)} problem(s)", file=sys.stderr)
        return 1
    configure(settings.log_level)
    host, port = args.host or settings.host, args.port or settings.port
    app = create_app(settings, graph)
    print(f"engine: serving {graph.virtual_model!r} on http://{host}:{port}/v1 "
          f"(routes: {', '.join(graph.routes())}; logs: {settings.session_log_dir})", flush=True)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    except OSError as exc:
        print(f"engine: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dry_run(args, settings: Settings) -> int:
    from engine.dryrun import dry_run, format_trace

    path = args.routes or settings.routes_file
    graph, problems = load_or_report(path)
    if graph is None:
        return 1
    if args.messages_file:
        try:
            body = json.loads(args.messages_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"engine: cannot read {args.messages_file}: {exc}", file=sys.stderr)
            return 2
        if isinstance(body, list):
            body = {"messages": body}
    elif args.query:
        body = {"messages": [{"role": "user", "content": args.query}]}
    else:
        print("engine dry-run: give a QUERY or --messages-file", file=sys.stderr)
        return 2
    try:
        trace = asyncio.run(dry_run(graph, body if isinstance(body, dict) else {"messages": body},
                                    label=args.label))
    except RequestError as err:
        print(f"engine dry-run: {err}", file=sys.stderr)
        return 2
    print(json.dumps(trace, indent=2, ensure_ascii=False) if args.json else format_trace(trace))
    return 0
