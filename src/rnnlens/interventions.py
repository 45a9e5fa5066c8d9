"""Interventions: change units inside the recurrence and see what happens.

Each intervention names an activation as the trace does (`layer1.cell`, `layer0.gate.forget`,
`layer0.hidden`; rnnlens.names), some of its units (an int, a list, or None for all), and the text
positions it acts on (`start` <= t < `stop`; default every position):

    Ablate(name, units, to="zero" | "mean" | float)   set to 0, to the unit's mean, or to a value
    Clamp(name, units, value)                         set to a value (a number, or one per unit)
    Add(name, units, value)                           add a value
    Scale(name, units, factor)                        multiply
    Patch(name, units, source)                        take the value another text's trace had at the
                                                      same position (`source[name][t]`; no change past
                                                      the source's end)
    Hook(fn, name=None)                               anything else: fn(name, value [N, H] tensor, t)
                                                      edits `value` in place or returns a new one

They act INSIDE the recurrence (rnnlens.recurrence calls them between the stages of a step): the
edited value is what the rest of the step and every later step see. An LSTM step computes its four
gates, then the cell c = f * c_prev + i * g from the (edited) gates, then the hidden h = o * tanh(c)
from the (edited) cell; a GRU step its reset and update gates, then the candidate from the (edited)
reset gate, then h from the (edited) update gate and candidate. An ablated cell therefore stays
ablated for the next character (it is the state carried on), and editing a gate changes the cell
and hidden computed from it. Several interventions on one activation apply in the order given.

From the command line a unit is `LAYER:UNIT[,UNIT...]` (the cell of an LSTM, the hidden state of
a GRU or RNN) or `NAME:UNIT[,UNIT...]` (e.g. `layer1.gate.forget:7`), and `SPEC=VALUE` clamps it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace

import numpy as np
import torch

from rnnlens.errors import RnnlensError
from rnnlens.names import LAYER_ACTIVATIONS, activation_names, parse, resolve_activation

Units = int | Sequence[int] | None


@dataclass(frozen=True)
class Intervention:
    name: str
    units: Units = None
    _: KW_ONLY
    start: int = 0
    stop: int | None = None

    def active(self, t: int) -> bool:
        return self.start <= t and (self.stop is None or t < self.stop)

    def apply(self, value: torch.Tensor, index, t: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _vector(v, n: int, what: str) -> float | torch.Tensor:
    """A number, or one number per selected unit."""
    if isinstance(v, (int, float, np.floating, np.integer)):
        return float(v)
    a = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(-1))
    if a.numel() != n:
        raise RnnlensError(f"{what} has {a.numel()} values for {n} units; give one number or one per unit")
    return a


@dataclass(frozen=True)
class Ablate(Intervention):
    """Set the units to zero, to their mean (over a reference text: `mean_over`, else the text being run),
    or to a number."""
    to: str | float = "zero"
    mean_over: str | None = None
    means: object = field(default=None, repr=False)  # filled in by resolve_means: one value per unit

    def apply(self, value, index, t):
        if self.to == "zero":
            value[:, index] = 0.0
        elif self.to == "mean":
            value[:, index] = self.means
        else:
            value[:, index] = float(self.to)


@dataclass(frozen=True)
class Clamp(Intervention):
    """Hold the units at `value` (a number, or one per unit)."""
    value: object = 0.0

    def apply(self, value, index, t):
        value[:, index] = self.value


@dataclass(frozen=True)
class Add(Intervention):
    value: object = 0.0

    def apply(self, value, index, t):
        value[:, index] += self.value


@dataclass(frozen=True)
class Scale(Intervention):
    factor: object = 1.0

    def apply(self, value, index, t):
        value[:, index] *= self.factor


@dataclass(frozen=True)
class Patch(Intervention):
    """At position t, the units take the value `source[name][t, units]` (source: a Trace of another text,
    or any mapping of name -> array [T, H]); positions past the source's end are left alone."""
    source: object = field(default=None, repr=False)

    def apply(self, value, index, t):
        arr = self.source[self.name]
        if t < len(arr):
            row = torch.as_tensor(np.asarray(arr[t], dtype=np.float32))
            value[:, index] = row[index].to(value.dtype)


@dataclass(frozen=True)
class Hook:
    """fn(name, value, t) on every activation (or only `name`): edit `value` [N, H] in place, or return a
    tensor of the same shape to replace it. Positions as for the others."""
    fn: Callable
    name: str | None = None
    _: KW_ONLY
    start: int = 0
    stop: int | None = None

    def active(self, t: int) -> bool:
        return self.start <= t and (self.stop is None or t < self.stop)


