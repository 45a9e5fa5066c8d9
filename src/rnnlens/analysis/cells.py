"""Interpretable-cell discovery: score every unit of a trace against features of its text.

For each feature (rnnlens.analysis.features), each activation kind (LSTM `cell` and `hidden` by
default, gates on request), each layer and each unit, one score:

* numeric features (bracket depth, position in line, ...): Pearson's r between the feature and
  the unit over all T characters; units rank by |r|;
* on/off features (inside a string, ...): ROC AUC, the probability that the unit is higher at a
  random character where the feature is on than at one where it is off, ties counted half
  (Mann-Whitney U / (n_on * n_off)); units rank by |AUC - 0.5| and are reported in the direction
  where AUC >= 0.5, saying whether the unit is high ("on") or low ("off") inside.

An LSTM cell c is scored as tanh(c) by default, the values Karpathy et al. (2015) colour their
figures by. r changes with it: a cell that counts (bracket depth) often steps by about 1 per
level, beyond tanh's linear range, so tanh(c) flattens its upper levels and r reads lower than
for c itself (0.84-0.90 against 0.88-0.93 for the best counters of the acceptance model of
tests/test_cells.py over six seeds); `cells="raw"` scores c as it is. AUC does not change with a
monotone function, so it is always computed on c itself: in float32, tanh(c) rounds to exactly
+-1 for |c| > 9 and would turn real differences into ties. A feature that is constant over the
text (no quotes at all) scores NaN and is reported as not present; so is r for a constant unit.

How it is computed, for a 1M-character trace of thousands of units in about a minute and in
bounded memory (the trace may be a read-only memmap of float16 or float32; it is read in blocks
of rows, never whole):

1. moments: one pass; per block, the centred activations [n, U] times the centred numeric
   features [n, F] (one matmul) plus column sums, sums of squares, minima and maxima,
   accumulated in float64. Activations are shifted by the first block's column means so that
   the sums of squares do not cancel.
2. histograms: one pass counting each unit's values in `auc_bins` equal bins between its
   minimum and maximum (one bincount per group of columns).
3. rank sums: one pass replacing every value by the mid-rank of its bin (centred) and summing
   the ranks where each on/off feature is on: one matmul of the on/off masks [F, n] with the
   ranks [n, U]. AUC = (rank sum - n_on (n_on + 1) / 2) / (n_on n_off).
   This binned AUC is exact for the values rounded to `auc_bins` levels between each unit's
   minimum and maximum: an on/off pair in one bin counts as a tie. It ranks the units. It is off
   where a unit's values crowd into a sliver of its range (a spike of near-equal values, or a
   few outliers stretching the range): by up to 0.1-0.16 for a few weak units of a trained model,
   while the best ones agree to 1e-2 or better.
4. exact rescoring and excerpts: one pass reads the columns of the best `exact_top` units of each
   on/off feature (by the binned AUC) and of the best `excerpts` units of each numeric one. The
   on/off ones get their exact AUC (a sort, then every 'on' value's mid-rank by binary search),
   are ranked again, and `CellScores.exact` marks them. For the best `excerpts` units of each
   feature, a window of the text (about 300 characters) is chosen where the feature changes and
   the unit follows it best (for a gallery; `gallery_entries`).

Sorting every column instead (6,144 sorts of 1M floats for a 2x512 LSTM's every activation) is
several times slower than steps 2-3 (measured in docs/benchmarks.md, "Cell discovery").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from rnnlens.analysis.features import BINARY, NUMERIC, Feature, resolve_features
from rnnlens.errors import RnnlensError
from rnnlens.names import LAYER_ACTIVATIONS, layer_names
from rnnlens.names import name as activation_name
from rnnlens.trace import Trace

DEFAULT_KINDS = {"lstm": ("cell", "hidden"), "gru": ("hidden",), "rnn": ("hidden",), "ffn": ("hidden",)}
EXACT_TOP = 10           # best units of each on/off feature whose AUC is computed exactly
CELL_VALUES = ("tanh", "raw")  # what r is computed on for an LSTM cell c: tanh(c) or c
AUC_BINS = 1024
BLOCK_VALUES = 1 << 24   # activation values per block of rows: 64 MB of float32
COLUMN_GROUP = 32        # columns per bincount / gather: keeps their tables in cache
EXCERPT_WIDTH = 300
# A unit is visible when its displayed value (tanh(c) for cells, h, gate values) moves by at least this much
# with the feature: the paper's pictures colour -1..+1, so 0.3 is a shift a reader sees (docs/cells.md)
MIN_CONTRAST = 0.3


@dataclass(frozen=True)
class FeatureSummary:
    """One feature as scored: its metric, and whether it varies over the text at all."""

    name: str
    kind: str          # 'numeric' or 'binary'
    metric: str        # 'r' or 'auc'
    description: str
    present: bool      # False when the feature is constant over the text (its scores are NaN)
    mean: float        # numeric: the mean value; binary: the fraction of characters where it is on


@dataclass(frozen=True)
class UnitScore:
    """One unit's score for one feature, in the direction where it reads naturally."""

    feature: str
    metric: str        # 'r' or 'auc'
    score: float       # r (signed), or the AUC in the direction where it is >= 0.5
    sign: int          # +1: the unit is higher where the feature is higher / on; -1: lower
    layer: int
    kind: str          # 'cell', 'hidden', 'gate.forget', ...
    unit: int
    exact: bool = True  # False for an AUC from the binned screening only (see the module docstring)
    excerpt: tuple[int, int] | None = None  # [start, end) of a window of the text that shows it
    contrast: float = float("nan")  # how far the displayed value moves with the feature, in its direction
    visible: bool = True  # contrast >= the scores' min_contrast: the picture shows the switch

    @property
    def activation(self) -> str:
        """The trace name of the unit's activation, e.g. 'layer1.cell'."""
        return activation_name(self.layer, self.kind)

    @property
    def label(self) -> str:
        """'L:I kind', e.g. '1:42 cell'."""
        return f"{self.layer}:{self.unit} {self.kind}"

    @property
    def strength(self) -> float:
        """|r|, or |AUC - 0.5| * 2 (both 0 for no relation, 1 for a perfect one)."""
        return abs(self.score) if self.metric == "r" else 2 * (self.score - 0.5)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activation"] = self.activation
        d["excerpt"] = list(self.excerpt) if self.excerpt else None
        d["contrast"] = _finite_or_none(self.contrast)
        return d


