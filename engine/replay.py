"""`engine replay`: run logged requests through a (changed) graph and diff the routing decisions.

Each logged request goes through the same `run_graph` as when it was served, with
`dry_run=True`: meta detection and classification run, answering and capturing backends are
never called. The classifier is asked again only when what it would be sent changed (its
rendered prompt, its backend URL or model); otherwise `ctx.classifier_cache` hands back the
raw answer from the log, so replaying an unchanged graph costs no model call and changes
nothing. A logged classifier failure (no answer) is asked again: a failure is not an answer.

The request time is set to the logged one, so templates that show the date render alike.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from engine.dryrun import trace_request
from engine.errors import EngineError
from engine.graph import Graph
from engine.loop import decided_route, replayable
from engine.upstream import Client


def logged_answers(record: dict[str, Any]):
    """The classifier_cache hook for one record: reuse a logged answer iff the call would be the same."""
    steps = {s["node"]: s for s in record.get("steps", []) if s.get("type") == "classify"}

    def cache(node: str, url: str, model: str, messages: list[dict[str, Any]]) -> str | None:
        step = steps.get(node)
        if (step is None or step.get("error") or step.get("response_content") is None
                or step.get("source") == "forced"):
            return None
        if step.get("url") == url and step.get("model") == model and step.get("messages_sent") == messages:
            return step["response_content"]
        return None

    return cache


async def replay_record(graph: Graph, record: dict[str, Any], upstream) -> dict[str, Any]:
    request = record["request"]
    try:
        received_at = datetime.fromisoformat(record["timestamp"])
    except (KeyError, TypeError, ValueError):
        received_at = None
    ctx, error = await trace_request(graph, {**(request.get("params") or {}), "messages": request["messages"]},
                                     upstream=upstream, headers=CIMultiDict(request.get("headers") or {}),
                                     classifier_cache=logged_answers(record), received_at=received_at)
    steps = [step.as_dict() for step in ctx.trace]
    classify = next((s for s in steps if s["type"] == "classify"), None)
    return {"route": decided_route(graph, steps, ctx.route), "classification": ctx.classification,
            # Asked = a call went out: not reused, and not decided without the LLM (similarity).
            "asked": bool(classify and classify.get("provider") and not classify.get("replayed")),
            "reused": bool(classify and classify.get("replayed")), "error": error}


async def replay(graph: Graph, records: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Replay every record; return the report (matrix, changes, classifier calls, skips)."""
    skipped: Counter[str] = Counter()
    matrix: dict[str, Counter[str]] = defaultdict(Counter)
    changes, errors = [], []
    asked = reused = replayed = 0
    async with Client() as client:
        for path, record in records:
            why = replayable(record)
            if why:
                skipped[why] += 1
                continue
            try:
                new = await replay_record(graph, record, client)
            except EngineError as err:  # the logged request no longer validates
                skipped[f"invalid request ({err})"] += 1
                continue
            replayed += 1
            asked += new["asked"]
            reused += new["reused"]
            old_route = decided_route(graph, record.get("steps") or [], record.get("route"))
            new_route = new["route"]
            matrix[str(old_route)][str(new_route)] += 1
            if new["error"]:
                errors.append({"session": record["id"], "error": new["error"]})
            if old_route != new_route:
                classification = new["classification"] or {}
                changes.append({
                    "session": record["id"], "file": str(path), "query": (record.get("user_query") or "")[:200],
                    "from": old_route, "to": new_route,
                    "old_label": record.get("classification_label"), "new_label": classification.get("label"),
                    "old_raw": record.get("classification_raw"), "new_raw": classification.get("raw"),
                    "reasked": new["asked"],
                })
    return {"graph": str(graph.path), "logs": len(records), "replayed": replayed,
            "skipped": dict(skipped), "changed": len(changes),
            "classifier": {"asked": asked, "reused": reused},
            "matrix": {old: dict(row) for old, row in sorted(matrix.items())},
            "changes": changes, "errors": errors}


def format_matrix(matrix: dict[str, dict[str, int]], corner: str = "from \\ to") -> list[str]:
    rows = sorted(matrix)
    cols = sorted({c for row in matrix.values() for c in row} | set(rows))
    width = max([len(corner)] + [len(x) for x in rows + cols]) + 2
    lines = [corner.ljust(width) + "".join(c.rjust(width) for c in cols)]
    for row in rows:
        lines.append(row.ljust(width) + "".join(str(matrix[row].get(c, 0) or ".").rjust(width) for c in cols))
    return lines


def format_report(report: dict[str, Any]) -> str:
    skipped = sum(report["skipped"].values())
    lines = [f"replayed {report['replayed']} of {report['logs']} logged requests through {report['graph']}"
             + (f" ({skipped} skipped: " + ", ".join(f"{why}: {n}" for why, n in report["skipped"].items()) + ")"
                if skipped else ""),
             f"classifier: {report['classifier']['reused']} logged answers reused, "
             f"{report['classifier']['asked']} asked again",
             f"route changes: {report['changed']} of {report['replayed']}", ""]
    lines += format_matrix(report["matrix"])
    for change in report["changes"]:
        lines += ["", f"{change['session']}  {change['from']} -> {change['to']}  {change['query'][:80]!r}",
                  f"    classifier then: {change['old_raw']!r} ({change['old_label']})"
                  f"   now: {change['new_raw']!r} ({change['new_label']})"
                  + ("" if change["reasked"] else "   [answer reused]")]
    for error in report["errors"]:
        lines.append(f"error {error['session']}: {error['error']}")
    return "\n".join(lines)
