"""The n-gram table of docs/baselines.md: War and Peace in the paper's form (CRLF line ends, split
80/10/10 by position), orders 1..20, val and test loss in nats/char, with the closed-form Kneser-Ney
discounts and with the discounts tuned on val (the default of `rnnlens ngram`); then the build time and
peak memory of `rnnlens ngram --order 20` (the default) in a fresh process.

The text is read from --data (default: ../shared's LF copy) and, when it has no carriage return,
written with CRLF ends, as `rnnlens data get warandpeace --source FILE` does.

Every order is counted once, at order 20: the order-k model is levels 1..k with level k on raw counts,
which is the model of order k fitted alone (tests/test_ngram.py checks this for the closed form); each
order's discounts are then tuned on val on their own.

    python benchmarks/ngram_table.py                 # ~10 min on the 2-core machine
    python benchmarks/ngram_table.py --orders 1,5,20 --no-build
    python benchmarks/ngram_table.py --orders 20 --no-build      # the 20-gram row and the train + val line
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/warpeace_input.txt")
PAPER_20GRAM = 1.195


def crlf_copy(src: Path, folder: Path) -> Path:
    data = src.read_bytes()
    if b"\r" not in data:
        data = data.replace(b"\n", b"\r\n")
    out = folder / "warandpeace.txt"
    out.write_bytes(data)
    return out


def sub_model(big, k: int):
    from rnnlens.ngram import Level, NGramModel
    levels = [Level(lv.keys, lv.raw, lv.cont if j < k - 1 else None, lv.d_raw, lv.d_cont if j < k - 1 else None)
              for j, lv in enumerate(big.levels[:k])]
    return NGramModel(levels, big.vocab)


# `python -m rnnlens` that prints its own peak RSS at exit. Not getrusage(RUSAGE_CHILDREN): a child's
# ru_maxrss starts from its parent's RSS at the fork, and this script holds a 20-gram by then.
PEAK_REPORTING_CLI = """import runpy, sys
try:
    runpy.run_module("rnnlens", run_name="__main__", alter_sys=True)
finally:
    print("VmHWM", next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")),
          file=sys.stderr)
"""


def build(path: Path, folder: Path) -> dict:
    """`rnnlens ngram --order 20` in a child process: wall time, the fit time it reports, peak RSS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    load = os.getloadavg()[0]
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK_REPORTING_CLI, "ngram", "--data", str(path), "--order", "20",
                          "--split", "0.8,0.1,0.1", "--out", str(folder / "ng20"), "--json"],
                         env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    import json
    info = json.loads(out.stdout)
    peak = int(out.stderr.split("VmHWM")[-1].split()[0]) / 1024
    return {"wall": wall, "fit": info["train_seconds"], "peak_mb": peak, "val": info["val"]["loss_nats"],
            "test": info["test"]["loss_nats"], "load": (load, os.getloadavg()[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--orders", default=",".join(str(k) for k in range(1, 21)))
    ap.add_argument("--no-build", action="store_true", help="skip the timed `rnnlens ngram --order 20` run")
    ap.add_argument("--no-train-val", action="store_true",
                    help="skip the 20-gram counted on train + val (discounts chosen on val with train counts)")
    args = ap.parse_args()
    orders = [int(x) for x in args.orders.split(",")]

    from rnnlens.corpus import load_corpus
    from rnnlens.ngram import NGramModel, count_levels, tune_discounts

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = crlf_copy(args.data, tmp)
        corpus = load_corpus(str(path), split=(0.8, 0.1, 0.1))
        train, val, test = (np.asarray(corpus.split(s)) for s in ("train", "val", "test"))
        print(f"War and Peace, CRLF: {len(corpus.vocab)} characters in the vocabulary; train {len(train):,}, "
              f"val {len(val):,}, test {len(test):,} characters")
        big = NGramModel(count_levels(train, len(corpus.vocab), max(orders)), corpus.vocab)
        print()
        print("| order | val, closed form | test, closed form | val, tuned | test, tuned (default) | tuning s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for k in orders:
            m = sub_model(big, k)
            cv, ct = m.losses(val).mean(), m.losses(test).mean()
            t = time.perf_counter()
            tune_discounts(m, val)
            seconds = time.perf_counter() - t
            tv, tt = m.losses(val).mean(), m.losses(test).mean()
            print(f"| {k} | {cv:.4f} | {ct:.4f} | {tv:.4f} | {tt:.4f} | {seconds:.1f} |", flush=True)
        del big
        if not args.no_train_val:
            from rnnlens.ngram import train_ngram
            m = train_ngram(str(path), max(orders), split=(0.8, 0.1, 0.1), fit_on="train+val")
            tt = m.losses(test).mean()
            print()
            print(f"{max(orders)}-gram counted on train + val ({m.meta['train']['train_chars']:,} characters), "
                  f"discounts tuned on val with the train counts: test {tt:.4f} nats/char "
                  f"({tt / math.log(2):.4f} bits/char)", flush=True)
            del m
        if not args.no_build:
            b = build(path, tmp)
            print()
            print(f"rnnlens ngram --order 20 (tuned discounts): fit {b['fit']:.1f} s (counting + tuning), "
                  f"whole command {b['wall']:.1f} s, peak RSS {b['peak_mb']:,.0f} MB; val {b['val']:.4f}, "
                  f"test {b['test']:.4f} nats/char ({b['test'] / math.log(2):.4f} bits/char) against the "
                  f"paper's {PAPER_20GRAM}; load average {b['load'][0]:.1f} before, {b['load'][1]:.1f} after")


if __name__ == "__main__":
    main()
