"""rnnlens: train character-level RNN, LSTM and GRU language models, sample from them, see inside them.

    import rnnlens
    lm = rnnlens.train(data="input.txt", out="runs/demo", max_steps=300)
    result = rnnlens.compare(["runs/demo", "ngrams/ts20"], text=open("test.txt").read())

The workflows (compare, error_taxonomy, kl, find_cells, saturation, timescales, gradients, run_grid)
load on first use, so `import rnnlens` stays light.
"""

__version__ = "0.1.0"

from rnnlens.api import LanguageModel, load, resume, train  # noqa: E402
from rnnlens.errors import RnnlensError  # noqa: E402
from rnnlens.trace import Trace  # noqa: E402

load_trace = Trace.load

_WORKFLOWS = {"compare": "rnnlens.workflows.compare", "error_taxonomy": "rnnlens.workflows.taxonomy",
              "kl": "rnnlens.workflows.kl", "find_cells": "rnnlens.workflows.inspect",
              "saturation": "rnnlens.workflows.inspect", "timescales": "rnnlens.workflows.inspect",
              "gradients": "rnnlens.workflows.inspect", "run_grid": "rnnlens.grid"}


def __getattr__(name: str):
    if name in _WORKFLOWS:
        import importlib
        return getattr(importlib.import_module(_WORKFLOWS[name]), name)
    raise AttributeError(f"module 'rnnlens' has no attribute {name!r}")


__all__ = ["LanguageModel", "RnnlensError", "Trace", "load_trace", "load", "resume", "train", "__version__",
           *_WORKFLOWS]