AnyIntervention = Intervention | Hook


class LayerEdits:
    """The interventions on one layer, compiled: the `edit(acts, names, t)` callable rnnlens.recurrence calls."""

    def __init__(self, layer: int, items: list[tuple[str, AnyIntervention, object]]):
        self.layer = layer
        self.items = items  # (activation, intervention, unit index)

    def __call__(self, acts, names, t: int) -> None:
        for activation, item, index in self.items:
            if activation not in names or not item.active(t):
                continue
            value = acts[activation]
            if isinstance(item, Hook):
                out = item.fn(f"layer{self.layer}.{activation}", value, t)
                if out is not None and out is not value:
                    value.copy_(out)
            else:
                item.apply(value, index, t)


def compile_interventions(interventions: Iterable[AnyIntervention] | None, cell: str, layers: int,
                          size: int) -> dict[int, LayerEdits]:
    """Check the interventions against the model (names, units, values) and group them by layer:
    {layer: LayerEdits}. Layers without interventions are absent (they run at full speed)."""
    per_layer: dict[int, list] = {}
    if cell not in ("lstm", "gru", "rnn") and interventions:
        raise RnnlensError("interventions need a recurrent model (RNN, LSTM or GRU); an n-NN has no recurrence")
    valid = activation_names(cell, layers)
    for item in interventions or ():
        if isinstance(item, Hook):
            if not callable(item.fn):
                raise RnnlensError(f"Hook needs a callable; got {item.fn!r}")
            targets = [item.name] if item.name is not None else [n for n in valid if n.startswith("layer")]
            for name in targets:
                layer, activation = _check_name(name, valid)
                per_layer.setdefault(layer, []).append((activation, item, slice(None)))
            continue
        if not isinstance(item, Intervention):
            raise RnnlensError(f"not an intervention: {item!r}; use Ablate, Clamp, Add, Scale, Patch or Hook "
                               "from rnnlens.interventions")
        layer, activation = _check_name(item.name, valid)
        index, count = _units(item.units, size)
        if item.start < 0 or (item.stop is not None and item.stop < item.start):
            raise RnnlensError(f"{item.name}: positions start={item.start} stop={item.stop} are not a range")
        if isinstance(item, Ablate):
            if item.to == "mean":
                if item.means is None:
                    raise RnnlensError(f"Ablate({item.name}, to='mean') needs the units' means: resolve them with "
                                       "rnnlens.interventions.resolve_means or give mean_over=TEXT")
                item = replace(item, means=_vector(item.means, count, "the means"))
            elif item.to != "zero" and not isinstance(item.to, (int, float)):
                raise RnnlensError(f"Ablate to= is 'zero', 'mean' or a number; got {item.to!r}")
        elif isinstance(item, (Clamp, Add)):
            item = replace(item, value=_vector(item.value, count, f"{type(item).__name__}({item.name}).value"))
        elif isinstance(item, Scale):
            item = replace(item, factor=_vector(item.factor, count, f"Scale({item.name}).factor"))
        elif isinstance(item, Patch):
            if item.source is None:
                raise RnnlensError(f"Patch({item.name}) needs a source trace: Patch(name, units, source=trace)")
            try:
                arr = item.source[item.name]
            except Exception:
                raise RnnlensError(f"Patch({item.name}): the source trace has no {item.name}") from None
            if np.ndim(arr) != 2 or np.shape(arr)[1] != size:
                raise RnnlensError(f"Patch({item.name}): the source's array is {np.shape(arr)}, not [T, {size}]")
        per_layer.setdefault(layer, []).append((activation, item, index))
    return {layer: LayerEdits(layer, items) for layer, items in sorted(per_layer.items())}


def _check_name(name: str, valid: list[str]) -> tuple[int, str]:
    if name not in valid:
        raise RnnlensError(f"no activation {name!r} in this model; choose from "
                           f"{', '.join(n for n in valid if n.startswith('layer'))}")
    return parse(name)


def _units(units: Units, size: int) -> tuple[object, int]:
    """(an index for value[:, index], how many units)."""
    if units is None:
        return slice(None), size
    if isinstance(units, (int, np.integer)):
        units = [int(units)]
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < size]
    if bad or not units:
        raise RnnlensError(f"unit {bad[0] if bad else '(none)'} does not exist: each layer has units 0..{size - 1}")
    if len(units) == 1:
        return units[0], 1
    return torch.tensor(units), len(units)


