"""Character n-gram models: build time and peak memory for orders 5, 10 and 20 on 3M characters, and
scoring time for 300K characters, against a straightforward Python dict-counting n-gram.

Text: /work/shared/data/tinyshakespeare.txt (1,115,394 characters) three times: as it is, then with
every ASCII letter shifted by 1 (a->b, ..., z->a, the same for capitals), then shifted by 2. The
shifts keep the vocabulary (65 characters) and the statistics of English, but make the n-grams that
contain a letter different in each copy, so the number of distinct n-grams grows as for a 3.3M
text that never repeats itself (plain repetition would only triple the counts, an easy case).
The model is fitted on the first 3,000,000 characters; the next 300,000 (the end of the third copy,
whose first 770K characters are in the training part) are scored. --quick fits 300K, scores the next 30K.

Each order runs in a fresh subprocess (this script with --worker) so that its peak RSS (VmHWM) is its
own; the peak is reset (/proc/self/clear_refs) after importing rnnlens and reading the text, and
"held" is the peak minus the RSS at that point. The model is then saved, dropped, and loaded
back from its file for scoring; the scoring peak is reset before the load, and includes the
per-context tables scoring builds and the [300K, 65] float32 output.

The reference is what one writes first: a Python Counter of every j-gram string (j = 1..5) plus the
continuation counts from the distinct (j+1)-grams, timed on the first 300K characters and scaled
linearly to 3M; and a per-character Python loop that scores with dicts of context totals and
counts of counts, timed on 20K characters and scaled to 300K.

    python benchmarks/bench_ngram.py              # full: ~3 min
    python benchmarks/bench_ngram.py --quick      # 300K characters, scores 30K: ~30 s
    python benchmarks/bench_ngram.py --losses     # also test loss on tiny Shakespeare (90/5/5), orders 1..20
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import benchutil as bu

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")


def shifted(text: str, k: int) -> str:
    lower = "abcdefghijklmnopqrstuvwxyz"
    upper = lower.upper()
    table = str.maketrans(lower + upper, lower[k:] + lower[:k] + upper[k:] + upper[:k])
    return text.translate(table)


def bench_text(path: Path) -> str:
    base = path.read_text(encoding="utf-8")
    return base + shifted(base, 1) + shifted(base, 2)


def rss_mb() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MB (see bench_memory.rss_mb for why not ru_maxrss)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmHWM"], fields["VmRSS"]


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0), so the peak is the fit's, not the text's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def reference_worker(spec: dict) -> dict:
    """The dict reference's memory: RSS held by its raw + continuation Counters of one order."""
    text = bench_text(Path(spec["text"]))[:spec["train"]]
    _, before = rss_mb()
    t = time.perf_counter()
    tables = reference_counts(text, spec["order"])
    seconds = time.perf_counter() - t
    _, after = rss_mb()
    distinct = sum(len(c) for c in tables[:spec["order"]])
    return {"order": spec["order"], "chars": len(text), "seconds": seconds, "held_mb": after - before,
            "ngrams": distinct, "bytes_per_ngram": (after - before) * 2 ** 20 / distinct}