@dataclass
class CellScores:
    """Every unit's score for every feature, as plain arrays.

    values[f, a, i] is feature f's score of unit i of activation a (activations[a], e.g.
    'layer1.cell'): Pearson r for numeric features; for on/off features the raw AUC, P(unit higher
    where the feature is on), which is < 0.5 for units that are low inside. NaN where the feature
    is constant, and r is NaN for a constant unit. exact[f, a, i] is False where an AUC comes from
    the binned screening only (all but the best `exact_top` units of each on/off feature).
    """

    features: list[FeatureSummary]
    activations: list[str]
    size: int
    values: np.ndarray  # [F, A, H] float64
    exact: np.ndarray   # [F, A, H] bool
    chars: int
    auc_bins: int
    cells: str = "tanh"  # LSTM cells scored as tanh(c) ('tanh') or c ('raw')
    excerpts: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)
    # contrasts[f, a, i]: on/off features: mean displayed value where on - where off; numeric: the least-squares
    # change of the displayed value across the feature's 5th..95th percentile. Displayed: tanh(c), h, gates.
    contrasts: np.ndarray | None = None  # [F, A, H] float64
    min_contrast: float = MIN_CONTRAST

    def feature(self, name: str) -> FeatureSummary:
        for f in self.features:
            if f.name == name:
                return f
        raise RnnlensError(f"no scores for feature {name!r}; scored: {', '.join(f.name for f in self.features)}")

    def scores(self, name: str) -> np.ndarray:
        """[A, H] scores of one feature (see the class docstring)."""
        return self.values[[f.name for f in self.features].index(self.feature(name).name)]

    def strength(self, name: str) -> np.ndarray:
        """[A, H] |r| or 2 |AUC - 0.5|; NaN where there is no score."""
        s = self.scores(name)
        return np.abs(s) if self.feature(name).metric == "r" else 2 * np.abs(s - 0.5)

    def contrast(self, name: str) -> np.ndarray:
        """[A, H] contrast of every unit for feature `name`, in the direction of its score (see `contrasts`)."""
        f = [f.name for f in self.features].index(self.feature(name).name)
        if self.contrasts is None:
            return np.full(self.values.shape[1:], np.nan)
        raw = self.scores(name)
        sign = np.where(raw >= (0 if self.features[f].metric == "r" else 0.5), 1.0, -1.0)
        return sign * self.contrasts[f]

    def visible(self, name: str) -> np.ndarray:
        """[A, H] bool: the unit's picture shows the feature (contrast >= min_contrast); all True when the
        contrasts were not computed."""
        if self.contrasts is None:
            return np.ones(self.values.shape[1:], dtype=bool)
        return np.nan_to_num(self.contrast(name), nan=-1.0) >= self.min_contrast

    def best(self, name: str, n: int = 3, *, faint: bool = False) -> list[UnitScore]:
        """The n units that track feature `name` best (none if it is not present): units that both predict
        the feature and visibly move with it first, by score strength, then the faint ones (a saturated unit
        that separates the feature by a shift too small to see). faint=True: only those, strongest first."""
        info = self.feature(name)
        if not info.present:
            return []
        strength = np.nan_to_num(self.strength(name).ravel(), nan=-1.0)
        visible = self.visible(name).ravel()
        if faint:
            order = np.flatnonzero(~visible)
            order = order[np.argsort(-strength[order], kind="stable")]
        else:
            order = np.lexsort((-strength, ~visible))  # visible first, then by strength
        order = order[strength[order] >= 0][:max(0, n)]
        raw = self.scores(name).ravel()
        contrast = self.contrast(name).ravel()
        exact = self.exact[[f.name for f in self.features].index(name)].ravel()
        out = []
        for flat in order:
            a, unit = divmod(int(flat), self.size)
            layer, kind = _split_name(self.activations[a])
            value = float(raw[flat])
            if info.metric == "r":
                score, sign = value, (1 if value >= 0 else -1)
            else:
                score, sign = max(value, 1 - value), (1 if value >= 0.5 else -1)
            out.append(UnitScore(name, info.metric, score, sign, layer, kind, unit, bool(exact[flat]),
                                 self.excerpts.get((name, self.activations[a], unit)), float(contrast[flat]),
                                 bool(visible[flat])))
        return out

    def interpretable(self, min_strength: float = 0.3) -> list[dict]:
        """Per activation (layer and kind): how many units track some present feature, i.e. score at least
        `min_strength` (|r| or 2|AUC - 0.5|) and visibly move with it (contrast >= min_contrast)."""
        tracking = np.zeros(self.values.shape[1:], dtype=bool)  # [A, H]
        for f in self.features:
            if f.present:
                tracking |= (np.nan_to_num(self.strength(f.name), nan=0.0) >= min_strength) & self.visible(f.name)
        out = []
        for a, activation in enumerate(self.activations):
            layer, kind = _split_name(activation)
            n = int(tracking[a].sum())
            out.append({"activation": activation, "layer": layer, "kind": kind, "units": self.size,
                        "tracking": n, "share": n / self.size})
        return out

    def to_dict(self, top: int = 3) -> dict:
        """Plain JSON-ready data: each feature with its best `top` units."""
        return {"chars": self.chars, "activations": self.activations, "size": self.size,
                "auc_bins": self.auc_bins, "cells": self.cells, "min_contrast": self.min_contrast,
                "interpretable": self.interpretable(),
                "features": [{**asdict(f), "mean": _finite_or_none(f.mean),
                              "best": [u.to_dict() for u in self.best(f.name, top)],
                              "faint": [u.to_dict() for u in self.best(f.name, top, faint=True)]}
                             for f in self.features]}


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def _split_name(activation: str) -> tuple[int, str]:
    head, kind = activation.split(".", 1)
    return int(head[len("layer"):]), kind


