"""The discount buckets of `rnnlens ngram`, compared on one text: each candidate way of bucketing a
context (docs/baselines.md, "How the buckets were chosen") tunes its discounts on val from the closed
form, exactly as `tune_discounts` does, and is then scored on val and test (rows with a whole context).

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


# name: (description, buckets per level, bucket(total, distinct successors, occurrences))
VARIANTS = {
    "total": ("total (5), the previous rule", 5, lambda t, d, o: by(TOTAL, t)),
    "single": ("total x one distinct successor or more", 10, lambda t, d, o: by(TOTAL, t) * 2 + (d == 1)),
    "distinct": ("total x distinct successors 1, 2, 3-4, 5-9, >= 10", 25, lambda t, d, o: by(TOTAL, t) * 5 + by(TOTAL, d)),
    "fine": ("11 finer totals", 11, lambda t, d, o: by([1.5, 2.5, 3.5, 4.5, 6.5, 9.5, 14.5, 24.5, 49.5, 99.5], t)),
    "occurrences": ("raw occurrences instead of the total", 5, lambda t, d, o: by(TOTAL, o)),
    "total-occ": ("total x occurrences (5 x 5)", 25, lambda t, d, o: by(TOTAL, t) * 5 + by(TOTAL, o)),
    "total-occ7": ("total x occurrences in 7", 35,
                   lambda t, d, o: by(TOTAL, t) * 7 + by([1.5, 2.5, 4.5, 9.5, 19.5, 49.5], o)),
    "rule": ("total x ratio < 1.5, 1.5-3, 3-6, >= 6 (the rule)", 20,
             lambda t, d, o: by(TOTAL, t) * 4 + by([1.5, 3.0, 6.0], o / np.maximum(t, 1))),
    "ratio3": ("total x ratio in 3", 15, lambda t, d, o: by(TOTAL, t) * 3 + by([1.5, 4.0], o / np.maximum(t, 1))),
    "ratio6": ("total x ratio in 6", 30,
               lambda t, d, o: by(TOTAL, t) * 6 + by([1.25, 2.0, 3.0, 5.0, 10.0], o / np.maximum(t, 1))),
}


def features(model, ids, bucket):
    """_tuning_features of rnnlens.ngram with the bucket function swapped."""
    import torch
    ids = np.asarray(ids, dtype=np.int64)
    order, v = model.order, len(model.vocab)
    ranks = model._ranks(ids, order)
    lo = max(order - 2, 0)
    n = len(ids) - 1 - lo
    depth = np.zeros(n, dtype=np.int64)
    for j in range(1, order + 1):
        depth[ranks[j - 1][lo:-1] >= 0] = j
    perm = np.argsort(-depth, kind="stable") + lo
    out = []
    for j in range(1, order + 1):
        lv = model.levels[j - 1]
        counts = lv.raw if j == order else lv.cont
        sel = perm[:int((depth >= j).sum())]
        ctx, ent = ranks[j - 1][sel], ranks[j][sel + 1]
        parent, parents = lv.keys // v, model._parents(j)
        total = np.bincount(parent, counts.astype(np.float64), minlength=parents)[ctx]
        ns = [np.bincount(parent, (counts == r) if r < 3 else (counts >= 3), minlength=parents)[ctx] for r in (1, 2, 3)]
        distinct = np.bincount(parent, minlength=parents)[ctx]
        occurrences = np.bincount(parent, lv.raw.astype(np.float64), minlength=parents)[ctx]
        c = np.where(ent >= 0, counts[np.maximum(ent, 0)], 0).astype(np.float64)
        b3 = bucket(total, distinct, occurrences) * 3
        ic = np.where(c > 0, b3 + np.minimum(c, 3).astype(np.int64), 0)
        out.append((torch.from_numpy(np.stack([c, total] + ns).astype(np.float64)), torch.from_numpy(ic),
                    torch.from_numpy(b3)))
    return out, n


def tune(model, feats, n, buckets):
    """tune_discounts' optimisation: L-BFGS from the closed form, each D_r in [DISCOUNT_MIN, r]."""
    import torch

    from rnnlens.ngram import DISCOUNT_MIN, TUNE_ITERATIONS, _tuning_loss
    order, v = model.order, len(model.vocab)
    closed = np.array([model.levels[j].d_raw if j == order - 1 else model.levels[j].d_cont for j in range(order)])
    lo, hi = DISCOUNT_MIN, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x0 = ((torch.from_numpy(closed)[:, None, :].repeat(1, buckets, 1) - lo) / (hi - lo)).clamp(1e-3, 1 - 1e-3)
    theta = torch.log(x0 / (1 - x0)).requires_grad_()
    opt = torch.optim.LBFGS([theta], max_iter=TUNE_ITERATIONS, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = _tuning_loss(feats, n, lo + (hi - lo) * torch.sigmoid(theta), v)
        loss.backward()
        return loss
    torch.set_num_threads(1)
    opt.step(closure)
    return (lo + (hi - lo) * torch.sigmoid(theta)).detach()


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
    from rnnlens.ngram import NGramModel, _tuning_loss, count_levels
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
        fv, nv = features(model, val, bucket)
        d = tune(model, fv, nv, buckets)
        ft, nt = features(model, test, bucket)
        with torch.no_grad():
            lv, lt = _tuning_loss(fv, nv, d, len(corpus.vocab)), _tuning_loss(ft, nt, d, len(corpus.vocab))
        print(f"| {what} | {buckets} | {lv.item():.4f} | {lt.item():.4f} | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
