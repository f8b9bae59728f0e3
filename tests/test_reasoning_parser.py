"""Tests for nano_v3_reasoning_parser.py, the vLLM reasoning-parser plugin for Nemotron 3 Nano.

vLLM cannot run here (no GPU), so the splitting rules are tested directly, and the vLLM adapter class is
tested against a small stand-in for the three vLLM names it uses (``ReasoningParser``,
``ReasoningParserManager``, ``DeltaMessage``) with a fake tokenizer whose vocabulary has ``<think>`` and
``</think>`` as single tokens, as the real one does.

The central property: however the output is cut into streaming deltas, the reasoning and the content a
client ends up with are exactly what the non-streaming parser returns for the whole text.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "nano_v3_reasoning_parser.py"


def load_plugin(name: str = "nano_v3_plugin_under_test") -> types.ModuleType:
    """Import the plugin file the way vLLM does: by path, as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


nano = load_plugin("nano_v3_pure")


# --- helpers ---------------------------------------------------------------------------------------------


def stream(text: str, cuts: list[int], thinking: bool = True) -> tuple[str, str]:
    """Feed ``text`` cut at ``cuts`` to a StreamSplitter; return the joined (reasoning, content)."""
    splitter = nano.StreamSplitter(thinking)
    bounds = [0, *cuts, len(text)]
    reasoning, content = [], []
    for start, end in itertools.pairwise(bounds):
        r, c = splitter.feed(text[start:end])
        reasoning.append(r)
        content.append(c)
    r, c = splitter.finish()
    return "".join(reasoning) + r, "".join(content) + c


def expected(text: str, thinking: bool = True) -> tuple[str, str]:
    reasoning, content = nano.split_reasoning(text, thinking)
    return reasoning or "", content or ""


def all_cuts(length: int):
    """Every way to cut a string of ``length`` characters into non-empty pieces (2**(length-1) ways)."""
    positions = range(1, length)
    for size in range(length):
        yield from (list(c) for c in itertools.combinations(positions, size))


# --- non-streaming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reasoning", "content"),
    [
        ("The user greets me.\n</think>\nHello!", "The user greets me.\n", "\nHello!"),
        ("<think>stray opening tag</think>answer", "stray opening tag", "answer"),
        ("\n<think>\nafter whitespace</think>answer", "\nafter whitespace", "answer"),
        ("</think>straight to the answer", None, "straight to the answer"),
        ("only the first tag counts</think>a </think> b", "only the first tag counts", "a </think> b"),
        ("reasoning cut off by max_tokens", "reasoning cut off by max_tokens", None),
        ("reasoning mentions <div></div> and </th", "reasoning mentions <div></div> and </th", None),
        ("thought</think>", "thought", None),
        ("", None, None),
    ],
)
def test_non_streaming_split_with_thinking_on(text, reasoning, content):
    assert nano.split_reasoning(text) == (reasoning, content)


def test_thinking_off_makes_the_whole_output_the_answer():
    text = "Paris is the capital of France. (</think> here is just text)"
    assert nano.split_reasoning(text, thinking=False) == (None, text)
    assert nano.split_reasoning("", thinking=False) == (None, None)


@pytest.mark.parametrize(
    ("kwargs", "on"),
    [
        (None, True),
        ({}, True),
        ({"enable_thinking": True}, True),
        ({"enable_thinking": None}, True),
        ({"enable_thinking": False}, False),
        ({"enable_thinking": "false"}, False),
        ({"other": 1}, True),
    ],
)
def test_thinking_enabled_reads_chat_template_kwargs(kwargs, on):
    assert nano.thinking_enabled(kwargs) is on


# --- streaming: every chunking gives the non-streaming answer -------------------------------------------

SHORT_TEXTS = [
    "ab</think>cd",
    "<think>r</think>c",
    " <think>x</think>",
    "</think>answer",
    "r</th</think>c",
    "a</thinkb",
    "<thin",
    "<think",
    "x</",
    "  ",
    "a</think></think>",
]


@pytest.mark.parametrize("text", SHORT_TEXTS)
@pytest.mark.parametrize("thinking", [True, False])
def test_every_chunking_of_short_outputs_matches_non_streaming(text, thinking):
    want = expected(text, thinking)
    count = 0
    for cuts in all_cuts(len(text)):
        assert stream(text, cuts, thinking) == want, f"cuts={cuts}"
        count += 1
    assert count == 2 ** (len(text) - 1)


LONG_TEXTS = [
    "\n<think>\nThe user asks for a haiku. Syllables: 5-7-5. Use <b>bold</b>? No.\n</think>\n\n"
    "Autumn moonlight—\na worm digs silently\ninto the chestnut.",
    "Let me reason about </th tags and </thinking> words and </think-ish things. Truncated here </thin",
    "short</think>" + "content " * 40 + "</think> is content once the answer has started",
]


@pytest.mark.parametrize("text", LONG_TEXTS)
@pytest.mark.parametrize("thinking", [True, False])
def test_random_chunkings_of_long_outputs_match_non_streaming(text, thinking):
    rng = random.Random(len(text))
    want = expected(text, thinking)
    for _ in range(500):
        pieces = rng.randint(1, min(40, len(text) - 1))
        cuts = sorted(rng.sample(range(1, len(text)), pieces))
        assert stream(text, cuts, thinking) == want, f"cuts={cuts}"


