"""Hand-made Predictions and a tiny exact n-gram stand-in for the comparison and error-taxonomy tests."""

from __future__ import annotations

from collections import Counter

import numpy as np

from rnnlens.predictions import Predictions


def preds_with(text: str, p_true, name: str = "model", chars: list[str] | None = None) -> Predictions:
    """Predictions over `text` giving the true next character probability p_true[t] at row t and
    spreading the rest evenly over the other characters of `chars` (default: the text's own)."""
    chars = chars or sorted(set(text) | {"\x01"})  # at least two characters, so that the rest has somewhere to go
    index = {c: i for i, c in enumerate(chars)}
    p_true = np.broadcast_to(np.asarray(p_true, dtype=np.float64), (len(text) - 1,))
    probs = np.repeat(((1 - p_true) / (len(chars) - 1))[:, None], len(chars), axis=1)
    rows = np.arange(len(text) - 1)
    probs[rows, [index[c] for c in text[1:]]] = p_true
    return Predictions(text, chars, probs.astype(np.float32), name=name)


class CountNgram:
    """An exact maximum-likelihood character n-gram with add-k smoothing: the stand-in for
    rnnlens.ngram.NGramModel (same `order`, `chars` and `predict(text, order=None)`)."""

    def __init__(self, train: str, order: int, chars: list[str] | None = None, k: float = 0.01):
        self.order, self.k = order, k
        self.chars = chars or sorted(set(train))
        self.counts = [Counter() for _ in range(order)]   # counts[n][(context, char)], context of length n
        self.totals = [Counter() for _ in range(order)]
        for i, c in enumerate(train):
            for n in range(order):
                if i - n < 0:
                    break
                ctx = train[i - n:i]
                self.counts[n][ctx, c] += 1
                self.totals[n][ctx] += 1

    def predict(self, text: str, order: int | None = None) -> Predictions:
        n = (order or self.order) - 1  # context length
        V = len(self.chars)
        probs = np.zeros((len(text) - 1, V), dtype=np.float32)
        for t in range(len(text) - 1):
            ctx = text[max(0, t + 1 - n):t + 1] if n else ""
            m = len(ctx)
            total = self.totals[m][ctx]
            probs[t] = [(self.counts[m][ctx, c] + self.k) / (total + self.k * V) for c in self.chars]
        return Predictions(text, list(self.chars), probs, name=f"{order or self.order}-gram")
