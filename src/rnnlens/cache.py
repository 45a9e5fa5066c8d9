"""Where rnnlens keeps what it prepares or downloads. Its own module so that corpus (prepared corpora)
and datasets (downloaded texts) share it without importing each other: corpus knows datasets (for named
corpora), datasets knows nothing of corpus."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where rnnlens keeps prepared corpora and datasets: ``$RNNLENS_CACHE`` if set, else
    ``~/.cache/rnnlens``."""
    env = os.environ.get("RNNLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnlens"
