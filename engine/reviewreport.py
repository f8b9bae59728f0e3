"""One review run, end to end, and its report files under `logs/reviews/`.

`run_review` reads the logs, collects the model-free findings (engine.review), asks the judge
when one is configured and wanted (engine.judge), optionally drafts and gates a prompt
proposal (engine.proposal), and writes:

    review-<stamp>.json         everything, machine-readable
    review-<stamp>.md           the same for a human; every finding lists its session ids
    review-<stamp>-cases.jsonl  judge-labelled candidate cases ("source": "judge"), if any

A human confirms candidate cases by copying the right ones into a cases file (dev split).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from engine.graph import Graph
from engine.loop import read_logs, review_config


async def run_review(graph: Graph, log_paths: list[Path], reviews_dir: Path, *, use_judge: bool = True,
                     propose: bool = False, cases_path: Path | None = None,
                     examples: list[dict[str, Any]] | None = None, sample: int | None = None,
                     env: Mapping[str, str] | None = None) -> dict[str, Any]:
    from engine import review

    loaded, problems = read_logs(log_paths)
    records = [record for _, record in loaded]
    config = review_config(graph)
    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "graph": str(graph.path),
        "logs": [str(p) for p in log_paths], "sessions": len(records), "unreadable": problems,
        "findings": review.findings(records, graph), "judge": None, "cases": [], "proposal": None}
    judge_name = config["judge"]
    if use_judge and judge_name:
        if judge_name not in graph.backends:
            report["judge"] = {"skipped": f"review.judge {judge_name!r} is not a backend of this graph"}
        else:
            from engine.judge import judge

            judged = await judge(graph, records, judge_name, config["sample"] if sample is None else sample,
                                 config["route_strength"])
            report["findings"] += judged.pop("findings")
            report["cases"] = judged.pop("cases")
            report["judge"] = judged
    else:
        report["judge"] = {"skipped": "--no-judge" if judge_name else "no review.judge in the route graph"}
    cited = {sid for finding in report["findings"] for sid in finding["sessions"]}
    report["queries"] = {r["id"]: (r.get("user_query") or "")[:100] for r in records if r["id"] in cited}
    if propose:
        from engine.proposal import propose as draft_and_gate

        # Confirmed cases when a human gave them; otherwise this run's judge-labelled ones.
        report["proposal"] = await draft_and_gate(graph, list(examples or []) or report["cases"],
                                                  cases_path or Path("eval/cases/dev.jsonl"), reviews_dir, env)
    write_report(report, reviews_dir)
    return report


def write_report(report: dict[str, Any], reviews_dir: Path) -> None:
    reviews_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["created"][:19].replace("-", "").replace(":", "").replace("T", "-")
    base, n = reviews_dir / f"review-{stamp}", 1
    while base.with_suffix(".json").exists():  # two reviews in one second keep both reports
        n += 1
        base = reviews_dir / f"review-{stamp}-{n}"
    report["files"] = {"json": str(base) + ".json", "markdown": str(base) + ".md"}
    if report["cases"]:
        report["files"]["cases"] = str(base) + "-cases.jsonl"
        Path(report["files"]["cases"]).write_text(
            "".join(json.dumps(case, ensure_ascii=False) + "\n" for case in report["cases"]), encoding="utf-8")
    Path(report["files"]["json"]).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    Path(report["files"]["markdown"]).write_text(markdown(report), encoding="utf-8")


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Routing review {report['created']}", "",
             f"{report['sessions']} session logs from {', '.join(report['logs'])}; graph {report['graph']}.", ""]
    if report["unreadable"]:
        lines += [f"Unreadable: {len(report['unreadable'])} file(s).", ""]
    lines += ["## Findings", ""]
    if not report["findings"]:
        lines.append("None.")
    for finding in report["findings"]:
        lines += [f"### {finding['kind']}: {finding['title']}", "", finding["detail"], ""]
        lines += [f"- `{sid}` {report['queries'].get(sid, '')!r}" for sid in finding["sessions"]] + [""]
    judge = report["judge"] or {}
    lines += ["## Judge", ""]
    if "skipped" in judge:
        lines.append(f"Not run: {judge['skipped']}.")
    else:
        lines.append(f"{judge['judge']} graded {judge['graded']} request(s); {len(judge['failed'])} call(s) "
                     f"failed, {len(judge['unreadable'])} verdict(s) unreadable.")
        if report["cases"]:
            lines.append(f"{len(report['cases'])} candidate case(s) in `{report['files']['cases']}`: "
                         "judge-labelled, confirm each before adding it to a cases file.")
    lines.append("")
    proposal = report["proposal"]
    if proposal:
        lines += ["## Proposal", ""]
        if proposal["status"] == "none":
            lines.append(f"Nothing proposed: {proposal['reason']}.")
        else:
            lines += proposal_lines(proposal)
    return "\n".join(lines) + "\n"


def proposal_lines(proposal: dict[str, Any]) -> list[str]:
    current, candidate = proposal["current"], proposal["candidate"]
    lines = [f"Candidate `{proposal['id']}`: **{proposal['status']}**"
             + (f" ({'; '.join(proposal['worse'])})" if proposal["worse"] else "")
             + f", in `{proposal['directory']}`.", "",
             f"Changed: {', '.join(proposal['changed']) or 'nothing'}; {len(proposal['examples'])} example(s) added:", ""]
    lines += [f"    {line}" for line in proposal["examples"]]
    lines += ["", f"Evaluated on `{proposal['cases']}`:", "",
              "| | current | candidate |", "|---|---|---|",
              f"| accuracy | {current['accuracy']:.1%} | {candidate['accuracy']:.1%} |",
              f"| under-routing | {len(current['under_routing'])} | {len(candidate['under_routing'])} |",
              f"| over-routing | {len(current['over_routing'])} | {len(candidate['over_routing'])} |"]
    for route, now in current["per_route"].items():
        then = candidate["per_route"].get(route, {})
        lines.append(f"| recall {route} | {_pct(now.get('recall'))} | {_pct(then.get('recall'))} |")
    if proposal["status"] == "accepted":
        lines += ["", f"Apply with `engine review --apply {proposal['id']}`."]
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary(report: dict[str, Any]) -> str:
    """The few lines `engine review` prints."""
    lines = [f"reviewed {report['sessions']} session logs: {len(report['findings'])} finding(s)"]
    for finding in report["findings"]:
        lines.append(f"  {finding['kind']}: {finding['title']}  [{', '.join(s[:8] for s in finding['sessions'][:5])}"
                     + (", ..." if len(finding["sessions"]) > 5 else "") + "]")
    judge = report["judge"] or {}
    lines.append(f"judge: {judge['skipped']}" if "skipped" in judge else
                 f"judge {judge['judge']}: {judge['graded']} graded, {len(report['cases'])} candidate case(s)")
    proposal = report["proposal"]
    if proposal:
        lines.append(f"proposal: {proposal['reason']}" if proposal["status"] == "none" else
                     f"proposal {proposal['id']}: {proposal['status']}"
                     + (f" ({'; '.join(proposal['worse'])})" if proposal["worse"] else "")
                     + f"; accuracy {proposal['current']['accuracy']:.1%} -> {proposal['candidate']['accuracy']:.1%}"
                     + f" on {proposal['cases']}")
    lines.append(f"report: {report['files']['markdown']}")
    return "\n".join(lines)
