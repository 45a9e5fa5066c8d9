"""Long-range study: how well models predict a closing character far from its opener (the paper's Figure 7).

The paper takes every '}' of the Linux kernel source, measures how far back its matching '{' is,
and plots the mean probability the LSTM and the 20-gram model give the '}' against that distance:
the LSTM wins at every distance, and its edge grows up to about 60 characters. Here the same for
any models, any opening/closing pair, and newlines by line length.

Rules (exact):

* Brace matching (`closing_distances`): read the text left to right with a stack; an opener pushes
  its position; a closer pops the innermost open opener and is an *occurrence* at distance
  close_position - open_position (>= 1). A closer with an empty stack (unmatched) is skipped;
  openers never closed are ignored. Only the pair's two characters take part: with '{}' a ')'
  is ordinary text. The opener and closer must be two different characters.
* Newline by column (`newline_columns`): every '\\n' after the first one of the text is an
  occurrence; its distance is its column, the number of characters on the line it ends (the
  characters between the previous '\\n' and it; 0 for an empty line). The first line is skipped
  because it has no known beginning (the text may start mid-line).
* The probability of an occurrence at text position i is row i-1 of each model's Predictions,
  at the closing character: p(text[i] | text[:i]). An occurrence at position 0 has no prediction.
* Bins: edges e_0 < e_1 < ... < e_k; bin j holds the distances d with e_j <= d < e_{j+1}, and a
  last bin holds d >= e_k. Distances below e_0 are left out (and counted in `below`). Default
  edges 0, 10, 20, ..., 100 (11 bins: [0,10) ... [90,100), >=100); "log" gives 1, 2, 4, ..., 512.
  Per bin: the number of occurrences and each model's mean probability (NaN in an empty bin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from rnnlens.analysis.classes import unique_names
from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text

DEFAULT_EDGES = tuple(range(0, 101, 10))
LOG_EDGES = tuple(2 ** k for k in range(10))
NEWLINE = "newline"  # the study name of newline-by-column


def parse_pair(pair: str) -> tuple[str, str]:
    """'{}' -> ('{', '}'): exactly two different characters, the opener first."""
    if not isinstance(pair, str) or len(pair) != 2 or pair[0] == pair[1]:
        raise RnnlensError(f"a pair is two different characters, the opener then the closer, e.g. '{{}}' or '()'; "
                           f"got {pair!r}")
    return pair[0], pair[1]


def parse_bins(spec) -> tuple[int, ...]:
    """Bin edges from '0,10,20,50', 'log' or a sequence of numbers: increasing, >= 0."""
    if spec is None:
        return DEFAULT_EDGES
    if isinstance(spec, str):
        if spec.strip() == "log":
            return LOG_EDGES
        try:
            edges = tuple(int(x) for x in spec.split(",") if x.strip())
        except ValueError:
            raise RnnlensError(f"--bins is 'log' or increasing integer edges like 0,10,20,50; got {spec!r}") from None
    else:
        edges = tuple(int(x) for x in spec)
    if not edges or any(e < 0 for e in edges) or any(b <= a for a, b in pairwise(edges)):
        raise RnnlensError(f"bin edges must be one or more increasing integers >= 0 (e.g. 0,10,20,50); got {spec!r}")
    return edges


def bin_labels(edges) -> list[str]:
    """'0-9', '10-19', ..., '>=100': the distances each bin holds, both ends included."""
    labels = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in pairwise(edges)]
    return labels + [f">={edges[-1]}"]


def closing_distances(text: str, pair: str = "{}") -> tuple[np.ndarray, np.ndarray]:
    """(positions, distances) of every closer of `pair` whose opener is in the text, nesting respected.

    positions: [N] int64 text index of each matched closer, increasing; distances: [N] int64,
    closer position - matching opener position. Unmatched closers are skipped.
    """
    opener, closer = parse_pair(pair)
    stack: list[int] = []
    positions, distances = [], []
    i = -1
    # only the pair's characters matter: jump between them with str.find rather than read every character
    while True:
        a, b = text.find(opener, i + 1), text.find(closer, i + 1)
        if a < 0 and b < 0:
            break
        if b < 0 or 0 <= a < b:
            stack.append(a)
            i = a
        else:
            if stack:
                positions.append(b)
                distances.append(b - stack.pop())
            i = b
    return np.asarray(positions, dtype=np.int64), np.asarray(distances, dtype=np.int64)


def newline_columns(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions, columns) of every '\\n' after the text's first: column = characters on the line it ends."""
    chars = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    pos = np.flatnonzero(chars == 10).astype(np.int64)
    return pos[1:], (pos[1:] - pos[:-1] - 1)


