"""Interpretable-cell discovery: discover() for a 2x512 LSTM x every built-in feature x 1M characters.

    python benchmarks/bench_cells.py                       # 1M characters of Python source, ~6 min (the trace ~4)
    python benchmarks/bench_cells.py --text tinyshakespeare.txt
    python benchmarks/bench_cells.py --quick               # 100K characters, < 1 min

What it does:
  1. text: --text FILE, or by default the running Python's standard-library .py files concatenated
     in sorted order; repeated if shorter than --chars, then cut to --chars characters;
  2. model: a randomly initialised 2x512 LSTM (char-rnn's uniform +-0.08 init, forget bias 1, the
     text's characters as vocabulary). Discovery does the same work for random and trained weights;
  3. trace: the cells and hidden states of both layers (4 x 512 = 2,048 units) written as float16
     to a safetensors file (--trace, reused when it already holds this text; timed when made);
  4. features alone: every built-in feature over the text (best of 3);
  5. discover(): every built-in feature against all 2,048 units, with excerpts for the best 3 of
     each, in a fresh subprocess so that its peak memory is its own: seconds, peak RSS (VmHWM),
     and the peak of anonymous memory (sampled every 50 ms), which leaves out the pages of the
     memory-mapped trace file that the kernel can drop at will;
  6. reference: the exact AUC by sorting (np.argsort of a column, mid-ranks for ties, one rank sum
     per on/off feature) for 16 columns, extrapolated to all, against discover's binned AUC.
The sgemm probe runs before and after, as in the other scripts: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import benchutil as bu
import numpy as np


def python_source(chars: int) -> str:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    parts, total = [], 0
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        total += len(parts[-1])
        if total >= chars:
            break
    return "".join(parts)


def load_text(path: str | None, chars: int) -> str:
    text = Path(path).read_text(encoding="utf-8") if path else python_source(chars)
    if len(text) < chars:
        text = text * (chars // len(text) + 1)
    return text[:chars]


def make_trace(text: str, path: Path, layers: int, size: int, retrace: bool):
    """The float16 trace file of a random LSTM over `text` (cells and hidden states); seconds to make it."""
    import torch

    from rnnlens.api import LanguageModel
    from rnnlens.corpus import Vocab
    from rnnlens.model import CharRNN
    from rnnlens.trace import Trace

    names = [f"layer{i}.{k}" for i in range(layers) for k in ("cell", "hidden")]
    if path.exists() and not retrace:
        trace = Trace.load(path)
        if trace.text == text and trace.names() == names and trace.size == size:
            return trace, None
    torch.manual_seed(0)
    chars = sorted(set(text))
    vocab = Vocab(chars)
    model = CharRNN(bu.model_config(len(chars), "lstm", layers, size)).eval()
    lm = LanguageModel(model, vocab)
    t0 = time.perf_counter()
    trace = lm.trace(text, names=names, float16=True, out=path, progress=True)
    return trace, time.perf_counter() - t0


class MemorySampler:
    """Peak anonymous and file-backed RSS of this process, sampled from /proc/self/status."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak_anon, self.peak_file = every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return (int(fields["RssAnon"].split()[0]) / 1024, int(fields["RssFile"].split()[0]) / 1024,
                int(fields["VmHWM"].split()[0]) / 1024)

    def _run(self):
        while not self._stop.is_set():
            anon, file, _ = self._read()
            self.peak_anon, self.peak_file = max(self.peak_anon, anon), max(self.peak_file, file)
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.hwm = self._read()[2]