# ---------------------------------------------------------------------------------------------
# Which activations


def kinds_for(cell: str, kinds: Iterable[str] | str | None = None) -> list[str]:
    """Activation kinds of a cell type to score: 'cell', 'hidden', a gate ('gate.forget' or just
    'forget'), or 'all'; None: cell and hidden for an LSTM, hidden for a GRU or RNN."""
    available = LAYER_ACTIVATIONS[cell]
    if kinds is None:
        return list(DEFAULT_KINDS[cell])
    chosen = []
    for k in ([kinds] if isinstance(kinds, str) else list(kinds)):
        k = k.strip()
        if k == "all":
            chosen.extend(available)
        elif k in available:
            chosen.append(k)
        elif f"gate.{k}" in available:
            chosen.append(f"gate.{k}")
        else:
            raise RnnlensError(f"a {cell} has no activation kind {k!r}; choose from {', '.join(available)} or all")
    if not chosen:
        raise RnnlensError("no activation kinds to score; name some, e.g. cell,hidden")
    return list(dict.fromkeys(chosen))


def resolve_kinds(trace: Trace, kinds: Iterable[str] | str | None = None) -> list[str]:
    """Activation names of `trace` to score, e.g. ['layer0.cell', 'layer0.hidden', 'layer1.cell', ...]
    (see kinds_for; by default those of the default kinds that the trace holds)."""
    names = layer_names(trace.layers, kinds_for(trace.cell, kinds))
    missing = [n for n in names if n not in trace]
    if kinds is not None and missing:
        raise RnnlensError(f"this trace has no {', '.join(missing[:4])}; trace those activations "
                           f"(lm.trace(text, names=...)) or choose other kinds")
    present = [n for n in names if n in trace]
    if not present:
        raise RnnlensError(f"this trace holds none of the activations scored by default ({', '.join(names[:4])}); "
                           f"name some with kinds=, e.g. {', '.join(LAYER_ACTIVATIONS[trace.cell])}")
    return present


