"""classify by similarity, and the cascade: similarity first, the LLM when the margin is unclear.

These use the real embedding model (the similarity extra, installed by `make test`); they
skip with the reason when it is missing.
"""

from __future__ import annotations

import re
import threading

import pytest

from engine import similarity, similarity_stage
from engine.app import create_app
from engine.graph import load_graph, read_graph
from tests.conftest import ROOT, session_logs

try:
    similarity.check_available()
    HAVE_EXTRA = True
except similarity.SimilarityUnavailable as exc:  # pragma: no cover - depends on the machine
    HAVE_EXTRA, WHY = False, str(exc)

needs_model = pytest.mark.skipif(not HAVE_EXTRA, reason="similarity extra not installed" if HAVE_EXTRA else WHY)


def graph_with(tmp_path, env, *, method: str, threshold: float = 0.05):
    text = re.sub(r"(?m)^    method: \S+.*$", f"    method: {method}", (ROOT / "routes.yaml").read_text())
    text = re.sub(r"(?m)^      threshold: [0-9.]+", f"      threshold: {threshold}", text)
    path = tmp_path / f"routes.{method}.yaml"
    path.write_text(text)
    return load_graph(path, env, root=ROOT)


@pytest.fixture
async def make_client(aiohttp_client, settings, env, graph):  # `graph` sets XAI_API_KEY
    async def build(method: str, threshold: float = 0.05):
        return await aiohttp_client(create_app(settings, graph_with(settings.session_log_dir.parent, env,
                                                                    method=method, threshold=threshold)))
    return build


def ask(text: str, *history: str) -> dict:
    messages = []
    for i, turn in enumerate(history):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": turn})
    messages.append({"role": "user", "content": text})
    return {"messages": messages}


@needs_model
async def test_clear_case_is_decided_by_similarity_without_asking_the_llm(make_client, backends):
    client = await make_client("cascade")
    resp = await client.post("/v1/chat/completions", json=ask("what's the weather in Paris today?"))
    assert resp.status == 200 and resp.headers["x-engine-route"] == "enrich"
    assert backends.calls("router", classifier=True) == []
    [log] = await session_logs(client)
    assert log["classification_source"] == "similarity" and log["classification_label"] == "ENRICH"
    sim = log["steps"][1]["similarity"]
    assert sim["label"] == "ENRICH" and sim["margin"] >= 0.05
    assert set(sim["scores"]) == {"SIMPLE", "MODERATE", "COMPLEX", "ENRICH"}
    assert sim["top_examples"][0][0] == "ENRICH" and isinstance(sim["top_examples"][0][1], str)


@needs_model
async def test_unclear_margin_asks_the_llm_and_its_label_wins(make_client, backends):
    client = await make_client("cascade", threshold=2.0)  # nothing is "clear"
    backends.classify_as("COMPLEX")
    resp = await client.post("/v1/chat/completions", json=ask("what's the weather in Paris today?"))
    assert resp.headers["x-engine-route"] == "xai"
    assert len(backends.calls("router", classifier=True)) == 1
    [log] = await session_logs(client)
    assert log["classification_source"] == "model" and "margin" in log["steps"][1]["reason"]


@needs_model
async def test_when_the_llm_fails_the_similarity_label_beats_the_default(make_client, backends):
    client = await make_client("cascade", threshold=2.0)
    backends.classify_as("I am not sure, maybe a poem?")
    resp = await client.post("/v1/chat/completions", json=ask("what's the weather in Paris today?"))
    assert resp.headers["x-engine-route"] == "enrich"  # the default would have been primary
    [log] = await session_logs(client)
    assert log["classification_source"] == "similarity-fallback"


@needs_model
async def test_similarity_method_never_asks_a_classifier(make_client, backends):
    client = await make_client("similarity")
    for text, route in [("hi there!", "router"), ("write a python function that merges two sorted lists", "primary")]:
        resp = await client.post("/v1/chat/completions", json=ask(text))
        assert resp.headers["x-engine-route"] == route, text
    assert backends.calls("router", classifier=True) == []


