"""GPU path: are cuDNN kernels used, how close is rnnlens's Trainer to a bare cuDNN loop (goal >= 0.95x),
what do bf16 autocast and torch.compile give, and how long does one full paper grid cell take.

Parts (each prints a markdown table):
  1. kernels   one training step of the Trainer under torch.profiler: the aten::_cudnn_rnn ops and
               the top CUDA kernels; the dtype nn.LSTM computes in under --bf16 autocast
  2. speed     rnnlens Trainer loop (benchutil.TrainerHarness: the real Trainer.run with validation,
               checkpoints and the plot off; window read with pread, pinned host memory, non_blocking
               copy, one sync per step) against bench_train's bare loop (embedding -> cuDNN nn.LSTM ->
               linear, Adam, clip 5, windows sliced from one tensor already on the GPU, loss.item() per
               step), interleaved repeats, medians; fp32, bf16 autocast and torch.compile (ours
               only: the bare loop is never compiled)
  3. grid      one cell of the paper's grid trained end to end as `rnnlens train` runs it: LSTM 3x512,
               RMSProp lr 2e-3 alpha 0.95, batch 100, seq 100, lr x0.95 per epoch after 10, 50 epochs,
               on a War-and-Peace-sized text (3,258,246 characters, 80/10/10; --data for a real one),
               validation every epoch and checkpoints included

On a machine where torch sees no CUDA GPU it prints why and exits with status 0.

    python benchmarks/bench_gpu.py                    # all parts, ~10 min on one H100
    python benchmarks/bench_gpu.py --parts speed      # throughput only
    python benchmarks/bench_gpu.py --grid-epochs 5    # a shorter grid cell
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import torch

WAR_AND_PEACE_CHARS = 3_258_246
SPEED = ["lstm:2x512:100", "lstm:3x512:100", "lstm:2x1024:128", "gru:2x512:100"]


def no_gpu_message() -> str | None:
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"bench_gpu: torch {torch.__version__} ({build}) sees no CUDA GPU, so there is nothing to measure; "
            "run this script on a machine with an NVIDIA GPU and a CUDA build of torch")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def part_kernels(corpus, text, tmp: Path, device: str) -> None:
    from torch.profiler import ProfilerActivity, profile
    print("\n## 1. kernels\n")
    print(f"cuDNN available {torch.backends.cudnn.is_available()}, enabled {torch.backends.cudnn.enabled}, "
          f"version {torch.backends.cudnn.version()}")
    h = bu.TrainerHarness(tmp / "kernels", corpus, bu.model_config(len(corpus.vocab), "lstm", 2, 512),
                          bu.train_config(data=str(text), batch_size=100, seq_len=100, device=device))
    h.steps(3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        h.steps(2)
        sync(device)
    events = prof.key_averages()
    ops = {e.key: e.count for e in events if "rnn" in e.key.lower() and e.key.startswith("aten::")}
    print("aten RNN ops in 2 steps:", ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())) or "none")
    print("cuDNN RNN used:", "yes" if any("_cudnn_rnn" in k for k in ops) else "NO: check torch.backends.cudnn")
    kernels = sorted((e for e in events if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0)),
                     key=lambda e: -getattr(e, "self_device_time_total", 0))[:8]
    rows = [[e.key[:70], e.count, f"{getattr(e, 'self_device_time_total', 0) / 1e3:.1f}"] for e in kernels]
    print(bu.markdown_table(["top CUDA kernels / ops", "calls", "self GPU ms"], rows))
    lstm = h.trainer.model.rnn
    seen = {}
    hook = lstm.register_forward_hook(lambda m, i, o: seen.update(dtype=o[0].dtype))
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            h.trainer.model(torch.zeros(4, 10, dtype=torch.long, device=device))
        print(f"nn.LSTM output dtype under bf16 autocast: {seen.get('dtype')}")
    except RuntimeError as e:  # e.g. oneDNN on a CPU without bf16 instructions
        print(f"nn.LSTM under bf16 autocast failed: {str(e).splitlines()[0]}")
    hook.remove()


class GpuBareLoop:
    """bench_train.BareLoop with optional bf16 autocast."""

    def __init__(self, ids, cell, layers, size, batch, seq, bf16, device):
        from bench_train import BareLoop
        self.loop = BareLoop(ids, cell, layers, size, batch, seq, torch.device(device))
        self.bf16, self.device = bf16, device

    def steps(self, n: int) -> float:
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(n):
                self.loop.step()  # ends in loss.item(): one sync per step, as ours
            sync(self.device)
            return time.perf_counter() - t0


def part_speed(corpus, text, train_ids, tmp: Path, args) -> list:
    from bench_train import LR, parse_config
    print("\n## 2. speed: rnnlens Trainer vs bare cuDNN loop\n", flush=True)
    rows = []
    if args.device == "cuda":
        variants = [("fp32", False, False), ("bf16", True, False)] + ([("bf16+compile", True, True)] if args.compile else [])
    else:  # the CPU dry run: oneDNN's LSTM has no bf16 on most CPUs
        variants = [("fp32", False, False)] + ([("fp32+compile", False, True)] if args.compile else [])
    for spec in args.configs:
        cell, layers, size, batch = parse_config(spec)
        for name, bf16, compile_ in variants:
            torch.manual_seed(0)
            ours = bu.TrainerHarness(tmp / f"speed-{spec.replace(':', '-')}-{name}", corpus,
                                     bu.model_config(len(corpus.vocab), cell, layers, size),
                                     bu.train_config(data=str(text), batch_size=batch, seq_len=100, lr=LR,
                                                     device=args.device, bf16=bf16, compile=compile_))
            bare = GpuBareLoop(train_ids, cell, layers, size, batch, 100, bf16, args.device)
            ours.steps(args.warmup)  # cuDNN plans, allocator, compilation
            bare.steps(args.warmup)
            chars = batch * 100
            res = bu.interleave({"ours": lambda: args.steps * chars / ours.steps(args.steps)[0],
                                 "bare": lambda: args.steps * chars / bare.steps(args.steps)}, args.repeats)
            o, b = bu.median(res["ours"]), bu.median(res["bare"])
            rows.append([f"{cell.upper()} {layers}x{size}", batch, name, bu.fmt_rate(b), bu.fmt_rate(o), f"{o / b:.2f}",
                         "yes" if o / b >= 0.95 else "no"])
            print("| " + " | ".join(map(str, rows[-1])) + " |", flush=True)
    print()
    print(bu.markdown_table(["model", "batch", "precision", "bare cuDNN chars/s", "rnnlens chars/s",
                             "ratio", ">= 0.95"], rows))
    return rows


def part_grid(text, tmp: Path, args) -> None:
    import json

    import rnnlens
    shape = f"{args.grid_layers}x{args.grid_size}"
    print(f"\n## 3. grid cell: LSTM {shape}, paper settings, {args.grid_epochs:g} epochs\n", flush=True)
    run = tmp / "grid"
    t0 = time.perf_counter()
    rnnlens.train(data=str(text), out=run, model="lstm", layers=args.grid_layers, size=args.grid_size, dropout=args.grid_dropout,
                  split=(0.8, 0.1, 0.1), batch_size=100, seq_len=100, optimizer="rmsprop", lr=2e-3,
                  rmsprop_alpha=0.95, lr_schedule="step", lr_decay=0.95, lr_decay_after=10,
                  max_epochs=args.grid_epochs, eval_every=0, device=args.device, bf16=args.grid_bf16, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_loss" in r]
    last = vals[-1]
    train_chars = rows[-1]["step"] * 100 * 100
    print(bu.markdown_table(
        ["cell", "epochs", "steps", "wall s (all in)", "training s", "chars/s (training)", "best val nats/char",
         "bits/char"],
        [[f"LSTM {shape} b100 s100" + (" bf16" if args.grid_bf16 else ""), f"{args.grid_epochs:g}", last["step"],
          f"{wall:.0f}", f"{last['elapsed_s']:.0f}", bu.fmt_rate(train_chars / last["elapsed_s"]),
          f"{min(v['val_loss'] for v in vals):.4f}", f"{min(v['val_bpc'] for v in vals):.3f}"]]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["kernels", "speed", "grid"], choices=["kernels", "speed", "grid"])
    ap.add_argument("--configs", nargs="+", default=SPEED, help="CELL:LAYERSxSIZE:BATCH for the speed part")
    ap.add_argument("--steps", type=int, default=50, help="steps per timed segment")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time torch.compile (default on; compilation is in the warm-up)")
    ap.add_argument("--data", help="a text file for the grid cell (default: generated, War and Peace's size)")
    ap.add_argument("--grid-epochs", type=float, default=50)
    ap.add_argument("--grid-dropout", type=float, default=0.0)
    ap.add_argument("--grid-bf16", action="store_true")
    ap.add_argument("--grid-layers", type=int, default=3)
    ap.add_argument("--grid-size", type=int, default=512)
    ap.add_argument("--text-chars", type=int, default=20_000_000, help="generated text for parts 1-2")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a dry run of this script's own code on small settings (no figures worth reading)")
    args = ap.parse_args(argv)
    msg = no_gpu_message() if args.device == "cuda" else None
    if msg:
        print(msg)
        return 0
    bu.print_header("bench_gpu: cuDNN kernels, Trainer vs bare cuDNN loop, a paper grid cell")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    from rnnlens.corpus import prepare_corpus
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-gpu-") as tmp:
        tmp = Path(tmp)
        text = bu.write_generated_text(tmp / "text.txt", args.text_chars)
        corpus = prepare_corpus(text, cache_dir=tmp / "cache", split=(0.99, 0.01, 0.0))
        if "kernels" in args.parts:
            part_kernels(corpus, text, tmp, args.device)
        if "speed" in args.parts:
            train_ids = corpus.split("train")[:]
            part_speed(corpus, text, train_ids, tmp, args)
        if "grid" in args.parts:
            grid_text = Path(args.data) if args.data else bu.write_generated_text(tmp / "wp.txt", WAR_AND_PEACE_CHARS)
            part_grid(grid_text, tmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
