"""discover() of two versions of rnnlens.analysis.cells, side by side on one trace (alternating repeats).

    git show cf8208f:src/rnnlens/analysis/cells.py > /tmp/old_cells.py    # before the contrast (issue #12)
    python benchmarks/bench_cells_versions.py 100000 /tmp/old_cells.py

A randomly initialised 2x512 LSTM's cells and hidden states (2,048 units) over the first N characters
of the standard library's sources; all 17 built-in features.
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rnnlens.analysis import cells as new
from rnnlens.corpus import Vocab
from rnnlens.model import CharRNN, ModelConfig
from rnnlens.trace import trace_ids


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("old_cells", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_cells"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    chars = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    old = load_module(sys.argv[2] if len(sys.argv) > 2 else "old_cells.py")
    files = sorted(Path(argparse.__file__).parent.glob("*.py"))[:200]
    text = "".join(p.read_text(errors="ignore") for p in files)[:chars]
    vocab = Vocab(sorted(set(text)))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=2, size=512)).eval()
    names = [f"layer{i}.{k}" for i in range(2) for k in ("cell", "hidden")]
    t0 = time.perf_counter()
    trace = trace_ids(model, vocab.encode(text), vocab.chars, names=names)
    print(f"trace of {len(text):,} characters: {time.perf_counter() - t0:.1f} s")
    times = {"before": [], "after": []}
    for _ in range(3):
        for name, module in (("before", old), ("after", new)):
            t0 = time.perf_counter()
            module.discover(trace)
            times[name].append(time.perf_counter() - t0)
    before, after = np.median(times["before"]), np.median(times["after"])
    print(f"discover, 17 features x 2,048 units x {len(text):,} characters: before {before:.2f} s, after "
          f"{after:.2f} s, after/before {after / before:.3f} (medians of 3, alternating)")
    print("per repeat:", ", ".join(f"{b / a:.3f}" for a, b in zip(times["before"], times["after"])))


if __name__ == "__main__":
    main()
