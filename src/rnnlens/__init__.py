"""rnnlens: train character-level RNN, LSTM and GRU language models, sample from them, see inside them.

    import rnnlens
    lm = rnnlens.train(data="input.txt", out="runs/demo", max_steps=300)
    result = rnnlens.compare(["runs/demo", "ngrams/ts20"], text=open("test.txt").read())

The workflows (compare, error_taxonomy, kl, find_cells, saturation, timescales, gradients, run_grid)
load on first use, so `import rnnlens` stays light.
"""

# Before anything imports torch: the MKL / OpenMP settings that make seeded CPU training
# bit-reproducible (rnnlens/reproducibility.py; each one only a default the user can override).
from rnnlens import reproducibility as _reproducibility  # imports no torch

_reproducibility.apply_env()

from rnnlens._version import __version__  # noqa: E402
from rnnlens.api import LanguageModel, load, resume, train  # noqa: E402
from rnnlens.errors import RnnlensError  # noqa: E402
from rnnlens.trace import Trace  # noqa: E402
from rnnlens.trainer import Trainer as _Trainer  # noqa: E402

load_trace = Trace.load


def _unit_view(trace, name, unit, start=0, end=None):
    """Trace.view's drawer, imported on first use (see the comment at Trace.viewer)."""
    from rnnlens.render.html import UnitView
    return UnitView(trace, name, unit, start, end)


def _plot_loss(metrics_path, png_path):
    """The trainer's default loss.png drawer, imported on first use (see the comment at Trainer.plot_loss)."""
    from rnnlens.render.plots import plot_loss_curve
    from rnnlens.runs import read_metrics
    return plot_loss_curve(read_metrics(metrics_path), png_path)


# Core and inspection modules never import rendering; this facade, above every layer, plugs the two
# drawers they offer as conveniences into them.
Trace.viewer = staticmethod(_unit_view)
_Trainer.plot_loss = staticmethod(_plot_loss)


_WORKFLOWS = {"compare": "rnnlens.workflows.compare", "error_taxonomy": "rnnlens.workflows.taxonomy",
              "kl": "rnnlens.workflows.kl", "find_cells": "rnnlens.workflows.inspect",
              "saturation": "rnnlens.workflows.inspect", "timescales": "rnnlens.workflows.inspect",
              "gradients": "rnnlens.workflows.inspect", "run_grid": "rnnlens.grid",
              "ablate": "rnnlens.workflows.ablate"}


def __getattr__(name: str):
    if name in _WORKFLOWS:
        import importlib
        return getattr(importlib.import_module(_WORKFLOWS[name]), name)
    raise AttributeError(f"module 'rnnlens' has no attribute {name!r}")


__all__ = ["LanguageModel", "RnnlensError", "Trace", "load_trace", "load", "resume", "train", "__version__",
           *_WORKFLOWS]