@needs_model
async def test_terse_follow_up_keeps_the_conversations_topic(make_client, backends):
    client = await make_client("similarity")
    resp = await client.post("/v1/chat/completions", json=ask(
        "and in Rust?", "How do I reverse a linked list in Python?", "Use a loop that re-points each node's next."))
    assert resp.headers["x-engine-route"] == "primary"  # MODERATE, not SIMPLE
    resp = await client.post("/v1/chat/completions", json=ask(
        "thanks!", "How do I reverse a linked list in Python?", "Use a loop."))
    assert resp.headers["x-engine-route"] == "router"  # terse chit-chat stays SIMPLE


@needs_model
async def test_embedding_runs_off_the_event_loop_and_examples_are_embedded_once(make_client, backends, monkeypatch):
    client = await make_client("similarity")
    from engine.state import STATE

    classifier = client.app[STATE].graph.nodes["classify"].prepared["similarity"]
    threads, batch_sizes = [], []
    real_embed = classifier.embedder.embed

    def spy(texts):
        threads.append(threading.current_thread().name)
        batch_sizes.append(len(texts))
        return real_embed(texts)

    monkeypatch.setattr(classifier.embedder, "embed", spy)
    for text in ("hello", "explain TCP slow start", "latest bitcoin price"):
        await client.post("/v1/chat/completions", json=ask(text))
    assert batch_sizes == [1, 1, 1]  # only the query is embedded per request
    assert all(name.startswith("embed") for name in threads) and threading.main_thread().name not in threads


def test_similarity_method_without_the_extra_is_a_lint_error(monkeypatch, tmp_path, env):
    def unavailable(name="minilm"):
        raise similarity.SimilarityUnavailable("similarity routing needs the 'numpy' package; run: pip install x")

    monkeypatch.setattr(similarity, "check_available", unavailable)
    for method, is_error in (("similarity", True), ("cascade", False)):
        text = re.sub(r"(?m)^    method: \S+.*$", f"    method: {method}", (ROOT / "routes.yaml").read_text())
        path = tmp_path / "r.yaml"
        path.write_text(text)
        graph, problems, warnings = read_graph(path, env, root=ROOT, prepare=False)
        messages = [str(p) for p in problems] if is_error else [str(w) for w in warnings]
        assert any("nodes.classify.method:" in m and "pip install" in m for m in messages), messages
        assert (graph is None) == is_error


def test_cascade_without_the_extra_classifies_with_the_llm_alone(monkeypatch, tmp_path, env):
    def unavailable(params, root):
        return None, "numpy missing"

    monkeypatch.setattr(similarity_stage, "prepare", unavailable)
    graph = graph_with(tmp_path, env, method="cascade")
    assert graph.nodes["classify"].prepared["similarity"] is None


def test_examples_directory_is_checked(tmp_path, env):
    text = (ROOT / "routes.yaml").read_text().replace("examples: prompts/routing/examples",
                                                      "examples: prompts/routing/nope")
    text = re.sub(r"(?m)^    method: \S+.*$", "    method: cascade", text)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    _, problems, _ = read_graph(path, env, root=ROOT, prepare=False)
    assert any("examples directory 'prompts/routing/nope' does not exist" in str(p) for p in problems)


@needs_model
async def test_eval_compares_the_methods_side_by_side(env, graph, backends, tmp_path):
    from engine.evaluate import compare_methods, format_comparison

    backends.classify_as("MODERATE")  # an LLM classifier that always says MODERATE
    cases = [{"query": "hi there!", "label": "SIMPLE", "line": 1},
             {"query": "what's the weather in Paris today?", "label": "ENRICH", "line": 2},
             {"query": "write a python function that merges two sorted lists", "label": "MODERATE", "line": 3}]
    shipped = graph_with(tmp_path, env, method="cascade")
    comparison = await compare_methods(shipped, cases, "three.jsonl")
    llm, sim, cascade = (comparison["methods"][m] for m in ("llm", "similarity", "cascade"))
    assert llm["accuracy"] == round(1 / 3, 4) and llm["llm_share"] == 1.0
    assert len(llm["under_routing"]) == 1 and len(llm["over_routing"]) == 1  # SIMPLE->primary, ENRICH->primary
    assert sim["accuracy"] == 1.0 and sim["llm_share"] == 0.0
    assert cascade["accuracy"] == 1.0 and cascade["llm_share"] == 0.0
    assert len(backends.calls("router", classifier=True)) == 3  # only the llm run asked it
    table = format_comparison(comparison)
    assert "cascade" in table and "LLM asked" in table and "100.0%" in table
