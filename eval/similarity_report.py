"""Score the similarity classifier alone on a labelled case file (until `engine eval` covers it).

    python eval/similarity_report.py eval/cases/dev.jsonl [--examples prompts/routing/examples] [--top-k 3]

Prints accuracy, per-label recall, the confusion matrix, what a cascade threshold would leave to the LLM,
and per-query latency. Only cases with a "label" are scored ("route"-only cases are meta-detection cases).
Tune on dev; quote heldout numbers, never tune on them (eval/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.similarity import SimilarityClassifier, load_embedder, load_examples  # noqa: E402

LABELS = ["SIMPLE", "MODERATE", "COMPLEX", "ENRICH"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", type=Path)
    ap.add_argument("--examples", type=Path, default=ROOT / "prompts" / "routing" / "examples")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--errors", action="store_true", help="list the misclassified cases")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    embedder = load_embedder(args.embedder)
    t1 = time.perf_counter()
    clf = SimilarityClassifier(embedder, load_examples(args.examples, LABELS), top_k=args.top_k)
    t2 = time.perf_counter()

    rows, lat = [], []
    for line in args.cases.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        if "label" not in case:
            continue
        start = time.perf_counter()
        if "query" in case:
            r = clf.classify(case["query"])
            shown = case["query"]
        else:
            r = clf.classify_messages(case["messages"])
            shown = case["messages"][-1]["content"]
        lat.append((time.perf_counter() - start) * 1000)
        rows.append((case["label"], r.label, r.margin, shown))

    n = len(rows)
    correct = sum(g == p for g, p, _, _ in rows)
    print(f"{args.cases}: {correct}/{n} = {correct / n:.1%}  (embedder {args.embedder}, {clf.example_count} examples, top_k {args.top_k})")
    print(f"load {t1 - t0:.2f} s, embed examples {t2 - t1:.2f} s, per query median {statistics.median(lat):.1f} ms, "
          f"max {max(lat):.1f} ms")
    print("recall: " + ", ".join(
        f"{lab} {sum(g == p == lab for g, p, _, _ in rows)}/{sum(g == lab for g, _, _, _ in rows)}" for lab in LABELS))
    confusion = Counter((g, p) for g, p, _, _ in rows)
    print("confusion (row = label, column = predicted):")
    print("          " + "".join(f"{lab[:8]:>9}" for lab in LABELS))
    for g in LABELS:
        print(f"{g:>9} " + "".join(f"{confusion[(g, p)]:>9}" for p in LABELS))
    print("cascade: margin threshold -> similarity decides (accuracy there), LLM asked")
    for t in (0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10):
        decided = [(g, p) for g, p, m, _ in rows if m >= t]
        ok = sum(g == p for g, p in decided)
        print(f"  {t:.2f}: {len(decided)}/{n} ({ok}/{max(1, len(decided))} right), LLM {n - len(decided)} ({(n - len(decided)) / n:.0%})")
    if args.errors:
        for g, p, m, text in rows:
            if g != p:
                print(f"  {g} -> {p} margin {m:.3f}: {text[:100]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
