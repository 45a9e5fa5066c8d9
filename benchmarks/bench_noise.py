"""The gradient noise scale of a short default run, text by text: can it choose the batch before the run does?

At 60 s the C headers want batch 24 and the prose and man pages 16 (docs/benchmarks.md, section 5). The
noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training")
is the batch above which an update's noise stops mattering; a text whose noise scale is higher should want the
larger batch. This script trains the 1x384 LSTM a 60 s run takes (dropout 0, Adam 4e-3, gradients clipped at
norm 5, batch 16 of random windows of 100 characters) and at the given steps measures B_simple from one batch
of `--big` windows and its `--big / --small` parts: |G|^2 and tr(Sigma) from the mean squared norm of the
parts' gradients and that of the whole, averaged over `--repeats` such batches before the ratio is taken.

    python benchmarks/bench_noise.py --texts cheaders,warandpeace,manpages,pystdlib,shakespeare --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # noqa: E402  (the texts, built as the quality benchmark builds them)

from rnnlens.model import CharRNN, ModelConfig  # noqa: E402

SEQ = 100


def squared_norms(model, x, y, small: int) -> tuple[float, float]:
    """(mean |g|^2 over the parts of `small` windows, |g|^2 of the whole batch) for windows x -> targets y."""
    params = [p for p in model.parameters() if p.requires_grad]
    parts = []  # each part's gradient, flattened
    for i in range(0, len(x), small):
        model.zero_grad()
        logits, _ = model(x[i:i + small], None)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + small].reshape(-1)).backward()
        parts.append(torch.cat([p.grad.reshape(-1) for p in params]).clone())
    whole = torch.stack(parts).mean(0)
    return float(torch.stack([g.pow(2).sum() for g in parts]).mean()), float(whole.pow(2).sum())


def noise_scale(model, windows, small: int, big: int, repeats: int) -> tuple[float, float, float]:
    """(B_simple in windows, |G|^2, tr(Sigma)) from `repeats` batches of `big` windows drawn by `windows(n)`."""
    g2_sum = trace_sum = 0.0
    for _ in range(repeats):
        x, y = windows(big)
        part, whole = squared_norms(model, x, y, small)
        g2_sum += (big * whole - small * part) / (big - small)  # unbiased |G|^2
        trace_sum += (part - whole) / (1 / small - 1 / big)    # unbiased tr(Sigma), per window
    return trace_sum / g2_sum, g2_sum / repeats, trace_sum / repeats


def measure(path: str, seed: int, steps: list[int], batch: int, small: int, big: int, repeats: int) -> list[tuple]:
    ids, chars, cut = bench_quality.load_text(path)
    train = torch.from_numpy(ids[:cut])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def windows(n: int):
        starts = torch.randint(len(train) - SEQ - 1, (n,), generator=gen)
        w = torch.stack([train[s:s + SEQ + 1] for s in starts.tolist()])
        return w[:, :-1], w[:, 1:]

    model = CharRNN(ModelConfig(vocab_size=len(chars), size=384, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    rows = []  # (step, B_simple, |G|^2, tr(Sigma))
    for step in range(max(steps) + 1):
        if step in steps:
            rows.append((step, *noise_scale(model, windows, small, big, repeats)))
        if step == max(steps):
            break
        x, y = windows(batch)
        model.zero_grad()
        logits, _ = model(x, None)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", default="cheaders,warandpeace,manpages,pystdlib,shakespeare")
    p.add_argument("--seeds", default="1")
    p.add_argument("--steps", default="10,20,30,50,100", help="steps of training at which to measure")
    p.add_argument("--max-chars", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--small", type=int, default=8)
    p.add_argument("--big", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny Shakespeare, seed 1, steps 0 and 5, 2 x 32 windows: "
                   "checks that the script works")
    a = p.parse_args(argv)
    if a.quick:
        a.texts, a.seeds, a.steps, a.big, a.repeats = "shakespeare", "1", "0,5", 32, 2
    torch.set_num_threads(a.threads)
    steps = [int(s) for s in a.steps.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-noise-"))
    print(f"B_simple in windows of {SEQ} characters (from {a.repeats} x {a.big} windows in parts of {a.small}), "
          f"at steps {a.steps} of batch {a.batch}")
    print("| text | seed | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for name in a.texts.split(","):
        path, _, _ = bench_quality.build_text(name, a.max_chars, folder)
        for seed in (int(s) for s in a.seeds.split(",")):
            t0 = time.perf_counter()
            rows = measure(path, seed, steps, a.batch, a.small, a.big, a.repeats)
            print(f"| {name} | {seed} | " + " | ".join(f"{b:.0f}" for _, b, _, _ in rows) + " |", flush=True)
            print(f"  {name} seed {seed}: |G|^2 " + " ".join(f"{g:.3g}" for _, _, g, _ in rows) + "; tr(Sigma) "
                  + " ".join(f"{t:.3g}" for _, _, _, t in rows) + f" ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
