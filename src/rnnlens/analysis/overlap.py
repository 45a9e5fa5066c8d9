"""Error overlap: where two models fail on the same characters, and where only one of them does.

The paper calls a character an error when the model gives the true character a probability below 0.5.
For two models on one text, every predicted character (row t: the true next character text[t+1]) is
in one of four groups: both models err, only A errs, only B errs, neither. The seeds' finding for
an LSTM against an n-gram: they share many errors but fail differently on distinct segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text

NEITHER, ONLY_A, ONLY_B, BOTH = 0, 1, 2, 3
GROUPS = ("neither", "only A", "only B", "both")


@dataclass
class ErrorOverlap:
    """Per predicted character its group (`groups` [T-1] int8: NEITHER, ONLY_A, ONLY_B, BOTH) and the counts."""

    models: tuple[str, str]
    threshold: float
    groups: np.ndarray

    @property
    def chars(self) -> int:
        return len(self.groups)

    def count(self, group: int) -> int:
        return int((self.groups == group).sum())

    def to_dict(self) -> dict:
        a, b = self.models
        both, only_a, only_b = self.count(BOTH), self.count(ONLY_A), self.count(ONLY_B)
        errors_a, errors_b = both + only_a, both + only_b
        union = both + only_a + only_b
        return {"models": list(self.models), "threshold": self.threshold, "chars": self.chars,
                "errors": {a: errors_a, b: errors_b}, "both": both, "only": {a: only_a, b: only_b},
                "neither": self.count(NEITHER),
                "shared_share": both / union if union else None}  # of the characters either model misses

    def table(self) -> str:
        d = self.to_dict()
        a, b = self.models
        shared = f"{100 * d['shared_share']:.1f}%" if d["shared_share"] is not None else "-"
        return (f"errors (p(true char) < {self.threshold:g}) over {self.chars:,} characters: {a} {d['errors'][a]:,}, "
                f"{b} {d['errors'][b]:,}; both {d['both']:,}, only {a} {d['only'][a]:,}, only {b} {d['only'][b]:,} "
                f"({shared} of the characters either misses, both miss)")


def error_overlap(a: Predictions, b: Predictions, threshold: float = 0.5) -> ErrorOverlap:
    """The four groups of every predicted character of the text both `a` and `b` scored."""
    check_same_text(a, b)
    if not 0 < threshold <= 1:
        raise RnnlensError(f"the error threshold is a probability in (0, 1]; got {threshold!r}")
    fail_a = a.target_probs < threshold
    fail_b = b.target_probs < threshold
    groups = (fail_a.astype(np.int8) * ONLY_A + fail_b.astype(np.int8) * ONLY_B)  # 1 + 2 = 3: BOTH
    return ErrorOverlap((a.name, b.name), float(threshold), groups)
