"""rnnlens: train character-level RNN, LSTM and GRU language models, sample from them, see inside them."""

__version__ = "0.1.0"

from rnnlens.api import LanguageModel, load, resume, train  # noqa: E402
from rnnlens.errors import RnnlensError  # noqa: E402
from rnnlens.trace import Trace  # noqa: E402
from rnnlens.train import Trainer as _Trainer  # noqa: E402

load_trace = Trace.load


def _unit_view(trace, name, unit, start=0, end=None):
    """Trace.view's drawer, imported on first use (see the comment at Trace.viewer)."""
    from rnnlens.render.html import UnitView
    return UnitView(trace, name, unit, start, end)


def _plot_loss(metrics_path, png_path):
    """The trainer's default loss.png drawer, imported on first use (see the comment at Trainer.plot_loss)."""
    from rnnlens.render.plots import plot_loss_curve
    return plot_loss_curve(metrics_path, png_path)


# Core and inspection modules never import rendering; this facade, above every layer, plugs the two
# drawers they offer as conveniences into them.
Trace.viewer = staticmethod(_unit_view)
_Trainer.plot_loss = staticmethod(_plot_loss)

__all__ = ["LanguageModel", "RnnlensError", "Trace", "__version__", "load", "load_trace", "resume", "train"]
