"""Score a route graph on labelled cases (JSON Lines: {"query"|"messages", "label"|"route"}).
Each case runs through the graph with the classifier asked for real and no answering backend
called. Reports accuracy, per-route precision and recall, the confusion matrix, under- and
over-routing, the classifier's invalid-output and timeout rates and its latency. Quote a number
with the cases file it comes from; never tune prompts on the held-out split."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from engine.commands import load_or_report


def add_arguments(parser) -> None:
    parser.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--compare", action="store_true",
                        help="score each classify method (llm, similarity, cascade) side by side")
    parser.add_argument("cases", type=Path, help="labelled cases, e.g. eval/cases/dev.jsonl")


def run(args, settings) -> int:
    from engine.evaluate import CaseError, compare_methods, evaluate, format_comparison, format_report, load_cases

    graph = load_or_report(args.routes or settings.routes_file)
    if graph is None:
        return 1
    try:
        cases = load_cases(args.cases)
        if args.compare:
            report = asyncio.run(compare_methods(graph, cases, str(args.cases)))
        else:
            report = asyncio.run(evaluate(graph, cases, str(args.cases)))
    except CaseError as err:
        print(f"engine eval: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_comparison(report) if args.compare else format_report(report))
    return 0
