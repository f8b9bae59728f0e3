"""Prompt proposals, gated by the evaluation: `engine review --propose` and `--apply ID`.

A proposal is a candidate copy of the project's `prompts/` (and of the route graph, so its
relative prompt paths resolve into the copy) under `<reviews>/candidates/<id>/`. The draft
adds few-shot examples to the classifier's system prompt, drawn from misrouted requests
(judge-labelled) and from cases a human confirmed. Then the current and the candidate
graph are evaluated on the same cases: a candidate with a lower recall on any route is
`rejected`, otherwise `accepted`. `candidate.json` holds the verdict and both reports.

Nothing touches `prompts/` except `apply_candidate`, which refuses a rejected candidate.
"""

from __future__ import annotations

import filecmp
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from engine.graph import Graph, load_graph
from engine.loop import label_routes, last_user_text

EXAMPLES_HEADING = "Examples from past traffic (message -> label):"
MAX_EXAMPLES = 12


class ProposalError(Exception):
    """A proposal that cannot be made or applied; the message says why."""


def example_lines(graph: Graph, cases: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Few-shot lines for the classifier, and the cases that cannot be one (e.g. meta misses)."""
    label_of = {}
    for label, route in label_routes(graph).items():
        if label != "meta":
            label_of.setdefault(route, label)
    lines, left = [], []
    for case in cases:
        label = case.get("label") or label_of.get(case.get("route"))
        text = case.get("query") or last_user_text(case.get("messages") or [])
        if not label or label == "meta" or not text:
            left.append(case)
            continue
        text = " ".join(text.split())[:200]
        # The prompt is a Jinja template: a user's braces must not become template syntax.
        text = re.sub(r"([{}%#])(?=[{}%#])", r"\1 ", text).replace('"', "'")
        line = f'- "{text}" -> {label}'
        if line not in lines:
            lines.append(line)
    return lines[:MAX_EXAMPLES], left


def draft(graph: Graph, lines: list[str], directory: Path) -> list[str]:
    """Write the candidate copy into `directory`; return the prompt files it changed."""
    shutil.copytree(graph.root / "prompts", directory / "prompts")
    shutil.copy2(graph.path, directory / "routes.yaml")
    changed = []
    for node in graph.nodes.values():
        if node.type != "classify" or node.params["system"] in changed:
            continue
        path = directory / node.params["system"]
        text = path.read_text(encoding="utf-8")
        existing = set(text.splitlines())
        new = [line for line in lines if line not in existing]
        if not new:
            continue
        if EXAMPLES_HEADING not in text:
            text = text.rstrip("\n") + "\n\n" + EXAMPLES_HEADING + "\n"
        path.write_text(text.rstrip("\n") + "\n" + "\n".join(new) + "\n", encoding="utf-8")
        changed.append(node.params["system"])
    return changed


def gate(current: dict[str, Any], candidate: dict[str, Any]) -> tuple[str, list[str]]:
    """accepted, or rejected with the routes whose recall dropped."""
    worse = []
    for route, now in current["per_route"].items():
        then = candidate["per_route"].get(route, {"recall": 0.0})
        if now["recall"] is not None and (then["recall"] or 0.0) < now["recall"]:
            worse.append(f"{route}: recall {now['recall']:.0%} -> {(then['recall'] or 0):.0%}")
    return ("rejected" if worse else "accepted"), worse


async def propose(graph: Graph, examples: list[dict[str, Any]], cases_path: Path, reviews_dir: Path,
                  env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Draft, evaluate and gate a candidate; return its manifest (also written to candidate.json)."""
    from engine.evaluate import evaluate, load_cases

    lines, left = example_lines(graph, examples)
    if not lines:
        return {"status": "none", "reason": "no misrouted or confirmed cases to draw examples from",
                "not_examples": len(left)}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    ident, n = stamp, 1
    while (reviews_dir / "candidates" / ident).exists():
        n += 1
        ident = f"{stamp}-{n}"
    directory = reviews_dir / "candidates" / ident
    directory.mkdir(parents=True)
    changed = draft(graph, lines, directory)
    candidate_graph = load_graph(directory / "routes.yaml", env, root=directory)
    cases = load_cases(cases_path)
    current = await evaluate(graph, cases, str(cases_path))
    trial = await evaluate(candidate_graph, cases, str(cases_path))
    status, worse = gate(current, trial)
    manifest = {"id": ident, "status": status, "worse": worse, "changed": changed, "examples": lines,
                "not_examples": len(left), "cases": str(cases_path), "directory": str(directory),
                "current": {k: v for k, v in current.items() if k != "results"},
                "candidate": {k: v for k, v in trial.items() if k != "results"}}
    (directory / "candidate.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest


def apply_candidate(ident: str, reviews_dir: Path, prompts_dir: Path) -> list[str]:
    """Copy an accepted candidate's prompt files over `prompts_dir`; return the files changed."""
    if not re.fullmatch(r"[0-9A-Za-z_-]+", ident):
        raise ProposalError(f"{ident!r} is not a candidate id")
    directory = reviews_dir / "candidates" / ident
    try:
        manifest = json.loads((directory / "candidate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ProposalError(f"no candidate {ident!r} under {reviews_dir / 'candidates'}") from None
    if manifest.get("status") != "accepted":
        raise ProposalError(f"candidate {ident} was {manifest.get('status')}: "
                            + ("; ".join(manifest.get("worse") or []) or "not accepted") + "; not applying it")
    copied = []
    for source in sorted((directory / "prompts").rglob("*")):
        if source.is_dir():
            continue
        target = prompts_dir / source.relative_to(directory / "prompts")
        if target.exists() and filecmp.cmp(source, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(str(target))
    return copied