def test_end_tag_split_across_deltas_is_recognised_and_held_back_meanwhile():
    splitter = nano.StreamSplitter()
    assert splitter.feed("I should say hi.</th") == ("I should say hi.", "")
    assert splitter.feed("ink>Hi") == ("", "Hi")
    assert splitter.feed(" there") == ("", " there")


def test_one_delta_can_end_reasoning_and_start_the_answer():
    splitter = nano.StreamSplitter()
    assert splitter.feed("think") == ("think", "")
    assert splitter.feed("ing</think>Answer") == ("ing", "Answer")


def test_held_back_text_that_is_not_a_tag_is_released_as_reasoning():
    splitter = nano.StreamSplitter()
    assert splitter.feed("a </") == ("a ", "")
    assert splitter.feed("div>") == ("</div>", "")


def test_truncated_stream_is_reasoning_only():
    splitter = nano.StreamSplitter()
    pieces = [splitter.feed(d) for d in ["Considering", " options", " and"]]
    assert all(content == "" for _, content in pieces)
    assert "".join(r for r, _ in pieces) + splitter.finish()[0] == "Considering options and"


def test_streaming_with_thinking_off_is_all_content_from_the_first_delta():
    splitter = nano.StreamSplitter(thinking=False)
    assert splitter.feed("Hello") == ("", "Hello")
    assert splitter.feed("</think>") == ("", "</think>")


# --- the vLLM adapter, against stand-ins for vLLM's classes -----------------------------------------------


class FakeTokenizer:
    """Tags are single tokens; every other character is its own token."""

    def __init__(self) -> None:
        self.vocab = {"<think>": 1, "</think>": 2}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in re.split(r"(</?think>)", text):
            if part in self.vocab:
                ids.append(self.vocab[part])
            else:
                ids.extend(1000 + ord(ch) for ch in part)
        return ids


def make_fake_vllm(delta_module: str, reasoning_field: str) -> dict[str, types.ModuleType]:
    """Modules standing in for the parts of vLLM the plugin imports."""

    class ReasoningParser:
        def __init__(self, tokenizer, *args, **kwargs):
            self.model_tokenizer = tokenizer

        @property
        def vocab(self):
            return self.model_tokenizer.get_vocab()

    class ReasoningParserManager:
        reasoning_parsers: dict = {}

        @classmethod
        def register_module(cls, name):
            def decorator(parser_cls):
                cls.reasoning_parsers[name] = parser_cls
                return parser_cls

            return decorator

    class DeltaMessage:
        model_fields = {"role": None, "content": None, reasoning_field: None}

        def __init__(self, **kwargs):
            assert set(kwargs) <= set(self.model_fields), kwargs
            self.content = kwargs.get("content")
            self.reasoning = kwargs.get(reasoning_field)

    abs_mod = types.ModuleType("vllm.reasoning.abs_reasoning_parsers")
    abs_mod.ReasoningParser = ReasoningParser
    abs_mod.ReasoningParserManager = ReasoningParserManager
    protocol = types.ModuleType(delta_module)
    protocol.DeltaMessage = DeltaMessage
    modules = {name: types.ModuleType(name) for name in ("vllm", "vllm.reasoning")}
    modules["vllm.reasoning.abs_reasoning_parsers"] = abs_mod
    parts = delta_module.split(".")
    for i in range(2, len(parts)):
        modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    modules[delta_module] = protocol
    return modules


VLLM_LAYOUTS = {
    "vllm>=0.30": ("vllm.entrypoints.openai.generate.base.protocol", "reasoning"),
    "vllm 0.15-0.29": ("vllm.entrypoints.openai.engine.protocol", "reasoning"),
    "vllm<=0.11.0": ("vllm.entrypoints.openai.protocol", "reasoning_content"),
}


@pytest.fixture(params=sorted(VLLM_LAYOUTS))
def plugin(request, monkeypatch):
    delta_module, field = VLLM_LAYOUTS[request.param]
    for name, module in make_fake_vllm(delta_module, field).items():
        monkeypatch.setitem(sys.modules, name, module)
    module = load_plugin(f"nano_v3_with_fake_vllm_{field}")
    yield module
    sys.modules.pop(module.__name__, None)


def test_module_imports_without_vllm_and_defines_no_adapter():
    assert "vllm" not in sys.modules or not hasattr(sys.modules["vllm"], "__file__")
    assert nano.ReasoningParser is None
    assert not hasattr(nano, "NanoV3ReasoningParser")


def test_adapter_registers_as_nano_v3_with_both_interface_generations(plugin):
    manager = sys.modules["vllm.reasoning.abs_reasoning_parsers"].ReasoningParserManager
    cls = manager.reasoning_parsers["nano_v3"]
    assert cls is plugin.NanoV3ReasoningParser
    for name in (
        "extract_reasoning",
        "extract_reasoning_streaming",
        "extract_reasoning_content",
        "extract_reasoning_content_streaming",
        "is_reasoning_end",
        "is_reasoning_end_streaming",
        "extract_content_ids",
    ):
        assert callable(getattr(cls, name)), name


