"""engine replay on logs the engine wrote: reuse of logged answers, re-asking, and the diff."""

from __future__ import annotations

from engine.replay import format_report, replay
from tests.conftest import session_logs
from tests.loophelp import edit, graph_of, log_records, make_logs, project_copy

TRAFFIC = [("hi there", "SIMPLE"), ("explain how DNS works", "MODERATE"),
           ("prove the four colour theorem", "COMPLEX"), ("weather in Oslo today?", "ENRICH"),
           ("thanks!", "SIMPLE")]
TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title summarizing the chat history.\n### Output:\n"
              "JSON format: { \"title\": \"your title\" }\n### Chat History:\n<chat_history>\nUSER: hi\n</chat_history>")


async def served(client, backends):
    await make_logs(client, backends, TRAFFIC + [(TITLE_TASK, "SIMPLE")])
    # Meta by header only: replay must see the header again to decide the same.
    await make_logs(client, backends, [("hello", "SIMPLE")], headers={"X-OpenWebUI-Task": "title_generation"})
    resp = await client.post("/v1/chat/completions", json={"model": "ai-router", "messages": []})  # bad input
    assert resp.status == 400
    await session_logs(client)  # wait for the writer
    for name in backends:
        backends[name].requests.clear()
    return log_records(client)


async def test_unchanged_graph_changes_nothing_and_asks_no_classifier(client, backends, graph):
    records = await served(client, backends)
    backends.classify_as("COMPLEX")  # would change every decision if it were asked
    report = await replay(graph, records)
    assert report["changed"] == 0 and report["changes"] == []
    assert report["classifier"] == {"asked": 0, "reused": 5}
    assert report["skipped"] == {"bad input (no messages)": 1}
    assert report["replayed"] == 7
    assert report["matrix"] == {"enrich": {"enrich": 1}, "meta": {"meta": 2}, "primary": {"primary": 1},
                                "router": {"router": 2}, "xai": {"xai": 1}}
    # Not one call reached any backend: no classifier, no answer, no enrichment hop.
    assert all(fake.requests == [] for fake in backends.values())


async def test_changed_classifier_prompt_is_asked_again(client, backends, env, tmp_path):
    records = await served(client, backends)
    project = project_copy(tmp_path)
    edit(project / "prompts/routing/system.md", "Reply with the single label only.",
         "Reply with the single label only, in capitals.")
    backends.classify_as("COMPLEX")
    report = await replay(graph_of(project, env), records)
    assert report["classifier"] == {"asked": 5, "reused": 0}
    assert len(backends.calls("router", classifier=True)) == 5
    assert backends.calls("primary") == [] and backends.calls("xai") == []
    changed = {c["query"]: (c["from"], c["to"], c["old_raw"], c["new_raw"]) for c in report["changes"]}
    assert changed == {"hi there": ("router", "xai", "SIMPLE", "COMPLEX"),
                       "thanks!": ("router", "xai", "SIMPLE", "COMPLEX"),
                       "explain how DNS works": ("primary", "xai", "MODERATE", "COMPLEX"),
                       "weather in Oslo today?": ("enrich", "xai", "ENRICH", "COMPLEX")}
    assert report["changed"] == 4
    assert "hi there" in format_report(report)


async def test_changed_classifier_model_is_asked_again(client, backends, env, tmp_path):
    records = await served(client, backends)
    backends.classify_as("SIMPLE")
    report = await replay(graph_of(project_copy(tmp_path), {**env, "ROUTER_MODEL": "router-model-v2"}), records)
    assert report["classifier"]["asked"] == 5
    assert {(c["from"], c["to"]) for c in report["changes"]} == {("primary", "router"), ("xai", "router"),
                                                               ("enrich", "router")}


async def test_changed_edges_reuse_answers_and_diff_right(client, backends, env, tmp_path):
    records = await served(client, backends)
    project = project_copy(tmp_path)
    # SIMPLE and COMPLEX swap targets; the prompt is unchanged, so no call is needed.
    edit(project / "routes.yaml", "SIMPLE: answer-router", "SIMPLE: answer-xai")
    edit(project / "routes.yaml", "COMPLEX: answer-xai", "COMPLEX: answer-router")
    report = await replay(graph_of(project, env), records)
    assert report["classifier"] == {"asked": 0, "reused": 5}
    assert backends.calls("router") == []
    assert report["matrix"]["router"] == {"xai": 2} and report["matrix"]["xai"] == {"router": 1}
    assert report["matrix"]["primary"] == {"primary": 1} and report["matrix"]["enrich"] == {"enrich": 1}
    assert sorted(c["query"] for c in report["changes"]) == ["hi there", "prove the four colour theorem", "thanks!"]
    assert all(c["old_raw"] == c["new_raw"] for c in report["changes"])


async def test_changed_labels_are_asked_and_routed_by_the_new_edges(client, backends, env, tmp_path):
    records = await served(client, backends)
    project = project_copy(tmp_path)
    routes = project / "routes.yaml"
    edit(routes, "labels: [SIMPLE, MODERATE, COMPLEX, ENRICH]", "labels: [SIMPLE, MODERATE, COMPLEX, ENRICH, CODE]")
    edit(routes, "ENRICH: enrich-fetch", "ENRICH: enrich-fetch\n      CODE: answer-xai")
    backends.classify_as("CODE")
    report = await replay(graph_of(project, env), records)
    assert report["classifier"]["asked"] == 5  # the label list is part of the prompt
    assert report["matrix"] == {"enrich": {"xai": 1}, "meta": {"meta": 2}, "primary": {"xai": 1},
                                "router": {"xai": 2}, "xai": {"xai": 1}}
    assert report["changed"] == 4
    assert {c["new_label"] for c in report["changes"]} == {"CODE"}
