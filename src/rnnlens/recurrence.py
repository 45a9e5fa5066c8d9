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

Shapes: N rows (batch, or time for `recompute`), I inputs, H units, G gates (4 LSTM, 3 GRU, 1 RNN).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Activations = dict[str, torch.Tensor]


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
              b_hh: torch.Tensor) -> Activations:
    """One LSTM step: {'gate.input', 'gate.forget', 'gate.candidate', 'gate.output', 'cell', 'hidden'}."""
    acts = lstm_gates(gi + hidden_projection(h, w_hh, b_hh))
    c = acts["gate.forget"] * c + acts["gate.input"] * acts["gate.candidate"]
    acts["cell"] = c
    acts["hidden"] = acts["gate.output"] * torch.tanh(c)
    return acts


def gru_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> Activations:
    """One GRU step: {'gate.reset', 'gate.update', 'gate.candidate', 'hidden'}."""
    return gru_cell(gi, hidden_projection(h, w_hh, b_hh), h)


def rnn_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
             nonlinearity: str = "tanh") -> Activations:
    """One plain RNN step: {'hidden'}."""
    return rnn_cell(gi + hidden_projection(h, w_hh, b_hh), nonlinearity)


def step(cell: str, gi: torch.Tensor, state: list[torch.Tensor], w_hh: torch.Tensor, b_hh: torch.Tensor,
         nonlinearity: str = "tanh") -> Activations:
    """Any cell's step; `state` is [h] or, for an LSTM, [h, c]."""
    if cell == "lstm":
        return lstm_step(gi, state[0], state[1], w_hh, b_hh)
    if cell == "gru":
        return gru_step(gi, state[0], w_hh, b_hh)
    return rnn_step(gi, state[0], w_hh, b_hh, nonlinearity)


def next_state(cell: str, acts: Activations) -> list[torch.Tensor]:
    """The state a step carries to the next one: [h, c] for an LSTM, [h] otherwise."""
    return [acts["hidden"], acts["cell"]] if cell == "lstm" else [acts["hidden"]]


# ---------------------------------------------------------------------------------------------
# The cell nonlinearities, on rows that are steps of a batch or times of one sequence


def lstm_gates(pre: torch.Tensor) -> Activations:
    """Pre-activations [N, 4H] in torch's row order i, f, g, o -> the four gates [N, H]."""
    i, f, g, o = pre.chunk(4, dim=-1)
    return {"gate.input": torch.sigmoid(i), "gate.forget": torch.sigmoid(f), "gate.candidate": torch.tanh(g),
            "gate.output": torch.sigmoid(o)}


def gru_cell(gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor) -> Activations:
    """Input and recurrent projections [N, 3H] (rows r, z, n) and h_prev [N, H] -> the GRU's activations.
    The reset gate scales the recurrent half of the candidate only (W_hn h + b_hn), as torch does."""
    ir, iz, in_ = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(ir + hr)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return {"gate.reset": r, "gate.update": z, "gate.candidate": n,
            "hidden": n + z * (h_prev - n)}  # = (1 - z) * n + z * h_prev, one op fewer


def rnn_cell(pre: torch.Tensor, nonlinearity: str = "tanh") -> Activations:
    return {"hidden": torch.relu(pre) if nonlinearity == "relu" else torch.tanh(pre)}


# ---------------------------------------------------------------------------------------------
# Batched recomputation for traces


def recompute(cell: str, gi: torch.Tensor, h: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
              w_hh: torch.Tensor, b_hh: torch.Tensor, nonlinearity: str = "tanh") -> Activations:
    """Every activation of one layer over n time steps, from its input projections gi [n, G*H] and its
    known (fused) outputs h [n, H], starting from h0 [1, H] (and c0 [1, H] for an LSTM).

    Since every h_{t-1} is known, the recurrent half of all steps is one matmul too; the LSTM cells
    are the linear recurrence c_t = f_t * c_{t-1} + i_t * g_t, solved by `linear_scan`. The returned
    'hidden' is the RECOMPUTED h, for comparing with the fused one.
    """
    h_prev = torch.cat([h0, h[:-1]])  # [n, H]: the state each step starts from
    gh = hidden_projection(h_prev, w_hh, b_hh)  # [n, G*H]
    if cell == "rnn":
        return rnn_cell(gi + gh, nonlinearity)
    if cell == "gru":
        return gru_cell(gi, gh, h_prev)
    acts = lstm_gates(gi + gh)
    c = linear_scan(acts["gate.forget"], acts["gate.input"] * acts["gate.candidate"], c0[0])
    acts["cell"] = c
    acts["hidden"] = acts["gate.output"] * torch.tanh(c)
    return acts


def linear_scan(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """c_t = a_t * c_{t-1} + b_t for t = 0..n-1 with c_{-1} = c0; a, b [n, H], c0 [H] -> c [n, H].

    Blocked: the text is cut into m blocks of k steps. A loop over the k steps scans all blocks at
    once from a zero start (and keeps the running product of a); a loop over the m blocks carries
    the true state from block to block; one fix-up adds each block's carried-in state times the
    running product. 2*sqrt(n) Python steps instead of n, and no products of more than k factors.
    """
    n, H = a.shape
    k = block or max(1, math.isqrt(n))
    m = -(-n // k)
    pad = m * k - n
    if pad:  # pad with a=1, b=0 steps at the end; they change nothing before them
        a = torch.cat([a, a.new_ones(pad, H)])
        b = torch.cat([b, b.new_zeros(pad, H)])
    a3, b3 = a.reshape(m, k, H), b.reshape(m, k, H)
    local = torch.empty_like(b3)  # scan of each block from a zero start
    prod = torch.empty_like(a3)   # running product of a within each block
    local[:, 0], prod[:, 0] = b3[:, 0], a3[:, 0]
    for t in range(1, k):
        torch.addcmul(b3[:, t], a3[:, t], local[:, t - 1], out=local[:, t])
        torch.mul(prod[:, t - 1], a3[:, t], out=prod[:, t])
    carry = torch.empty(m, H, dtype=b.dtype, device=b.device)  # the true state entering each block
    state = c0.to(b.dtype)
    for j in range(m):
        carry[j] = state
        state = local[j, -1] + prod[j, -1] * state
    c = torch.addcmul(local, prod, carry[:, None, :])
    return c.reshape(m * k, H)[:n]
