"""Sampling: a fast step-by-step path for generation, the same cells as torch's.

At batch 1 on a CPU, calling nn.LSTM once per character is slow (each call pays the fused
kernel's setup; measured in docs/benchmarks.md, "Sampling"). Generation is inherently sequential, so here each
step is one matrix-vector product per layer on the same weights (rnnlens.recurrence.StepLayer: [W_ih | W_hh]
fused, preallocated buffers); the first layer's input projection is precomputed for every vocabulary entry
(a table lookup per step). Two measured choices make batch 1 on a CPU about 2x a hand-written nn.LSTMCell
stack (docs/benchmarks.md, section 3): a step of up to 64 rows runs on ONE thread (a matrix-vector
product from cache gains nothing from a second thread, and every parallel region pays a thread barrier,
which on a busy machine costs more than the product), and the products use float16 copies of the weights
(precision='auto': float16 for one row of a layer of 256+ units on a CPU, float32 otherwise; activations, state and biases stay
float32; the relative error in the pre-activations is about 5e-4, so a sample can differ from a float32
one where two characters are nearly tied). Tests check these steps against the fused forward.

Interventions (rnnlens.interventions) run inside the steps. The prime is stepped too when it is short
(STEP_PRIME) or when there are interventions (so that they act on it); a long one without them goes
through the fused forward in one call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rnnlens.checks import check_choice, check_range
from rnnlens.errors import RnnlensError
from rnnlens.interventions import LayerEdits, compile_interventions
from rnnlens.model import CharRNN
from rnnlens.recurrence import StepLayer, layer_weights, torch_threads

PRECISIONS = ("auto", "float32", "float16", "bfloat16")
STEP_PRIME = 256  # primes up to this many characters are stepped, longer ones go through the fused forward


@dataclass
class SamplingOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    argmax: bool = False
    precision: str = "auto"  # the step's weights: float16 at batch 1 on a CPU (auto), or float32 everywhere

    def __post_init__(self):
        check_range("--temperature", self.temperature, 0.0, None, low_open=True)
        if self.top_k is not None:
            check_range("--top-k", self.top_k, 1, None, integer=True)
        if self.top_p is not None:
            check_range("--top-p", self.top_p, 0.0, 1.0, low_open=True)
        check_choice("--precision", self.precision, PRECISIONS)


def step_threads(rows: int, device) -> int | None:
    """Threads for a step on a CPU: one for up to 64 rows (see the module's docstring), torch's setting above."""
    return 1 if rows <= 64 and torch.device(device).type == "cpu" else None


def step_dtype(precision: str, rows: int, device, size: int = 512) -> torch.dtype:
    """The weights' dtype for the step products: 'auto' is float16 for one row of a layer of 256 units or more
    on a CPU (torch's float16 matrix-vector kernel reads half the bytes; at several rows its matrix product is
    slow, and for small layers the conversion costs more than it saves), else float32."""
    if precision == "auto":
        cpu = torch.device(device).type == "cpu"
        return torch.float16 if rows == 1 and cpu and size >= 256 else torch.float32
    return getattr(torch, precision)


class Stepper:
    """One recurrent step at a time over `rows` parallel rows, on the model's weights (rnnlens.recurrence).

    Holds the state: `set_state`, then `advance(ids, t)` per character (t its position in the text, for the
    interventions) -> logits [rows, V]."""

    def __init__(self, model: CharRNN, rows: int = 1, dtype=torch.float32,
                 edits: dict[int, LayerEdits] | None = None, threads: int | None = None):
        cfg = model.cfg
        self.cell, self.rows, self.edits, self.threads = cfg.cell, rows, edits or {}, threads
        nonlinearity = getattr(model.rnn, "nonlinearity", "tanh")
        self.layers = []
        with torch.no_grad():
            for l in range(cfg.layers):
                w_ih, b_ih, w_hh, b_hh = layer_weights(model.rnn, l)
                if l == 0:
                    # [V, G*H]: the input projection of every character (with b_ih, and for an LSTM or RNN also
                    # b_hh: one addition fewer per step), looked up per step
                    ids = torch.arange(cfg.vocab_size, device=w_ih.device)
                    table = model.inputs(ids[None, :])[0] @ w_ih.T + b_ih
                    if cfg.cell != "gru":  # the GRU's reset gate scales W_hn h + b_hn: b_hh stays apart
                        table, b_hh = table + b_hh, None
                    self.table = table.float().contiguous()
                    w_ih, b_ih = None, None
                self.layers.append(StepLayer(cfg.cell, w_ih, b_ih, w_hh, b_hh, nonlinearity, rows, dtype))
            self.head_w = model.head.weight.detach().float().T.contiguous()  # [H, V]
            self.head_b = model.head.bias.detach().float()
        self.logits = torch.empty(rows, cfg.vocab_size, device=self.head_b.device)

    def set_state(self, layers: list[list[torch.Tensor]]) -> None:
        for layer, st in zip(self.layers, layers):
            layer.set_state(st)

    def state(self) -> list[list[torch.Tensor]]:
        return [layer.state() for layer in self.layers]

    def advance(self, ids: torch.Tensor, t: int = 0) -> torch.Tensor:
        """ids [rows] long at text position t -> logits [rows, V] (a buffer, overwritten by the next step)."""
        with torch_threads(self.threads):
            return self._advance(ids, t)

    def _advance(self, ids: torch.Tensor, t: int) -> torch.Tensor:
        x = None
        for l, layer in enumerate(self.layers):
            gi = self.table.index_select(0, ids) if l == 0 else None
            x = layer.step(x, gi, self.edits.get(l), t)
        return torch.addmm(self.head_b, x, self.head_w, out=self.logits)

    def step(self, ids: torch.Tensor, state: list[list[torch.Tensor]], t: int = 0):
        """ids [N] long, state per layer [h] or [h, c] each [N, H] -> logits [N, V], new state."""
        self.set_state(state)
        logits = self.advance(ids, t).clone()
        return logits, self.state()


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


def generate(model: CharRNN, prime_ids: torch.Tensor, length: int, opts: SamplingOptions,
             seed: int | None = None, interventions=None) -> Iterator[int]:
    """Yield `length` sampled character ids after the prime ([P] long, P >= 1)."""
    for row in generate_rows(model, prime_ids, length, opts, seed, rows=1, interventions=interventions):
        yield int(row[0])


@torch.inference_mode()
def generate_rows(model: CharRNN, prime_ids: torch.Tensor, length: int, opts: SamplingOptions,
                  seed: int | None = None, rows: int = 1, interventions=None) -> Iterator[torch.Tensor]:
    """`rows` samples at once, all after the same prime: yields the next ids [rows] `length` times.
    A seed makes them reproducible for the same rows (a row's sample depends on how many rows share
    the generator)."""
    check_range("--length", length, 0, None, integer=True)
    check_range("--num-samples", rows, 1, None, integer=True)
    if prime_ids.numel() < 1:
        raise RnnlensError("the prime is empty after removing unknown characters; give a prime with known characters")
    cfg = model.cfg
    edits = compile_interventions(interventions, cfg.cell, cfg.layers, cfg.size) if interventions else {}
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        prime_ids = prime_ids.to(device)
        if model.rnn is None:
            # an n-NN: one forward call per character already costs only a gather and two small matmuls
            logits, state = model(prime_ids[None, :].expand(rows, -1), None)
            logits = logits[:, -1].float()
            for _ in range(length):
                nxt = pick(logits, opts, generator)
                yield nxt
                logits, state = model(nxt[:, None], state)
                logits = logits[:, -1].float()
            return
        stepper = Stepper(model, rows, step_dtype(opts.precision, rows, device, cfg.size), edits,
                          step_threads(rows, device))
        P = prime_ids.numel()
        if edits or P <= STEP_PRIME:  # step the prime: interventions act on it too, and a short one is
            # faster stepped than through one fused call (oneDNN's setup costs milliseconds at batch 1)
            stepper.set_state(state_to_layers(cfg.cell, model.initial_state(rows, device)))
            for t in range(P):
                logits = stepper.advance(prime_ids[t:t + 1].expand(rows), t)
        else:  # a long prime goes through the fused forward in one call; generation then steps
            logits, state = model(prime_ids[None, :], None)
            logits = logits[:, -1].float().expand(rows, -1)
            stepper.set_state(state_to_layers(cfg.cell, state))
        for k in range(length):
            nxt = pick(logits, opts, generator)
            yield nxt
            logits = stepper.advance(nxt, P + k)
    finally:
        model.train(was_training)
