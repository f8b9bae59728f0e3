"""One module per `engine` subcommand; see engine/cli.py."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.graph import Graph, read_graph


def load_or_report(path: Path) -> Graph | None:
    """Load a graph for a command; print its warnings, and its problems if it does not lint."""
    graph, problems, warnings = read_graph(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    return graph
