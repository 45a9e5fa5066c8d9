"""Tracing a long text: rnnlens's tracer against the plain fused forward pass and a per-step loop.

A 2x512 LSTM (vocabulary 65, torch's init) over N characters (default 1M) at batch 1, state
carried through the whole text. Three workers, each a fresh subprocess so that each peak RSS
(VmHWM) belongs to one of them:

  fused   the plain fused forward of the same text: nn.LSTM over chunks of 8192 characters with
          the state carried, then the head and a softmax, outputs thrown away. What a trace
          cannot beat: it has to run this too.
  trace   rnnlens's tracer (rnnlens.trace.trace_ids) writing a trace file to disk memory-mapped.
          Every gate, cell and hidden state of both layers is recomputed whatever is stored; by
          default it stores layer0.cell, layer1.cell, probs and loss as float16 (--store all keeps
          all 14 arrays: 12.4 GB at float16 for 1M characters).
  loop    the way it is done without a tracer: a Python loop over time steps with nn.LSTMCell per
          layer, the gates computed from the same step's [x, h] with the cell's weights (one extra
          matmul, since nn.LSTMCell does not return them) and every value written into arrays.
          It runs --loop-chars characters (default 20K) and is scaled to N per character.

Goals (issue 3): trace <= 3x fused, and >= 10x faster than the loop.

    python benchmarks/bench_trace.py                 # 1M characters, ~10 min on 2 cores
    python benchmarks/bench_trace.py --chars 100000  # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import numpy as np

VOCAB, LAYERS, SIZE, CHUNK = 65, 2, 512, 8192


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_model():
    import torch

    from rnnlens.model import CharRNN, ModelConfig
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=VOCAB, layers=LAYERS, size=SIZE, init="torch")).eval()


def worker(kind: str, n: int, store: str, out_dir: str) -> dict:
    import torch

    from rnnlens.trace import trace_ids
    model = build_model()
    ids = bu.generated_ids(n, seed=1).astype(np.int64)
    chars = [chr(32 + i) for i in range(VOCAB)]
    start_rss = peak_rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        if kind == "fused":
            ids_t, state = torch.from_numpy(ids), None
            for s in range(0, n, CHUNK):
                out, state = model.rnn(model.inputs(ids_t[None, s:s + CHUNK]), state)
                torch.softmax(model.head(out[0]), dim=-1)
        elif kind == "trace":
            names = None if store == "all" else ["layer0.cell", "layer1.cell", "probs", "loss"]
            path = Path(out_dir) / "bench.trace.safetensors"
            trace = trace_ids(model, ids, chars, names=names, float16=True, out=path, chunk=CHUNK)
            assert trace.max_recompute_error < 1e-4, trace.max_recompute_error
            size_gb = path.stat().st_size / 1e9
            path.unlink()
        else:
            loop_lstm_cells(model, ids)
    seconds = time.perf_counter() - t0
    result = {"kind": kind, "chars": n, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
              "rss_before_mb": start_rss}
    if kind == "trace":
        result["file_gb"] = size_gb
    return result


def loop_lstm_cells(model, ids: np.ndarray) -> None:
    """Per-step reference: nn.LSTMCell for (h, c), gates from the cell's weights, all kept."""
    import torch
    n, H = len(ids), SIZE
    cells = []
    for i in range(LAYERS):
        cell = torch.nn.LSTMCell(model.cfg.input_size if i == 0 else H, H)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, kind).data = getattr(model.rnn, f"{kind}_l{i}").data
        cells.append(cell)
    kept = {f"{i}.{a}": np.empty((n, H), np.float32) for i in range(LAYERS) for a in "ifgoch"}
    x_all = model.inputs(torch.from_numpy(ids)[None])[0]
    state = [(torch.zeros(1, H), torch.zeros(1, H)) for _ in range(LAYERS)]
    for t in range(n):
        x = x_all[t:t + 1]
        for i, cell in enumerate(cells):
            h_prev, c_prev = state[i]
            gates = torch.addmm(cell.bias_ih + cell.bias_hh, torch.cat([x, h_prev], 1),
                                torch.cat([cell.weight_ih, cell.weight_hh], 1).t())
            h, c = cell(x, (h_prev, c_prev))
            ig, fg, gg, og = gates.chunk(4, 1)
            for name, value in zip("ifgoch", (ig.sigmoid(), fg.sigmoid(), gg.tanh(), og.sigmoid(), c, h)):
                kept[f"{i}.{name}"][t] = value[0].numpy()
            state[i] = (h, c)
            x = h
        torch.softmax(model.head(x), dim=-1)


def run_worker(kind: str, n: int, store: str, out_dir: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--chars", str(n), "--store", store, "--out-dir", out_dir,
           "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=1_000_000)
    ap.add_argument("--loop-chars", type=int, default=20_000)
    ap.add_argument("--store", choices=["cells", "all"], default="cells")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--worker", choices=["fused", "trace", "loop"], help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.chars, args.store, args.out_dir)))
        return
    bu.print_header(f"trace: {LAYERS}x{SIZE} LSTM over {args.chars:,} characters, batch 1, chunks of {CHUNK}")
    with tempfile.TemporaryDirectory() as tmp:
        fused = run_worker("fused", args.chars, args.store, tmp, args.threads)
        trace = run_worker("trace", args.chars, args.store, tmp, args.threads)
        loop = run_worker("loop", args.loop_chars, args.store, tmp, args.threads)
    loop_scaled = loop["seconds"] * args.chars / args.loop_chars
    print(f"{'worker':<8} {'seconds':>9} {'chars/s':>9} {'peak RSS MB':>12}")
    for r, secs in ((fused, fused["seconds"]), (trace, trace["seconds"]), (loop, loop_scaled)):
        note = f"  (measured on {loop['chars']:,} chars, scaled)" if r is loop else ""
        print(f"{r['kind']:<8} {secs:9.1f} {args.chars / secs:9.0f} {r['peak_rss_mb']:12.0f}{note}")
    print(f"trace file: {trace['file_gb']:.2f} GB ({args.store}, float16)")
    print(f"trace / fused forward: {trace['seconds'] / fused['seconds']:.2f}x  (goal <= 3x)")
    print(f"per-step loop / trace: {loop_scaled / trace['seconds']:.1f}x  (goal >= 10x)")
    print(f"peak RSS trace - fused: {trace['peak_rss_mb'] - fused['peak_rss_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
