"""discover() of two versions of rnnlens.analysis.cells, side by side on one trace (alternating repeats).

    git show cf8208f:src/rnnlens/analysis/cells.py > /tmp/old_cells.py    # before the contrast (issue #12)
    python benchmarks/bench_cells_versions.py 100000 /tmp/old_cells.py

A randomly initialised 2x512 LSTM's cells and hidden states (2,048 units) over the first N characters
of the standard library's sources; all 17 built-in features.
"""
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

spec = importlib.util.spec_from_file_location("old_cells", sys.argv[2] if len(sys.argv) > 2 else "old_cells.py"); old = importlib.util.module_from_spec(spec); sys.modules["old_cells"] = old; spec.loader.exec_module(old)
chars = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
import argparse as _a

src = "".join(Path(p).read_text(errors="ignore") for p in sorted(Path(_a.__file__).parent.glob("*.py"))[:200])[:chars]
vocab = Vocab(sorted(set(src)))
torch.manual_seed(0)
model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=2, size=512)).eval()
names = [f"layer{i}.{k}" for i in range(2) for k in ("cell", "hidden")]
t0 = time.perf_counter()
trace = trace_ids(model, vocab.encode(src), vocab.chars, names=names)
print(f"trace {len(src):,} chars: {time.perf_counter() - t0:.1f} s")
times = {"old": [], "new": []}
for rep in range(3):
    for name, mod in (("old", old), ("new", new)):
        t0 = time.perf_counter(); mod.discover(trace); times[name].append(time.perf_counter() - t0)
o, n = np.median(times["old"]), np.median(times["new"])
print(f"discover, 17 features x 2,048 units x {len(src):,} chars: before {o:.2f} s, after {n:.2f} s, after/before {n / o:.3f} (medians of 3, alternating)")
print("per repeat:", [f"{b / a:.3f}" for a, b in zip(times["old"], times["new"])])
