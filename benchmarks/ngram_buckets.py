"""The discount buckets of `rnnlens ngram`, compared on one text: each candidate way of bucketing a
context (docs/baselines.md, "How the buckets were chosen") tunes its discounts on val from the closed
form with `tune_discounts`' own features and optimiser (only the bucket function swapped), and is then
scored on val and test (rows with a whole context).

    python benchmarks/ngram_buckets.py                                  # War and Peace, CRLF, 80/10/10
    python benchmarks/ngram_buckets.py --data tinyshakespeare.txt --split 0.9,0.05,0.05 --variants total,rule

The rule rnnlens uses is `rule` (total x occurrence ratio); `total` is the rule before it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from ngram_table import DATA, crlf_copy

TOTAL = np.array([1.5, 2.5, 4.5, 9.5])


def by(edges, x):
    return np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")


# name: (description, buckets per level, bucket(total, occurrences, distinct successors))
VARIANTS = {
    "total": ("total (5), the previous rule", 5, lambda t, o, d: by(TOTAL, t)),
    "single": ("total x one distinct successor or more", 10, lambda t, o, d: by(TOTAL, t) * 2 + (d == 1)),
    "distinct": ("total x distinct successors 1, 2, 3-4, 5-9, >= 10", 25, lambda t, o, d: by(TOTAL, t) * 5 + by(TOTAL, d)),
    "fine": ("11 finer totals", 11, lambda t, o, d: by([1.5, 2.5, 3.5, 4.5, 6.5, 9.5, 14.5, 24.5, 49.5, 99.5], t)),
    "occurrences": ("raw occurrences instead of the total", 5, lambda t, o, d: by(TOTAL, o)),
    "total-occ": ("total x occurrences (5 x 5)", 25, lambda t, o, d: by(TOTAL, t) * 5 + by(TOTAL, o)),
    "total-occ7": ("total x occurrences in 7", 35,
                   lambda t, o, d: by(TOTAL, t) * 7 + by([1.5, 2.5, 4.5, 9.5, 19.5, 49.5], o)),
    "rule": ("total x ratio < 1.5, 1.5-3, 3-6, >= 6 (the rule)", 20,
             lambda t, o, d: by(TOTAL, t) * 4 + by([1.5, 3.0, 6.0], o / np.maximum(t, 1))),
    "ratio3": ("total x ratio in 3", 15, lambda t, o, d: by(TOTAL, t) * 3 + by([1.5, 4.0], o / np.maximum(t, 1))),
    "ratio6": ("total x ratio in 6", 30,
               lambda t, o, d: by(TOTAL, t) * 6 + by([1.25, 2.0, 3.0, 5.0, 10.0], o / np.maximum(t, 1))),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a UTF-8 text (default: ../shared's War and Peace, "
                    "written with CRLF ends as `rnnlens data get warandpeace` does)")
    ap.add_argument("--split", default="0.8,0.1,0.1")
    ap.add_argument("--order", type=int, default=20)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    args = ap.parse_args()
    import torch

    from rnnlens.corpus import load_corpus
    from rnnlens.ngram import NGramModel, _fit_discounts, _tuning_features, _tuning_loss, count_levels
    with tempfile.TemporaryDirectory() as tmp:
        path = crlf_copy(args.data, Path(tmp)) if args.data == DATA else args.data
        corpus = load_corpus(str(path), split=tuple(float(x) for x in args.split.split(",")))
        train, val, test = (np.asarray(corpus.split(s)) for s in ("train", "val", "test"))
    model = NGramModel(count_levels(train, len(corpus.vocab), args.order), corpus.vocab)
    print(f"{args.data.name}: train {len(train):,}, val {len(val):,}, test {len(test):,} characters; "
          f"order {args.order}; losses in nats/char over the rows with a whole context\n")
    print("| buckets of a context | per level | val | test | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name in args.variants.split(","):
        what, buckets, bucket = VARIANTS[name]
        t = time.perf_counter()
        fv, nv = _tuning_features(model, val, args.order, bucket)
        d = torch.from_numpy(_fit_discounts(model, fv, nv, buckets))
        ft, nt = _tuning_features(model, test, args.order, bucket)
        with torch.no_grad():
            lv, lt = _tuning_loss(fv, nv, d, len(corpus.vocab)), _tuning_loss(ft, nt, d, len(corpus.vocab))
        print(f"| {what} | {buckets} | {lv.item():.4f} | {lt.item():.4f} | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
