"""Review the session logs: latency outliers, failed or irrelevant enrichment, meta prompts that
were classified, classifier answers that fell to the default, fallbacks and errors by backend;
with the judge from routes.yaml (review.judge), also misrouting both ways and weak answers.
Writes a Markdown and a JSON report (and judge-labelled candidate cases) under logs/reviews/.
--propose drafts a prompt change and gates it on the evaluation; --apply ID applies an accepted one."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from engine.commands import load_or_report


def add_arguments(parser) -> None:
    parser.add_argument("--routes", type=Path, help="route graph (default: $ROUTES_FILE or routes.yaml)")
    parser.add_argument("--out", type=Path, default=Path("logs/reviews"), help="reports folder (default: logs/reviews)")
    parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=True,
                        help="grade a sample with the routes.yaml review.judge backend (default: on, if configured)")
    parser.add_argument("--sample", type=int, help="how many requests the judge grades (default: review.sample)")
    parser.add_argument("--propose", action="store_true",
                        help="draft a routing-prompt candidate from misrouted/confirmed cases and evaluate it")
    parser.add_argument("--cases", type=Path, default=Path("eval/cases/dev.jsonl"),
                        help="cases the proposal is evaluated on (default: eval/cases/dev.jsonl; never the heldout split)")
    parser.add_argument("--examples", type=Path, action="append", default=[],
                        help="confirmed cases (JSON Lines) to draw examples from, instead of this run's "
                             "judge-labelled ones; repeatable")
    parser.add_argument("--apply", metavar="CANDIDATE", help="copy an accepted candidate's prompts into prompts/")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("logs", nargs="*", type=Path, help="session log files or folders (default: $SESSION_LOG_DIR)")


def run(args, settings) -> int:
    from engine.evaluate import CaseError, load_cases
    from engine.proposal import ProposalError, apply_candidate
    from engine.reviewreport import run_review, summary

    graph = load_or_report(args.routes or settings.routes_file)
    if graph is None:
        return 1
    if args.apply:
        try:
            copied = apply_candidate(args.apply, args.out, graph.root / "prompts")
        except ProposalError as err:
            print(f"engine review: {err}", file=sys.stderr)
            return 1
        print(f"applied candidate {args.apply}: " + (", ".join(copied) if copied else "prompts already match"))
        return 0
    try:
        examples = [case for path in args.examples for case in load_cases(path)]
        report = asyncio.run(run_review(graph, args.logs or [settings.session_log_dir], args.out,
                                        use_judge=args.judge, propose=args.propose, cases_path=args.cases,
                                        examples=examples, sample=args.sample))
    except (CaseError, ProposalError) as err:
        print(f"engine review: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else summary(report))
    return 0
