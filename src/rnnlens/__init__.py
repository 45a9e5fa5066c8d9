"""rnnlens: train character-level RNN, LSTM and GRU language models, sample from them, see inside them."""

# Before anything imports torch: the MKL / OpenMP settings that make seeded CPU training
# bit-reproducible (rnnlens/reproducibility.py; each one only a default the user can override).
from rnnlens import reproducibility as _reproducibility  # noqa: E402  (imports no torch)

_reproducibility.apply_env()

__version__ = "0.1.0"

from rnnlens.api import LanguageModel, load, resume, train  # noqa: E402
from rnnlens.errors import RnnlensError  # noqa: E402
from rnnlens.trace import Trace  # noqa: E402

load_trace = Trace.load

__all__ = ["LanguageModel", "RnnlensError", "Trace", "load_trace", "load", "resume", "train", "__version__"]
