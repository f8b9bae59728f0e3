"""engine review: every finding kind, on session logs the engine wrote for it."""

from __future__ import annotations

import json

from engine import review
from engine.judge import parse_verdict
from engine.reviewreport import run_review
from engine.state import STATE
from tests.conftest import XAI_TEST_KEY
from tests.fakes import Answer, is_classifier_call
from tests.loophelp import log_records, make_logs

FOLLOW_UP_TASK = ("### Task:\nSuggest 3 follow-up questions the user might ask next.\n"
                  "Return them as a JSON array of strings.\nConversation: USER: how do I bake bread")
RAG = ("### Task:\nRespond to the user query using the provided context.\nReply in JSON if asked.\n"
       "<context><source id=\"1\">retention: 7 daily</source></context>\nhow long do we keep backups?")


def by_kind(found: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for finding in found:
        out.setdefault(finding["kind"], []).append(finding)
    return out


def ids_of(records, query: str) -> list[str]:
    return [r["id"] for _, r in records if r["user_query"] == query]


async def test_latency_outliers_per_route_and_step(client, backends, graph):
    await make_logs(client, backends, [(f"explain topic {i}", "MODERATE") for i in range(8)])
    records = [r for _, r in log_records(client)]
    # Real durations vary by chance; set them, so the statistics are what is tested.
    for i, record in enumerate(records):
        record["total_ms"] = 1000.0 + 10 * i
        for step in record["steps"]:
            step["duration_ms"] = 100.0 + i
    slow = records[3]
    slow["total_ms"] = 9000.0
    slow["steps"][1]["duration_ms"] = 5000.0  # the classify step
    found = by_kind(review.findings(records, graph))["latency_outlier"]
    assert {(f["scope"], f["name"]) for f in found} == {("route", "primary"), ("step", "classify")}
    assert all(f["sessions"] == [slow["id"]] for f in found)


async def test_no_latency_finding_when_all_are_alike(client, backends, graph):
    await make_logs(client, backends, [(f"explain topic {i}", "MODERATE") for i in range(6)])
    records = [r for _, r in log_records(client)]
    for i, record in enumerate(records):
        record["total_ms"] = 1000.0 + i
        for step in record["steps"]:
            step["duration_ms"] = 50.0
    assert "latency_outlier" not in by_kind(review.findings(records, graph))


async def test_enrichment_failed_empty_and_irrelevant(client, backends, graph):
    replies = {"weather in Oslo today?": Answer(content="Oslo today: rain, 8 C, wind from the west."),
               "price of bitcoin right now?": Answer(content="   "),
               "latest Debian release news?": Answer(content="Bananas are yellow and rich in potassium."),
               "score of the Arsenal match tonight?": Answer(status=500)}

    def xai(body):
        question = body["messages"][-1]["content"]
        return next((a for q, a in replies.items() if q in question), Answer(content="?"))

    backends["xai"].answer = xai
    await make_logs(client, backends, [(q, "ENRICH") for q in replies])
    records = log_records(client)
    found = by_kind(review.findings([r for _, r in records], graph))
    assert [f["sessions"] for f in found["enrichment_empty"]] == [ids_of(records, "price of bitcoin right now?")]
    assert [f["sessions"] for f in found["enrichment_irrelevant"]] == [ids_of(records, "latest Debian release news?")]
    failed = ids_of(records, "score of the Arsenal match tonight?")
    assert [f["sessions"] for f in found["enrichment_failed"]] == [failed]
    # The failed hop fell back to the local model: a fallback and an error on backend xai.
    assert [(f["title"], f["sessions"]) for f in found["fallback"]] == [
        ("1 fallback(s) from backend 'xai' (http_5xx)", failed)]
    assert any(f["sessions"] == failed and "'xai'" in f["title"] for f in found["backend_error"])


async def test_meta_prompts_that_were_classified(client, backends, graph):
    await make_logs(client, backends, [(FOLLOW_UP_TASK, "MODERATE"), (RAG, "MODERATE"),
                                       ("write a JSON schema for a user", "MODERATE")])
    records = log_records(client)
    [finding] = by_kind(review.findings([r for _, r in records], graph))["meta_classified"]
    assert finding["sessions"] == ids_of(records, FOLLOW_UP_TASK)
    assert "task-header+json" in finding["detail"]


async def test_meta_rule_added_since_is_named(client, backends, graph, env, tmp_path):
    await make_logs(client, backends, [(FOLLOW_UP_TASK, "MODERATE")])
    records = log_records(client)
    from tests.loophelp import edit, graph_of, project_copy

    project = project_copy(tmp_path)
    edit(project / "routes.yaml", "      - name: openwebui-autocomplete",
         "      - name: follow-ups-as-array\n        all: ['(?i)follow-up questions', '(?i)JSON array']\n"
         "      - name: openwebui-autocomplete")
    [finding] = by_kind(review.findings([r for _, r in records], graph_of(project, env)))["meta_classified"]
    assert "current rule follow-ups-as-array" in finding["detail"]


async def test_classifier_answers_mapped_to_the_default(client, backends, graph):
    await make_logs(client, backends, [("hello", "SIMPLE"), ("what now", "I think maybe"), ("ok", "banana")])
    records = log_records(client)
    [finding] = by_kind(review.findings([r for _, r in records], graph))["classifier_default"]
    assert sorted(finding["sessions"]) == sorted(ids_of(records, "what now") + ids_of(records, "ok"))
    assert "'banana'" in finding["detail"]


async def test_fallbacks_and_errors_by_backend(client, backends, graph):
    backends["xai"].answer = lambda body: Answer(status=503)
    await make_logs(client, backends, [("prove P != NP", "COMPLEX"), ("hi", "SIMPLE")])
    records = log_records(client)
    found = by_kind(review.findings([r for _, r in records], graph))
    assert [(f["title"], f["sessions"]) for f in found["fallback"]] == [
        ("1 fallback(s) from backend 'xai' (http_5xx)", ids_of(records, "prove P != NP"))]
    assert [f["sessions"] for f in found["backend_error"]] == [ids_of(records, "prove P != NP")]


def judge_answers(verdicts: dict[str, str]):
    def xai(body):
        prompt = body["messages"][-1]["content"]
        for query, raw in verdicts.items():
            if f"<<<\n{query}\n>>>" in prompt:
                return Answer(content=raw)
        return Answer(content="xai answer")
    return xai


async def test_judge_finds_misrouting_both_ways_and_weak_answers(client, backends, graph, tmp_path):
    await make_logs(client, backends, [("what's new in Linux 6.12?", "MODERATE"), ("hi", "COMPLEX"),
                                       ("explain DNS", "MODERATE"), ("what is a monad", "MODERATE"),
                                       ("tell me a joke", "SIMPLE")])
    backends["xai"].answer = judge_answers({
        "what's new in Linux 6.12?": '<think>hmm</think>Verdict: ```json\n{"route_ok": false, "better_route": '
                                     '"enrich", "answer_ok": true, "reason": "needs fresh release notes"}\n```',
        "hi": '{"route_ok": "no", "better_route": "router", "answer_ok": true, "reason": "a greeting"}',
        "explain DNS": '{"route_ok": true, "better_route": "primary", "answer_ok": false, "reason": "too vague"}',
        "what is a monad": "I would say it was fine.",
        "tell me a joke": '{"route_ok": true, "better_route": "router", "answer_ok": true, "reason": "ok"}'})
    records = log_records(client)
    report = await run_review(graph, [client.app[STATE].settings.session_log_dir], tmp_path / "reviews")
    found = by_kind(report["findings"])
    assert found["misrouted_under"][0]["sessions"] == ids_of(records, "what's new in Linux 6.12?")
    assert found["misrouted_over"][0]["sessions"] == ids_of(records, "hi")
    assert found["weak_answer"][0]["sessions"] == ids_of(records, "explain DNS")
    assert report["judge"]["graded"] == 4 and report["judge"]["unreadable"] == ids_of(records, "what is a monad")
    # Misrouted requests become judge-labelled candidate cases that engine eval can read.
    lines = [json.loads(x) for x in open(report["files"]["cases"])]
    assert {(c["route"], c["source"], c["routed_to"]) for c in lines} == {("enrich", "judge", "primary"),
                                                                          ("router", "judge", "xai")}
    assert all(c["messages"][-1]["role"] == "user" for c in lines)
    markdown = open(report["files"]["markdown"]).read()
    for finding in report["findings"]:
        assert all(sid in markdown for sid in finding["sessions"])
    assert json.loads(open(report["files"]["json"]).read())["findings"] == report["findings"]
    for path in (tmp_path / "reviews").iterdir():
        assert XAI_TEST_KEY not in path.read_text()


async def test_no_judge_calls_no_model(client, backends, graph, tmp_path):
    await make_logs(client, backends, [("hi", "SIMPLE")])
    backends["xai"].requests.clear()
    report = await run_review(graph, [client.app[STATE].settings.session_log_dir], tmp_path / "r", use_judge=False)
    assert report["judge"] == {"skipped": "--no-judge"} and backends.calls("xai") == []


def test_parse_verdict_is_robust():
    routes = ["router", "primary", "xai"]
    assert parse_verdict('noise {"a": 1} then {"route_ok": false, "better_route": "XAI", "answer_ok": "yes",'
                         ' "reason": "hard"} end', routes) == {"route_ok": False, "better_route": "xai",
                                                               "answer_ok": True, "reason": "hard"}
    assert parse_verdict('{"route_ok": false, "better_route": "gpt-9"}', routes)["better_route"] is None
    assert parse_verdict("route is fine", routes) is None
    assert parse_verdict('{"route_ok": "maybe"}', routes) is None


def test_is_classifier_call_sanity():
    # The fakes tell classifier calls by the routing system prompt; keep that true.
    assert is_classifier_call({"messages": [{"role": "system", "content": "You are the request classifier"}]})
