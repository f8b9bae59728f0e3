"""Trace a request through the graph without calling an answering backend. The classifier is
asked for real unless --label gives its answer."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from engine.commands import load_or_report
from engine.errors import RequestError


def add_arguments(parser) -> None:
    parser.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")
    parser.add_argument("--label", help="use this as the classifier's answer instead of asking it")
    parser.add_argument("--messages-file", type=Path, help="a request body (JSON) or a JSON array of messages")
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.add_argument("query", nargs="?", help="the user's message")


def run(args, settings) -> int:
    from engine.dryrun import dry_run, format_trace

    graph = load_or_report(args.routes or settings.routes_file)
    if graph is None:
        return 1
    if args.messages_file:
        try:
            body = json.loads(args.messages_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"engine dry-run: cannot read {args.messages_file}: {exc}", file=sys.stderr)
            return 2
        if isinstance(body, list):
            body = {"messages": body}
    elif args.query:
        body = {"messages": [{"role": "user", "content": args.query}]}
    else:
        print("engine dry-run: give a QUERY or --messages-file", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print("engine dry-run: the messages file must hold a request object or an array of messages",
              file=sys.stderr)
        return 2
    try:
        trace = asyncio.run(dry_run(graph, body, label=args.label))
    except RequestError as err:
        print(f"engine dry-run: {err}", file=sys.stderr)
        return 2
    print(json.dumps(trace, indent=2, ensure_ascii=False) if args.json else format_trace(trace))
    return 0
