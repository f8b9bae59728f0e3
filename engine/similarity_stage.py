"""The similarity stage of the `classify` node: build once, score off the event loop.

`prepare()` loads the embedder (once per process) and embeds the node's example
utterances (once per graph load: at start-up and on every reload, never per request).
`score()` runs the CPU-bound embedding of one request in a single worker thread, so it
never stalls the event loop (streams keep flowing) and concurrent requests queue instead
of fighting over the two cores. The pure scoring lives in `engine.similarity`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine import similarity

# One thread: embedding is CPU-bound and numpy is told to use one BLAS thread.
EMBED_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")


def settings(params: dict[str, Any]) -> dict[str, Any]:
    spec = params.get("similarity") or {}
    return {"examples": spec.get("examples"), "embedder": spec.get("embedder", similarity.DEFAULT_EMBEDDER),
            "top_k": spec.get("top_k", 3), "threshold": spec.get("threshold", 0.05)}


def prepare(params: dict[str, Any], root) -> tuple[similarity.SimilarityClassifier | None, str | None]:
    """(classifier, None), or (None, why it is unavailable) when the extra is missing."""
    conf = settings(params)
    try:
        embedder = similarity.shared_embedder(conf["embedder"])
    except similarity.SimilarityUnavailable as exc:
        return None, str(exc)
    examples = similarity.load_examples(root / conf["examples"], params["labels"])
    return similarity.SimilarityClassifier(embedder, examples, top_k=conf["top_k"]), None


async def score(classifier: similarity.SimilarityClassifier, messages: list[dict[str, Any]]):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(EMBED_POOL, classifier.classify_messages, messages)


def check(name: str, spec: dict[str, Any], root, smap) -> list:
    """Lint: the examples directory and one file per label; the extra, when the method needs it."""
    method = spec.get("method", "llm")
    conf = spec.get("similarity")
    if method == "llm" or not isinstance(conf, dict) or not isinstance(conf.get("examples"), str):
        return []
    where = ("nodes", name, "similarity", "examples")
    directory = (root / conf["examples"]).resolve()
    if not directory.is_relative_to(root.resolve()):
        return [smap.problem(where, f"{conf['examples']!r} points outside the project directory")]
    if not directory.is_dir():
        return [smap.problem(where, f"examples directory {conf['examples']!r} does not exist")]
    problems = []
    for label in spec.get("labels") or []:
        if isinstance(label, str) and not (directory / f"{label}.txt").is_file():
            problems.append(smap.problem(where, f"no examples for label {label!r}: "
                                                f"{conf['examples']}/{label}.txt is missing"))
    if method == "similarity":
        # A cascade can still classify with the LLM alone; a similarity-only node cannot.
        try:
            similarity.check_available(conf.get("embedder", similarity.DEFAULT_EMBEDDER))
        except similarity.SimilarityUnavailable as exc:
            problems.append(smap.problem(("nodes", name, "method"), str(exc)))
    return problems


def unavailable_warning(name: str, spec: dict[str, Any], smap):
    """For a cascade without the extra: a warning, since it degrades to the LLM classifier alone."""
    if spec.get("method") != "cascade" or not isinstance(spec.get("similarity"), dict):
        return None
    try:
        similarity.check_available(spec["similarity"].get("embedder", similarity.DEFAULT_EMBEDDER))
    except similarity.SimilarityUnavailable as exc:
        return smap.problem(("nodes", name, "method"), f"cascade runs as the LLM classifier alone: {exc}")
    return None