def needs_means(interventions) -> list[AnyIntervention]:
    return [i for i in interventions or () if isinstance(i, Ablate) and i.to == "mean" and i.means is None]


def resolve_means(interventions, mean_of: Callable[[str, str | None], np.ndarray], default_text: str | None):
    """Fill in the means of every Ablate(to='mean'): mean_of(name, text) -> [H] means of that activation over
    text (the intervention's mean_over, else default_text)."""
    out, cache = [], {}
    for item in interventions or ():
        if isinstance(item, Ablate) and item.to == "mean" and item.means is None:
            text = item.mean_over if item.mean_over is not None else default_text
            if text is None:
                raise RnnlensError(f"Ablate({item.name}, to='mean') while sampling needs a text to average over: "
                                   "Ablate(..., mean_over=TEXT)")
            key = (item.name, text)
            if key not in cache:
                cache[key] = np.asarray(mean_of(item.name, text), dtype=np.float32)
            means = cache[key]
            _, count = _units(item.units, len(means))
            units = item.units
            sel = means if units is None else means[np.atleast_1d(np.asarray(units, dtype=np.int64))]
            item = replace(item, means=sel[:count])
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Command-line specs

_SPEC = re.compile(r"(?P<where>[^:=]+):(?P<units>[0-9][0-9,\s]*)(?:=(?P<value>.+))?")


def parse_unit_spec(spec: str, cell: str, layers: int, size: int, *, flag: str = "--unit",
                    value: bool = False) -> tuple[str, list[int], float | None]:
    """'1:42' -> ('layer1.cell', [42], None) for an LSTM ('layer1.hidden' otherwise); 'layer0.gate.forget:3,4=0.5'
    -> ('layer0.gate.forget', [3, 4], 0.5). With value=True the '=VALUE' part is required."""
    m = _SPEC.fullmatch(str(spec).strip())
    example = "1:42=0.9" if value else "1:42"
    if m is None:
        raise RnnlensError(f"{flag} {spec!r}: write LAYER:UNIT or NAME:UNIT{'=VALUE' if value else ''}, "
                           f"e.g. {example} or layer1.gate.forget:7{'=0.5' if value else ''}")
    where = m.group("where").strip()
    if where.isdigit():
        layer = int(where)
        if not 0 <= layer < layers:
            raise RnnlensError(f"{flag} {spec}: layer {layer} does not exist: the model has layers 0..{layers - 1}")
        name = f"layer{layer}.{resolve_activation(None, cell)}"
    else:
        name = where if where.startswith("layer") else None
        valid = activation_names(cell, layers)
        if name is None or name not in valid:
            raise RnnlensError(f"{flag} {spec}: {where!r} is not a layer number or an activation of this "
                               f"{cell.upper()}; e.g. 1 or one of {', '.join(n for n in valid if n.startswith('layer'))}")
    units = [int(u) for u in m.group("units").replace(" ", "").split(",") if u]
    bad = [u for u in units if not 0 <= u < size]
    if bad:
        raise RnnlensError(f"{flag} {spec}: unit {bad[0]} does not exist: each layer has units 0..{size - 1}")
    raw = m.group("value")
    if value and raw is None:
        raise RnnlensError(f"{flag} {spec!r} needs a value: LAYER:UNIT=VALUE, e.g. {example}")
    if not value and raw is not None:
        raise RnnlensError(f"{flag} {spec!r}: no '=VALUE' here; write LAYER:UNIT, e.g. 1:42")
    number = None
    if raw is not None:
        try:
            number = float(raw)
        except ValueError:
            raise RnnlensError(f"{flag} {spec}: the value {raw!r} is not a number") from None
    return name, units, number


def steer(specs: Iterable[str], cell: str, layers: int, size: int, flag: str = "--steer") -> list[Clamp]:
    """--steer LAYER:UNIT=VALUE specs -> Clamp interventions."""
    out = []
    for spec in specs or ():
        name, units, value = parse_unit_spec(spec, cell, layers, size, flag=flag, value=True)
        out.append(Clamp(name, units, value))
    return out


__all__ = ["Ablate", "Add", "Clamp", "Hook", "Intervention", "LayerEdits", "Patch", "Scale", "compile_interventions",
           "needs_means", "parse_unit_spec", "resolve_means", "steer", "LAYER_ACTIVATIONS"]
