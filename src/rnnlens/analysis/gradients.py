"""Gradient flow through time: how much the loss at one character depends on what came k characters before.

Training a recurrent network by backpropagation through time multiplies the error signal by one
Jacobian per step back. In a plain RNN, h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), each step
multiplies it by W_hh^T diag(1 - h_t^2): when those factors are smaller than one the signal
vanishes geometrically with the distance k, and when they are larger (big recurrent weights)
it explodes. An LSTM's cell passes it back through c_t = f_t * c_{t-1} + ..., a factor f_t per
step with no squashing, so with forget gates near 1 it survives much longer; a GRU's state is
kept by its update gate the same way. This module measures that, on a real model and text.

For a model and a text, P positions t are drawn at random (seeded) from all t with
max_lag <= t <= T - 2, and for each lag k = 0..K (K = max_lag), with loss_t = -ln p(x_{t+1} | x_<=t):

    input:          || d loss_t / d x_{t-k} ||_2      x = the input vector (embedding row or one-hot)
    layer{i}.hidden: || d loss_t / d h^i_{t-k} ||_2    h^i = layer i's output (every layer)
    layer{i}.cell:   || d loss_t / d c^i_{t-k} ||_2    LSTM only: the memory cell

each a total derivative through every path (through time and through the layers above). The
model reads the text from its start, so every window starts from the true carried state: a fused
pass over the text collects the state entering each window [t-K, t]. Gradients with respect to an
intermediate h are not exposed by the fused kernels, so the window itself is run by a per-step
loop over the K+1 steps (the loop is over lags, not over the text), batched over positions, and
one backward pass gives every lag, layer and position at once. Exactness is tested against
autograd through the fused torch modules.

`weight_scale` multiplies every recurrent matrix W_hh (all gate rows, not the biases), for the
whole text, to show how gradients explode when recurrent weights are large.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rnnlens import recurrence
from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.model import CharRNN
from rnnlens.names import name as activation_name
from rnnlens.recurrence import input_projection, layer_weights
from rnnlens.runs import model_label

QUANTILES = (0.1, 0.5, 0.9)
SUMMARY_LAGS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
GRAPH_BYTES = 256 << 20  # autograd memory for one batch of positions (activations kept for backward)
PREFIX_CHUNK = 8192      # characters per fused call while reading the text up to each window


@dataclass
class GradientFlow:
    """Gradient norms of one model on one text: `norms[series]` is [positions, lags]."""

    label: str                     # what to call the model in legends (usually its run folder)
    cell: str
    layers: int
    size: int
    lags: np.ndarray               # [K+1]: 0, 1, ..., K
    positions: np.ndarray          # [P]: the character index t of each loss
    norms: dict[str, np.ndarray]   # series -> [P, K+1] float64; series "input", "layer{i}.hidden", "layer{i}.cell"
    weight_scale: float = 1.0
    chars: int = 0                 # length of the text read

    @property
    def series(self) -> list[str]:
        return list(self.norms)

    def _get(self, series: str) -> np.ndarray:
        if series not in self.norms:
            raise RnnlensError(f"no gradient series {series!r}; this model has {', '.join(self.norms)}")
        return self.norms[series]

    def mean(self, series: str = "input") -> np.ndarray:
        """[K+1]: the norm at each lag averaged over positions."""
        return self._get(series).mean(axis=0)

    def quantile(self, series: str, q: float) -> np.ndarray:
        """[K+1]: a quantile over positions at each lag (the spread is wide: norms vary by orders of magnitude)."""
        return np.quantile(self._get(series), q, axis=0)

    def decay_per_lag(self, series: str = "input") -> float | None:
        """The mean norm's average factor per character of distance, from lag 1 to lag K:
        (mean[K] / mean[1]) ** (1 / (K - 1)). Below 1 it vanishes, above 1 it explodes.
        Lag 0 is left out: there the loss reaches x_t and h_t without any step through time."""
        m = self.mean(series)
        if len(m) < 3 or not m[1] > 0:
            return None
        return float((m[-1] / m[1]) ** (1.0 / (len(m) - 2)))

    def summary(self) -> list[dict]:
        """One row per series: the mean norm at a few lags, and the decay factor per lag."""
        lags = [k for k in SUMMARY_LAGS if k < len(self.lags)]
        return [{"series": s, "mean_at_lag": {str(k): float(self.mean(s)[k]) for k in lags},
                 "decay_per_lag": self.decay_per_lag(s)} for s in self.norms]

    def to_dict(self) -> dict:
        """JSON-ready: settings, positions, and per series the mean and quantiles at every lag."""
        return {"label": self.label, "cell": self.cell, "layers": self.layers, "size": self.size,
                "weight_scale": self.weight_scale, "chars": self.chars, "lags": self.lags.tolist(),
                "positions": self.positions.tolist(), "summary": self.summary(),
                "series": {s: {"mean": self.mean(s).tolist(),
                               **{f"q{round(q * 100)}": self.quantile(s, q).tolist() for q in QUANTILES}}
                           for s in self.norms}}


def gradient_flow(lm, text: str, *, max_lag: int = 100, positions: int = 64, seed: int = 0,
                  weight_scale: float = 1.0, unknown: str = "error", replacement: str | None = None,
                  label: str | None = None) -> GradientFlow:
    """Gradient norms of a LanguageModel on `text` for lags 0..max_lag (see the module docstring).

    Characters outside the model's vocabulary follow `unknown` (error, drop, replace) as in sampling.
    """
    ids = lm.vocab.encode(text, unknown=unknown, replacement=replacement)
    return gradient_flow_ids(lm.model, ids, max_lag=max_lag, positions=positions, seed=seed,
                             weight_scale=weight_scale, label=label or model_label(lm.path))


def gradient_flow_ids(model: CharRNN, ids, *, max_lag: int = 100, positions: int = 64, seed: int = 0,
                      weight_scale: float = 1.0, label: str = "model", batch: int | None = None) -> GradientFlow:
    """The same from a CharRNN and token ids [T]. `batch`: positions per backward pass (default: as many
    as fit in about 256 MB of autograd memory)."""
    if model.rnn is None:
        raise RnnlensError("gradient flow through time needs a recurrent model; an n-NN (--model ffn) has no "
                           f"recurrence: it sees exactly its last {model.cfg.context} characters")
    check_range("--max-lag", max_lag, 0, None, integer=True)
    check_range("--positions", positions, 1, None, integer=True)
    check_range("--weight-scale", weight_scale, 0, None, low_open=True)
    ids = np.asarray(ids, dtype=np.int64)
    T, K = len(ids), int(max_lag)
    if T < K + 2:
        raise RnnlensError(f"the text has {T} characters, but --max-lag {K} needs at least {K + 2} "
                           f"(a window of {K + 1} and the next character); use a longer text or a smaller --max-lag")
    rng = np.random.default_rng(seed)
    candidates = T - 1 - K  # t = K .. T-2
    chosen = np.sort(rng.choice(candidates, size=min(int(positions), candidates), replace=False)) + K

    cfg = model.cfg
    if weight_scale != 1.0:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for i in range(cfg.layers):
                getattr(model.rnn, f"weight_hh_l{i}").mul_(weight_scale)
    device = model.head.weight.device
    was_training = model.training
    model.eval()  # no dropout: the gradients of the model as it predicts
    try:
        ids_t = torch.from_numpy(ids).to(device)
        starts = chosen - K
        states = _carried_states(model, ids_t, starts)  # per layer: [P, H] (LSTM: h and c)
        per_row = (K + 1) * cfg.layers * cfg.size * 16 * 4  # ~16 floats per unit, step and layer kept for backward
        batch = batch or max(1, GRAPH_BYTES // per_row)
        parts: dict[str, list[np.ndarray]] = {}
        for b in range(0, len(chosen), batch):
            rows = slice(b, b + batch)
            window = torch.from_numpy(starts[rows, None] + np.arange(K + 1)).to(device)  # [p, K+1]
            targets = ids_t[torch.from_numpy(chosen[rows] + 1).to(device)]              # [p]
            norms = _window_gradient_norms(model, ids_t[window], targets,
                                           [tuple(s[rows] for s in layer) for layer in states])
            for name, value in norms.items():
                parts.setdefault(name, []).append(value)
    finally:
        model.train(was_training)
    return GradientFlow(label=label, cell=cfg.cell, layers=cfg.layers, size=cfg.size, lags=np.arange(K + 1),
                        positions=chosen, norms={n: np.concatenate(v) for n, v in parts.items()},
                        weight_scale=float(weight_scale), chars=T)


@torch.no_grad()
def _carried_states(model: CharRNN, ids: torch.Tensor, starts: np.ndarray) -> list[tuple[torch.Tensor, ...]]:
    """The recurrent state after reading ids[:s] from the zero state, for each s in the sorted `starts`.

    One fused pass over ids[:max(starts)], cut at each start. Returns per layer a tuple of [P, H]
    tensors: (h, c) for an LSTM, (h,) otherwise.
    """
    cfg = model.cfg
    per_start = []
    state, pos = None, 0
    for s in starts.tolist():
        while pos < s:
            end = min(s, pos + PREFIX_CHUNK)
            _, state = model.rnn(model.inputs(ids[None, pos:end]), state)
            pos = end
        if state is None:  # a window at the very start: the zero state, in the weights' dtype
            zeros = model.head.weight.new_zeros(cfg.layers, 1, cfg.size)
            state = (zeros, zeros) if cfg.cell == "lstm" else zeros
        per_start.append([t.clone() for t in (state if isinstance(state, tuple) else (state,))])  # each [L, 1, H]
    return [tuple(torch.cat([st[j][layer] for st in per_start]) for j in range(len(per_start[0])))
            for layer in range(cfg.layers)]


def _window_gradient_norms(model: CharRNN, window: torch.Tensor, targets: torch.Tensor,
                           states: list[tuple[torch.Tensor, ...]]) -> dict[str, np.ndarray]:
    """Run windows [p, S] of ids step by step from `states`, take loss = -ln p(target) after the last
    step, and return the norms of its gradient w.r.t. every input, hidden and cell vector, each
    [p, S] indexed by lag (column k = S-1-step)."""
    cfg = model.cfg
    rnn = model.rnn
    with torch.enable_grad():
        x = model.inputs(window).detach().requires_grad_(True)  # [p, S, I]: the leaf for d/dx
        layer_in = x
        watched: dict[str, list[torch.Tensor]] = {}
        nonlinearity = getattr(rnn, "nonlinearity", "tanh")  # RNN only: tanh or relu
        for i in range(cfg.layers):
            w_ih, b_ih, w_hh, b_hh = layer_weights(rnn, i)
            pre_in = input_projection(layer_in, w_ih, b_ih)  # [p, S, G*H]: the input half of every step at once
            state = list(states[i])
            hs, cs = [], []
            for gi in pre_in.unbind(1):  # unbind, not indexing: indexing makes backward zero-fill [p, S, G*H] per step
                acts = recurrence.step(cfg.cell, gi, state, w_hh, b_hh, nonlinearity)
                state = recurrence.next_state(cfg.cell, acts)
                hs.append(acts["hidden"])
                if cfg.cell == "lstm":
                    cs.append(acts["cell"])
            watched[activation_name(i, "hidden")] = hs
            if cs:
                watched[activation_name(i, "cell")] = cs
            layer_in = torch.stack(hs, dim=1)  # [p, S, H]
        loss = F.cross_entropy(model.head(hs[-1]), targets, reduction="sum")  # rows are independent: sum = per row
        names = list(watched)
        flat = [t for n in names for t in watched[n]]
        grads = torch.autograd.grad(loss, [x] + flat, allow_unused=True)
    out = {"input": _norms(grads[0].unbind(1), x)}
    pos = 1
    for n in names:
        steps = len(watched[n])
        out[n] = _norms(grads[pos:pos + steps], x)
        pos += steps
    return out


def _norms(grads, like: torch.Tensor) -> np.ndarray:
    """Per-step gradients (None where a step does not reach the loss) -> norms [p, lags], lag 0 first."""
    cols = [torch.zeros(like.shape[0], dtype=torch.float64, device=like.device) if g is None
            else torch.linalg.vector_norm(g.double(), dim=-1) for g in grads]
    return torch.stack(cols[::-1], dim=1).cpu().numpy()
