"""The RNN / LSTM / GRU step equations, computed from a layer's weights: the one home of the cell math.

Training runs torch's fused kernels; everything that looks inside (sampling's fast step, the trace's
recomputation, the gradient-flow study) computes the same cells here, from plain tensors, in torch's
weight layout and conventions:

    LSTM rows [i, f, g, o]:  c = f * c_prev + i * g,   h = o * tanh(c)
    GRU rows  [r, z, n]:     n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn)),   h = (1 - z) * n + z * h_prev
    RNN:                     h = tanh(W_ih x + b_ih + W_hh h_prev + b_hh)   (or relu)

A step splits into the input half, `input_projection` (for every t at once: one matmul), and the
recurrent half, the `*_step` functions (one t, any batch of rows). Each step returns its named
intermediate activations, keyed by the trace's activation names (rnnlens.names): 'gate.input',
'gate.forget', ..., 'cell', 'hidden', so that callers can read, and later ablate or clamp, any of them.
`recompute` is the batched form for traces: given a layer's known outputs h_t it gets the gates of all
t at once, and the LSTM cells by a blocked linear scan.

Interventions (rnnlens.interventions) enter through `edit`, a callable edit(acts, names, t) that changes
acts[name] IN PLACE for the names just computed, at text position t. Each step calls it in the order the cell computes:

    LSTM: the four gates -> 'cell' (c = f * c_prev + i * g, from the edited gates) -> 'hidden' (o * tanh(c))
    GRU:  'gate.reset', 'gate.update' -> 'gate.candidate' (n, from the edited r) -> 'hidden' (from z and n)
    RNN:  'hidden'

and the edited values are the ones carried to the next step: an ablated cell stays ablated.
`StepLayer` is the fast form of the same step for sampling (one fused matrix-vector product per layer
on [W_ih | W_hh], preallocated buffers, optionally float16 weights); it calls `edit` in the same order.

Shapes: N rows (batch, or time for `recompute`), I inputs, H units, G gates (4 LSTM, 3 GRU, 1 RNN).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from rnnlens.names import LAYER_ACTIVATIONS

Activations = dict[str, torch.Tensor]
Edit = Callable[[Activations, tuple, int], None]  # edit(acts, names, t): change acts[name] in place at position t

LSTM_GATES = ("gate.input", "gate.forget", "gate.candidate", "gate.output")
GRU_GATES = ("gate.reset", "gate.update")


def layer_weights(rnn: torch.nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_ih [G*H, I], b_ih [G*H], W_hh [G*H, H], b_hh [G*H]) of one layer of a fused torch RNN/LSTM/GRU."""
    return tuple(getattr(rnn, f"{kind}_l{layer}") for kind in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))


def input_projection(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor) -> torch.Tensor:
    """x [..., I] -> W_ih x + b_ih [..., G*H]: the input half of every step at once (one matmul)."""
    return F.linear(x, w_ih, b_ih)


def hidden_projection(h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """h [N, H] -> W_hh h + b_hh [N, G*H]: the recurrent half of a step."""
    return torch.addmm(b_hh, h, w_hh.t())


# ---------------------------------------------------------------------------------------------
# One step: gi [N, G*H] (from input_projection), the previous state [N, H] -> activations [N, H]


def lstm_step(gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: torch.Tensor,
              b_hh: torch.Tensor, edit: Edit | None = None, t: int = 0) -> Activations:
    """One LSTM step: {'gate.input', 'gate.forget', 'gate.candidate', 'gate.output', 'cell', 'hidden'}."""
    acts = lstm_gates(gi + hidden_projection(h, w_hh, b_hh))
    if edit is not None:
        edit(acts, LSTM_GATES, t)
    acts["cell"] = acts["gate.forget"] * c + acts["gate.input"] * acts["gate.candidate"]
    if edit is not None:
        edit(acts, ("cell",), t)
    acts["hidden"] = acts["gate.output"] * torch.tanh(acts["cell"])
    if edit is not None:
        edit(acts, ("hidden",), t)
    return acts


def gru_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
             edit: Edit | None = None, t: int = 0) -> Activations:
    """One GRU step: {'gate.reset', 'gate.update', 'gate.candidate', 'hidden'}."""
    return gru_cell(gi, hidden_projection(h, w_hh, b_hh), h, edit, t)


