"""Gate saturation: how often each gate unit is nearly shut or nearly open (the paper's Figure 3).

Karpathy, Johnson & Fei-Fei call a gate activation left-saturated when it is below 0.1 and
right-saturated when it is above 0.9, and plot, per layer, each gate unit at (fraction of
characters left-saturated, fraction right-saturated). A forget gate that is right-saturated
most of the time keeps its cell almost unchanged from step to step: an integrator, a unit that
remembers over long stretches. The two fractions of a unit add up to at most 1.

Definitions (T characters of a trace, activations a_t of one gate unit):

    left  = #{t : a_t < low}  / T        (strictly below)
    right = #{t : a_t > high} / T        (strictly above)

with 0 <= low < high <= 1 (defaults 0.1 and 0.9). The comparisons are exact for every storage
type of the trace (float16, float32, float64): an activation equal to a threshold is not
saturated. LSTM gates: input, forget, output (the candidate g is a tanh, not a gate); GRU:
reset, update. The arrays are read a block of rows at a time, so a memory-mapped trace of a
million characters is never loaded whole.

The GRU's update gate is counted in the paper's convention: h = (1 - z) h_prev + z h~, z the weight
of the new candidate. The trace stores torch's gate, the weight of the previous state (see
docs/trace.md), so z = 1 - stored: a left-saturated update gate (z < low) keeps its state, a
right-saturated one (z > high) replaces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.analysis.streaming import check_gate_array, row_blocks
from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.errors import RnnlensError
from rnnlens.names import GATES, layer_names
from rnnlens.names import name as activation_name
from rnnlens.trace import Trace

MOSTLY = 0.5  # a unit is "mostly" left/right-saturated when it is so more than half of the time


@dataclass
class Saturation:
    """Per layer, gate and unit: the fraction of characters the gate spent below `low` / above `high`."""

    cell: str                # "lstm" or "gru"
    gates: tuple[str, ...]   # short gate names, e.g. ("input", "forget", "output")
    left: np.ndarray         # [layers, gates, units] fraction of time < low
    right: np.ndarray        # [layers, gates, units] fraction of time > high
    low: float
    high: float
    chars: int               # T, the characters the fractions are over
    source: str | None = None

    @property
    def layers(self) -> int:
        return self.left.shape[0]

    @property
    def size(self) -> int:
        return self.left.shape[2]

    def gate(self, layer: int, gate: str) -> tuple[np.ndarray, np.ndarray]:
        """(left [H], right [H]) of one layer's gate, by short name ('forget') or trace name ('gate.forget')."""
        short = gate.removeprefix("gate.")
        if short not in self.gates:
            raise RnnlensError(f"a {self.cell} has gates {', '.join(self.gates)}; got {gate!r}")
        if not 0 <= layer < self.layers:
            raise RnnlensError(f"layer {layer} does not exist: layers 0..{self.layers - 1}")
        g = self.gates.index(short)
        return self.left[layer, g], self.right[layer, g]

    def summary(self, mostly: float = MOSTLY) -> list[dict]:
        """One row per layer and gate: mean fractions and how many units are saturated most of the time."""
        rows = []
        for layer in range(self.layers):
            for g, gate in enumerate(self.gates):
                left, right = self.left[layer, g], self.right[layer, g]
                rows.append({"layer": layer, "gate": gate, "mean_left": float(left.mean()),
                             "mean_right": float(right.mean()), "mostly_left": int((left > mostly).sum()),
                             "mostly_right": int((right > mostly).sum()), "units": self.size})
        return rows

    def to_rows(self) -> list[dict]:
        """One row per unit: layer, gate, unit, left, right (what saturation.csv holds)."""
        return [{"layer": layer, "gate": gate, "unit": unit, "left": float(self.left[layer, g, unit]),
                 "right": float(self.right[layer, g, unit])}
                for layer in range(self.layers) for g, gate in enumerate(self.gates) for unit in range(self.size)]

    def write_csv(self, path: str | Path) -> Path:
        return write_rows(path, self.to_rows(), ["layer", "gate", "unit", "left", "right"])

    def to_dict(self) -> dict:
        """JSON-ready: settings, the summary, and the per-unit fractions as nested lists [layer][gate][unit]."""
        return {"cell": self.cell, "layers": self.layers, "size": self.size, "chars": self.chars,
                "low": self.low, "high": self.high, "source": self.source, "gates": list(self.gates),
                "summary": self.summary(), "left": self.left.tolist(), "right": self.right.tolist()}


