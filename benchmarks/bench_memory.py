"""Peak memory (RSS) of training: rnnlens's Trainer against a bare PyTorch loop, and against corpus size.

Every measurement is a fresh Python subprocess (this script with --worker), so each peak belongs
to one run only. The peak is the kernel's high-water RSS of the worker's image (VmHWM, which is
what getrusage's ru_maxrss reports for a process that was not forked from a big parent; see
rss_mb for why ru_maxrss itself is wrong here). Workers:

  baseline   import torch and rnnlens, build the model: the floor every run pays
  bare       bench_train's bare loop (embedding -> nn.LSTM -> linear, Adam, clip 5, carried state;
             the text read and encoded into one int64 tensor) for --steps steps
  ours       Trainer.start + Trainer.run as `rnnlens train` runs them: --steps steps, then the
             final validation over the val split, last/best checkpoints and loss.png
  ours-loop  the same Trainer with validation, checkpoint writes and the plot switched off
             (benchutil.TrainerHarness), to show what the training loop alone holds

Part 1: 3x512 LSTM, batch 100, seq 100 (goal: ours <= 1.1x bare) on a 1 MB generated text.
Part 2: the corpus is memory-mapped, so RSS must not grow with it: 2x128 LSTM, batch 50, trained
on a 10 MB and on a 100 MB generated text (val split ~50K characters in both), `ours` worker.
RSS at the end is split into anonymous memory (what the process allocated) and mapped file pages
(RssFile: the memory-mapped corpus pages the process touched, plus shared libraries).
Generated text uses 65 symbols (tiny Shakespeare's vocabulary size); corpora are prepared once in
the parent (that preparation is not measured), and each worker loads them as `rnnlens train` does.

    python benchmarks/bench_memory.py            # full, ~4 min
    python benchmarks/bench_memory.py --quick    # smaller model and corpora, < 1 min
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu

VOCAB = 65


def rss_parts_mb() -> dict:
    """Current RSS split into anonymous memory and mapped file pages (RssAnon, RssFile), in MB."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return {"anon_mb": out.get("RssAnon", float("nan")), "file_mb": out.get("RssFile", float("nan"))}


def rss_mb() -> tuple[float, float]:
    """(peak RSS of this process image, current RSS) in MB: VmHWM and VmRSS of /proc/self/status.

    Not ru_maxrss alone: on Linux a child's ru_maxrss starts at the RSS of the parent it was
    forked from (the kernel keeps the old image's high-water mark across execve), so a worker
    started by this 300+ MB parent would report at least that. VmHWM belongs to the new image only.
    Where /proc is missing, fall back to ru_maxrss.
    """
    try:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    fields[key] = int(value.split()[0]) / 1024  # kB -> MB
        return fields["VmHWM"], fields["VmRSS"]
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, float("nan")


