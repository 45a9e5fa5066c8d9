"""Big corpora: preparation time and peak RSS for 100 MB and 1 GB of generated text, and training
RSS on both, to show that neither grows with the corpus.

Every measurement is a fresh Python subprocess (this script with --worker), so each peak (VmHWM,
see bench_memory.rss_mb) belongs to one job only. Workers:

  prepare   prepare_corpus on a cold cache: hash pass, character-set pass, encoding pass (data.bin)
  cached    prepare_corpus again: the cache hit, which pays the hash pass only (what every
            `rnnlens train` on that file pays at start)
  train     load the prepared corpus (memory-mapped) and run Trainer.start + run as `rnnlens train`
            does for --steps steps (1x128 LSTM, batch 32, seq 100), then the final validation on a
            50K-character val split and the checkpoint writes

The text is benchutil's generated text (65 ASCII symbols), written to a folder under /tmp and deleted
at the end; `--unicode` adds a 100 MB text where 1 character in 50 is non-ASCII (é, ё, —, 中), which
takes the slower decoding path (str and UTF-32 copies of each 4 MB piece).

    python benchmarks/bench_corpus.py                 # 100 MB and 1 GB (+ --unicode), ~5-10 min
    python benchmarks/bench_corpus.py --sizes 10e6 100e6 --steps 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import numpy as np
from bench_memory import rss_mb, rss_parts_mb

VAL_CHARS = 50_000


def split_for(n: int) -> tuple[float, float, float]:
    val = VAL_CHARS / n
    return (round(1 - val, 9), round(val, 9), 0.0)


def worker(spec: dict) -> dict:
    import torch

    from rnnlens.corpus import prepare_corpus
    torch.set_num_threads(spec.get("threads") or 1)
    out = {}
    t0 = time.perf_counter()
    corpus = prepare_corpus(spec["text"], cache_dir=Path(spec["cache"]), split=tuple(spec["split"]))
    out["prepare_s"] = time.perf_counter() - t0
    out["chars"] = len(corpus)
    if spec["mode"] == "train":
        from rnnlens.trainer import Trainer
        mcfg = bu.model_config(len(corpus.vocab), "lstm", 1, 128)
        tcfg = bu.train_config(data=spec["text"], split=tuple(spec["split"]), batch_size=32, seq_len=100,
                               max_steps=spec["steps"], checkpoint_every=None, device="cpu")
        t1 = time.perf_counter()
        Trainer.start(Path(spec["run_dir"]), mcfg, tcfg, force=True, progress=False, corpus=corpus,
                      log=lambda m: None).run()
        out["train_s"] = time.perf_counter() - t1
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"], out["end_mb"] = rss_mb()
    out.update(rss_parts_mb())
    return out


def measure(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {spec['mode']} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {spec['mode']:<8} {spec['label']:<16} {out['seconds']:7.1f} s, peak RSS {out['peak_mb']:6.0f} MB "
          f"(at end: anonymous {out['anon_mb']:.0f}, mapped file {out['file_mb']:.0f})", flush=True)
    return out


def write_unicode_text(path: Path, n_bytes: int, seed: int = 2) -> Path:
    """About n_bytes of UTF-8: benchutil's ASCII text with 1 character in 50 replaced by a
    2- or 3-byte one."""
    rng = np.random.default_rng(seed)
    extra = ["é", "ё", "—", "中"]
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        step = 1 << 22
        table = np.array(list(bu.ALPHABET))
        while written < n_bytes:
            chars = table[bu.generated_ids(step, seed=int(rng.integers(1 << 30)))]
            pick = rng.random(step) < 0.02
            chars[pick] = rng.choice(extra, size=int(pick.sum()))
            s = "".join(chars.tolist())
            f.write(s)
            written += len(s.encode("utf-8"))
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[100e6, 1e9], help="text sizes in bytes")
    ap.add_argument("--steps", type=int, default=20, help="training steps per train worker")
    ap.add_argument("--unicode", action=argparse.BooleanOptionalAction, default=True,
                    help="also a 100 MB text with non-ASCII characters (default on)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    bu.print_header("bench_corpus: big corpora, preparation and training memory")
    t_start = time.perf_counter()
    rows, train_rows = [], []
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-corpus-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        texts = []
        for n in (int(s) for s in args.sizes):
            t0 = time.perf_counter()
            texts.append((f"{n / 1e6:g} MB ASCII", bu.write_generated_text(tmp / f"text-{n}.txt", n, seed=1)))
            print(f"generated {n / 1e6:g} MB in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.unicode:
            texts.append(("100 MB UTF-8 mix", write_unicode_text(tmp / "text-unicode.txt", 100_000_000)))
        for label, path in texts:
            size = path.stat().st_size
            cache = tmp / f"cache-{path.stem}"
            split = split_for(size)
            common = {"text": str(path), "cache": str(cache), "split": split, "label": label,
                      "threads": args.threads, "steps": args.steps, "run_dir": str(tmp / f"run-{path.stem}")}
            prep = measure({**common, "mode": "prepare"})
            hit = measure({**common, "mode": "cached"})
            train = measure({**common, "mode": "train"})
            rows.append([label, f"{size / 1e6:,.0f}", f"{prep['chars'] / 1e6:,.1f}", f"{prep['seconds']:.1f}",
                         f"{size / 1e6 / prep['seconds']:.0f}", f"{prep['peak_mb']:.0f}", f"{hit['seconds']:.1f}",
                         f"{hit['peak_mb']:.0f}"])
            train_rows.append([label, f"{train['prepare_s']:.1f}", f"{train['train_s']:.1f}", f"{train['peak_mb']:.0f}",
                               f"{train['anon_mb']:.0f}", f"{train['file_mb']:.0f}"])
            shutil.rmtree(cache, ignore_errors=True)
            path.unlink()
    print(f"\n{time.perf_counter() - t_start:.0f} s in all; generated texts and caches deleted\n")
    print("Preparation (fresh process each; peak = VmHWM of that process)\n")
    print(bu.markdown_table(["text", "MB", "M chars", "prepare s", "MB/s", "peak RSS MB", "cache hit s",
                             "cache hit peak MB"], rows))
    print(f"\nTraining, 1x128 LSTM, batch 32, seq 100, {args.steps} steps + final validation ({VAL_CHARS:,} "
          "val chars) + checkpoints\n")
    print(bu.markdown_table(["text", "load (hash) s", "train s", "peak RSS MB", "anonymous at end MB",
                             "mapped file at end MB"], train_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
