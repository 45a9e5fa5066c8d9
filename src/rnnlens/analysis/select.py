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

LSTMVis's rule (`match_runs`). A unit matches a span [s, e) when it is on (>= threshold) at every
character of the span and off at the `before` characters just before it and the `after` characters just
after it (outside the text counts as off): the span is one of the unit's maximal on-runs, with room
around it. Spans of `min_length`..`max_length` characters are ranked by how many of the selected units
match them exactly (then by position); a span must be matched by at least `min_units` of them.
Computed from each unit's on-runs: O(T * k).
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


def _checked_units(units, H: int) -> np.ndarray:
    """The selected units as int64 [k], at least one, each in 0..H-1."""
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    if len(units) == 0:
        raise RnnlensError("no units to match: select a span where some units are on (lower the threshold)")
    if units.min() < 0 or units.max() >= H:
        raise RnnlensError(f"units must be 0..{H - 1}; got {units[(units < 0) | (units >= H)][0]}")
    return units


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
    units = _checked_units(units, H)
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


@dataclass(frozen=True)
class RunMatch:
    start: int    # first character of the span
    end: int      # one past its last character
    units: int    # how many selected units are on across it and off just before and after
    score: float  # units / the number of selected units

    def to_dict(self) -> dict:
        return asdict(self)


def match_runs(values: np.ndarray, units, threshold: float, *, min_length: int, max_length: int,
               before: int = 1, after: int = 1, min_units: int = 1, top: int = 50,
               bins: int = 0) -> tuple[list[RunMatch], np.ndarray, int]:
    """LSTMVis's match (see the module docstring): the best `top` spans, best first; a histogram of every
    matching span's start over `bins` equal parts of the text (for a minimap; empty when bins=0); and how
    many spans matched in all."""
    T, H = values.shape
    units = _checked_units(units, H)
    if not 1 <= min_length <= max_length:
        raise RnnlensError(f"the match length must satisfy 1 <= min_length <= max_length; got {min_length}..{max_length}")
    if before < 0 or after < 0:
        raise RnnlensError(f"before and after (the look-around) must be >= 0; got {before}, {after}")
    if top < 1 or min_units < 1:
        raise RnnlensError("top and min_units must be >= 1")
    starts_all, ends_all = [], []
    step = max(1, (1 << 24) // max(1, T))  # units per slab: bounds the boolean array to ~16M entries
    for u0 in range(0, len(units), step):
        on = np.asarray(values[:, units[u0:u0 + step]], dtype=np.float32).T >= threshold  # [k, T]
        padded = np.zeros((on.shape[0], T + 2), dtype=np.int8)
        padded[:, 1:-1] = on
        d = np.diff(padded, axis=1)                     # +1 where a run starts, -1 one past where it ends
        su, s = np.nonzero(d == 1)
        eu, e = np.nonzero(d == -1)                      # same order: runs of one unit in time order
        if len(s) == 0:
            continue
        first = np.r_[True, su[1:] != su[:-1]]          # the unit's first run: nothing on before it
        last = np.r_[su[1:] != su[:-1], True]
        # off characters before and after each run; beyond the text's ends counts as off
        gap_before = np.where(first, s + before, s - np.r_[0, e[:-1]])
        gap_after = np.where(last, (T - e) + after, np.r_[s[1:], 0] - e)
        length = e - s
        keep = (length >= min_length) & (length <= max_length) & (gap_before >= before) & (gap_after >= after)
        starts_all.append(s[keep])
        ends_all.append(e[keep])
    if not starts_all:
        return [], np.zeros(bins, np.int64), 0
    s, e = np.concatenate(starts_all), np.concatenate(ends_all)
    if len(s) == 0:
        return [], np.zeros(bins, np.int64), 0
    spans, counts = np.unique(np.stack([s, e], axis=1), axis=0, return_counts=True)
    ok = counts >= min_units
    spans, counts = spans[ok], counts[ok]
    order = np.lexsort((spans[:, 0], -counts))[:top]
    k = len(units)
    found = [RunMatch(int(spans[i, 0]), int(spans[i, 1]), int(counts[i]), float(counts[i]) / k) for i in order]
    hist = np.bincount((spans[:, 0] * bins // T).astype(np.int64), minlength=bins)[:bins] if bins else \
        np.zeros(0, np.int64)
    return found, hist, int(len(spans))
