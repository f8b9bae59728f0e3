"""The reviewer's judge: a strong model grades a sample of logged (request, route, answer).

The judge is a backend named in routes.yaml (`review.judge`, e.g. `xai`); its prompt is
`prompts/review/judge.md`, which asks for one strict JSON verdict:

    {"route_ok": bool, "better_route": "<route>", "answer_ok": bool, "reason": "..."}

`parse_verdict` reads it robustly (code fences, thinking blocks, prose around the object,
"yes"/"no" for booleans); an unreadable verdict is counted, never guessed. A misrouted request
becomes a candidate labelled case (`"source": "judge"`) for a human to confirm before it
joins a cases file. Only what the logs already hold is sent: the request and the answer.
"""

from __future__ import annotations

import json
import re
from typing import Any


from engine import backends
from engine.errors import BackendError
from engine.graph import Graph
from engine.loop import last_user_text
from engine.upstream import Client

JUDGE_TEMPLATE = "prompts/review/judge.md"
ROUTE_MEANS = {
    "router": "the small local model: greetings, thanks, small talk, trivial facts",
    "primary": "the big local model: coding, debugging, analysis, explanations, writing",
    "meta": "the big local model, for chat-client housekeeping (titles, tags, follow-ups)",
    "enrich": "a cloud research hop, then the big local model: questions that need real-time or web data",
    "xai": "the cloud model: research-level, novel or hard multi-step problems",
}
THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def answer_of(record: dict[str, Any]) -> str | None:
    """Text of the answer the client got: the last answering step's content."""
    for step in reversed(record.get("steps") or []):
        if step.get("type") == "call-backend" and step.get("edge") != "next" and step.get("response_content"):
            return step["response_content"]
    return None


def sample(records: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The newest `size` answered, classified requests (meta tasks are not routing decisions)."""
    graded = [r for r in records if r.get("outcome") == "ok" and r.get("route") and answer_of(r)
              and any(s.get("type") == "classify" for s in r.get("steps") or [])]
    return graded[-size:] if size else []


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "ok"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no"):
        return False
    return None


def parse_verdict(raw: str, routes: list[str]) -> dict[str, Any] | None:
    """The verdict in a judge's raw answer, or None if there is none to read."""
    text = THINK.sub("", raw or "")
    for match in re.finditer(r"\{", text):
        depth = 0
        for end in range(match.start(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                try:
                    value = json.loads(text[match.start():end + 1])
                except ValueError:
                    break
                if isinstance(value, dict) and "route_ok" in value:
                    route_ok, answer_ok = _bool(value.get("route_ok")), _bool(value.get("answer_ok"))
                    better = str(value.get("better_route") or "").strip().lower()
                    if route_ok is None:
                        return None
                    return {"route_ok": route_ok, "answer_ok": answer_ok,
                            "better_route": better if better in routes else None,
                            "reason": str(value.get("reason") or "")[:300]}
                break
    return None


async def judge(graph: Graph, records: list[dict[str, Any]], judge_name: str, size: int,
                strength: dict[str, float]) -> dict[str, Any]:
    """Grade a sample; return {graded, unreadable, failed, verdicts, findings, cases}."""
    backend = graph.backends[judge_name]
    routes = sorted(set(graph.routes()), key=lambda r: (strength.get(r, 1), r))
    verdicts, failed, unreadable = [], [], []
    async with Client() as client:
        for record in sample(records, size):
            messages = (record.get("request") or {}).get("messages") or []
            values = {"routes": [{"name": r, "means": ROUTE_MEANS.get(r, "")} for r in routes],
                      "query": last_user_text(messages) or record.get("user_query", ""),
                      "history": [{"role": m.get("role"), "content": str(m.get("content"))}
                                  for m in messages[:-1] if m.get("role") in ("user", "assistant")][-4:],
                      "route": record["route"], "answer": answer_of(record)}
            prompt = graph.templates.render(JUDGE_TEMPLATE, values)
            body = {"model": backend.model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 400, "temperature": 0, "stream": False}
            try:
                response = await backends.complete(client, backend, body, timeout=120)
            except BackendError as err:
                failed.append({"session": record["id"], "error": err.kind})
                continue
            raw = response["choices"][0]["message"].get("content") or ""
            verdict = parse_verdict(raw, routes)
            if verdict is None:
                unreadable.append(record["id"])
                continue
            verdict.update(session=record["id"], route=record["route"])
            verdicts.append(verdict)
    return {"judge": judge_name, "graded": len(verdicts), "failed": failed, "unreadable": unreadable,
            "verdicts": verdicts, **judged_findings(records, verdicts, strength)}


def judged_findings(records: list[dict[str, Any]], verdicts: list[dict[str, Any]],
                    strength: dict[str, float]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in records}
    under, over, weak, cases = [], [], [], []
    for v in verdicts:
        better = v["better_route"]
        if not v["route_ok"] and better and better != v["route"]:
            (under if strength.get(better, 1) > strength.get(v["route"], 1) else over).append(v["session"])
            cases.append({"messages": (by_id[v["session"]].get("request") or {}).get("messages"),
                          "route": better, "source": "judge", "session": v["session"],
                          "routed_to": v["route"], "reason": v["reason"]})
        if v["answer_ok"] is False:
            weak.append(v["session"])
    findings = []
    for kind, ids, what in (("misrouted_under", under, "sent to a weaker route than needed (quality risk)"),
                            ("misrouted_over", over, "sent to a stronger or costlier route than needed (cost risk)"),
                            ("weak_answer", weak, "answers the judge found weak")):
        if ids:
            findings.append({"kind": kind, "title": f"{len(ids)} request(s) {what}",
                             "detail": "; ".join(f"{v['session'][:8]}: {v['reason']}" for v in verdicts
                                                 if v["session"] in ids)[:1000],
                             "sessions": ids})
    return {"findings": findings, "cases": cases}