def scored_values(kind: str, block: np.ndarray, cells: str = "tanh") -> np.ndarray:
    """What r is computed on, in place on a float32 block: tanh(c) for LSTM cells (unless
    cells='raw'), everything else as it is. (AUC is computed on the stored values.)"""
    if kind == "cell" and cells == "tanh":
        np.tanh(block, out=block)
    return block


# ---------------------------------------------------------------------------------------------
# Discovery


def discover(trace: Trace, features: Iterable[str | Feature] | None = None,
             kinds: Iterable[str] | str | None = None, *, excerpts: int = 3, excerpt_width: int = EXCERPT_WIDTH,
             exact_top: int = EXACT_TOP, auc_bins: int = AUC_BINS, cells: str = "tanh",
             min_contrast: float = MIN_CONTRAST, block_values: int = BLOCK_VALUES,
             progress: bool = False) -> CellScores:
    """Score every unit of `trace` against every feature of its text (see the module docstring).

    features: names of built-ins and Feature objects (default: all built-ins);
    kinds: activation kinds (see resolve_kinds); excerpts: for how many of the best units of each
    feature to choose a window of the text (0: none); exact_top: how many of the best units of each
    on/off feature get their exact AUC (0: binned AUC only); auc_bins: the binned AUC's resolution;
    cells: compute r on LSTM cells as tanh(c) ('tanh') or c ('raw'); min_contrast: how far a unit's
    displayed value must move with a feature to rank among the visible units (see CellScores.best).
    """
    if not isinstance(auc_bins, int) or auc_bins < 2:
        raise RnnlensError(f"auc_bins must be an integer >= 2; got {auc_bins!r}")
    for name, value in (("excerpts", excerpts), ("exact_top", exact_top)):
        if not isinstance(value, int) or value < 0:
            raise RnnlensError(f"{name} must be an integer >= 0; got {value!r}")
    if cells not in CELL_VALUES:
        raise RnnlensError(f"cells must be one of {', '.join(CELL_VALUES)}; got {cells!r}")
    T = len(trace)
    if T < 2:
        raise RnnlensError(f"the trace has {T} character(s); scoring units needs at least 2")
    chosen = resolve_features(features)
    names = resolve_kinds(trace, kinds)
    values = {f.name: f(trace.text) for f in chosen}
    summaries = [_summarise(f, values[f.name]) for f in chosen]
    numeric = [f.name for f in summaries if f.metric == "r"]
    binary = [f.name for f in summaries if f.metric == "auc"]
    reader = _BlockReader(trace, names, cells, block_values, progress,
                          passes=1 + 2 * bool(binary) + bool(excerpts or (exact_top and binary)))
    try:
        r, lo, hi, numeric_contrast, binary_contrast = _correlations(reader, [values[n] for n in numeric],
                                                                     [values[n] for n in binary])
        auc = _binned_aucs(reader, [values[n] for n in binary], lo, hi, auc_bins) if binary else []
        rows = {**dict(zip(numeric, r)), **dict(zip(binary, auc))}
        moves = {**dict(zip(numeric, numeric_contrast)), **dict(zip(binary, binary_contrast))}
        nothing = np.full(reader.columns, np.nan)
        table = np.stack([rows[f.name] if f.present else nothing for f in summaries])
        contrasts = np.stack([moves[f.name] if f.present else nothing for f in summaries])
        exact = np.array([[f.metric == "r"] * reader.columns for f in summaries])
        shape = (len(summaries), len(names), trace.size)
        scores = CellScores(summaries, names, trace.size, table.reshape(shape), exact.reshape(shape), T,
                            auc_bins, cells, contrasts=contrasts.reshape(shape), min_contrast=min_contrast)
        if excerpts or exact_top:
            _rescore_and_excerpt(scores, reader, values, exact_top, excerpts, excerpt_width)
    finally:
        reader.close()
    return scores