def worker_discover(trace_path: str, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    from rnnlens.analysis.cells import discover
    from rnnlens.trace import Trace
    trace = Trace.load(trace_path)
    with MemorySampler() as memory:
        t0 = time.perf_counter()
        scores = discover(trace)
        seconds = time.perf_counter() - t0
    best = {f.name: [u.label + f" {u.score:+.3f}" for u in scores.best(f.name, 1)] for f in scores.features}
    return {"seconds": seconds, "peak_rss_mb": memory.hwm, "peak_anon_mb": memory.peak_anon,
            "peak_file_mb": memory.peak_file, "units": len(scores.activations) * scores.size,
            "features": len(scores.features), "binary": sum(f.metric == "auc" for f in scores.features),
            "best": best}


def exact_auc_seconds(trace, binary: list[np.ndarray], columns: int) -> float:
    """Seconds of the exact sort-based AUC for `columns` columns of layer0.cell (all on/off features)."""
    masks = np.stack(binary, axis=1).astype(np.float64)  # [T, F]
    n_on = masks.sum(axis=0)
    block = np.tanh(np.asarray(trace["layer0.cell"][:, :columns], dtype=np.float32))
    t0 = time.perf_counter()
    for u in range(columns):
        x = block[:, u]
        order = np.argsort(x, kind="stable")
        sorted_x = x[order]
        bounds = np.flatnonzero(np.diff(sorted_x) != 0) + 1
        first, last = np.r_[0, bounds], np.r_[bounds, len(x)]
        ranks = np.empty(len(x))
        ranks[order] = np.repeat((first + 1 + last) / 2, last - first)
        (ranks @ masks - n_on * (n_on + 1) / 2) / (n_on * (len(x) - n_on))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", help="UTF-8 text (default: the Python standard library's source)")
    ap.add_argument("--chars", type=int, help="characters (default 1,000,000; quick 100,000)")
    ap.add_argument("--trace", help="trace file (default /tmp/rnnlens-bench-cells-CHARS.safetensors)")
    ap.add_argument("--retrace", action="store_true", help="make the trace again even if the file holds it")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker_discover(args.worker, args.threads)))
        return

    import torch
    torch.set_num_threads(args.threads)
    from rnnlens.analysis import features
    from rnnlens.analysis.features import compute_features
    chars = args.chars or (100_000 if args.quick else 1_000_000)
    trace_path = Path(args.trace or f"/tmp/rnnlens-bench-cells-{chars}.safetensors")
    bu.print_header("Interpretable-cell discovery")
    probe_before = bu.sgemm_probe("before")
    text = load_text(args.text, chars)
    print(f"text: {args.text or 'Python standard library source'}, {len(text):,} characters", flush=True)

    trace, trace_seconds = make_trace(text, trace_path, args.layers, args.size, args.retrace)
    size_gb = trace_path.stat().st_size / 1e9
    print(f"trace: {trace_path} ({size_gb:.2f} GB float16)"
          + (f", made in {trace_seconds:.0f} s" if trace_seconds else ", reused"), flush=True)

    feature_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        values = compute_features(text)
        feature_times.append(time.perf_counter() - t0)
        features._lex.cache_clear()  # time the lexer every repeat, as a fresh text would
    print(f"features alone: {min(feature_times):.2f} s for {len(values)} features", flush=True)

    out = subprocess.run([sys.executable, __file__, "--worker", str(trace_path), "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"discover: {result['seconds']:.1f} s", flush=True)

    binary = [v for v in values.values() if v.dtype == np.bool_]
    reference_columns = 16
    sort_seconds = exact_auc_seconds(trace, binary, reference_columns) * result["units"] / reference_columns
    probe_after = bu.sgemm_probe("after")

    values_scored = len(text) * result["units"]
    rows = [
        ["trace (2x512 LSTM forward + recompute, float16 file)",
         f"{trace_seconds:.0f} s" if trace_seconds else "reused", f"{size_gb:.2f} GB file"],
        [f"features alone ({len(values)} built-ins)", f"{min(feature_times):.2f} s", "-"],
        [f"discover ({result['features']} features, {result['binary']} on/off; {result['units']:,} units)",
         f"{result['seconds']:.1f} s ({1e9 * result['seconds'] / values_scored:.1f} ns per value)",
         (f"peak RSS {result['peak_rss_mb']:.0f} MB (anonymous {result['peak_anon_mb']:.0f} MB, "
          f"trace pages {result['peak_file_mb']:.0f} MB)")],
        ["reference: exact AUC by sorting each column (16 columns, extrapolated)",
         f"{sort_seconds:.0f} s for the on/off features alone", "-"],
    ]
    print()
    print(f"{len(text):,} characters; {args.layers}x{args.size} LSTM, cells and hidden states; "
          f"sgemm probe {probe_before:.0f} before / {probe_after:.0f} after GFLOP/s; {args.threads} threads")
    print(bu.markdown_table(["step", "time", "memory"], rows))
    print("\nbest unit per feature:", json.dumps(result["best"]))


if __name__ == "__main__":
    main()
