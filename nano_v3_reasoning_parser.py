"""A vLLM reasoning-parser plugin for NVIDIA Nemotron 3 Nano (30B-A3B), written for this project.

What the model emits
--------------------
Nemotron 3 Nano's chat template ends the generation prompt with ``<|im_start|>assistant\\n<think>\\n``: the
opening tag is in the *prompt*, so the generated text is

    reasoning text ... </think> answer text

with no opening tag. Three cases follow, and this module handles all of them, streaming and not:

* thinking on (the default): everything before the first ``</think>`` is reasoning, everything after it is
  the answer. A stray ``<think>`` at the very start of the output (some prompts or fine-tunes produce one)
  is dropped.
* thinking off (``chat_template_kwargs: {"enable_thinking": false}``): the template closes the block in the
  prompt (``<think></think>``), so the whole output is the answer.
* truncated (``max_tokens`` hit while thinking): no ``</think>`` ever arrives, so the whole output is
  reasoning and there is no answer.

How the module is split
-----------------------
The splitting logic is plain Python with no vLLM import (``split_reasoning``, ``StreamSplitter``,
``thinking_enabled``), so it can be unit-tested on machines without a GPU or vLLM
(``tests/test_reasoning_parser.py``). The vLLM adapter class at the bottom is defined and registered as
``nano_v3`` only when vLLM imports; without vLLM the module still imports cleanly.

Serving it (see docker-compose.yml)::

    vllm serve unsloth/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4 --trust-remote-code \\
        --reasoning-parser-plugin /plugins/nano_v3_reasoning_parser.py --reasoning-parser nano_v3

How a streaming parser learns that thinking is off
--------------------------------------------------
The non-streaming extractor receives the request and reads ``request.chat_template_kwargs``. The streaming
extractor does not receive the request. What it can know depends on the vLLM version:

* Recent vLLM builds construct the parser once per request as ``parser_cls(tokenizer,
  chat_template_kwargs=...)`` (the request's kwargs merged with ``--default-chat-template-kwargs``); the
  constructor below reads ``enable_thinking`` from there.
* vLLM >= 0.17 also asks ``is_reasoning_end(prompt_token_ids)`` before streaming; with thinking off the
  prompt ends in ``<think></think>``, ``is_reasoning_end`` answers True, and vLLM streams every delta as
  content without calling the streaming extractor at all.
* Older versions (0.11.1 to 0.16) give the parser neither. There a thinking-off answer streams as
  reasoning, and nothing in the generated text can tell it apart from a reasoning stream that has not yet
  reached ``</think>``. The engine compensates for such requests (it knows it sent ``enable_thinking:
  false`` and maps reasoning back to content); see ``docs/architecture.md``.

Known limit of the streaming path: to cope with ``</think>`` arriving split across deltas (``</th`` then
``ink>``), up to seven characters that could begin the tag are held back until the next delta shows what
they were. vLLM has no end-of-stream call for reasoning parsers, so if the stream *ends* on such a partial
tag (a truncated answer whose last characters are, say, ``</``), those few characters are not emitted.
With the real tokenizer ``</think>`` is a single token, so a split tag only happens when the model spells
it out character by character.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

START_TAG = "<think>"
END_TAG = "</think>"

__all__ = [
    "END_TAG",
    "START_TAG",
    "StreamSplitter",
    "split_reasoning",
    "thinking_enabled",
]


def thinking_enabled(chat_template_kwargs: Mapping[str, Any] | None, default: bool = True) -> bool:
    """Whether a request asked for thinking, from its ``chat_template_kwargs``.

    Nemotron 3 Nano thinks unless ``enable_thinking`` is explicitly false; anything else (absent, None,
    true) keeps the default. Some clients send the string "false", so that counts as off too.
    """
    if not chat_template_kwargs:
        return default
    value = chat_template_kwargs.get("enable_thinking")
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def _strip_leading_start_tag(text: str) -> str:
    """Drop a stray ``<think>`` (after optional whitespace) at the very start of the output."""
    stripped = text.lstrip()
    if stripped.startswith(START_TAG):
        return stripped[len(START_TAG):]
    return text


def split_reasoning(text: str, thinking: bool = True) -> tuple[str | None, str | None]:
    """Split a complete model output into ``(reasoning, content)``; an empty part is ``None``.

    This is the non-streaming rule, and the reference the streaming splitter must agree with.
    """
    if not thinking:
        return None, text or None
    body = _strip_leading_start_tag(text)
    reasoning, found, content = body.partition(END_TAG)
    if not found:
        # Truncated while thinking: there is no answer yet, only reasoning.
        return body or None, None
    return reasoning or None, content or None


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag`` (0 if none)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class StreamSplitter:
    """Incremental version of :func:`split_reasoning`: feed deltas, get ``(reasoning, content)`` pieces.

    Whatever way a text is cut into deltas, the concatenated pieces from :meth:`feed` plus :meth:`finish`
    equal ``split_reasoning(text)`` (with ``None`` read as ""). Text that might be the start of a tag is
    held back until a later delta settles it, so a tag split across deltas is still recognised.

    Phases: ``start`` (thinking on, nothing decided yet: a leading ``<think>`` may still come), then
    ``reasoning``, then ``content`` (after ``</think>``, or from the first byte when thinking is off).
    """

    def __init__(self, thinking: bool = True) -> None:
        self.phase = "start" if thinking else "content"
        self._held = ""  # text received but not yet emitted

    def feed(self, delta: str) -> tuple[str, str]:
        """Take the next delta of generated text; return the reasoning and content it releases."""
        if self.phase == "content":
            return "", delta
        self._held += delta
        if self.phase == "start":
            stripped = self._held.lstrip()
            if not stripped or (len(stripped) < len(START_TAG) and START_TAG.startswith(stripped)):
                # Only whitespace, or a possible beginning of "<think>": wait for more.
                return "", ""
            self._held = _strip_leading_start_tag(self._held)
            self.phase = "reasoning"
        # Reasoning phase: look for the end tag in everything held so far.
        before, found, after = self._held.partition(END_TAG)
        if found:
            self._held = ""
            self.phase = "content"
            return before, after
        keep = _partial_tag_suffix(self._held, END_TAG)
        release = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep:]
        return release, ""

    def finish(self) -> tuple[str, str]:
        """The stream ended: whatever is still held back was reasoning (an unfinished tag is just text)."""
        held, self._held = self._held, ""
        if self.phase == "content":
            return "", held
        return held, ""

    def end_by_token(self) -> tuple[str, str]:
        """The end-of-reasoning token arrived but its text did not (the detokenizer dropped it as special).

        Flush what is held as reasoning and treat everything from now on as content.
        """
        reasoning, _ = self.finish()
        self.phase = "content"
        return reasoning, ""


# --------------------------------------------------------------------------------------------------------
# The vLLM adapter. Everything below needs vLLM; without it the module stops here, having defined the
# pure-Python pieces above, so tests and tools can import it anywhere.
# --------------------------------------------------------------------------------------------------------

try:  # pragma: no cover - exercised only where vLLM is installed
    from vllm.reasoning.abs_reasoning_parsers import ReasoningParser, ReasoningParserManager
except Exception:  # ImportError, or a broken CUDA stack raising something else while importing vLLM
    ReasoningParser = None  # type: ignore[assignment,misc]
    ReasoningParserManager = None  # type: ignore[assignment,misc]


def _import_delta_message() -> Any:
    """``DeltaMessage`` moved between modules across vLLM versions; try each known home, newest first."""
    import importlib

    for module_name in (
        "vllm.entrypoints.openai.generate.base.protocol",  # >= 0.30
        "vllm.entrypoints.openai.engine.protocol",  # 0.15 .. 0.29
        "vllm.entrypoints.openai.protocol",  # <= 0.14
    ):
        try:
            return importlib.import_module(module_name).DeltaMessage
        except (ImportError, AttributeError):
            continue
    raise ImportError("DeltaMessage not found in any known vLLM module")


if ReasoningParser is not None:  # pragma: no cover - exercised only where vLLM is installed
    DeltaMessage = _import_delta_message()
    # The streamed field is `reasoning` from 0.11.1 (0.11.1-0.15 also mirror `reasoning_content`), and
    # `reasoning_content` before that. Use whichever this version declares, preferring the new name.
    _FIELDS = getattr(DeltaMessage, "model_fields", {}) or {}
    _REASONING_FIELD = "reasoning" if "reasoning" in _FIELDS or not _FIELDS else "reasoning_content"

    @ReasoningParserManager.register_module("nano_v3")
    class NanoV3ReasoningParser(ReasoningParser):  # type: ignore[misc,valid-type]
        """vLLM's view of the rules above: reasoning before ``</think>``, the answer after it."""

        def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(tokenizer, *args, **kwargs)
            vocab = self.vocab
            self.start_token_id = vocab.get(START_TAG)
            self.end_token_id = vocab.get(END_TAG)
            # Recent vLLM passes the request's chat_template_kwargs to the constructor; older ones do not,
            # and then the default (thinking on) holds for streaming.
            self.thinking = thinking_enabled(kwargs.get("chat_template_kwargs"))
            self._splitter = StreamSplitter(self.thinking)
            self._seen = 0  # length of the text the splitter has consumed

        # -- token-level questions (structured output, prompt inspection) --------------------------------

        def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
            """True when the last think tag in ``input_ids`` is ``</think>``.

            Scanning backwards makes this right for both uses: on a thinking-off prompt (ending
            ``<think></think>``) it says True; on a thinking-on prompt (ending ``<think>\\n``) it says False;
            on generated ids it says True once ``</think>`` has been produced.
            """
            for token_id in reversed(input_ids):
                if token_id == self.end_token_id:
                    return True
                if token_id == self.start_token_id:
                    return False
            return not self.thinking

        def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids: Iterable[int]) -> bool:
            """True on the decode step whose new tokens contain ``</think>``."""
            return self.end_token_id is not None and self.end_token_id in set(delta_ids)

        def extract_content_ids(self, input_ids: list[int]) -> list[int]:
            """The generated ids after the first ``</think>`` (all of them when thinking is off)."""
            if not self.thinking:
                return list(input_ids)
            if self.end_token_id is None or self.end_token_id not in input_ids:
                return []
            return list(input_ids[input_ids.index(self.end_token_id) + 1:])

        # -- text extraction ------------------------------------------------------------------------------

        def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
            kwargs = getattr(request, "chat_template_kwargs", None)
            thinking = thinking_enabled(kwargs, default=self.thinking)
            return split_reasoning(model_output, thinking)

        def extract_reasoning_streaming(
            self,
            previous_text: str,
            current_text: str,
            delta_text: str,
            previous_token_ids: Sequence[int],
            current_token_ids: Sequence[int],
            delta_token_ids: Sequence[int],
        ) -> Any:
            if len(previous_text) != self._seen:
                # This instance did not see the stream so far (shared or reused parser): rebuild the
                # splitter's state from the text instead of trusting it.
                self._splitter = StreamSplitter(self.thinking)
                self._splitter.feed(previous_text)
            reasoning, content = self._splitter.feed(delta_text)
            if (
                self._splitter.phase != "content"
                and self.end_token_id is not None
                and self.end_token_id in delta_token_ids
            ):
                # </think> was generated but its text was stripped (skip_special_tokens).
                flushed, _ = self._splitter.end_by_token()
                reasoning += flushed
            self._seen = len(current_text)
            if not reasoning and not content:
                return None
            return DeltaMessage(**{_REASONING_FIELD: reasoning or None, "content": content or None})

        # vLLM before 0.11.1 called the two extractors by these names; alias them so one file serves both.
        extract_reasoning_content = extract_reasoning
        extract_reasoning_content_streaming = extract_reasoning_streaming

    __all__ += ["NanoV3ReasoningParser"]
