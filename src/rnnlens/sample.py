"""Sampling: a fast step-by-step path for generation, numerically the same cells as torch's.

At batch 1 on a CPU, calling nn.LSTM once per character is slow (each call pays the fused
kernel's setup; measured in docs/benchmarks.md, "Sampling"). Generation is inherently sequential, so here each
step is a few matrix-vector products on the same weights: the first layer's input projection
is precomputed for every vocabulary entry (a table lookup per step), the rest are addmm calls.
A test checks these steps against the fused forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rnnlens import recurrence
from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.model import CharRNN
from rnnlens.recurrence import input_projection, layer_weights


@dataclass
class SamplingOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    argmax: bool = False

    def __post_init__(self):
        check_range("--temperature", self.temperature, 0.0, None, low_open=True)
        if self.top_k is not None:
            check_range("--top-k", self.top_k, 1, None, integer=True)
        if self.top_p is not None:
            check_range("--top-p", self.top_p, 0.0, 1.0, low_open=True)


class Stepper:
    """One recurrent step at a time over N parallel rows, sharing the model's weights (rnnlens.recurrence)."""

    def __init__(self, model: CharRNN):
        self.cell = model.cfg.cell
        self.nonlinearity = getattr(model.rnn, "nonlinearity", "tanh")
        self.layers = []
        with torch.no_grad():
            for l in range(model.cfg.layers):
                w_ih, b_ih, w_hh, b_hh = layer_weights(model.rnn, l)
                if l == 0:
                    # [V, G*H]: the input projection of every character, looked up per step
                    ids = torch.arange(model.cfg.vocab_size, device=w_ih.device)
                    table = model.inputs(ids[None, :])[0] @ w_ih.T + b_ih
                    self.layers.append((table, None, w_hh, b_hh))
                else:
                    self.layers.append((None, (w_ih, b_ih), w_hh, b_hh))
            self.head_w = model.head.weight.T
            self.head_b = model.head.bias

    def step(self, ids: torch.Tensor, state: list[list[torch.Tensor]]):
        """ids [N] long, state per layer [h] or [h, c] each [N, H] -> logits [N, V], new state."""
        x = None
        new_state = []
        for l, (table, ih, w_hh, b_hh) in enumerate(self.layers):
            gi = table[ids] if table is not None else input_projection(x, *ih)  # [N, G*H]
            acts = recurrence.step(self.cell, gi, state[l], w_hh, b_hh, self.nonlinearity)
            new_state.append(recurrence.next_state(self.cell, acts))
            x = acts["hidden"]
        return torch.addmm(self.head_b, x, self.head_w), new_state


def state_to_layers(cell: str, state) -> list[list[torch.Tensor]]:
    """torch's (h, c) [L, N, H] layout -> per-layer lists for Stepper."""
    if cell == "lstm":
        h, c = state
        return [[h[l], c[l]] for l in range(h.shape[0])]
    return [[state[l]] for l in range(state.shape[0])]


def pick(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator) -> torch.Tensor:
    """logits [N, V] -> next ids [N], by argmax or by sampling with temperature / top-k / top-p."""
    if opts.argmax:
        return logits.argmax(dim=-1)
    logits = logits.float() / opts.temperature
    if opts.top_k is not None and opts.top_k < logits.shape[-1]:
        kth = torch.topk(logits, opts.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if opts.top_p is not None and opts.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top character)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= opts.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: CharRNN, prime_ids: torch.Tensor, length: int, opts: SamplingOptions,
             seed: int | None = None) -> Iterator[int]:
    """Yield `length` sampled character ids after the prime ([P] long, P >= 1)."""
    check_range("--length", length, 0, None, integer=True)
    if prime_ids.numel() < 1:
        raise RnnlensError("the prime is empty after removing unknown characters; give a prime with known characters")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        # the prime goes through the fused forward in one call; generation then steps
        logits, state = model(prime_ids.to(device)[None, :], None)
        logits = logits[:, -1].float()
        if model.rnn is None:
            # an n-NN: one forward call per character already costs only a gather and two small matmuls
            for _ in range(length):
                nxt = pick(logits, opts, generator)
                yield int(nxt[0])
                logits, state = model(nxt[:, None], state)
                logits = logits[:, -1].float()
            return
        layers = state_to_layers(model.cfg.cell, state)
        stepper = Stepper(model)
        for _ in range(length):
            nxt = pick(logits, opts, generator)
            yield int(nxt[0])
            logits, layers = stepper.step(nxt, layers)
    finally:
        model.train(was_training)
