"""Causal effect of discovered units: how much the loss rises on a unit's feature when the unit is ablated.

A correlation (rnnlens.analysis.cells) says a unit follows a feature; it does not say the model uses
the unit to predict it. This measures that: for each discovered unit (a UnitScore, or a dict with
`layer`, `kind`, `unit`, `feature`), the unit is set to zero inside the recurrence (as
rnnlens.interventions.Ablate does: the edited value is what the rest of the step and every later
step see) and the change in loss, nats per character (ablated - as trained), is averaged

* over the characters where the unit's feature is on (on/off features: true; numeric features:
  above zero, as `rnnlens ablate`'s feature table counts them), the feature taken at the predicted
  character, as in rnnlens.workflows.ablate.feature_effects;
* over the characters where it switches: the predicted character turns the feature on or off (an
  opening or closing quote, a bracket, a newline for `line_position`), which is often what a unit
  that tracks a feature is there to predict;
* over the characters where it is off, and over all of them, for context.

Positive: the feature's characters got harder to predict without the unit.

How: one pass of the step-by-step model (rnnlens.sample.Stepper, float32) over the first
`max_chars` characters, with one row per unit plus one row left alone, every row fed the same
text: row k has unit k zeroed at every position (a Hook on its activation), row 0 none, so all
units cost one pass and the changes come from the same arithmetic as the reference row (a unit
that is already zero changes nothing, exactly). The step matches the trace to 1e-5
(docs/interventions.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rnnlens.analysis.features import compute_features, resolve_features
from rnnlens.errors import RnnlensError
from rnnlens.interventions import Hook, compile_interventions
from rnnlens.names import LAYER_ACTIVATIONS
from rnnlens.names import name as activation_name

DEFAULT_MAX_CHARS = 2_000   # characters scored: one batched step-by-step pass, about a second on a CPU
CHUNK = 256                 # steps whose logits are kept before the losses are taken from them


@dataclass(frozen=True)
class CausalEffect:
    """One unit ablated: the mean change in loss (nats/char, ablated - as trained) where its feature is on,
    where it is off, and over every scored character."""

    feature: str
    layer: int
    kind: str
    unit: int
    metric: str | None      # the unit's correlation score, as found ('r' or 'auc'; None when not given)
    score: float | None
    chars_on: int           # scored characters where the feature is on
    loss_on: float          # the model's mean loss there, as trained
    change_on: float        # NaN when the feature is never on in the scored characters
    change_off: float
    change_all: float
    chars_switch: int = 0   # scored characters where the feature switches on or off
    change_switch: float = math.nan

    @property
    def label(self) -> str:
        return f"{self.layer}:{self.unit} {self.kind}"

    @property
    def activation(self) -> str:
        return activation_name(self.layer, self.kind)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activation"] = self.activation
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class CausalEffects:
    """The effects of ablating each unit, over the first `chars` + 1 characters of the text."""

    effects: list[CausalEffect]
    chars: int          # predicted characters scored (the first chars + 1 characters of the text)
    text_chars: int     # the length of the text given
    max_chars: int
    loss: float         # the model's mean loss over the scored characters, as trained
    seconds: float

    def find(self, feature: str, layer: int, kind: str, unit: int) -> CausalEffect | None:
        for e in self.effects:
            if (e.feature, e.layer, e.kind, e.unit) == (feature, layer, kind, unit):
                return e
        return None

    def to_dict(self) -> dict:
        return {"chars": self.chars, "text_chars": self.text_chars, "max_chars": self.max_chars,
                "loss": self.loss, "seconds": round(self.seconds, 3),
                "effects": [e.to_dict() for e in self.effects]}


def _unit_fields(u) -> tuple[str, int, str, int, str | None, float | None]:
    """(feature, layer, kind, unit, metric, score) of a UnitScore or a dict as find_cells writes them."""
    get = (lambda k: u.get(k)) if isinstance(u, dict) else (lambda k: getattr(u, k, None))
    feature, layer, kind, unit = get("feature"), get("layer"), get("kind"), get("unit")
    if feature is None or layer is None or kind is None or unit is None:
        raise RnnlensError(f"a discovered unit needs feature, layer, kind and unit (as find_cells gives them); "
                           f"got {u!r}")
    score = get("score")
    return str(feature), int(layer), str(kind), int(unit), get("metric"), None if score is None else float(score)


def causal_effects(lm, text: str, units, *, max_chars: int = DEFAULT_MAX_CHARS, features=None,
                   unknown: str = "replace") -> CausalEffects:
    """Ablate each of `units` (UnitScores from CellScores.best, or dicts with feature, layer, kind, unit and
    optionally metric and score) of the LanguageModel `lm` over the first `max_chars` + 1 characters of `text`
    and measure the mean change in loss where the unit's feature is on (see the module docstring).

    features: the features the units were found with (names or rnnlens.analysis.features.Feature objects;
    default: the built-ins); characters the model never saw follow `unknown` (error, drop, replace)."""
    if not isinstance(max_chars, int) or max_chars < 1:
        raise RnnlensError(f"max_chars must be an integer >= 1; got {max_chars!r}")
    start = time.perf_counter()
    cfg = lm.config
    fields = [_unit_fields(u) for u in units]
    valid = LAYER_ACTIVATIONS[cfg.cell]
    for feature, layer, kind, unit, _, _ in fields:
        if not 0 <= layer < cfg.layers or kind not in valid or not 0 <= unit < cfg.size:
            raise RnnlensError(f"unit {layer}:{unit} {kind} is not in this {cfg.cell.upper()} {cfg.layers}x{cfg.size}")
    ids = lm.vocab.encode(text, unknown=unknown)
    ids = np.asarray(ids[:max_chars + 1], dtype=np.int64)
    if len(ids) < 2:
        raise RnnlensError("the text needs at least two characters to score")
    scored = "".join(lm.vocab.chars[i] for i in ids)
    wanted = sorted({f for f, *_ in fields})
    chosen = [f for f in resolve_features(features) if f.name in wanted]
    missing = sorted(set(wanted) - {f.name for f in chosen})
    if missing:
        raise RnnlensError(f"no feature {missing[0]!r} to measure the units on; pass the features they were found with")
    values = {name: np.asarray(v, dtype=np.float64) > 0 for name, v in compute_features(scored, chosen).items()}
    on = {name: v[1:] for name, v in values.items()}  # the feature at each predicted character
    switch = {name: v[1:] != v[:-1] for name, v in values.items()}

    targets = [(activation_name(layer, kind), unit) for _, layer, kind, unit, _, _ in fields]
    losses = _ablated_losses(lm, ids, targets)
    clean, delta = losses[:, 0], losses[:, 1:] - losses[:, :1]  # [T-1], [T-1, K]
    effects = []
    for k, (feature, layer, kind, unit, metric, score) in enumerate(fields):
        mask, d = on[feature], delta[:, k].astype(np.float64)
        n_on, edge = int(mask.sum()), switch[feature]
        effects.append(CausalEffect(feature, layer, kind, unit, metric, score, n_on,
                                    float(clean[mask].mean()) if n_on else math.nan,
                                    float(d[mask].mean()) if n_on else math.nan,
                                    float(d[~mask].mean()) if n_on < len(mask) else math.nan, float(d.mean()),
                                    int(edge.sum()), float(d[edge].mean()) if edge.any() else math.nan))
    return CausalEffects(effects, len(ids) - 1, len(text), max_chars, float(clean.astype(np.float64).mean()),
                         time.perf_counter() - start)


def _ablated_losses(lm, ids: np.ndarray, targets: list[tuple[str, int]]) -> np.ndarray:
    """[T-1, 1 + K] loss of each next character: column 0 the model as trained, column k with unit targets[k-1]
    (activation name, unit) set to zero at every position. One step-by-step pass with 1 + K rows."""
    from rnnlens.sample import Stepper, state_to_layers, step_threads
    cfg = lm.config
    rows = 1 + len(targets)
    by_name: dict[str, tuple[list[int], list[int]]] = {}
    for row, (name, unit) in enumerate(targets, start=1):
        r, u = by_name.setdefault(name, ([], []))
        r.append(row)
        u.append(unit)
    device = lm.device
    hooks = []
    for name, (r, u) in by_name.items():
        index = (torch.tensor(r, device=device), torch.tensor(u, device=device))

        def zero(_name, value, _t, index=index):
            value[index] = 0.0  # in place: one unit in each of its rows
        hooks.append(Hook(zero, name))
    edits = compile_interventions(hooks, cfg.cell, cfg.layers, cfg.size)
    T = len(ids)
    out = np.empty((T - 1, rows), dtype=np.float32)
    with torch.inference_mode():
        stepper = Stepper(lm.model, rows=rows, dtype=torch.float32, edits=edits, threads=step_threads(rows, device))
        stepper.set_state(state_to_layers(cfg.cell, lm.model.initial_state(rows, device)))
        x = torch.as_tensor(ids, device=device)
        logits = torch.empty(min(CHUNK, T - 1), rows, cfg.vocab_size, device=device)
        for s in range(0, T - 1, CHUNK):
            e = min(T - 1, s + CHUNK)
            for t in range(s, e):
                logits[t - s].copy_(stepper.advance(x[t].expand(rows), t))
            block = torch.log_softmax(logits[:e - s], dim=-1)
            true = x[s + 1:e + 1].view(-1, 1, 1).expand(-1, rows, 1)
            out[s:e] = (-block.gather(2, true)[..., 0]).cpu().numpy()
    return out
