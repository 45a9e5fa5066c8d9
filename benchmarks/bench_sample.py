"""Sampling speed at batch 1: rnnlens.sample.generate against the obvious ways to do it in torch.

All methods sample from the same model (random weights, vocabulary 65), one character at a time,
under torch.no_grad, with softmax + torch.multinomial at temperature 1:

  ours      rnnlens.sample.generate as shipped (its fast step: the first layer's input projection
            looked up per character, one fused [W_ih|W_hh] matrix-vector product per layer into
            preallocated buffers, float16 weights at batch 1, one thread for the step)
  ours f32  the same with precision='float32' (float32 weights)
  ours+iv   the same as `ours`, with interventions (two units clamped in the last layer's cell, one
            gate scaled), applied inside every step
  rows=N    N samples at once (one batched step per character), chars/s counted over all N
  nn.LSTM   the model's own fused module called once per character (seq length 1), then the head
  cells     nn.LSTMCell / nn.GRUCell / nn.RNNCell per layer, weights copied from the model, at
            torch's thread setting; `cells 1t` the same on one thread

At batch 1 each character reads all weights once (13 MB for a 2x512 LSTM), so sampling is bound
by memory bandwidth; the table shows that bound (torch.sum read bandwidth / weight bytes).

Interleaved repeats of about --seconds each, medians. A check first: with argmax decoding, ours
and the nn.LSTM loop must produce the same characters (same weights, same cells).

    python benchmarks/bench_sample.py            # full, ~2 min
    python benchmarks/bench_sample.py --quick    # < 1 min
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import benchutil as bu
import torch
import torch.nn as nn

VOCAB = 65
FULL = ["lstm:2x512", "lstm:1x128", "gru:2x512"]
QUICK = ["lstm:2x512", "lstm:1x128"]


def build(cell: str, layers: int, size: int, device):
    from rnnlens.model import CharRNN
    torch.manual_seed(0)
    # init 'torch' (U(+-1/sqrt(H))) rather than +-0.08: with random weights it keeps the samples varied
    return CharRNN(bu.model_config(VOCAB, cell, layers, size, init="torch")).to(device).eval()


def draw(logits, gen):
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=gen)[:, 0]


@torch.no_grad()
def ours(model, n: int, gen_seed: int = 0, argmax: bool = False, precision: str = "auto",
         interventions=None) -> list[int]:
    from rnnlens.sample import SamplingOptions, generate
    prime = torch.tensor([0])
    return list(generate(model, prime, n, SamplingOptions(argmax=argmax, precision=precision), seed=gen_seed,
                         interventions=interventions))


def ours_rows(model, n: int, rows: int) -> int:
    from rnnlens.sample import SamplingOptions, generate_rows
    for _ in generate_rows(model, torch.tensor([0]), n, SamplingOptions(), seed=0, rows=rows):
        pass
    return n


def steering(model):
    from rnnlens.interventions import Clamp, Scale
    last = model.cfg.layers - 1
    what = "cell" if model.cfg.cell == "lstm" else "hidden"
    gate = {"lstm": "gate.forget", "gru": "gate.update", "rnn": "hidden"}[model.cfg.cell]
    size = model.cfg.size
    return [Clamp(f"layer{last}.{what}", [3 % size, 42 % size], 0.9), Scale(f"layer0.{gate}", [7 % size], 0.5)]


def one_thread(fn):
    def run(n):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(n)
        finally:
            torch.set_num_threads(before)
    return run


@torch.no_grad()
def fused_loop(model, n: int, argmax: bool = False) -> list[int]:
    """nn.LSTM/GRU/RNN called on one character at a time, carrying its state."""
    device = model.head.weight.device
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    state, out = None, []
    for _ in range(n + 1):
        h, state = model.rnn(model.inputs(ids), state)       # h [1, 1, H]
        logits = model.head(h[:, -1])                        # [1, V]
        nxt = logits.argmax(-1) if argmax else draw(logits, gen)
        out.append(int(nxt[0]))
        ids = nxt[:, None]
    return out[:n]


# torch 2.x warns about Intel-GPU TF32 every time the oneDNN flags are switched; it says nothing about this run
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


class CellStack:
    """nn.LSTMCell (or GRUCell / RNNCell) per layer, sharing the model's weights by copy."""

    def __init__(self, model):
        cfg = model.cfg
        cls = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[cfg.cell]
        self.model, self.cell = model, cfg.cell
        self.cells = []
        for l in range(cfg.layers):
            c = cls(cfg.input_size if l == 0 else cfg.size, cfg.size).to(model.head.weight.device).eval()
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(c, name).copy_(getattr(model.rnn, f"{name}_l{l}"))
            self.cells.append(c)

    @torch.no_grad()
    def run(self, n: int) -> list[int]:
        device = self.model.head.weight.device
        gen = torch.Generator(device=device).manual_seed(0)
        ids = torch.zeros(1, dtype=torch.long, device=device)
        state = [None] * len(self.cells)
        out = []
        for _ in range(n + 1):
            x = self.model.inputs(ids[None, :])[0]  # [1, I]
            for l, c in enumerate(self.cells):
                state[l] = c(x, state[l])
                x = state[l][0] if self.cell == "lstm" else state[l]
            nxt = draw(self.model.head(x), gen)
            out.append(int(nxt[0]))
            ids = nxt
        return out[:n]