def rnn_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
             nonlinearity: str = "tanh", edit: Edit | None = None, t: int = 0) -> Activations:
    """One plain RNN step: {'hidden'}."""
    acts = rnn_cell(gi + hidden_projection(h, w_hh, b_hh), nonlinearity)
    if edit is not None:
        edit(acts, ("hidden",), t)
    return acts


def step(cell: str, gi: torch.Tensor, state: list[torch.Tensor], w_hh: torch.Tensor, b_hh: torch.Tensor,
         nonlinearity: str = "tanh", edit: Edit | None = None, t: int = 0) -> Activations:
    """Any cell's step; `state` is [h] or, for an LSTM, [h, c]; `edit` (called with position t) as in the
    module's docstring."""
    if cell == "lstm":
        return lstm_step(gi, state[0], state[1], w_hh, b_hh, edit, t)
    if cell == "gru":
        return gru_step(gi, state[0], w_hh, b_hh, edit, t)
    return rnn_step(gi, state[0], w_hh, b_hh, nonlinearity, edit, t)


def next_state(cell: str, acts: Activations) -> list[torch.Tensor]:
    """The state a step carries to the next one: [h, c] for an LSTM, [h] otherwise."""
    return [acts["hidden"], acts["cell"]] if cell == "lstm" else [acts["hidden"]]


def run_layer(cell: str, gi: torch.Tensor, state: list[torch.Tensor], w_hh: torch.Tensor, b_hh: torch.Tensor,
              nonlinearity: str = "tanh", edit: Edit | None = None, t0: int = 0,
              keep: tuple = ()) -> tuple[Activations, list[torch.Tensor]]:
    """One layer step by step over n positions, exactly (the path for edited layers): gi [n, G*H] from
    input_projection, state [h] or [h, c] each [1, H], `edit` called at positions t0 .. t0+n-1.
    Returns ({activation: [n, H]} for the activations in `keep` plus always 'hidden'), the final state."""
    kept: dict[str, list[torch.Tensor]] = {k: [] for k in dict.fromkeys((*keep, "hidden"))}
    for t in range(gi.shape[0]):
        acts = step(cell, gi[t:t + 1], state, w_hh, b_hh, nonlinearity, edit, t0 + t)
        state = next_state(cell, acts)
        for k, v in kept.items():
            v.append(acts[k])
    return {k: torch.cat(v) for k, v in kept.items()}, state


