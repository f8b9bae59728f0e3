"""engine eval: the numbers on a small case set computed by hand, through the real graph."""

from __future__ import annotations

import pytest

from engine.evaluate import CaseError, evaluate, format_report, load_cases, percentile
from tests.fakes import Answer, is_classifier_call
from tests.loophelp import edit, graph_of, project_copy, write_cases

TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title summarizing the chat history.\n### Output:\n"
              "JSON format: { \"title\": \"your title\" }\n### Chat History:\n<chat_history>\nUSER: hi\n</chat_history>")
# case -> what the fake classifier answers (None: not asked; "SLOW": slower than the node's timeout)
CASES = [
    ({"query": "hi", "label": "SIMPLE"}, "SIMPLE"),                          # router -> router
    ({"query": "what's 2+2", "label": "SIMPLE"}, "MODERATE"),                # router -> primary: over
    ({"query": "explain DNS", "label": "MODERATE"}, "MODERATE"),             # primary -> primary
    ({"query": "write a parser", "label": "MODERATE"}, "SIMPLE"),            # primary -> router: under
    ({"query": "prove the Riemann hypothesis", "label": "COMPLEX"}, "banana"),  # xai -> primary (default): under, invalid
    ({"query": "weather in Oslo today", "label": "ENRICH"}, "ENRICH"),       # enrich -> enrich
    ({"messages": [{"role": "user", "content": TITLE_TASK}], "route": "meta"}, None),  # meta -> meta
    ({"messages": [{"role": "user", "content": "name this chat in four words"}], "route": "meta"},
     "MODERATE"),                                                            # meta -> primary: lateral
    ({"query": "hello again", "label": "SIMPLE"}, "SLOW"),                   # router -> primary (default): over, timeout
]


@pytest.fixture
def classifier(backends):
    answers = {case.get("query") or case["messages"][-1]["content"]: raw for case, raw in CASES}

    def answer(body):
        if not is_classifier_call(body):
            return Answer(content="answer")
        message = body["messages"][-1]["content"]
        for query, raw in answers.items():
            if raw and f"<<<\n{query}\n>>>" in message:
                return Answer(content="SLOW", delay=5) if raw == "SLOW" else Answer(content=raw)
        return Answer(content="MODERATE")

    backends["router"].answer = answer
    return backends


async def test_numbers_match_the_hand_computed_ones(classifier, env, tmp_path):
    project = project_copy(tmp_path)
    # The SLOW case times out; the margin is wide so that a busy machine does not time out the others.
    edit(project / "routes.yaml", "timeout: 10", "timeout: 2")
    path = write_cases(tmp_path / "small.jsonl", [case for case, _ in CASES])
    report = await evaluate(graph_of(project, env), load_cases(path), str(path))

    assert (report["total"], report["correct"], report["accuracy"]) == (9, 4, 0.4444)
    assert set(report["per_route"]) == {"router", "primary", "xai", "enrich", "meta"}
    assert report["per_route"]["router"] == {"support": 3, "predicted": 2, "precision": 0.5, "recall": 0.3333}
    assert report["per_route"]["primary"] == {"support": 2, "predicted": 5, "precision": 0.2, "recall": 0.5}
    assert report["per_route"]["xai"] == {"support": 1, "predicted": 0, "precision": None, "recall": 0.0}
    assert report["per_route"]["enrich"] == {"support": 1, "predicted": 1, "precision": 1.0, "recall": 1.0}
    assert report["per_route"]["meta"] == {"support": 2, "predicted": 1, "precision": 1.0, "recall": 0.5}
    assert report["confusion"] == {"router": {"router": 1, "primary": 2}, "primary": {"primary": 1, "router": 1},
                                   "xai": {"primary": 1}, "enrich": {"enrich": 1}, "meta": {"meta": 1, "primary": 1}}
    assert sorted(m["line"] for m in report["under_routing"]) == [4, 5]
    assert sorted(m["line"] for m in report["over_routing"]) == [2, 9]
    assert [m["line"] for m in report["lateral"]] == [8]
    assert report["classified"] == 8
    assert report["invalid_rate"] == 0.125 and report["timeout_rate"] == 0.125
    assert report["latency_ms"]["p50"] is not None and report["latency_ms"]["p95"] >= report["latency_ms"]["p50"]
    # No answering backend was called: eval is a dry run.
    assert classifier.calls("primary") == [] and classifier.calls("xai") == []
    assert classifier.calls("router", classifier=False) == []
    text = format_report(report)
    assert "small.jsonl" in text and "accuracy: 44.4% (4/9)" in text


def test_percentile_is_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 21)), 95) == 19
    assert percentile([], 50) is None


async def test_route_strength_from_routes_yaml_decides_under_and_over(classifier, env, tmp_path):
    project = project_copy(tmp_path)
    # Say the small model is the strongest: every miss to it becomes over-routing.
    edit(project / "routes.yaml", "route_strength: {router: 0,", "route_strength: {router: 9,")
    path = write_cases(tmp_path / "two.jsonl", [CASES[3][0], CASES[1][0]])
    report = await evaluate(graph_of(project, env), load_cases(path), str(path))
    assert [m["line"] for m in report["over_routing"]] == [1]   # primary -> router
    assert [m["line"] for m in report["under_routing"]] == [2]  # router -> primary


def test_bad_cases_files_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "hi", "label": "SIMPLE"}\n{"query": "no label"}\n')
    with pytest.raises(CaseError, match="bad.jsonl:2"):
        load_cases(path)


async def test_a_label_the_graph_does_not_know_is_an_error(graph, tmp_path):
    path = write_cases(tmp_path / "x.jsonl", [{"query": "hi", "label": "TRIVIAL"}])
    with pytest.raises(CaseError, match="TRIVIAL"):
        await evaluate(graph, load_cases(path), str(path))


@pytest.mark.parametrize("name", ["dev.jsonl", "heldout.jsonl"])
def test_shipped_cases_cover_every_route(name):
    from tests.conftest import ROOT

    cases = load_cases(ROOT / "eval" / "cases" / name)
    routes = {case.get("route") or case["label"] for case in cases}
    assert {"SIMPLE", "MODERATE", "COMPLEX", "ENRICH", "meta", "primary"} <= routes
    assert len(cases) >= 60