def read_bandwidth() -> float:
    """GB/s of torch.sum over a 256 MB float32 tensor (best of 5): what streaming the weights can reach."""
    a = torch.ones(64 * 1024 * 1024)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        a.sum()
        best = max(best, a.numel() * 4 / (time.perf_counter() - t0) / 1e9)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", nargs="+", help="CELL:LAYERSxSIZE, e.g. lstm:2x512")
    ap.add_argument("--seconds", type=float, help="target length of one timed segment (default 1.5, quick 0.6)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats (default 5, quick 3)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rows", type=int, default=16, help="samples at once for the batched column (default 16)")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (0.6 if args.quick else 1.5)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    bu.print_header("bench_sample: sampling chars/s at batch 1" + (" (quick)" if args.quick else ""))
    peak0 = bu.sgemm_probe("before")
    bw = read_bandwidth() if device.type == "cpu" else float("nan")
    print(f"memory read bandwidth: {bw:.1f} GB/s (torch.sum over 256 MB)", flush=True)
    t_start = time.perf_counter()
    rows = []
    for spec in args.configs or (QUICK if args.quick else FULL):
        cell, shape = spec.split(":")
        layers, size = (int(v) for v in shape.split("x"))
        model = build(cell, layers, size, device)
        b = fused_loop(model, 64, argmax=True)
        checks = []
        for precision in ("auto", "float32"):
            same = sum(x == y for x, y in zip(ours(model, 64, argmax=True, precision=precision), b))
            checks.append(f"{precision} {same}/64")
            if same < 60:
                print(f"  WARNING: the {precision} step path disagrees with the fused module", flush=True)
        print(f"{spec}: argmax check, ours vs nn.{cell.upper()} loop, characters equal: {', '.join(checks)}", flush=True)
        cells = CellStack(model)
        iv = steering(model)
        methods = {"ours": lambda n: ours(model, n), "ours_f32": lambda n: ours(model, n, precision="float32"),
                   "ours_iv": lambda n: ours(model, n, interventions=iv),
                   "rows": lambda n: ours_rows(model, n, args.rows),
                   "fused": lambda n: fused_loop(model, n),
                   "cells": cells.run, "cells_1t": one_thread(cells.run)}
        sizes = {}
        for name, fn in methods.items():  # warm up, then size each method's segment to ~args.seconds
            fn(20)
            t0 = time.perf_counter()
            fn(50)
            sync()
            sizes[name] = max(20, round(args.seconds * 50 / (time.perf_counter() - t0)))

        def timed(name):
            def run():
                t0 = time.perf_counter()
                methods[name](sizes[name])
                sync()
                chars = sizes[name] * (args.rows if name == "rows" else 1)
                return chars / (time.perf_counter() - t0)
            return run

        res = bu.interleave({k: timed(k) for k in methods}, args.repeats)
        med = {k: bu.median(v) for k, v in res.items()}

        def ratio(a, b):  # the median of per-repeat ratios: both measured within seconds of each other
            return bu.median([x / y for x, y in zip(res[a], res[b])])
        mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
        print(f"  ours {med['ours']:.0f}, f32 {med['ours_f32']:.0f}, with interventions {med['ours_iv']:.0f}, "
              f"rows={args.rows} {med['rows']:.0f}, nn.{cell.upper()} {med['fused']:.0f}, cells {med['cells']:.0f}, "
              f"cells 1 thread {med['cells_1t']:.0f} chars/s", flush=True)
        rows.append([f"{cell.upper()} {layers}x{size}", f"{mb:.1f}", f"{med['ours']:.0f}", f"{med['ours_f32']:.0f}",
                     f"{med['ours_iv']:.0f}", f"{med['cells']:.0f}", f"{med['cells_1t']:.0f}",
                     f"{ratio('ours', 'cells'):.1f}x", f"{ratio('ours', 'cells_1t'):.1f}x",
                     f"{ratio('ours_iv', 'cells'):.1f}x", f"{ratio('ours_iv', 'cells_1t'):.1f}x",
                     f"{ratio('ours_f32', 'cells_1t'):.1f}x", f"{med['fused']:.0f}", f"{ratio('ours', 'fused'):.1f}x",
                     f"{med['rows']:.0f}", f"{bw * 1e3 / mb:.0f}", bu.spread(res["ours"])])
    peak1 = bu.sgemm_probe("after")
    print(f"\nbatch 1, temperature 1, device {args.device}; sgemm probe {peak0:.0f} before / {peak1:.0f} after "
          f"GFLOP/s; {time.perf_counter() - t_start:.0f} s\n")
    print(bu.markdown_table(["model", "weights MB", "ours chars/s", "ours f32", "ours + interventions",
                             "nn.*Cell stack", "cells 1 thread", "ours/cells", "ours/cells 1t", "ours+iv/cells",
                             "ours+iv/cells 1t", "f32/cells 1t", "nn.LSTM/GRU per char", "ours/that",
                             f"rows={args.rows} chars/s (all rows)", "bandwidth bound", "ours spread"], rows))
    print("\nbandwidth bound: chars/s if every character only streamed all weights once from memory at the "
          "measured read bandwidth (the weights of the wide models do not fit in cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