class StepLayer:
    """The fast form of one layer's step for generation: N rows (usually 1), weights in `dtype`.

    Per step: one matrix-vector product on the concatenated [W_ih | W_hh] over an input buffer [x | h_prev]
    (GRU: two, since its reset gate scales the recurrent half alone), then the cell nonlinearities in
    place in preallocated float32 buffers: no allocation, a dozen torch calls. The first layer takes its
    input projection as precomputed rows (`table[id]`: one row per character) instead of a product.
    Activations, state and biases stay float32; only the product's weights (and the vector fed to them)
    are in `dtype`. float16 halves the bytes each step streams (the cost at batch 1, where the step is
    bound by memory), at a relative error of about 5e-4 in the pre-activations.

    `acts` maps the activation names to views of the buffers (valid until the next step); `edit` is
    called on them in the order of the module's docstring.
    """

    def __init__(self, cell: str, w_ih: torch.Tensor | None, b_ih: torch.Tensor | None, w_hh: torch.Tensor,
                 b_hh: torch.Tensor | None, nonlinearity: str = "tanh", rows: int = 1, dtype=torch.float32):
        G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        H = w_hh.shape[1]
        I = 0 if w_ih is None else w_ih.shape[1]
        self.cell, self.nonlinearity, self.H, self.I, self.rows = cell, nonlinearity, H, I, rows
        dev = w_hh.device
        f32 = dict(dtype=torch.float32, device=dev)
        self.xh = torch.zeros(rows, I + H, dtype=dtype, device=dev)  # [x | h_prev], in the weights' dtype
        self.gates = torch.zeros(rows, G * H, **f32)
        self.prod = torch.zeros(rows, G * H, dtype=dtype, device=dev)  # the product before the bias
        self.h = torch.zeros(rows, H, **f32)
        self.c = torch.zeros(rows, H, **f32) if cell == "lstm" else None
        with torch.no_grad():
            if cell == "gru":
                self.w_ih = None if w_ih is None else w_ih.detach().to(dtype).contiguous()
                self.w_hh = w_hh.detach().to(dtype).contiguous()
                self.b_ih = None if b_ih is None else b_ih.detach().float().clone()
                self.b_hh = b_hh.detach().float().clone()
                self.gh = torch.zeros(rows, G * H, **f32)
                self.prod_h = torch.zeros(rows, G * H, dtype=dtype, device=dev)
                self.rz = torch.zeros(rows, 2 * H, **f32)
            else:
                w = w_hh if w_ih is None else torch.cat([w_ih, w_hh], dim=1)  # [G*H, I+H]
                self.w = w.detach().to(dtype).contiguous()
                # b_hh None: the caller folded it into the rows it passes as gi (one addition fewer per step)
                b = b_hh if b_ih is None else b_ih + b_hh
                self.b = None if b is None else b.detach().float().clone()
        g = self.gates
        if cell == "lstm":
            self.acts = {"gate.input": g[:, :H], "gate.forget": g[:, H:2 * H], "gate.candidate": g[:, 2 * H:3 * H],
                         "gate.output": g[:, 3 * H:], "cell": self.c, "hidden": self.h}
        elif cell == "gru":
            self.acts = {"gate.reset": self.rz[:, :H], "gate.update": self.rz[:, H:], "gate.candidate": g[:, 2 * H:],
                         "hidden": self.h}
        else:
            self.acts = {"hidden": self.h}

    def set_state(self, state: list[torch.Tensor]) -> None:
        """state [h] or [h, c], each [rows, H] (or broadcastable to it)."""
        self.h.copy_(state[0].expand_as(self.h))
        self.xh[:, self.I:].copy_(self.h)
        if self.c is not None:
            self.c.copy_(state[1].expand_as(self.c))

    def state(self) -> list[torch.Tensor]:
        return [self.h.clone(), self.c.clone()] if self.c is not None else [self.h.clone()]

    def _product(self, w: torch.Tensor, x: torch.Tensor, low: torch.Tensor, bias: torch.Tensor | None,
                 gi: torch.Tensor | None, dest: torch.Tensor) -> None:
        """dest = w @ x_rows + bias (+ gi rows), float32."""
        if low.dtype == torch.float32:
            add = bias if gi is None else (gi if bias is None else gi + bias)
            if self.rows == 1:
                torch.addmv(add[0] if add.dim() == 2 else add, w, x[0], out=dest[0])
            else:
                torch.addmm(add, x, w.t(), out=dest)
            return
        if self.rows == 1:
            torch.mv(w, x[0], out=low[0])  # float16/bfloat16 matrix-vector: the fast kernel at batch 1
        else:
            torch.mm(x, w.t(), out=low)
        torch.add(low, bias if gi is None else gi, out=dest)
        if gi is not None and bias is not None:
            dest.add_(bias)

    def step(self, x: torch.Tensor | None, gi: torch.Tensor | None = None, edit: Edit | None = None,
             t: int = 0) -> torch.Tensor:
        """x [rows, I] the layer's input (None for the first layer, which gets gi [rows, G*H] instead);
        returns h [rows, H] (the layer's buffer: copy it to keep it)."""
        H, I, g, acts = self.H, self.I, self.gates, self.acts
        if x is not None:
            self.xh[:, :I].copy_(x)
        if self.cell == "gru":
            if gi is None:
                self._product(self.w_ih, self.xh[:, :I], self.prod, self.b_ih, None, g)
            else:
                g.copy_(gi)
            self._product(self.w_hh, self.xh[:, I:], self.prod_h, self.b_hh, None, self.gh)
            torch.add(g[:, :2 * H], self.gh[:, :2 * H], out=self.rz)
            torch.sigmoid_(self.rz)
            if edit is not None:
                edit(acts, GRU_GATES, t)
            n = g[:, 2 * H:]
            n.addcmul_(self.rz[:, :H], self.gh[:, 2 * H:]).tanh_()
            if edit is not None:
                edit(acts, ("gate.candidate",), t)
            self.h.sub_(n).mul_(self.rz[:, H:]).add_(n)  # h = n + z * (h_prev - n)
        else:
            self._product(self.w, self.xh, self.prod, self.b, gi, g)
            if self.cell == "lstm":
                torch.sigmoid_(g[:, :2 * H])
                torch.tanh_(g[:, 2 * H:3 * H])
                torch.sigmoid_(g[:, 3 * H:])
                if edit is not None:
                    edit(acts, LSTM_GATES, t)
                self.c.mul_(g[:, H:2 * H]).addcmul_(g[:, :H], g[:, 2 * H:3 * H])
                if edit is not None:
                    edit(acts, ("cell",), t)
                torch.tanh(self.c, out=self.h)
                self.h.mul_(g[:, 3 * H:])
            else:
                torch.relu(g, out=self.h) if self.nonlinearity == "relu" else torch.tanh(g, out=self.h)
        if edit is not None:
            edit(acts, ("hidden",), t)
        self.xh[:, I:].copy_(self.h)
        return self.h


