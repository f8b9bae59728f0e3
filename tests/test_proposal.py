"""The proposal gate: a candidate worse on any route's recall is rejected and cannot be applied."""

from __future__ import annotations

import json

from engine.cli import main
from engine.proposal import EXAMPLES_HEADING
from engine.reviewreport import run_review
from engine.state import STATE
from tests.fakes import Answer, is_classifier_call
from tests.loophelp import graph_of, make_logs, project_copy, write_cases

TRUTH = {"hi": "SIMPLE", "explain DNS": "MODERATE", "prove the abc conjecture": "COMPLEX",
         "latest Kubernetes release?": "ENRICH"}


def classifier(backends, *, with_examples):
    """Right on every case except the ENRICH one; `with_examples` says what the examples do to it."""
    def answer(body):
        if not is_classifier_call(body):
            return Answer(content="answer")
        message, system = body["messages"][-1]["content"], body["messages"][0]["content"]
        query = next((q for q in TRUTH if f"<<<\n{q}\n>>>" in message), None)
        if EXAMPLES_HEADING in system:
            return Answer(content=with_examples(query))
        return Answer(content="MODERATE" if query == "latest Kubernetes release?" else TRUTH.get(query, "MODERATE"))
    backends["router"].answer = answer


async def setup(client, backends, env, tmp_path):
    project = project_copy(tmp_path)
    graph = graph_of(project, env)
    cases = write_cases(tmp_path / "cases.jsonl", [{"query": q, "label": label} for q, label in TRUTH.items()])
    confirmed = [{"query": "latest Kubernetes release?", "label": "ENRICH"}]
    return project, graph, cases, confirmed


def cli_review(project, reviews, *args) -> int:
    return main(["review", "--routes", str(project / "routes.yaml"), "--out", str(reviews), *args])


async def test_worse_candidate_is_rejected_and_apply_refuses(client, backends, env, tmp_path, monkeypatch, capsys):
    project, graph, cases, confirmed = await setup(client, backends, env, tmp_path)
    # With the examples the classifier calls everything COMPLEX: recall of router and primary drop.
    classifier(backends, with_examples=lambda query: "COMPLEX")
    await make_logs(client, backends, [("hi", "SIMPLE")])
    classifier(backends, with_examples=lambda query: "COMPLEX")
    before = (project / "prompts/routing/system.md").read_text()
    report = await run_review(graph, [client.app[STATE].settings.session_log_dir], tmp_path / "reviews",
                              use_judge=False, propose=True, cases_path=cases, examples=confirmed, env=env)
    proposal = report["proposal"]
    assert proposal["status"] == "rejected"
    assert any(w.startswith("router: recall 100% -> 0%") for w in proposal["worse"])
    assert proposal["current"]["accuracy"] == 0.75 and proposal["candidate"]["accuracy"] == 0.25
    # The candidate is a copy: prompts/ is untouched, the draft is under the reviews folder.
    assert (project / "prompts/routing/system.md").read_text() == before
    drafted = (tmp_path / "reviews/candidates" / proposal["id"] / "prompts/routing/system.md").read_text()
    assert '- "latest Kubernetes release?" -> ENRICH' in drafted
    assert "rejected" in open(report["files"]["markdown"]).read()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_review(project, tmp_path / "reviews", "--apply", proposal["id"]) == 1
    assert "not applying" in capsys.readouterr().err
    assert (project / "prompts/routing/system.md").read_text() == before


async def test_better_candidate_is_accepted_and_applied(client, backends, env, tmp_path, monkeypatch, capsys):
    project, graph, cases, confirmed = await setup(client, backends, env, tmp_path)
    # The examples teach the classifier the ENRICH case and break nothing.
    classifier(backends, with_examples=lambda query: TRUTH.get(query, "MODERATE"))
    report = await run_review(graph, [tmp_path / "no-logs-yet"], tmp_path / "reviews",
                              use_judge=False, propose=True, cases_path=cases, examples=confirmed, env=env)
    proposal = report["proposal"]
    assert proposal["status"] == "accepted" and proposal["worse"] == []
    assert (proposal["current"]["accuracy"], proposal["candidate"]["accuracy"]) == (0.75, 1.0)
    manifest = json.loads((tmp_path / "reviews/candidates" / proposal["id"] / "candidate.json").read_text())
    assert manifest["status"] == "accepted"

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_review(project, tmp_path / "reviews", "--apply", proposal["id"]) == 0
    applied = (project / "prompts/routing/system.md").read_text()
    assert EXAMPLES_HEADING in applied and '- "latest Kubernetes release?" -> ENRICH' in applied
    assert "prompts/routing/system.md" in capsys.readouterr().out


async def test_equal_candidate_is_accepted(client, backends, env, tmp_path):
    project, graph, cases, confirmed = await setup(client, backends, env, tmp_path)
    classifier(backends, with_examples=lambda query: "MODERATE" if query == "latest Kubernetes release?"
               else TRUTH.get(query, "MODERATE"))
    report = await run_review(graph, [tmp_path / "none"], tmp_path / "reviews", use_judge=False, propose=True,
                              cases_path=cases, examples=confirmed, env=env)
    assert report["proposal"]["status"] == "accepted"


async def test_nothing_to_propose_without_cases(client, backends, env, tmp_path):
    project, graph, cases, _ = await setup(client, backends, env, tmp_path)
    report = await run_review(graph, [tmp_path / "none"], tmp_path / "reviews", use_judge=False, propose=True,
                              cases_path=cases, examples=[], env=env)
    assert report["proposal"]["status"] == "none"
    assert not (tmp_path / "reviews/candidates").exists()


def test_apply_unknown_candidate_fails(tmp_path, capsys):
    project = project_copy(tmp_path)
    assert cli_review(project, tmp_path / "reviews", "--apply", "20990101-000000") == 1
    assert "no candidate" in capsys.readouterr().err
    assert cli_review(project, tmp_path / "reviews", "--apply", "../../etc") == 1