def worker(spec: dict) -> dict:
    import numpy as np

    from rnnlens.corpus import Vocab
    from rnnlens.ngram import NGramModel, fit_ngram
    text = bench_text(Path(spec["text"]))
    vocab = Vocab(set(text))
    ids = vocab.encode(text).astype(vocab.dtype)
    del text
    train, score = ids[:spec["train"]], ids[spec["train"]:spec["train"] + spec["score"]]
    reset_peak()
    _, base = rss_mb()
    out = {"order": spec["order"], "train_chars": len(train), "score_chars": len(score), "base_mb": base}
    t = time.perf_counter()
    model = fit_ngram(train, vocab, spec["order"])
    out["fit_s"] = time.perf_counter() - t
    out["fit_peak_mb"], _ = rss_mb()
    out["ngrams"] = model.entries
    out["table_mb"] = sum(lv.keys.nbytes + lv.raw.nbytes + (lv.cont.nbytes if lv.cont is not None else 0)
                          for lv in model.levels) / 2 ** 20
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model.save(Path(tmp) / "ng")
        out["save_s"] = time.perf_counter() - t
        out["file_mb"] = (Path(tmp) / "ng" / "ngram.safetensors").stat().st_size / 2 ** 20
        del model
        reset_peak()
        _, out["score_base_mb"] = rss_mb()
        t = time.perf_counter()
        model = NGramModel.load(Path(tmp) / "ng")
        out["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    losses = model.losses(score)
    out["loss_first_s"] = time.perf_counter() - t        # builds the per-context tables
    t = time.perf_counter()
    losses = model.losses(score)
    out["loss_s"] = time.perf_counter() - t
    out["loss_nats"] = float(losses.mean())
    t = time.perf_counter()
    probs = model.probs(score)
    out["probs_s"] = time.perf_counter() - t
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    out["peak_mb"], _ = rss_mb()
    return out


def reference_counts(text: str, order: int) -> list[Counter]:
    raw = [Counter(text[i:i + j] for i in range(len(text) - j + 1)) for j in range(1, order + 1)]
    cont = []
    for j in range(1, order):
        c = Counter(g[1:] for g in raw[j])      # distinct left extensions of each j-gram
        c[text[:j]] += 1
        cont.append(c)
    return raw + cont


def reference_tables(train: str, order: int) -> list:
    """Per level: (counts, context totals, context counts of counts) as dicts."""
    raw = [Counter(train[i:i + j] for i in range(len(train) - j + 1)) for j in range(1, order + 1)]
    tables = []
    for j in range(1, order + 1):
        if j == order:
            counts = raw[j - 1]
        else:
            counts = Counter(g[1:] for g in raw[j])
        total, nr = defaultdict(int), defaultdict(lambda: [0, 0, 0])
        for g, c in counts.items():
            total[g[:-1]] += c
            nr[g[:-1]][min(c, 3) - 1] += 1
        tables.append((counts, total, nr))
    return tables


def reference_score(text: str, tables: list, order: int, v: int) -> float:
    """Mean loss of interpolated KN with dict lookups, one character and one level at a time
    (discounts fixed at 0.5/1.0/1.5: the timing does not depend on them)."""
    d = (0.0, 0.5, 1.0, 1.5)
    loss = 0.0
    for t in range(order - 1, len(text) - 1):
        w = text[t + 1]
        p_lower = 1.0 / v
        for j in range(1, order + 1):
            counts, total, nr = tables[j - 1]
            h = text[t - j + 2:t + 1] if j > 1 else ""
            tot = total.get(h, 0)
            if tot:
                c = counts.get(h + w, 0)
                n1, n2, n3 = nr[h]
                gamma = (d[1] * n1 + d[2] * n2 + d[3] * n3) / tot
                p_lower = max(c - d[min(c, 3)], 0) / tot + gamma * p_lower
        loss -= math.log(p_lower)
    return loss / (len(text) - order)


def run_worker(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def shakespeare_losses(orders) -> list[list]:
    """Test (and val) loss of KN models of each order on tiny Shakespeare with the corpus's 90/5/5 split."""
    from rnnlens.ngram import train_ngram
    rows = []
    for n in orders:
        model = train_ngram(str(SHAKESPEARE), n)
        val, test = model.evaluate(split="val"), model.evaluate(split="test")
        rows.append([n, f"{model.meta['train']['seconds']:.1f}", f"{model.entries:,}", f"{val.loss:.4f}",
                     f"{test.loss:.4f}", f"{test.bpc:.3f}"])
        print(f"order {n}: val {val.loss:.4f} test {test.loss:.4f} nats/char", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--text", default=str(SHAKESPEARE))
    ap.add_argument("--orders", default="5,10,20")
    ap.add_argument("--losses", action="store_true", help="also the test loss on tiny Shakespeare, orders 1..20")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(reference_worker(spec) if spec.get("reference") else worker(spec)))
        return
    train_n, score_n = (300_000, 30_000) if args.quick else (3_000_000, 300_000)
    bu.print_header(f"bench_ngram: n-gram build on {train_n:,} characters, scoring {score_n:,}")
    probe0 = bu.sgemm_probe("before")
    results = []
    for order in [int(o) for o in args.orders.split(",")]:
        r = run_worker({"text": args.text, "order": order, "train": train_n, "score": score_n})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        results.append(r)

    text = bench_text(Path(args.text))
    ref_train_n = min(train_n, 300_000)
    t = time.perf_counter()
    ref = reference_counts(text[:ref_train_n], 5)
    ref_count_s = (time.perf_counter() - t) * train_n / ref_train_n
    del ref
    ref_score_n = min(score_n, 20_000)
    tables = reference_tables(text[:ref_train_n], 5)
    t = time.perf_counter()
    reference_score(text[train_n:train_n + ref_score_n], tables, 5, 65)
    ref_score_s = (time.perf_counter() - t) * score_n / ref_score_n
    del tables
    ref_mem = run_worker({"text": args.text, "order": 20, "train": min(train_n, 300_000), "reference": True})
    probe1 = bu.sgemm_probe("after")

    rows = []
    for r in results:
        held = r["fit_peak_mb"] - r["base_mb"]
        rows.append([r["order"], f"{r['fit_s']:.1f}", f"{r['fit_peak_mb']:,.0f} ({held:,.0f})",
                     f"{r['ngrams']:,}", f"{r['file_mb']:,.0f}", f"{r['save_s']:.1f} / {r['load_s']:.1f}",
                     f"{r['loss_first_s']:.1f} / {r['loss_s']:.1f}", f"{r['probs_s']:.1f}",
                     f"{r['peak_mb']:,.0f} ({r['peak_mb'] - r['score_base_mb']:,.0f})", f"{r['loss_nats']:.3f}"])
    print()
    print(bu.markdown_table(
        ["order", "build s", "build peak RSS MB (held)", "n-grams", "file MB", "save / load s",
         f"loss of {score_n // 1000}K chars s (first / again)", f"full [T, V] for {score_n // 1000}K s",
         "load + score peak RSS MB (held)", "loss nats"], rows))
    five = next((r for r in results if r["order"] == 5), None)
    print()
    print(f"reference (Python dicts, order 5): counting {ref_count_s:.1f} s for {train_n:,} characters "
          f"(measured on {ref_train_n:,}, scaled); scoring {ref_score_s:.1f} s for {score_n:,} "
          f"(measured on {ref_score_n:,}, scaled)")
    if five:
        print(f"order 5: build {ref_count_s / five['fit_s']:.1f}x faster than the reference's counting alone; "
              f"loss {ref_score_s / five['loss_s']:.0f}x faster than the reference's scoring")
    twenty = next((r for r in results if r["order"] == 20), None)
    print(f"reference memory, order 20 on {ref_mem['chars']:,} characters: {ref_mem['held_mb']:,.0f} MB held for "
          f"{ref_mem['ngrams']:,} n-grams ({ref_mem['bytes_per_ngram']:.0f} bytes each, raw + continuation "
          f"Counters), counted in {ref_mem['seconds']:.1f} s")
    if twenty:
        est = ref_mem["bytes_per_ngram"] * twenty["ngrams"] / 2 ** 30
        per = twenty["table_mb"] * 2 ** 20 / twenty["ngrams"]
        print(f"order 20 on {train_n:,}: the dicts would hold ~{est:.1f} GB for {twenty['ngrams']:,} n-grams "
              f"against {twenty['table_mb']:,.0f} MB of tables here ({per:.0f} bytes each): "
              f"{est * 1024 / twenty['table_mb']:.0f}x less memory")
        ref20_s = ref_mem["seconds"] * train_n / ref_mem["chars"]
        print(f"order 20 counting: the dicts ~{ref20_s:.0f} s for {train_n:,} (scaled linearly), here "
              f"{twenty['fit_s']:.1f} s: {ref20_s / twenty['fit_s']:.1f}x faster")
    print(f"sgemm probe before / after: {probe0:.0f} / {probe1:.0f} GFLOP/s")
    if args.losses:
        print()
        orders = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20]
        print(bu.markdown_table(["order", "fit s", "n-grams", "val nats", "test nats", "test bits"],
                                shakespeare_losses(orders)))


if __name__ == "__main__":
    main()
