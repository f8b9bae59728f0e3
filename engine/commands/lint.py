"""Check a route graph and its prompt files. Exit 0 when clean; otherwise print every problem
as FILE:LINE:COL: dotted.path: message and exit 1."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.graph import read_graph


def add_arguments(parser) -> None:
    parser.add_argument("file", nargs="?", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")


def run(args, settings) -> int:
    path = args.file or settings.routes_file
    graph, problems, warnings = read_graph(path, prepare=False)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {path}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(graph.nodes)} nodes, routes: {', '.join(graph.routes())})")
    return 0
