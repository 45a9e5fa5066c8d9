"""Select and match, as in LSTMVis (Strobelt et al., 2017), over one activation of a trace.

* select: given a span [start, end) of the text and a threshold, the units that are "on"
  (value >= threshold) at every character of the span: a hypothesis of which units encode
  what the span has in common.
* match: the other places in the text where the same units are on, ranked.

Values are the ones a picture shows (rnnlens.render.colours.display_for): tanh(c) for LSTM
cells (LSTMVis applies tanh by default too), h and the candidates as they are (-1..1), gates
as they are (0..1).

The match rule. For the k selected units, on[t] = how many of them are >= threshold at
character t. Every window of L characters (L = the selection's length) scores

    score = sum of on[t] over the window / (k * L)

the fraction of (unit, character) pairs of the window that are on: 1.0 when every selected
unit is on at every character, as across the selection itself. Windows are ranked by score,
ties by position (earlier first), and taken greedily: a window that overlaps the selection or
a window already taken is skipped; windows scoring below `min_score` are not reported.
Computed with cumulative sums: O(T * k) for a text of T characters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rnnlens.errors import RnnlensError

MIN_SCORE = 0.5


@dataclass(frozen=True)
class Match:
    start: int    # first character of the window
    end: int      # one past its last character
    score: float  # fraction of (selected unit, character) pairs on, 0..1

    def to_dict(self) -> dict:
        return asdict(self)


def check_range_in(T: int, start: int, end: int) -> tuple[int, int]:
    if not (isinstance(start, (int, np.integer)) and isinstance(end, (int, np.integer))):
        raise RnnlensError(f"start and end are character positions (integers); got {start!r}, {end!r}")
    if not 0 <= start < end <= T:
        raise RnnlensError(f"the span {start}..{end} is not inside the text's 0..{T} characters; "
                           "choose 0 <= start < end <= length")
    return int(start), int(end)


def units_on(values: np.ndarray, start: int, end: int, threshold: float) -> np.ndarray:
    """Indices of the units (columns of values [T, H]) that are >= threshold at every character of
    [start, end), ascending."""
    start, end = check_range_in(values.shape[0], start, end)
    low = np.asarray(values[start:end], dtype=np.float32).min(axis=0)  # [H]: each unit's lowest value over the span
    return np.flatnonzero(low >= threshold)


def match(values: np.ndarray, units, threshold: float, length: int, *, exclude: tuple[int, int] | None = None,
          top: int = 10, min_score: float = MIN_SCORE) -> list[Match]:
    """The best `top` windows of `length` characters where the `units` of values [T, H] are on
    (see the module docstring for the rule), best first."""
    T, H = values.shape
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    if len(units) == 0:
        raise RnnlensError("no units to match: select a span where some units are on (lower the threshold)")
    if units.min() < 0 or units.max() >= H:
        raise RnnlensError(f"units must be 0..{H - 1}; got {units[(units < 0) | (units >= H)][0]}")
    if not isinstance(length, (int, np.integer)) or not 1 <= length <= T:
        raise RnnlensError(f"the match length must be 1..{T} (the text's length); got {length!r}")
    if top < 1:
        raise RnnlensError(f"top must be >= 1; got {top}")
    length, k = int(length), len(units)
    on = (np.asarray(values[:, units], dtype=np.float32) >= threshold).sum(axis=1)  # [T] int: units on at t
    sums = np.concatenate([[0], np.cumsum(on, dtype=np.int64)])
    window = sums[length:] - sums[:-length]  # [n] integer counts: exact, no rounding in the ranking
    n = len(window)
    order = np.lexsort((np.arange(n), -window))  # by count descending, then position
    blocked = np.zeros(n, dtype=bool)
    if exclude is not None:
        a, b = exclude
        blocked[max(0, a - length + 1):max(0, min(n, b))] = True  # windows [s, s+L) that overlap [a, b)
    need = min_score * k * length
    picks: list[Match] = []
    for s in order:
        if window[s] < need - 1e-9 or window[s] == 0:
            break
        if blocked[s]:
            continue
        picks.append(Match(int(s), int(s) + length, float(window[s]) / (k * length)))
        if len(picks) == top:
            break
        blocked[max(0, s - length + 1):s + length] = True
    return picks
