"""Shared pieces of the benchmark scripts: the sgemm probe, generated text, timing helpers, tables.

The machine these run on is shared and noisy, so every script times rnnlens and its reference
in one process, in interleaved repeats, and reports medians and ratios. The sgemm probe runs in
a subprocess (numpy/OpenBLAS) so its thread pool never competes with torch's in the process
that is being timed.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# 65 symbols, the size of tiny Shakespeare's vocabulary (all ASCII, so 1 byte per character).
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
assert len(ALPHABET) == 65 and len(set(ALPHABET)) == 65

_SGEMM = r"""
import sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
b = np.random.default_rng(1).random((n, n), dtype=np.float32)
a @ b
best = 0.0
for _ in range(reps):
    t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
    best = max(best, 2 * n ** 3 / dt / 1e9)
print(best)
"""


def user_env() -> dict:
    """The environment a user's `rnnlens` process gets: rnnlens's own defaults, torch's default thread count, and
    this checkout's src/ on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def sgemm_probe(label: str = "", n: int = 2048, reps: int = 5) -> float:
    """Best-of-`reps` numpy float32 n^3 matmul GFLOP/s, measured in a fresh subprocess."""
    out = subprocess.run([sys.executable, "-c", _SGEMM, str(n), str(reps)], check=True,
                         capture_output=True, text=True).stdout
    gflops = float(out.strip().splitlines()[-1])
    print(f"sgemm probe {label}: {gflops:.0f} GFLOP/s (numpy float32 {n}^3, best of {reps})", flush=True)
    return gflops


def machine_line() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{datetime.date.today().isoformat()} | {cpu}, {os.cpu_count()} cores | torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads | numpy {np.__version__} | python {platform.python_version()}")


def print_header(title: str) -> None:
    print(f"# {title}")
    print(machine_line(), flush=True)


def generated_ids(n: int, seed: int = 0, vocab: int = 65) -> np.ndarray:
    """n ids drawn i.i.d. from a Zipf-like distribution over `vocab` symbols (uint8)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    out = np.empty(n, dtype=np.uint8)
    step = 1 << 24
    for i in range(0, n, step):  # in chunks, so 100 MB never needs 800 MB of int64 at once
        m = min(step, n - i)
        out[i:i + m] = rng.choice(vocab, size=m, p=p).astype(np.uint8)
    # make sure every symbol occurs, so the vocabulary is always exactly `vocab`
    out[:vocab] = np.arange(vocab, dtype=np.uint8)
    return out


def write_generated_text(path: Path, n: int, seed: int = 0) -> Path:
    """A text file of n characters from ALPHABET (one byte each)."""
    table = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
    path = Path(path)
    if not (path.exists() and path.stat().st_size == n):
        path.write_bytes(table[generated_ids(n, seed)].tobytes())
    return path


def median(xs) -> float:
    return float(statistics.median(xs))


def spread(xs) -> str:
    """'min-max' as a percentage of the median, to show how noisy a measurement was."""
    m = median(xs)
    return f"{100 * (max(xs) - min(xs)) / m:.0f}%" if m else "-"


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}K"
    if x >= 1e3:
        return f"{x / 1e3:.1f}K"
    return f"{x:.0f}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def flops_per_char_forward(cell: str, layers: int, size: int, input_size: int, vocab: int) -> float:
    """Matmul FLOPs of one character's forward pass: 2*G*H*(I+H) per layer plus the head 2*H*V."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    total, inp = 0, input_size
    for _ in range(layers):
        total += 2 * gates * size * (inp + size)
        inp = size
    return float(total + 2 * size * vocab)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def model_config(vocab: int, cell: str, layers: int, size: int, **override):
    """An rnnlens ModelConfig with every field pinned (rnnlens's defaults change; a benchmark must not):
    no dropout, a 64-wide embedding, char-rnn's uniform +-0.08 init and forget bias 1."""
    from rnnlens.model import ModelConfig
    kw = dict(vocab_size=vocab, cell=cell, layers=layers, size=size, dropout=0.0, input="embedding",
              embedding_size=64, init="uniform", init_range=0.08, forget_bias=1.0)
    kw.update(override)
    return ModelConfig(**{k: v for k, v in kw.items() if k in ModelConfig.__dataclass_fields__})


def train_config(**override):
    """An rnnlens TrainConfig with the fields that change the work per step pinned; no validation,
    no periodic checkpoints (the caller gives batch_size, seq_len and usually lr / optimizer)."""
    from rnnlens.trainer import TrainConfig
    kw = dict(optimizer="adam", lr=2e-3, lr_schedule="cosine", weight_decay=0.0, grad_clip=5.0, clip_mode="norm",
              bf16=False, compile=False, eval_every=0, checkpoint_every=10**9, log_every=10, seed=0,
              tensorboard=False, max_steps=1)
    kw.update(override)
    return TrainConfig(**{k: v for k, v in kw.items() if k in TrainConfig.__dataclass_fields__})


class TrainerHarness:
    """rnnlens's real training loop, `Trainer.run`, driven N steps at a time.

    Validation, checkpoint writes and the loss plot are switched off on this instance (they are
    not the training loop), everything else runs as in `rnnlens train`: the schedule, the batch
    fetch from the memory-mapped corpus, `train_step`, the loss checks and the metrics log.
    """

    def __init__(self, run_dir: Path, corpus, model_cfg, train_cfg):
        from rnnlens.trainer import Trainer
        self.trainer = t = Trainer.start(run_dir, model_cfg, train_cfg, force=True, progress=False,
                                         corpus=corpus, log=lambda msg: None)
        t.save_last = lambda: None
        t.save_best = lambda *a, **k: None
        t._validate_and_track = lambda *a, **k: None
        t._plot = lambda: None

    def steps(self, n: int) -> tuple[float, float]:
        """Run n steps; return (wall seconds of Trainer.run, seconds inside train_step)."""
        t, s = self.trainer, self.trainer.state
        t.cfg.max_steps = s.step + n
        e0, t0 = s.elapsed, time.perf_counter()
        t.run()
        return time.perf_counter() - t0, s.elapsed - e0


def interleave(runners: dict, repeats: int, on_repeat=None) -> dict[str, list[float]]:
    """Call each runner once per repeat, rotating the order every repeat; collect the returned values."""
    names = list(runners)
    results = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            results[k].append(runners[k]())
        if on_repeat:
            on_repeat(r, results)
    return results
