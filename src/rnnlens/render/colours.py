"""Colour scales for activations, shared by the HTML and PNG renderers.

Two scales, so that a picture says at a glance what kind of quantity it shows:

* DIVERGING, for quantities in [-1, 1]: tanh(c) (the paper's choice for cells), h, the LSTM
  candidate g and the GRU candidate n. Red at -1, white at 0, blue at +1, as in the paper.
* GATE, for gates in [0, 1]: white at 0 (closed: nothing passes) to green at 1 (open).
  One hue, so it is never mistaken for the signed scale, and white for "closed" because a
  closed gate contributes nothing, like a zero on the signed scale.

The end colours are not fully saturated on purpose: characters are drawn in black on top, and
every colour of both scales keeps a contrast of at least 4.5:1 with black text (WCAG AA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnnlens.analysis.select import check_range_in
from rnnlens.errors import RnnlensError
from rnnlens.names import GATES
from rnnlens.trace import Trace

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ColourScale:
    """Piecewise-linear colours through `stops` (RGB 0..255) spread evenly over [lo, hi].

    `steps` is how many colour levels the HTML renderer uses (quantising keeps pages small:
    neighbouring characters of the same level share one element); the PNG draws exact colours.
    """

    name: str
    lo: float
    hi: float
    stops: tuple[tuple[int, int, int], ...]
    steps: int

    def fraction(self, values) -> np.ndarray:
        """Position of each value on the scale, 0..1 (clipped; NaN sits at the middle)."""
        v = np.asarray(values, dtype=np.float64)
        f = (v - self.lo) / (self.hi - self.lo)
        return np.clip(np.nan_to_num(f, nan=0.5), 0.0, 1.0)

    def rgb(self, values) -> np.ndarray:
        """Exact colours, float RGB in 0..1, shape values.shape + (3,)."""
        stops = np.asarray(self.stops, dtype=np.float64) / 255.0
        pos = self.fraction(values) * (len(stops) - 1)
        left = np.minimum(pos.astype(int), len(stops) - 2)
        t = (pos - left)[..., None]
        return stops[left] * (1 - t) + stops[left + 1] * t

    def level(self, values) -> np.ndarray:
        """The nearest of `steps` evenly spaced levels (0 .. steps-1) for each value, as int."""
        return np.rint(self.fraction(values) * (self.steps - 1)).astype(np.int64)

    def level_value(self, level: int) -> float:
        return self.lo + (self.hi - self.lo) * level / (self.steps - 1)

    def hex(self, value: float) -> str:
        r, g, b = (round(c * 255) for c in self.rgb(value).tolist())
        return f"#{r:02x}{g:02x}{b:02x}"

    def level_hex(self) -> list[str]:
        """The colour of each level, for CSS."""
        return [self.hex(self.level_value(i)) for i in range(self.steps)]

    def matplotlib_cmap(self):
        from matplotlib.colors import LinearSegmentedColormap
        return LinearSegmentedColormap.from_list(self.name, [tuple(c / 255 for c in s) for s in self.stops])


# An odd number of levels puts 0 exactly on white; 33 levels (steps of 1/16) show no banding.
DIVERGING = ColourScale("diverging", -1.0, 1.0, ((230, 75, 60), WHITE, (60, 130, 230)), steps=33)
GATE = ColourScale("gate", 0.0, 1.0, (WHITE, (60, 175, 100)), steps=33)
# Next-character probabilities in the prediction strip: white (0) to a warm grey-violet (1),
# unlike both activation scales so that predictions never read as activations.
PROBABILITY = ColourScale("probability", 0.0, 1.0, (WHITE, (170, 140, 210)), steps=11)


@dataclass(frozen=True)
class Display:
    """How one kind of activation is shown: what is drawn (`label`, `transform` of the stored
    values) on which scale, and in words (`description`). When the drawn value is not the
    stored one, `raw_label` names the stored one (c for tanh(c)) and `transform_name` names the
    transform as a JavaScript Math function, so that a page's tooltip shows both."""

    label: str
    description: str
    transform: Callable[[np.ndarray], np.ndarray]
    scale: ColourScale
    raw_label: str | None = None
    transform_name: str | None = None


def _identity(values: np.ndarray) -> np.ndarray:
    return values


SIGNED = {"hidden": ("h", "the hidden state h"),
          "gate.candidate": ("candidate", "the candidate value (LSTM g, GRU n)")}
GATE_NAMES = sorted({g for gates in GATES.values() for g in gates})


def display_for(name: str) -> Display:
    """The display of an activation, by trace name ('layer1.cell') or its last part ('cell').

    cell is shown as tanh(c), as in the paper; h and the candidates as they are on the signed
    scale; gates on the [0, 1] scale.
    """
    activation = name.split(".", 1)[1] if name.startswith("layer") and "." in name else name
    if activation == "cell":
        return Display("tanh(c)", "tanh of the memory cell c (the paper's choice)", np.tanh, DIVERGING,
                       raw_label="c", transform_name="tanh")
    if activation in SIGNED:
        label, description = SIGNED[activation]
        return Display(label, description, _identity, DIVERGING)
    if activation in GATE_NAMES:
        label = activation.split(".")[1] + " gate"
        return Display(label, f"the {label}", _identity, GATE)
    raise RnnlensError(f"{name!r} is not a unit activation that can be coloured; use one of cell, hidden, "
                       f"gate.candidate, {', '.join(GATE_NAMES)} (as layerN.NAME)")


def check_span(trace: Trace, start: int, end: int | None) -> tuple[int, int]:
    """The span start..end of the trace's text (end None: to the end), checked."""
    return check_range_in(len(trace), start, len(trace) if end is None else end)


def unit_values(trace: Trace, name: str, unit: int, start: int, end: int) -> tuple[Display, np.ndarray]:
    """How `name` is shown, and the stored values of one unit over start..end (float32)."""
    display = display_for(name)
    a = trace[name]
    if a.ndim != 2 or not 0 <= unit < a.shape[1]:
        raise RnnlensError(f"{name} has units 0..{a.shape[1] - 1}; got {unit}")
    return display, np.asarray(a[start:end, unit], dtype=np.float32)


def unit_label(name: str, unit: int, display: Display) -> str:
    """'layer 1 · unit 42 · tanh(c)'."""
    layer = name.split(".", 1)[0].removeprefix("layer")
    return f"layer {layer} \u00b7 unit {unit} \u00b7 {display.label}"
