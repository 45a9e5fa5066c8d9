"""Shared fixtures: a private corpus cache per test and small generated texts."""

import random

import pytest
import torch

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


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(make_text())
    return path