def check_thresholds(low: float, high: float) -> None:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not ok or not 0 <= low < high <= 1:
        raise RnnlensError(f"saturation thresholds must satisfy 0 <= low < high <= 1 (--low, --high); "
                           f"got low={low!r}, high={high!r}")


def gate_saturation(trace: Trace, low: float = 0.1, high: float = 0.9) -> Saturation:
    """The fraction of characters each gate unit of `trace` is left-saturated (< low) and right-saturated (> high).

    The trace needs every gate array of its cell type (e.g. lm.trace(text, names=saturation_names(...))).
    """
    check_thresholds(low, high)
    gates = gates_of(trace.cell)
    T, H = len(trace), trace.size
    if T == 0:
        raise RnnlensError("the trace is empty: trace a text of at least one character")
    counts_left = np.zeros((trace.layers, len(gates), H), dtype=np.int64)
    counts_right = np.zeros_like(counts_left)
    for layer in range(trace.layers):
        for g, gate in enumerate(gates):
            name = activation_name(layer, gate)
            array = trace[name]
            check_gate_array(name, array, T, H)
            below, above = strict_bounds(low, high, array.dtype)
            for block in row_blocks(array):
                if paper_update(trace.cell, gate):
                    block = 1.0 - block.astype(np.float64)  # torch's z -> the paper's: the candidate's weight
                    below, above = low, high
                counts_left[layer, g] += np.count_nonzero(block < below, axis=0)
                counts_right[layer, g] += np.count_nonzero(block > above, axis=0)
    return Saturation(cell=trace.cell, gates=tuple(gate.removeprefix("gate.") for gate in gates),
                      left=counts_left / T, right=counts_right / T, low=float(low), high=float(high), chars=T,
                      source=trace.source)


def paper_update(cell: str, gate: str) -> bool:
    """Whether this gate is stored in torch's convention but read in the paper's (the GRU update gate)."""
    return cell == "gru" and gate == "gate.update"


def saturation_names(cell: str, layers: int) -> list[str]:
    """The trace arrays gate_saturation reads, to trace only those."""
    return layer_names(layers, gates_of(cell))


def gates_of(cell: str) -> tuple[str, ...]:
    """The trace names of a cell type's gates (LSTM: input, forget, output; GRU: reset, update)."""
    gates = GATES.get(cell, ())
    if not gates:
        what = "an n-NN (ffn) baseline" if cell == "ffn" else f"a plain {cell.upper()}"
        raise RnnlensError(f"gate saturation needs gates, and {what} has none; "
                           "use an LSTM or GRU model")
    return gates


def strict_bounds(low: float, high: float, dtype) -> tuple[np.generic, np.generic]:
    """Thresholds in the array's own float type such that, for every value v of that type,
    v < below exactly when v < low, and v > above exactly when v > high.

    Comparing a float16 or float32 array with a rounded threshold would misclassify the one
    representable value next to it; rounding `low` up and `high` down to the type does not.
    """
    dtype = np.dtype(dtype)
    below, above = dtype.type(low), dtype.type(high)
    if float(below) < low:  # compared as Python floats: exact
        below = np.nextafter(below, dtype.type(np.inf))
    if float(above) > high:
        above = np.nextafter(above, dtype.type(-np.inf))
    return below, above
