"""Predictions: what any character model (RNN, n-gram, n-NN) says about a text, one row per position.

The comparisons of the paper's second half (loss by character class, the closing-brace study,
the error taxonomy, the KL between a model and its baselines) need only this: for every
character of a text after the first, the full next-character distribution given everything
before it. Every kind of model produces a `Predictions`, so the analyses never care which
kind they were given.

Row t (0 <= t < T-1) is the distribution over `chars` of text[t+1] given text[:t+1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rnnlens.errors import RnnlensError

TINY = 1e-12  # floor for log p: a model giving a seen character exactly 0 would make the loss infinite


@dataclass
class Predictions:
    text: str              # the scored text, T characters
    chars: list[str]       # the model's vocabulary, V characters, in its id order
    probs: np.ndarray      # [T-1, V] float32: row t = p(text[t+1] = chars[v] | text[:t+1])
    name: str = "model"    # shown in tables and legends
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.probs.ndim != 2 or self.probs.shape != (max(len(self.text) - 1, 0), len(self.chars)):
            raise ValueError(f"probs has shape {self.probs.shape}; expected "
                             f"({len(self.text) - 1}, {len(self.chars)}) for this text and vocabulary")

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def targets(self) -> np.ndarray:
        """[T-1] int64: id of the true next character in `chars`, -1 where the model has no such character."""
        index = {c: i for i, c in enumerate(self.chars)}
        return np.fromiter((index.get(c, -1) for c in self.text[1:]), dtype=np.int64, count=len(self))

    @property
    def target_probs(self) -> np.ndarray:
        """[T-1] float64: the probability given to the true next character (0 for an unknown one)."""
        t = self.targets
        out = np.zeros(len(t), dtype=np.float64)
        known = t >= 0
        out[known] = self.probs[np.flatnonzero(known), t[known]]
        return out

    @property
    def losses(self) -> np.ndarray:
        """[T-1] float64: -log p(true next character), nats."""
        return -np.log(np.maximum(self.target_probs, TINY))

    @property
    def loss(self) -> float:
        """Mean cross-entropy, nats per character."""
        return float(self.losses.mean()) if len(self) else float("nan")

    def on_vocab(self, chars: list[str]) -> np.ndarray:
        """[T-1, len(chars)] probabilities over another character list (0 for characters this model lacks),
        so that models with different vocabularies can be compared position by position."""
        index = {c: i for i, c in enumerate(self.chars)}
        out = np.zeros((len(self), len(chars)), dtype=np.float32)
        cols = [(j, index[c]) for j, c in enumerate(chars) if c in index]
        if cols:
            dst, src = zip(*cols)
            out[:, list(dst)] = self.probs[:, list(src)]
        return out


def check_same_text(*preds: Predictions) -> str:
    """The text several Predictions share; a clear error when they were made on different texts."""
    if not preds:
        raise RnnlensError("no predictions given")
    text = preds[0].text
    for p in preds[1:]:
        if p.text != text:
            raise RnnlensError(f"'{preds[0].name}' and '{p.name}' were scored on different texts; "
                               "score every model on the same --text")
    return text


class CharModel(Protocol):
    """What every model rnnlens loads offers: rnnlens.LanguageModel (RNN, LSTM, GRU, n-NN) and
    rnnlens.ngram.NGramModel. `kind` is "rnn" or "ngram"; only an "rnn" has units, samples and traces."""

    kind: str
    vocab: object
    meta: dict
    path: object

    def predict(self, text: str, *, unknown: str = "error", replacement: str | None = None) -> Predictions: ...

    def evaluate(self, text: str | None = None, *, data=None, split: str = "test", keep_losses: bool = False,
                 unknown: str = "error", glob=None, split_fractions=None, encoding_errors: str = "strict"): ...


def predict(model: CharModel, text: str, *, name: str | None = None) -> Predictions:
    """Predictions of any model kind over `text`, named `name`."""
    out = model.predict(text)
    if name is not None:
        out.name = name
    return out
