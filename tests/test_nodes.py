"""Each node type on its own: classify's label mapping, detect-meta's rules, call-backend's
parameter profile, inject-context's placement."""

from __future__ import annotations

import pytest

from engine.graph import load_graph
from engine.nodes.call_backend import with_system
from engine.nodes.classify import parse_label
from engine.nodes.detect_meta import detect
from engine.nodes.inject_context import prepend_to_last_user
from engine.params import apply_profile
from tests.conftest import FIXTURES, ROOT, fixture_request

LABELS = ["SIMPLE", "MODERATE", "COMPLEX", "ENRICH"]


@pytest.mark.parametrize("raw,label", [
    ("SIMPLE", "SIMPLE"),
    ("SIMPLE.", "SIMPLE"),
    ("  moderate\n", "MODERATE"),
    ("Classification: complex", "COMPLEX"),
    ("I think this needs ENRICH because it asks about today.", "ENRICH"),
    ('{"label": "ENRICH"}', "ENRICH"),
    ("<think>maybe SIMPLE</think>COMPLEX", "COMPLEX"),
    ("**MODERATE**", "MODERATE"),
    ("COMPLEX, not SIMPLE", "COMPLEX"),
    ("SIMPLEST", None),
    ("I cannot help with that.", None),
    ("", None),
])
def test_parse_label_maps_raw_output_robustly(raw, label):
    assert parse_label(raw, LABELS) == label


@pytest.fixture(scope="module")
def meta_node():
    graph = load_graph(ROOT / "routes.yaml", {})
    return graph.nodes["meta"].prepared


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("name", ["title.json", "tags.json", "follow_ups.json"])
def test_captured_open_webui_task_requests_are_meta(meta_node, name):
    assert detect(meta_node, {}, fixture_request(name)["messages"]) is not None


@pytest.mark.parametrize("template", ["DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE.txt",
                                      "DEFAULT_TAGS_GENERATION_PROMPT_TEMPLATE.txt",
                                      "DEFAULT_FOLLOW_UP_GENERATION_PROMPT_TEMPLATE.txt",
                                      "DEFAULT_QUERY_GENERATION_PROMPT_TEMPLATE.txt"])
def test_open_webui_default_templates_rendered_are_meta(meta_node, template):
    text = (FIXTURES / template).read_text()
    rendered = text.replace("{{MESSAGES:END:2}}", "USER: hi\nASSISTANT: hello").replace(
        "{{MESSAGES:END:5}}", "USER: hi").replace("{{MESSAGES:END:6}}", "USER: hi").replace(
        "{{CURRENT_DATE}}", "2026-11-27")
    assert detect(meta_node, {}, user(rendered))


def test_rag_wrapped_question_is_not_meta(meta_node):
    rag = (FIXTURES / "DEFAULT_RAG_TEMPLATE.txt").read_text().replace(
        "{{CONTEXT}}", '<source id="1">The Eiffel Tower is 330 m tall.</source>')
    assert detect(meta_node, {}, user(rag + "\n\nHow tall is the Eiffel Tower?")) is None
    assert detect(meta_node, {}, [{"role": "system", "content": rag}] + user("How tall is it?")) is None


@pytest.mark.parametrize("text", [
    # Other Open WebUI tasks and older wordings.
    "### Task:\nYou are an autocompletion system. Continue the text in `<text>` based on the **completion type** "
    "in `<type>` and the given language.\n<type>search query</type>\n<text>how to</text>",
    "Your task is to reflect the speaker's likely facial expression through a fitting emoji. Interpret emotions "
    "from the message and reflect their facial expression using fitting, diverse emojis (e.g., 😊, 😢).\n\n"
    "Message: ```I won!```",
    "You have been provided with a set of responses from various models to the latest user query: \"hi\"\n\n"
    "Your task is to synthesize these responses into a single, high-quality response.",
    "Create a concise, 3-5 word title with an emoji as a title for the prompt in the given language.",
    "### Task:\nGenerate a detailed prompt for an image generation task based on the given language and context."
    "\n### Chat History:\n<chat_history>\nUSER: a cat\n</chat_history>",
    "### Task:\nSummarize the chat so far for a new context window. Respond in JSON format: "
    '{ "text": "..." }',
])
def test_other_open_webui_tasks_are_meta(meta_node, text):
    assert detect(meta_node, {}, user(text))


def test_tool_selection_prompt_is_meta(meta_node):
    messages = [{"role": "system", "content": "Available Tools: [{\"name\": \"calc\"}]\n\nYour task is to choose "
                 "and return the correct tool(s) from the list of available tools based on the query."},
                {"role": "user", "content": "Query: what is 2+2"}]
    assert detect(meta_node, {}, messages) == "openwebui-tool-selection"


@pytest.mark.parametrize("text", [
    "hello there",
    "Can you explain what a Task: header does in markdown?",
    "### Task:\nI am writing a blog post about gardening. Can you help me outline it?",
    "Write a JSON object with a title field for my blog post about cats",
])
def test_ordinary_questions_are_not_meta(meta_node, text):
    assert detect(meta_node, {}, user(text)) is None


def test_task_header_wins_when_set(meta_node):
    assert detect(meta_node, {"X-OpenWebUI-Task": "tags_generation"}, user("hello")) == "header:X-OpenWebUI-Task"
    for value in ("", "None", "null"):
        assert detect(meta_node, {"X-OpenWebUI-Task": value}, user("hello")) is None


def test_parameter_profile_passes_clamps_and_drops():
    profile = {"temperature": {"min": 0, "max": 1}, "stop": True, "seed": False, "max_tokens": {"max": 100}}
    out = apply_profile(profile, {"temperature": 1.7, "stop": ["x"], "seed": 3, "top_p": 0.2, "max_tokens": 5000,
                                  "model": "x"})
    assert out == {"temperature": 1, "stop": ["x"], "max_tokens": 100}


def test_system_prompt_is_merged_not_stacked():
    assert with_system([{"role": "user", "content": "q"}], "S") == [{"role": "system", "content": "S"},
                                                                    {"role": "user", "content": "q"}]
    merged = with_system([{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}], "S")
    assert merged == [{"role": "system", "content": "S\n\nmine"}, {"role": "user", "content": "q"}]


def test_inject_before_last_user_handles_text_and_parts():
    out = prepend_to_last_user([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                {"role": "user", "content": "c"}], "CTX")
    assert out[0]["content"] == "a" and out[2]["content"] == "CTX\n\nc"
    parts = prepend_to_last_user([{"role": "user", "content": [{"type": "text", "text": "c"}]}], "CTX")
    assert parts[0]["content"][0] == {"type": "text", "text": "CTX"}