# ---------------------------------------------------------------------------------------------
# The cell nonlinearities, on rows that are steps of a batch or times of one sequence


def lstm_gates(pre: torch.Tensor) -> Activations:
    """Pre-activations [N, 4H] in torch's row order i, f, g, o -> the four gates [N, H]."""
    i, f, g, o = pre.chunk(4, dim=-1)
    return {"gate.input": torch.sigmoid(i), "gate.forget": torch.sigmoid(f), "gate.candidate": torch.tanh(g),
            "gate.output": torch.sigmoid(o)}


def gru_cell(gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor, edit: Edit | None = None,
             t: int = 0) -> Activations:
    """Input and recurrent projections [N, 3H] (rows r, z, n) and h_prev [N, H] -> the GRU's activations.
    The reset gate scales the recurrent half of the candidate only (W_hn h + b_hn), as torch does."""
    ir, iz, in_ = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    acts = {"gate.reset": torch.sigmoid(ir + hr), "gate.update": torch.sigmoid(iz + hz)}
    if edit is not None:
        edit(acts, GRU_GATES, t)
    acts["gate.candidate"] = n = torch.tanh(in_ + acts["gate.reset"] * hn)
    if edit is not None:
        edit(acts, ("gate.candidate",), t)
    acts["hidden"] = n + acts["gate.update"] * (h_prev - n)  # = (1 - z) * n + z * h_prev, one op fewer
    if edit is not None:
        edit(acts, ("hidden",), t)
    return acts


def rnn_cell(pre: torch.Tensor, nonlinearity: str = "tanh") -> Activations:
    return {"hidden": torch.relu(pre) if nonlinearity == "relu" else torch.tanh(pre)}


# ---------------------------------------------------------------------------------------------
# Batched recomputation for traces


def recompute(cell: str, gi: torch.Tensor, h: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
              w_hh: torch.Tensor, b_hh: torch.Tensor, nonlinearity: str = "tanh", keep: Iterable[str] | None = None,
              check_every: int = 1) -> Activations:
    """The activations in `keep` (default: all of the cell's) of one layer over n time steps, from its input
    projections gi [n, G*H] and its known (fused) outputs h [n, H], starting from h0 [1, H] (and c0 [1, H]
    for an LSTM).

    Since every h_{t-1} is known, the recurrent half of all steps is one matmul too; the LSTM cells
    are the linear recurrence c_t = f_t * c_{t-1} + i_t * g_t, solved by `linear_scan`. The returned
    'hidden' is h RECOMPUTED at rows 0, check_every, 2 * check_every, ... (every row by default), for
    comparing with the fused h[::check_every]. Whatever is neither kept nor needed by that check is not
    computed: an LSTM's output gate only at the checked rows unless kept (the cells need i, f and g
    everywhere); a GRU's or RNN's step only at the checked rows unless a gate is kept.
    """
    keep = set(LAYER_ACTIVATIONS[cell] if keep is None else keep)
    checked = slice(None, None, check_every)
    h_prev = torch.cat([h0, h[:-1]])  # [n, H]: the state each step starts from
    if cell == "lstm":
        return _recompute_lstm(gi, h_prev, c0, w_hh, b_hh, keep, checked)
    rows = slice(None) if keep - {"hidden"} else checked
    gh = hidden_projection(h_prev[rows], w_hh, b_hh)  # [rows, G*H]
    acts = rnn_cell(gi[rows] + gh, nonlinearity) if cell == "rnn" else gru_cell(gi[rows], gh, h_prev[rows])
    if rows != checked:
        acts["hidden"] = acts["hidden"][checked]
    return {k: v for k, v in acts.items() if k in keep or k == "hidden"}


