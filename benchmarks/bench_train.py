"""Training throughput: rnnlens's Trainer loop against a bare PyTorch loop, side by side.

What is timed
-------------
ours: `Trainer.run` itself, N steps at a time (benchutil.TrainerHarness), with validation,
      checkpoint writes and the loss plot switched off. So the figure includes everything the
      real loop does per step: the lr schedule, the window fetch from the memory-mapped corpus
      (numpy fancy indexing -> int64 tensor), train_step (forward, loss, backward, clip, Adam),
      the finite-loss checks and the metrics.jsonl line every 10 steps. The column "ours,
      step only" is the part spent inside train_step (Trainer's own `elapsed`), to show what
      the rest of the loop costs.
bare: nn.Embedding(65, 64) -> nn.LSTM/GRU/RNN(batch_first) -> nn.Linear, the same B, T,
      optimizer (Adam, lr 2e-3), clip_grad_norm_(5), carried detached state, windows sliced
      from one int64 tensor of B streams, loss.item() every step (as any loop that logs).

Both run in this process on the same generated text (65 symbols, the vocabulary size of tiny
Shakespeare), in interleaved repeats of about --seconds each (the order rotates every repeat),
after a warm-up; the table shows medians. GFLOP/s counts matmul FLOPs only: per character and
layer 2*G*H*(I+H) (G = 4/3/1 gates) plus the head 2*H*V, times 3 for forward + backward.
The peak is the better of two sgemm probes (numpy float32 2048^3), before and after.

    python benchmarks/bench_train.py            # full: 12 configs, ~5 min on 2 cores
    python benchmarks/bench_train.py --quick    # 2 configs, < 1 min
    python benchmarks/bench_train.py --configs lstm:2x512:50 --device cuda
    python benchmarks/bench_train.py --deterministic-cost --configs lstm:2x128:32 gru:2x256:16

--deterministic-cost times the cost of reproducible training (issue #17): the same Trainer loop in
two child processes started alternately, one with rnnlens's defaults (MKL_CBWR=AUTO,STRICT,
MKL_DYNAMIC=FALSE, --deterministic) and one as before (MKL_CBWR unset, MKL_DYNAMIC=TRUE,
--no-deterministic). The variables are read when torch loads, so this cannot run in one process;
the ratio is taken per repeat between neighbouring children, and its median printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FULL = ["lstm:1x128:50", "lstm:1x128:100", "lstm:2x128:50", "lstm:2x128:100", "lstm:2x256:50",
        "lstm:2x256:100", "lstm:2x512:50", "lstm:2x512:100", "lstm:3x512:50", "lstm:3x512:100",
        "gru:2x256:50", "rnn:2x256:50"]
QUICK = ["lstm:1x128:50", "lstm:2x256:50"]
VOCAB, EMBED, LR, CLIP = 65, 64, 2e-3, 5.0


def parse_config(text: str) -> tuple[str, int, int, int]:
    """'lstm:2x512:50' -> ('lstm', 2, 512, 50)."""
    try:
        cell, shape, batch = text.split(":")
        layers, size = shape.lower().split("x")
        assert cell in ("lstm", "gru", "rnn")
        return cell, int(layers), int(size), int(batch)
    except (ValueError, AssertionError):
        raise SystemExit(f"--configs: expected CELL:LAYERSxSIZE:BATCH like lstm:2x512:50, got {text!r}")


class BareModel(nn.Module):
    def __init__(self, cell: str, layers: int, size: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](EMBED, size, num_layers=layers,
                                                                          batch_first=True)
        self.head = nn.Linear(size, VOCAB)
        for p in self.parameters():  # the same init as ours (uniform +-0.08), so the numbers are alike
            nn.init.uniform_(p, -0.08, 0.08)

    def forward(self, x, state):
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state


class BareLoop:
    """The loop a PyTorch user writes: B streams in one tensor, windows of T, state carried."""

    def __init__(self, ids: np.ndarray, cell, layers, size, batch, seq, device):
        self.device = device
        n = (len(ids) - 1) // batch
        self.streams = torch.from_numpy(ids[: batch * n + 1].astype(np.int64))  # [B*n + 1]
        self.x_all = self.streams[:-1].view(batch, n).to(device)
        self.y_all = self.streams[1:][: batch * n].view(batch, n).to(device)
        self.windows = n // seq
        self.seq = seq
        self.k = 0
        self.state = None
        self.model = BareModel(cell, layers, size).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)

    def step(self):
        T, k = self.seq, self.k
        x = self.x_all[:, k * T:(k + 1) * T]
        y = self.y_all[:, k * T:(k + 1) * T]
        logits, state = self.model(x, self.state)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        self.k = (k + 1) % self.windows
        if self.k == 0:
            self.state = None
        return loss.item()

    def steps(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        return time.perf_counter() - t0


def bench_config(spec, args, corpus, train_ids, workdir: Path):
    cell, layers, size, batch = spec
    seq = args.seq_len
    chars = batch * seq
    torch.manual_seed(0)
    ours = bu.TrainerHarness(
        workdir / f"run-{cell}-{layers}x{size}-{batch}", corpus,
        bu.model_config(VOCAB, cell, layers, size, embedding_size=EMBED),
        bu.train_config(data=str(args.text), batch_size=batch, seq_len=seq, optimizer="adam", lr=LR,
                        grad_clip=CLIP, device=args.device))
    bare = BareLoop(train_ids, cell, layers, size, batch, seq, torch.device(ours.trainer.device))

    # warm-up (oneDNN primitive creation, allocator, optimizer state), then size the segments
    ours.steps(args.warmup)
    bare.steps(args.warmup)
    t_step = min(ours.steps(1)[0], bare.steps(1))
    n = max(args.min_steps, round(args.seconds / max(t_step, 1e-6)))

    def run_ours():
        wall, inside = ours.steps(n)
        return n * chars / wall, n * chars / inside

    def run_bare():
        return n * chars / bare.steps(n)

    res = bu.interleave({"ours": run_ours, "bare": run_bare}, args.repeats)
    ours_loop = [r[0] for r in res["ours"]]
    ours_step = [r[1] for r in res["ours"]]
    bare_rate = res["bare"]
    # the ratio per repeat (neighbours in time share the machine's state), then its median
    ratios = [o / b for o, b in zip(ours_loop, bare_rate)]
    return {"ours": bu.median(ours_loop), "ours_step": bu.median(ours_step), "bare": bu.median(bare_rate),
            "ratio": bu.median(ratios), "steps": n, "noise": bu.spread(ours_loop + bare_rate)}


_CHILD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import benchutil as bu
import rnnlens, torch
from rnnlens.corpus import prepare_corpus
from pathlib import Path
cell, layers, size, batch, seq, steps, det, tmp = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), \
    int(sys.argv[6]), int(sys.argv[7]), sys.argv[8] == "1", Path(sys.argv[9])
corpus = prepare_corpus(tmp / "text.txt", cache_dir=tmp / "cache", split=(0.98, 0.02, 0.0))
h = bu.TrainerHarness(tmp / f"run-{det}", corpus, bu.model_config(len(corpus.vocab), cell, layers, size),
                      bu.train_config(data=str(tmp / "text.txt"), batch_size=batch, seq_len=seq, deterministic=det))
h.steps(3)
wall, inside = h.steps(steps)
print(json.dumps({"rate": steps * batch * seq / wall}))
"""


