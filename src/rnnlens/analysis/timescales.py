"""Memory time constants: how many characters each unit's memory lasts, from its keep gate.

An LSTM cell follows c_t = f_t * c_{t-1} + i_t * g_t: with nothing written, what the cell holds
is multiplied by the forget activation f_t at every character, so after n characters by
f_1 * ... * f_n. With a constant f that is f^n (0.9^10 = 0.35: a forget gate of 0.9 keeps a third
after ten characters), and the half-life, the n at which half is left, is

    half_life = ln(0.5) / ln(f)            (characters; f = 0.5 -> 1, f = 0.9 -> 6.6, f = 0.99 -> 69)

A GRU keeps the fraction 1 - z_t of its state, in the paper's convention h_t = (1 - z_t) h_{t-1} +
z_t h~_t (z the weight of the new candidate): 1 - z plays the forget gate's part, with the same
formula. The trace stores torch's gate, which is that keep fraction 1 - z itself (docs/trace.md), so
it is read as it is and labelled '1-z'.

Per unit, over the T characters of a trace:

    mean           = (1/T) sum_t f_t                      the arithmetic mean (what the issue asks)
    geometric_mean = exp((1/T) sum_t ln f_t)              the mean per-character factor of the product
    half_life           = ln(0.5) / ln(mean)
    half_life_geometric = ln(0.5) / ln(geometric_mean)

The product f_1 * ... * f_n over a stretch of text equals geometric_mean^n exactly, so
half_life_geometric is the half-life the unit actually shows on this text; half_life, from the
arithmetic mean, is never shorter (AM >= GM) and says what a gate held at its average value would
keep. A gate that is usually ~1 but drops to ~0 now and then (a unit that resets at newlines)
has a long half_life and a short half_life_geometric: the two side by side tell those units apart.

Edges: a mean of exactly 1 gives an infinite half-life (inf; null in JSON), a mean of 0 gives 0
(a single f_t = 0 makes the geometric mean 0: the memory is wiped). Only a plain RNN has no keep
gate: its memory decays through W_hh, which `rnnlens gradients` measures instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.analysis.streaming import check_gate_array, row_blocks
from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.errors import RnnlensError
from rnnlens.names import layer_names
from rnnlens.names import name as activation_name
from rnnlens.trace import Trace

KEEP_GATE = {"lstm": "gate.forget", "gru": "gate.update"}
LONG = (10, 100)  # half-lives (characters) the summary counts units beyond


@dataclass
class Timescales:
    """Per layer and unit: the keep gate's mean activations and the half-lives they imply."""

    cell: str
    gate: str                      # "forget" (LSTM) or "update" (GRU)
    mean: np.ndarray               # [layers, units] arithmetic mean of the gate over the text
    geometric_mean: np.ndarray     # [layers, units] exp(mean of ln gate)
    chars: int                     # T
    source: str | None = None

    @property
    def layers(self) -> int:
        return self.mean.shape[0]

    @property
    def size(self) -> int:
        return self.mean.shape[1]

    @property
    def half_life(self) -> np.ndarray:
        """[layers, units] ln(0.5) / ln(mean), in characters (inf where mean = 1)."""
        return half_life(self.mean)

    @property
    def half_life_geometric(self) -> np.ndarray:
        """[layers, units] ln(0.5) / ln(geometric_mean): the half-life the unit shows on this text."""
        return half_life(self.geometric_mean)

    def summary(self) -> list[dict]:
        """One row per layer: the mean gate; for both half-lives the quartiles (each the value of one unit: the
        smallest with at least that fraction of units at or below it), the largest finite value (None if
        none), how many are infinite, and how many exceed 10 and 100 characters."""
        rows = []
        for layer in range(self.layers):
            row = {"layer": layer, "units": self.size, "mean_gate": float(self.mean[layer].mean())}
            for key, values in (("half_life", self.half_life[layer]),
                                ("half_life_geometric", self.half_life_geometric[layer])):
                # quantiles that are some unit's value: interpolating towards an infinite half-life gives NaN
                q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75], method="inverted_cdf")
                row[key] = {"q25": _finite(q25), "median": _finite(q50), "q75": _finite(q75),
                            "max": _finite(values[np.isfinite(values)].max(initial=-np.inf)),
                            "infinite": int(np.isinf(values).sum()),
                            **{f"over_{n}": int((values > n).sum()) for n in LONG}}
            rows.append(row)
        return rows

    def to_rows(self) -> list[dict]:
        """One row per unit (what timescales.csv holds; an infinite half-life is written inf)."""
        hl, hg = self.half_life, self.half_life_geometric
        return [{"layer": layer, "unit": unit, "mean": float(self.mean[layer, unit]),
                 "geometric_mean": float(self.geometric_mean[layer, unit]),
                 "half_life": float(hl[layer, unit]), "half_life_geometric": float(hg[layer, unit])}
                for layer in range(self.layers) for unit in range(self.size)]

    def write_csv(self, path: str | Path) -> Path:
        return write_rows(path, self.to_rows(), ["layer", "unit", "mean", "geometric_mean", "half_life",
                                                 "half_life_geometric"])

    def to_dict(self) -> dict:
        """JSON-ready (strict JSON: an infinite half-life is null). Per-unit lists are [layer][unit]."""
        return {"cell": self.cell, "gate": self.gate, "layers": self.layers, "size": self.size,
                "chars": self.chars, "source": self.source, "summary": self.summary(),
                "mean": self.mean.tolist(), "geometric_mean": self.geometric_mean.tolist(),
                "half_life": [[_finite(v) for v in row] for row in self.half_life],
                "half_life_geometric": [[_finite(v) for v in row] for row in self.half_life_geometric]}


