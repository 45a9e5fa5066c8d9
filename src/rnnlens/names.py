"""The activation names every part of rnnlens speaks: built and parsed in this one place.

Like TransformerLens' hook names, a trace array is named `layer{i}.{activation}` (i from 0):

    RNN:  layer{i}.hidden
    LSTM: layer{i}.gate.input  layer{i}.gate.forget  layer{i}.gate.output  layer{i}.gate.candidate (g)
          layer{i}.cell (c)  layer{i}.hidden (h)
    GRU:  layer{i}.gate.reset  layer{i}.gate.update  layer{i}.gate.candidate (n)  layer{i}.hidden
    n-NN (ffn): layer0.hidden, its one tanh hidden layer

plus the outputs `probs` and `loss`. Shorthands: 'forget' means 'gate.forget'; a unit is 'LAYER:INDEX'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rnnlens.errors import RnnlensError

LAYER_ACTIVATIONS = {
    "lstm": ("gate.input", "gate.forget", "gate.output", "gate.candidate", "cell", "hidden"),
    "gru": ("gate.reset", "gate.update", "gate.candidate", "hidden"),
    "rnn": ("hidden",),
    "ffn": ("hidden",),  # the n-NN's tanh hidden layer: no recurrence, no gates
}
GATES = {"lstm": ("gate.input", "gate.forget", "gate.output"), "gru": ("gate.reset", "gate.update"), "rnn": (),
         "ffn": ()}
OUTPUTS = ("probs", "loss")

_NAME = re.compile(r"layer(\d+)\.(.+)")


def name(layer: int, activation: str) -> str:
    """(1, 'gate.forget') -> 'layer1.gate.forget'."""
    return f"layer{layer}.{activation}"


def parse(full_name: str) -> tuple[int, str]:
    """'layer1.gate.forget' -> (1, 'gate.forget'). Raises RnnlensError for 'probs', 'loss' or a malformed name."""
    match = _NAME.fullmatch(str(full_name))
    if match is None:
        raise RnnlensError(f"{full_name!r} is not a layer activation name like layer0.cell")
    return int(match.group(1)), match.group(2)


def layer_names(layers: int | Iterable[int], kinds: Iterable[str]) -> list[str]:
    """Every (layer, kind) name, layer by layer: layer_names(2, ['cell', 'hidden']) ->
    ['layer0.cell', 'layer0.hidden', 'layer1.cell', 'layer1.hidden']. `layers` is a count or the layers."""
    kinds = list(kinds)
    layers = range(layers) if isinstance(layers, int) else layers
    return [name(i, k) for i in layers for k in kinds]


def activation_names(cell: str, layers: int) -> list[str]:
    """Every name a full trace of this architecture holds, in order (the outputs last)."""
    return layer_names(layers, LAYER_ACTIVATIONS[cell]) + list(OUTPUTS)


def resolve_activation(what: str | None, cell: str) -> str:
    """--what as a trace activation: 'forget' and 'gate.forget' both mean gate.forget; None means the
    cell of an LSTM, the hidden state otherwise."""
    valid = LAYER_ACTIVATIONS[cell]
    if what is None:
        return "cell" if cell == "lstm" else "hidden"
    for candidate in (what, f"gate.{what}"):
        if candidate in valid:
            return candidate
    raise RnnlensError(f"--what {what} is not an activation of this {cell.upper()}; choose from {', '.join(valid)}")


def parse_unit(spec: str, layers: int | None = None, size: int | None = None) -> tuple[int, int]:
    """'1:42' -> (1, 42): layer (from 0) and unit index, checked against `layers` and `size` when given."""
    try:
        layer_text, unit_text = str(spec).split(":")
        layer, unit = int(layer_text), int(unit_text)
    except ValueError:
        raise RnnlensError(f"a unit is LAYER:INDEX with both from 0, e.g. 0:42; got {spec!r}") from None
    if layers is not None and not 0 <= layer < layers:
        raise RnnlensError(f"layer {layer} does not exist: the model has layers 0..{layers - 1}")
    if size is not None and not 0 <= unit < size:
        raise RnnlensError(f"unit {unit} does not exist: each layer has units 0..{size - 1}")
    return layer, unit