def deterministic_cost(args, configs) -> int:
    import json
    import os
    import subprocess
    bu.print_header("bench_train --deterministic-cost: reproducible (default) vs the old fast settings")
    peak0 = bu.sgemm_probe("before")
    here = str(Path(__file__).resolve().parent)
    base = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC")}
    envs = {"deterministic": base, "fast": {**base, "MKL_CBWR": "", "MKL_DYNAMIC": "TRUE"}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        bu.write_generated_text(Path(tmp) / "text.txt", args.chars)
        for cell, layers, size, batch in configs:
            def child(kind, cell=cell, layers=layers, size=size, batch=batch):
                out = subprocess.run([sys.executable, "-c", _CHILD, here, cell, str(layers), str(size), str(batch),
                                      str(args.seq_len), str(args.steps), "1" if kind == "deterministic" else "0",
                                      tmp], env=envs[kind], capture_output=True, text=True, check=True)
                return json.loads(out.stdout.strip().splitlines()[-1])["rate"]
            res = bu.interleave({k: (lambda k=k: child(k)) for k in envs}, args.repeats)
            ratios = [d / f for d, f in zip(res["deterministic"], res["fast"])]
            r = bu.median(ratios)
            print(f"{cell} {layers}x{size} B{batch}: deterministic {bu.fmt_rate(bu.median(res['deterministic']))} "
                  f"chars/s, fast {bu.fmt_rate(bu.median(res['fast']))}, ratio {r:.3f} "
                  f"(per repeat {', '.join(f'{x:.3f}' for x in ratios)})", flush=True)
            rows.append([f"{cell.upper()} {layers}x{size}", batch, bu.fmt_rate(bu.median(res["deterministic"])),
                         bu.fmt_rate(bu.median(res["fast"])), f"{r:.3f}",
                         bu.spread(res["deterministic"] + res["fast"])])
    peak1 = bu.sgemm_probe("after")
    print(f"\nseq {args.seq_len}, {args.steps} timed steps per child after 3 warm-up steps, {args.repeats} repeats; "
          f"sgemm {peak0:.0f} / {peak1:.0f} GFLOP/s\n")
    print(bu.markdown_table(["model", "batch", "deterministic chars/s", "fast chars/s", "det/fast", "spread"], rows))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 small configs, short segments (< 1 min)")
    ap.add_argument("--configs", nargs="+", help="CELL:LAYERSxSIZE:BATCH, e.g. lstm:2x512:50")
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--seconds", type=float, help="target length of one timed segment (default 1.5, quick 0.8)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats per config (default 4, quick 3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side before timing")
    ap.add_argument("--min-steps", type=int, default=1, help="fewest steps in one timed segment")
    ap.add_argument("--chars", type=int, default=2_000_000, help="length of the generated training text")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--deterministic-cost", action="store_true",
                    help="time reproducible training against the old fast settings, in child processes")
    ap.add_argument("--steps", type=int, default=20, help="--deterministic-cost: timed steps per child")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (0.8 if args.quick else 1.5)
    args.repeats = args.repeats or (3 if args.quick else 4)
    configs = [parse_config(c) for c in (args.configs or (QUICK if args.quick else FULL))]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic_cost:
        return deterministic_cost(args, configs)

    from rnnlens.corpus import prepare_corpus

    bu.print_header("bench_train: rnnlens Trainer loop vs bare PyTorch loop" + (" (quick)" if args.quick else ""))
    peak0 = bu.sgemm_probe("before")
    t_start = time.perf_counter()
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        tmp = Path(tmp)
        args.text = bu.write_generated_text(tmp / "text.txt", args.chars)
        corpus = prepare_corpus(args.text, cache_dir=tmp / "cache", split=(0.98, 0.02, 0.0))
        assert len(corpus.vocab) == VOCAB
        train_ids = np.asarray(corpus.split("train"))
        for spec in configs:
            cell, layers, size, batch = spec
            r = bench_config(spec, args, corpus, train_ids, tmp)
            results.append((spec, r))
            print(f"{cell} {layers}x{size} B{batch}: ours {bu.fmt_rate(r['ours'])} chars/s "
                  f"(step only {bu.fmt_rate(r['ours_step'])}), bare {bu.fmt_rate(r['bare'])}, "
                  f"ratio {r['ratio']:.3f}  [{r['steps']} steps/segment, spread {r['noise']}]", flush=True)
    peak1 = bu.sgemm_probe("after")
    peak = max(peak0, peak1)
    for (cell, layers, size, batch), r in results:
        fl = 3 * bu.flops_per_char_forward(cell, layers, size, EMBED, VOCAB)
        g_ours, g_bare = r["ours"] * fl / 1e9, r["bare"] * fl / 1e9
        rows.append([f"{cell.upper()} {layers}x{size}", batch, bu.fmt_rate(r["ours"]), bu.fmt_rate(r["ours_step"]),
                     bu.fmt_rate(r["bare"]), f"{r['ratio']:.3f}" + ("" if r["ratio"] >= 0.95 else " (below 0.95)"),
                     f"{g_ours:.0f}", f"{100 * g_ours / peak:.0f}%", f"{100 * g_bare / peak:.0f}%", r["noise"]])
    print(f"\nseq {args.seq_len}, Adam, clip 5, device {args.device}; sgemm peak {peak0:.0f} before / {peak1:.0f} "
          f"after GFLOP/s (fractions use {peak:.0f}); {time.perf_counter() - t_start:.0f} s\n")
    print(bu.markdown_table(["model", "batch", "ours chars/s", "ours, step only", "bare chars/s", "ours/bare",
                             "ours GFLOP/s", "ours % peak", "bare % peak", "spread"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