def half_life(keep: np.ndarray | float) -> np.ndarray:
    """ln(0.5) / ln(keep) in steps, elementwise, for keep fractions in [0, 1]: 1 -> inf, 0 -> 0."""
    keep = np.clip(np.asarray(keep, dtype=np.float64), 0.0, 1.0)  # float rounding may step past 1
    with np.errstate(divide="ignore"):
        log_keep = np.log(keep)  # -inf at 0, 0 at 1
    out = np.empty_like(keep)
    np.divide(math.log(0.5), log_keep, out=out, where=log_keep < 0)  # ln 0.5 / -inf = 0: the f = 0 edge
    out[log_keep == 0] = np.inf
    return out


def memory_timescales(trace: Trace) -> Timescales:
    """Mean keep-gate activation and half-life per unit: LSTM forget gate, GRU update gate."""
    gate = keep_gate(trace.cell)
    T, H = len(trace), trace.size
    if T == 0:
        raise RnnlensError("the trace is empty: trace a text of at least one character")
    total = np.zeros((trace.layers, H))
    log_total = np.zeros((trace.layers, H))
    for layer in range(trace.layers):
        name = activation_name(layer, gate)
        array = trace[name]
        check_gate_array(name, array, T, H)
        for block in row_blocks(array):
            block = block.astype(np.float64)  # sums of a million float32 values lose digits
            total[layer] += block.sum(axis=0)
            with np.errstate(divide="ignore"):
                log_total[layer] += np.log(np.clip(block, 0.0, 1.0)).sum(axis=0)
    label = "1-z" if trace.cell == "gru" else gate.removeprefix("gate.")  # the paper's update gate is z
    return Timescales(cell=trace.cell, gate=label, mean=np.clip(total / T, 0.0, 1.0),
                      geometric_mean=np.exp(log_total / T), chars=T, source=trace.source)


def timescale_names(cell: str, layers: int) -> list[str]:
    """The trace arrays memory_timescales reads, to trace only those."""
    return layer_names(layers, [keep_gate(cell)])


def keep_gate(cell: str) -> str:
    """The trace name of the gate that scales what a unit keeps from one character to the next."""
    if cell == "ffn":
        raise RnnlensError("an n-NN (ffn) baseline has no memory to measure: it sees exactly its last --context "
                           "characters and has no gates; use an LSTM or GRU model")
    if cell not in KEEP_GATE:
        raise RnnlensError(f"a plain {cell.upper()} has no forget or update gate to read time constants "
                           "from; use an LSTM or GRU model (`rnnlens gradients` measures any cell's memory)")
    return KEEP_GATE[cell]


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