@dataclass
class LongRange:
    """Mean probability of a closing character by distance bin, per model (one study: one pair, or newlines)."""

    study: str               # the pair ('{}') or 'newline'
    char: str                # the character whose probability is measured
    models: list[str]
    edges: tuple[int, ...]
    counts: np.ndarray       # [bins] occurrences per bin
    mean_p: np.ndarray       # [M, bins] mean probability of the closing character (NaN where counts == 0)
    positions: np.ndarray    # [N] text positions of the occurrences (those with a prediction)
    distances: np.ndarray    # [N] distance to the opener (column for newlines)
    probs: np.ndarray        # [M, N] the probability each model gave each occurrence
    below: int = 0           # occurrences with a distance below the first edge, left out of the bins
    distance_name: str = field(default="distance to the opener")

    @property
    def labels(self) -> list[str]:
        return bin_labels(self.edges)

    def difference(self, other: int = 1, first: int = 0) -> np.ndarray:
        """[bins] mean p of model `first` minus that of model `other` (positive: `first` is better)."""
        return self.mean_p[first] - self.mean_p[other]

    def rows(self) -> list[dict]:
        """One row per bin and model: study, bin, lo, hi (None: open), count, model, mean_p."""
        out = []
        his = list(self.edges[1:]) + [None]
        for j, (label, lo, hi) in enumerate(zip(self.labels, self.edges, his)):
            for m, model in enumerate(self.models):
                v = self.mean_p[m, j]
                out.append({"study": self.study, "bin": label, "lo": lo, "hi": hi, "count": int(self.counts[j]),
                            "model": model, "mean_p": None if not np.isfinite(v) else float(v)})
        return out

    def to_dict(self) -> dict:
        return {"study": self.study, "char": self.char, "distance": self.distance_name, "models": self.models,
                "edges": list(self.edges), "bins": self.labels, "counts": self.counts.tolist(),
                "occurrences": len(self.positions), "below_first_edge": self.below,
                "mean_p": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.mean_p],
                "overall_mean_p": [None if not len(self.positions) else float(p.mean()) for p in self.probs]}


def binned(preds, study: str, char: str, positions: np.ndarray, distances: np.ndarray, edges,
           distance_name: str) -> LongRange:
    """Bin occurrences (text positions of `char` with their distances) and average each model's probability."""
    edges = parse_bins(edges)
    has_prediction = positions >= 1
    positions, distances = positions[has_prediction], distances[has_prediction]
    names = unique_names(preds)
    probs = np.zeros((len(preds), len(positions)))
    for m, p in enumerate(preds):
        # every occurrence's true next character is `char`, so its probability is the target probability
        probs[m] = p.target_probs[positions - 1]
    inside = distances >= edges[0]
    which = np.searchsorted(np.asarray(edges), distances[inside], side="right") - 1  # bin index, last is open
    bins = len(edges)
    counts = np.bincount(which, minlength=bins)
    mean = np.full((len(preds), bins), np.nan)
    for m in range(len(preds)):
        sums = np.bincount(which, weights=probs[m, inside], minlength=bins)
        mean[m, counts > 0] = sums[counts > 0] / counts[counts > 0]
    return LongRange(study=study, char=char, models=names, edges=edges, counts=counts, mean_p=mean,
                     positions=positions, distances=distances, probs=probs, below=int((~inside).sum()),
                     distance_name=distance_name)


def closing_study(*preds: Predictions, pair: str = "{}", bins=None) -> LongRange:
    """The paper's closing-brace study for `pair`: each model's mean probability of the closer by distance to its opener."""
    text = check_same_text(*preds)
    positions, distances = closing_distances(text, pair)
    return binned(preds, pair, pair[1], positions, distances, bins, "distance to the opener")


def newline_study(*preds: Predictions, bins=None) -> LongRange:
    """Each model's mean probability of '\\n' at the end of a line, by the line's length (its column)."""
    text = check_same_text(*preds)
    positions, columns = newline_columns(text)
    return binned(preds, NEWLINE, "\n", positions, columns, bins, "column (line length)")


def write_csv(studies: list[LongRange], path: str | Path) -> Path:
    """Every study's bins in one CSV: study, bin, lo, hi, count, model, mean_p."""
    rows = [row for s in studies for row in s.rows()]
    return write_rows(path, rows, ["study", "bin", "lo", "hi", "count", "model", "mean_p"])


def write_json(studies: list[LongRange], path: str | Path) -> Path:
    from rnnlens.fileio import write_json_atomic
    write_json_atomic(path, {"studies": [s.to_dict() for s in studies]})
    return Path(path)