def _recompute_lstm(gi: torch.Tensor, h_prev: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
                    b_hh: torch.Tensor, keep: set, checked: slice) -> Activations:
    H = h_prev.shape[1]
    # rows i, f, g of every step (torch's row order i, f, g, o): one matmul on 3/4 of W_hh, in place after
    ifg = torch.addmm(gi[:, :3 * H], h_prev, w_hh[:3 * H].t()).add_(b_hh[:3 * H])  # [n, 3H]
    torch.sigmoid_(ifg[:, :2 * H])
    torch.tanh_(ifg[:, 2 * H:])
    acts = {"gate.input": ifg[:, :H], "gate.forget": ifg[:, H:2 * H], "gate.candidate": ifg[:, 2 * H:]}
    c = linear_scan(acts["gate.forget"], acts["gate.input"] * acts["gate.candidate"], c0[0])
    acts["cell"] = c
    rows = slice(None) if "gate.output" in keep else checked
    o = torch.sigmoid(torch.addmm(gi[rows, 3 * H:], h_prev[rows], w_hh[3 * H:].t()).add_(b_hh[3 * H:]))
    if "gate.output" in keep:
        acts["gate.output"] = o
        o = o[checked]
    acts["hidden"] = o * torch.tanh(c[checked])
    return {k: v for k, v in acts.items() if k in keep or k == "hidden"}


def linear_scan(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """c_t = a_t * c_{t-1} + b_t for t = 0..n-1 with c_{-1} = c0; a, b [n, H], c0 [H] -> c [n, H].

    Blocked: the text is cut into m blocks of k steps. A loop over the k steps scans all blocks at
    once from a zero start (and keeps the running product of a); a loop over the m blocks carries
    the true state from block to block; one fix-up adds each block's carried-in state times the
    running product. 2k + m torch calls instead of n (k = sqrt(n / 2) by default, where that sum is
    least: the k-loop takes two torch calls a step, the m-loop one), and no products of more than k factors.
    """
    n, H = a.shape
    k = block or max(1, math.isqrt(n // 2))
    m = -(-n // k)
    pad = m * k - n
    if pad:  # pad with a=1, b=0 steps at the end; they change nothing before them
        a = torch.cat([a, a.new_ones(pad, H)])
        b = torch.cat([b, b.new_zeros(pad, H)])
    a3, b3 = a.reshape(m, k, H), b.reshape(m, k, H)
    local = torch.empty_like(b3)  # scan of each block from a zero start
    prod = torch.empty_like(a3)   # running product of a within each block
    # the steps' views made once (unbind), not two slicings per step: the loops are bound by Python overhead
    a_t, b_t, local_t, prod_t = a3.unbind(1), b3.unbind(1), local.unbind(1), prod.unbind(1)  # k views [m, H]
    local_t[0].copy_(b_t[0])
    prod_t[0].copy_(a_t[0])
    for t in range(1, k):
        torch.addcmul(b_t[t], a_t[t], local_t[t - 1], out=local_t[t])
        torch.mul(prod_t[t - 1], a_t[t], out=prod_t[t])
    carry = torch.empty(m, H, dtype=b.dtype, device=b.device)  # carry[j]: the true state entering block j
    carry[0] = c0.to(b.dtype)
    ends, end_prods, carry_j = local_t[-1].unbind(0), prod_t[-1].unbind(0), carry.unbind(0)  # m views [H]
    for j in range(m - 1):
        torch.addcmul(ends[j], end_prods[j], carry_j[j], out=carry_j[j + 1])
    c = torch.addcmul(local, prod, carry[:, None, :])
    return c.reshape(m * k, H)[:n]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS says, else all of the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` torch threads (None: torch's setting as it is), then restore the setting.
    Switching costs well under a microsecond. The setting is per process: other threads of the process
    (a server's requests) run on `n` threads meanwhile."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