def run_adapter_stream(parser, tokenizer, deltas: list[str]) -> tuple[str, str]:
    """Drive extract_reasoning_streaming the way vLLM's serving loop does."""
    previous_text, previous_ids = "", []
    reasoning, content = [], []
    for delta in deltas:
        delta_ids = tokenizer.encode(delta)
        current_text, current_ids = previous_text + delta, previous_ids + delta_ids
        message = parser.extract_reasoning_streaming(
            previous_text, current_text, delta, previous_ids, current_ids, delta_ids
        )
        if message is not None:
            reasoning.append(message.reasoning or "")
            content.append(message.content or "")
        previous_text, previous_ids = current_text, current_ids
    return "".join(reasoning), "".join(content)


def test_adapter_streaming_splits_a_tag_cut_across_deltas(plugin):
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer)
    deltas = ["Hmm, a greeting", ".\n</th", "ink>\n", "Hello", "!"]
    assert run_adapter_stream(parser, tokenizer, deltas) == ("Hmm, a greeting.\n", "\nHello!")


def test_adapter_streaming_matches_non_streaming_for_many_chunkings(plugin):
    tokenizer = FakeTokenizer()
    text = "<think>Plan: answer briefly.</think>The answer is 42."
    want = plugin.split_reasoning(text)
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        deltas = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
        parser = plugin.NanoV3ReasoningParser(tokenizer)
        assert run_adapter_stream(parser, tokenizer, deltas) == want


def test_adapter_streaming_honours_thinking_off_from_constructor_kwargs(plugin):
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer, chat_template_kwargs={"enable_thinking": False})
    assert run_adapter_stream(parser, tokenizer, ["Just ", "the answer."]) == ("", "Just the answer.")


def test_adapter_streaming_without_kwargs_assumes_thinking(plugin):
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer)
    assert run_adapter_stream(parser, tokenizer, ["Still ", "thinking"]) == ("Still thinking", "")


def test_adapter_streaming_handles_a_stripped_special_end_token(plugin):
    """With skip_special_tokens the </think> token can arrive with no text; the ids still tell."""
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer)
    prev_text, prev_ids = "", []
    got = []
    for text, ids in [("Reason", tokenizer.encode("Reason")), ("", [2]), ("Answer", tokenizer.encode("Answer"))]:
        message = parser.extract_reasoning_streaming(prev_text, prev_text + text, text, prev_ids, prev_ids + ids, ids)
        got.append(None if message is None else (message.reasoning, message.content))
        prev_text, prev_ids = prev_text + text, prev_ids + ids
    assert got == [("Reason", None), None, (None, "Answer")]


def test_adapter_recovers_when_it_did_not_see_the_start_of_the_stream(plugin):
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer)
    previous = "thinking hard</think>Ans"
    message = parser.extract_reasoning_streaming(
        previous, previous + "wer", "wer", tokenizer.encode(previous), tokenizer.encode(previous + "wer"), []
    )
    assert (message.reasoning, message.content) == (None, "wer")


def test_adapter_non_streaming_reads_enable_thinking_from_the_request(plugin):
    parser = plugin.NanoV3ReasoningParser(FakeTokenizer())
    thinking_off = types.SimpleNamespace(chat_template_kwargs={"enable_thinking": False})
    default = types.SimpleNamespace(chat_template_kwargs=None)
    assert parser.extract_reasoning("Bonjour!", thinking_off) == (None, "Bonjour!")
    assert parser.extract_reasoning("why</think>Bonjour!", default) == ("why", "Bonjour!")
    assert parser.extract_reasoning("cut off", default) == ("cut off", None)
    assert parser.extract_reasoning_content("why</think>Bonjour!", default) == ("why", "Bonjour!")


def test_adapter_token_level_questions(plugin):
    tokenizer = FakeTokenizer()
    parser = plugin.NanoV3ReasoningParser(tokenizer)
    thinking_prompt = tokenizer.encode("<|im_start|>assistant\n<think>\n")
    no_thinking_prompt = tokenizer.encode("<|im_start|>assistant\n<think></think>")
    output = tokenizer.encode("why</think>ok")
    assert parser.is_reasoning_end(thinking_prompt) is False
    assert parser.is_reasoning_end(no_thinking_prompt) is True
    assert parser.is_reasoning_end(tokenizer.encode("still thinking")) is False
    assert parser.is_reasoning_end(output) is True
    assert parser.is_reasoning_end_streaming(output, [2]) is True
    assert parser.is_reasoning_end_streaming(output, tokenizer.encode("ok")) is False
    assert parser.extract_content_ids(output) == tokenizer.encode("ok")
    assert parser.extract_content_ids(tokenizer.encode("no end yet")) == []
    off = plugin.NanoV3ReasoningParser(tokenizer, chat_template_kwargs={"enable_thinking": False})
    assert off.extract_content_ids(tokenizer.encode("all")) == tokenizer.encode("all")