def worker(spec: dict) -> dict:
    import torch

    import rnnlens  # noqa: F401  (the import is part of what every rnnlens run pays)
    from rnnlens.corpus import prepare_corpus
    from rnnlens.model import CharRNN
    from rnnlens.trainer import Trainer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cell, layers, size, batch, seq, steps = (spec[k] for k in ("cell", "layers", "size", "batch", "seq", "steps"))
    mcfg = bu.model_config(VOCAB, cell, layers, size)
    out = {}
    t0 = time.perf_counter()
    if spec["mode"] == "baseline":
        CharRNN(mcfg)
    elif spec["mode"] == "bare":
        import numpy as np
        from bench_train import BareLoop
        text = Path(spec["text"]).read_text(encoding="utf-8")
        chars = sorted(set(text))
        lut = np.zeros(128, dtype=np.int64)
        lut[[ord(c) for c in chars]] = np.arange(len(chars))
        ids = lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        del text
        loop = BareLoop(ids, cell, layers, size, batch, seq, torch.device("cpu"))
        out["setup_peak_mb"] = rss_mb()[0]
        loop.steps(steps)
    else:
        corpus = prepare_corpus(spec["text"], cache_dir=Path(spec["cache"]), split=tuple(spec["split"]))
        # as `rnnlens train` would run: checkpoint_every back to rnnlens's own default
        tcfg = bu.train_config(data=spec["text"], split=tuple(spec["split"]), batch_size=batch, seq_len=seq,
                               optimizer="adam", lr=2e-3, max_steps=steps, checkpoint_every=None, device="cpu")
        run_dir = Path(spec["run_dir"])
        if spec["mode"] == "ours":
            trainer = Trainer.start(run_dir, mcfg, tcfg, force=True, progress=False, corpus=corpus,
                                    log=lambda m: None)
            out["setup_peak_mb"] = rss_mb()[0]
            trainer.run()
        else:  # ours-loop
            harness = bu.TrainerHarness(run_dir, corpus, mcfg, tcfg)
            out["setup_peak_mb"] = rss_mb()[0]
            harness.steps(steps)
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"], out["end_mb"] = rss_mb()
    out.update(rss_parts_mb())
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"worker {spec['mode']} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {spec['mode']:<9} {spec['label']:<34} peak {out['peak_mb']:7.0f} MB (after setup "
          f"{out.get('setup_peak_mb', float('nan')):.0f}, at end {out['end_mb']:.0f}; ru_maxrss "
          f"{out['ru_maxrss_mb']:.0f}), {out['seconds']:.0f} s", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2x256 batch 50, 5 steps; 2 MB vs 20 MB corpora")
    ap.add_argument("--steps", type=int, help="training steps per run (default 20, quick 5)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per worker (the table shows the median)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    steps = args.steps or (5 if args.quick else 20)
    big = dict(cell="lstm", layers=2, size=256, batch=50) if args.quick else dict(cell="lstm", layers=3, size=512,
                                                                                   batch=100)
    sizes = (2_000_000, 20_000_000) if args.quick else (10_000_000, 100_000_000)

    bu.print_header("bench_memory: peak RSS of training" + (" (quick)" if args.quick else ""))
    peak0 = bu.sgemm_probe("before")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        tmp = Path(tmp)
        from rnnlens.corpus import prepare_corpus
        small = bu.write_generated_text(tmp / "text-1m.txt", 1_000_000)
        split_small = (0.9, 0.05, 0.05)
        prepare_corpus(small, cache_dir=tmp / "cache", split=split_small)
        common = dict(seq=100, steps=steps, cache=str(tmp / "cache"), threads=args.threads)

        def run(mode, label, **kw):
            outs = [measure({**common, **kw, "mode": mode, "label": label, "run_dir": str(tmp / f"run-{mode}")})
                    for _ in range(args.repeats)]
            return {k: bu.median([o[k] for o in outs]) for k in outs[0]}

        shape = f"{big['layers']}x{big['size']} LSTM, batch {big['batch']}, seq 100, {steps} steps"
        print(f"part 1: {shape}", flush=True)
        part1 = {}
        for mode in ("baseline", "bare", "ours", "ours-loop"):
            part1[mode] = run(mode, shape, text=str(small), split=split_small, **big)

        print("part 2: corpus size (2x128 LSTM, batch 50)", flush=True)
        part2 = {}
        for n in sizes:
            path = bu.write_generated_text(tmp / f"text-{n}.txt", n, seed=1)
            val = 50_000 / n
            split = (round(1 - val, 6), round(val, 6), 0.0)
            prepare_corpus(path, cache_dir=tmp / "cache", split=split)
            part2[n] = run("ours", f"{n / 1e6:g} MB corpus", text=str(path), split=split, cell="lstm", layers=2,
                           size=128, batch=50)
            path.unlink()
    peak1 = bu.sgemm_probe("after")

    bare = part1["bare"]["peak_mb"]
    print(f"\nsgemm probe {peak0:.0f} before / {peak1:.0f} after GFLOP/s; {time.perf_counter() - t_start:.0f} s\n")
    names = {"baseline": "import torch + rnnlens, build the model", "bare": "bare PyTorch loop",
             "ours": "rnnlens Trainer.start + run (full)", "ours-loop": "rnnlens Trainer loop only"}
    rows = [[names[m], f"{r['peak_mb']:.0f}", f"{r.get('setup_peak_mb', r['peak_mb']):.0f}",
             f"{r['peak_mb'] / bare:.2f}", f"{r['seconds']:.0f}"] for m, r in part1.items()]
    print(f"Part 1: {shape}\n")
    print(bu.markdown_table(["run", "peak RSS MB", "peak after setup MB", "x bare", "seconds"], rows))
    rows = [[f"{n / 1e6:g} MB", f"{r['peak_mb']:.0f}", f"{r['end_mb']:.0f}", f"{r['anon_mb']:.0f}",
             f"{r['file_mb']:.0f}"] for n, r in part2.items()]
    a, b = (part2[n]["peak_mb"] for n in sizes)
    print(f"\nPart 2: rnnlens Trainer (full), 2x128 LSTM, batch 50, seq 100, {steps} steps\n")
    print(bu.markdown_table(["corpus", "peak RSS MB", "RSS at end MB", "of which anonymous", "of which mapped file"],
                            rows))
    da = part2[sizes[1]]["anon_mb"] - part2[sizes[0]]["anon_mb"]
    print(f"\nours / bare = {part1['ours']['peak_mb'] / bare:.2f} (goal <= 1.1); "
          f"{sizes[1] / 1e6:g} MB corpus - {sizes[0] / 1e6:g} MB corpus = {b - a:+.0f} MB peak, {da:+.0f} MB anonymous "
          "(goal ~0). Mapped-file RSS is clean page cache of the memory-mapped corpus (reclaimable); the kernel "
          "maps it in large chunks around each of the B read positions, so it grows with batch and steps taken.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
