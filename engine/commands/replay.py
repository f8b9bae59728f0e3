"""Run logged requests through a route graph again (meta detection and classification only; no
answering backend is called) and show which routing decisions change. The classifier is asked
again only where its prompt, backend or model changed; otherwise its logged answer is reused."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from engine.commands import load_or_report


def add_arguments(parser) -> None:
    parser.add_argument("--routes", type=Path, help="route graph to replay through (default: $ROUTES_FILE or routes.yaml)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("logs", nargs="*", type=Path, help="session log files or folders (default: $SESSION_LOG_DIR)")


def run(args, settings) -> int:
    from engine.loop import read_logs
    from engine.replay import format_report, replay

    graph = load_or_report(args.routes or settings.routes_file)
    if graph is None:
        return 1
    records, problems = read_logs(args.logs or [settings.session_log_dir])
    for problem in problems:
        print(f"engine replay: {problem}", file=sys.stderr)
    if not records:
        print("engine replay: no session logs to replay", file=sys.stderr)
        return 2
    report = asyncio.run(replay(graph, records))
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0
