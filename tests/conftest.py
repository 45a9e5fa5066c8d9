"""Shared fixtures: a private corpus cache per test and small generated texts."""

import random

import pytest
import torch

pytest_plugins = ["browser"]  # the `browser` and `page` fixtures for the Chromium tests

# Tiny models run fastest on one thread, and one thread keeps a busy machine from
# oversubscribing its cores (OpenMP spin-waits then slow everything down many times).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test prepares corpora into its own cache, never the user's."""
    monkeypatch.setenv("RNNLENS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    return tmp_path / "cache"


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """A small learnable text: short lines of words from a tiny vocabulary, with some structure."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "a", "red", "box"]
    lines = []
    for _ in range(n_lines):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) + ".")
    return "\n".join(lines) + "\n"


def run_cli(capsys, *args):
    """Run `rnnlens ARGS...` in this process: (exit status, stdout, stderr)."""
    from rnnlens.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tiny_train_args(layers: int = 1) -> list[str]:
    """`rnnlens train` options for a tiny model that trains in a second (16 units, batch 4 x 20)."""
    return ["--layers", str(layers), "--size", "16", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "20",
            "--eval-every", "10", "--quiet"]


def train_tiny_cli(capsys, data, out, *, layers: int = 1, steps: int = 30):
    """`rnnlens train` of a tiny model on `data` into `out`, through the command line; returns `out`."""
    code, _, err = run_cli(capsys, "train", "--data", data, *tiny_train_args(layers), "--max-steps", steps, "--out", out)
    assert code == 0, err
    return out


def train_tiny_runs(root, cells, layers: int = 1) -> dict:
    """One tiny model per cell type, trained for 30 steps on make_text(300), in root/<cell>."""
    import rnnlens
    data = root / "input.txt"
    data.write_text(make_text(300))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLENS_CACHE", str(root / "cache"))
        for cell in cells:
            rnnlens.train(data=str(data), out=root / cell, model=cell, layers=layers, size=16, max_steps=30,
                          batch_size=4, seq_len=20, progress=False)
    return {**{cell: root / cell for cell in cells}, "text": data}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(make_text())
    return path