def _summarise(feature: Feature, values: np.ndarray) -> FeatureSummary:
    """Metric by the values' type (booleans: AUC, numbers: r), and whether they vary at all."""
    binary = values.dtype == np.bool_
    present = bool(values.any() and not values.all()) if binary else bool(np.ptp(values) > 0)
    return FeatureSummary(feature.name, BINARY if binary else NUMERIC, "auc" if binary else "r", feature.description,
                          present, float(np.mean(values, dtype=np.float64)))


class _BlockReader:
    """Reads the activations to score in blocks of rows, as stored (float32), either all of them as
    one array [n, U] (U = activations x units) or chosen columns; one progress bar over all passes."""

    def __init__(self, trace: Trace, names: list[str], cells: str, block_values: int, progress: bool, passes: int):
        self.trace, self.names, self.cells = trace, names, cells
        self.kinds = [_split_name(n)[1] for n in names]
        self.H = trace.size
        self.columns = len(names) * self.H
        self.rows = max(1, block_values // self.columns)
        self.T = len(trace)
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=passes * self.T, unit="char", unit_scale=True, desc="cells", leave=False)

    def blocks(self, columns: np.ndarray | None = None):
        """Yield (start, block [n, U or len(columns)] float32) over the whole trace."""
        for s in range(0, self.T, self.rows):
            e = min(self.T, s + self.rows)
            if columns is None:
                block = np.empty((e - s, self.columns), dtype=np.float32)
                for a, name in enumerate(self.names):
                    block[:, a * self.H:(a + 1) * self.H] = self.trace[name][s:e]
            else:
                block = np.empty((e - s, len(columns)), dtype=np.float32)
                activation, unit = np.divmod(columns, self.H)
                for a in np.unique(activation):
                    picked = np.flatnonzero(activation == a)
                    block[:, picked] = self.trace[self.names[a]][s:e][:, unit[picked]]  # rows, then columns
            yield s, block
            if self.bar is not None:
                self.bar.update(e - s)

    def display(self, block: np.ndarray) -> np.ndarray:
        """In place: the values the pictures colour (tanh(c) for cells, everything else as stored)."""
        for a, kind in enumerate(self.kinds):
            scored_values(kind, block[:, a * self.H:(a + 1) * self.H], "tanh")
        return block

    def score(self, block: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """In place: what r is computed on (tanh(c) for cells), for a block of all or of chosen columns."""
        if columns is None:
            for a, kind in enumerate(self.kinds):
                scored_values(kind, block[:, a * self.H:(a + 1) * self.H], self.cells)
        else:
            for j, col in enumerate(columns):
                scored_values(self.kinds[int(col) // self.H], block[:, j], self.cells)
        return block

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _correlations(reader: _BlockReader, numeric: list[np.ndarray], binary: list[np.ndarray]):
    """Pass 1: Pearson r [Fn, U] of each numeric feature with each column (on scored values), each column's min
    and max (of the stored values, for the AUC's bins), and the contrasts on the displayed values (tanh(c),
    h, gates): for each numeric feature the least-squares change across its 5th..95th percentile [Fn, U], for
    each on/off feature the mean where on minus the mean where off [Fb, U]."""
    T, U = reader.T, reader.columns
    F = len(numeric)
    y = np.stack(numeric, axis=1).astype(np.float64) if F else np.zeros((T, 0))  # [T, F]
    y_centred = (y - y.mean(axis=0)).astype(np.float32)
    y_ss = (y_centred.astype(np.float64) ** 2).sum(axis=0)
    masks = np.stack(binary, axis=1).astype(np.float32) if binary else np.zeros((T, 0), dtype=np.float32)
    raw_cells = reader.cells == "raw" and "cell" in reader.kinds  # then the scored cells are not the displayed
    shift = None
    x_sum = np.zeros(U)
    x_ss = np.zeros(U)
    cross = np.zeros((U, F))
    on_sum = np.zeros((masks.shape[1], U))  # displayed values summed where each on/off feature is on
    d_sum = np.zeros(U)
    d_cross = np.zeros((U, F)) if raw_cells else None
    lo = np.full(U, np.inf, dtype=np.float32)
    hi = np.full(U, -np.inf, dtype=np.float32)
    y_sum = y_centred.sum(axis=0, dtype=np.float64)
    for s, block in reader.blocks():
        np.minimum(lo, block.min(axis=0), out=lo)
        np.maximum(hi, block.max(axis=0), out=hi)
        display = reader.display(block.copy()) if raw_cells else None
        reader.score(block)
        if display is None:
            display = block  # scored = displayed: read before the shift below
        on_sum += masks[s:s + len(block)].T @ display
        d_sum += display.sum(axis=0, dtype=np.float64)
        if raw_cells and F:
            d_cross += display.T @ y_centred[s:s + len(block)]
        if shift is None:
            shift = block.mean(axis=0, dtype=np.float64).astype(np.float32)
        block -= shift
        x_sum += block.sum(axis=0, dtype=np.float64)
        x_ss += np.einsum("ij,ij->j", block, block, dtype=np.float64)
        if F:
            cross += block.T @ y_centred[s:s + len(block)]
    x_mean = x_sum / T
    x_var = x_ss / T - x_mean ** 2            # [U]
    cov = cross / T - np.outer(x_mean, y_sum / T)  # [U, F]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(np.outer(np.maximum(x_var, 0), y_ss / T))
        # the displayed value's least-squares slope on each numeric feature, times the feature's typical range
        d_cov = (d_cross / T - np.outer(d_sum / T, y_sum / T)) if raw_cells else cov
        typical = np.percentile(y, 95, axis=0) - np.percentile(y, 5, axis=0) if F else np.zeros(0)
        numeric_contrast = (d_cov / (y_ss / T) * typical).T  # [F, U]
        on = masks.sum(axis=0, dtype=np.float64)[:, None]    # [Fb, 1]
        binary_contrast = on_sum / on - (d_sum - on_sum) / (T - on)
    r[(hi - lo) <= 0] = np.nan  # a constant unit: no correlation to speak of
    return np.clip(r.T, -1, 1), lo, hi, numeric_contrast, binary_contrast


def _bin_keys(block: np.ndarray, lo: np.ndarray, scale: np.ndarray, bins: int, offsets: np.ndarray) -> np.ndarray:
    """Bin index of every value plus its column's offset, intp [n, c]: column j's bins are
    offsets[j] .. offsets[j] + bins - 1. Values >= lo give (x - lo) * scale >= 0 exactly; only a
    column's maximum lands on `bins` itself and is clipped into the top bin."""
    keys = block - lo
    keys *= scale
    np.minimum(keys, bins - 1, out=keys)
    keys += offsets  # whole numbers below 2**24: exact in float32
    return keys.astype(np.intp)


def _binned_aucs(reader: _BlockReader, binary: list[np.ndarray], lo: np.ndarray, hi: np.ndarray,
                 bins: int) -> np.ndarray:
    """Passes 2 and 3: ROC AUC [F, U] of each on/off feature against each column, by binned mid-ranks."""
    T, U = reader.T, reader.columns
    span = (hi - lo).astype(np.float64)
    scale = np.where(span > 0, bins / np.where(span > 0, span, 1), 0).astype(np.float32)
    groups = [(g, min(U, g + COLUMN_GROUP)) for g in range(0, U, COLUMN_GROUP)]
    offsets = np.arange(COLUMN_GROUP, dtype=np.float32) * bins

    counts = np.zeros((U, bins), dtype=np.int64)
    for _, block in reader.blocks():
        for g, e in groups:
            keys = _bin_keys(block[:, g:e], lo[g:e], scale[g:e], bins, offsets[:e - g])
            counts[g:e] += np.bincount(keys.ravel(), minlength=(e - g) * bins).reshape(e - g, bins)

    # centred mid-rank of each bin: ranks 1..T, ties (one bin) share their mean rank
    below = np.cumsum(counts, axis=1) - counts
    midrank = (below + (counts + 1) / 2 - (T + 1) / 2).astype(np.float32)  # [U, bins]

    masks = np.stack(binary, axis=1).astype(np.float32)  # [T, F]
    rank_sums = np.zeros((masks.shape[1], U))
    for s, block in reader.blocks():
        m = masks[s:s + len(block)].T  # [F, n]
        for g, e in groups:
            keys = _bin_keys(block[:, g:e], lo[g:e], scale[g:e], bins, offsets[:e - g])
            ranks = np.take(midrank[g:e].ravel(), keys)  # [n, c]
            rank_sums[:, g:e] += m @ ranks
    on = masks.sum(axis=0, dtype=np.float64)[:, None]  # [F, 1]
    off = T - on
    with np.errstate(divide="ignore", invalid="ignore"):
        # rank sum of the 'on' characters = centred sum + on * (T + 1) / 2
        return (rank_sums + on * (T + 1) / 2 - on * (on + 1) / 2) / (on * off)


# ---------------------------------------------------------------------------------------------
# Excerpts and gallery entries


def find_excerpt(text: str, feature: np.ndarray, unit: np.ndarray, sign: int = 1,
                 width: int = EXCERPT_WIDTH) -> tuple[int, int]:
    """A window [start, end) of about `width` characters where the feature turns on and off (or varies) and
    the unit visibly follows, so that both of its states are in view.

    `unit` holds the displayed values (tanh(c), h, a gate). Every window start is scored at once with
    cumulative sums: the correlation of feature and unit inside the window, times `sign`, times how much of
    the unit's whole swing the window shows (on/off features: the difference of the unit's means inside and
    outside the feature within the window; numeric: the unit's spread there), against the same over the
    text, capped at 1. Eligible windows are those where the feature varies (numeric: its standard deviation
    is at least half its global one; on/off: at least 10% of the window is on and 10% off); failing any, any
    window where it varies at all. The start is moved back to the beginning of its line when one starts
    within the window's first fifth.
    """
    T = len(text)
    width = max(2, min(int(width), T))
    y = np.asarray(feature, dtype=np.float64)
    x = np.asarray(unit, dtype=np.float64)
    n = T - width + 1

    def window_sums(v):
        c = np.concatenate([[0.0], np.cumsum(v)])
        return c[width:] - c[:n]
    sx, sy, sxx, syy, sxy = (window_sums(v) for v in (x, y, x * x, y * y, x * y))
    var_x = sxx / width - (sx / width) ** 2
    var_y = syy / width - (sy / width) ** 2
    binary = feature.dtype == np.bool_
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (sxy / width - sx * sy / width ** 2) / np.sqrt(var_x * var_y)
        if binary:  # the unit's mean where the feature is on minus where it is off, in the window and overall
            swing = sign * (sxy / sy - (sx - sxy) / (width - sy))
            on = y.astype(bool)
            whole = abs(x[on].mean() - x[~on].mean()) if on.any() and not on.all() else 0.0
        else:
            swing = np.sqrt(np.maximum(var_x, 0))
            whole = x.std()
        shown = np.clip(np.nan_to_num(swing / whole, nan=0.0) if whole > 0 else np.ones(n), 0, 1)
    r = np.nan_to_num(sign * r, nan=-2.0)
    score = np.where(r > 0, r * shown, r)
    varies = var_y > 1e-12
    if binary:
        share = sy / width
        eligible = varies & (share >= 0.1) & (share <= 0.9)
    else:
        eligible = varies & (np.sqrt(np.maximum(var_y, 0)) >= 0.5 * y.std())
    if not eligible.any():
        eligible = varies
    start = int(np.argmax(np.where(eligible, score, -3.0))) if eligible.any() else 0
    line_start = text.rfind("\n", start, start + width // 5)
    if line_start >= 0 and line_start + 1 < T:
        start = line_start + 1
    return start, min(T, start + width)


def exact_aucs(values: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Exact ROC AUC [F] of one unit's values [T] for each on/off mask: sort once, then each 'on'
    value's mid-rank is the mean of its two binary-search positions (ties counted half)."""
    ordered = np.sort(values)
    out = np.empty(len(masks))
    for f, on in enumerate(masks):
        inside = values[on]
        n_on, n_off = len(inside), len(values) - len(inside)
        rank_sum = (np.searchsorted(ordered, inside, "left").sum(dtype=np.float64)
                    + np.searchsorted(ordered, inside, "right").sum(dtype=np.float64) + n_on) / 2
        out[f] = (rank_sum - n_on * (n_on + 1) / 2) / (n_on * n_off) if n_on and n_off else np.nan
    return out


def _rescore_and_excerpt(scores: CellScores, reader: _BlockReader, values: dict[str, np.ndarray],
                         exact_top: int, excerpts: int, width: int) -> None:
    """Pass 4: read the columns of the best units once; exact AUC for the best `exact_top` of each
    on/off feature, then excerpt windows for the best `excerpts` of each feature."""
    def column(unit: UnitScore) -> int:
        return scores.activations.index(unit.activation) * scores.size + unit.unit
    wanted = {f.name: scores.best(f.name, max(exact_top, excerpts) if f.metric == "auc" else excerpts)
              for f in scores.features}
    columns = np.array(sorted({column(u) for units in wanted.values() for u in units}), dtype=np.int64)
    if not len(columns):
        return
    store = np.result_type(*(reader.trace[n].dtype for n in reader.names), np.float16)
    data = np.empty((reader.T, len(columns)), dtype=store)  # [T, k] as stored: float16 traces stay small
    for s, block in reader.blocks(columns):
        data[s:s + len(block)] = block
    index = {int(c): j for j, c in enumerate(columns)}
    for i, f in enumerate(scores.features):
        if f.metric != "auc" or not exact_top:
            continue
        flat_values, flat_exact = scores.values[i].reshape(-1), scores.exact[i].reshape(-1)
        for u in wanted[f.name][:exact_top]:
            col = column(u)
            flat_values[col] = exact_aucs(data[:, index[col]].astype(np.float32), [values[f.name]])[0]
            flat_exact[col] = True
    for f in scores.features:
        for u in scores.best(f.name, excerpts):
            col = column(u)
            if col not in index:  # ranked up only by the exact rescoring: its column was not read
                continue
            shown = scored_values(reader.kinds[col // reader.H], data[:, index[col]].astype(np.float32), "tanh")
            scores.excerpts[(f.name, u.activation, u.unit)] = find_excerpt(reader.trace.text, values[f.name],
                                                                           shown, u.sign, width)


@dataclass(frozen=True)
class GalleryEntry:
    """One panel of a gallery page: a unit over an excerpt of the text, with words to read it by.
    The fields are those of rnnlens.render.html.GalleryItem."""

    name: str      # activation, e.g. 'layer1.cell'
    unit: int
    title: str
    caption: str
    start: int
    end: int


def describe(score: UnitScore, description: str) -> str:
    """One sentence on what a unit's score says, e.g. 'r = +0.83 with open brackets ...: rises with it, by
    0.92 across the feature's typical range'."""
    if score.metric == "r":
        how = "rises with it" if score.sign > 0 else "falls as it rises"
        moves = f", by {score.contrast:.2f} across its typical range" if math.isfinite(score.contrast) else ""
        said = f"r = {score.score:+.2f} with {description}: the unit {how}{moves}"
    else:
        where = "high" if score.sign > 0 else "low"
        by = (f" ({score.contrast:.2f} {'higher' if score.sign > 0 else 'lower'} than outside)"
              if math.isfinite(score.contrast) else "")
        said = f"AUC {score.score:.3f} for {description}: the unit is {where} inside{by}"
    if not score.visible:
        said += " (too small a shift to see on its colour scale: saturated but separable)"
    return said


def gallery_entries(scores: CellScores, top: int = 1) -> list[GalleryEntry]:
    """For each feature present in the text, its best `top` units that have an excerpt, as gallery panels."""
    entries = []
    for f in scores.features:
        for u in scores.best(f.name, top):
            if u.excerpt is None:
                continue
            value = ("tanh(c)" if scores.cells == "tanh" else "c") if u.kind == "cell" else u.kind
            entries.append(GalleryEntry(
                name=u.activation, unit=u.unit,
                title=f"{f.name}: layer {u.layer} {u.kind} {u.unit}",
                caption=f"{describe(u, f.description)} (scored on {value}).",
                start=u.excerpt[0], end=u.excerpt[1]))
    return entries


# The paper's Figure 2 shows four kinds of cell; each is found among these features (the first present one
# whose best unit visibly switches wins): prose and code models differ in which of them they have.
PAPER_CELLS = (
    ("line length", ("chars_to_newline", "line_position")),
    ("quotes", ("in_double_quotes", "in_single_quotes")),
    ("brackets and if-conditions", ("bracket_depth", "in_py_condition", "in_c_condition", "paren_depth")),
    ("comments and strings", ("in_comment", "in_string")),
)


def paper_cells(scores: CellScores) -> list[tuple[str, UnitScore | None]]:
    """For each of the paper's four kinds of cell, the strongest visible unit among its features' best (or
    None when no feature of the kind is present or no unit of it visibly switches)."""
    out = []
    for kind, names in PAPER_CELLS:
        candidates = [u for n in names if n in {f.name for f in scores.features}
                      for u in scores.best(n, 1) if u.visible and u.excerpt is not None]
        out.append((kind, max(candidates, key=lambda u: u.strength) if candidates else None))
    return out
