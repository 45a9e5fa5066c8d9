"""The character language model: embedding (or one-hot) -> fused torch RNN/LSTM/GRU stack -> linear.

Training always goes through torch's fused modules (oneDNN on CPU, cuDNN on GPU); nothing
here loops over time steps. Shapes: B batch rows, T time steps, V vocabulary, H width, L layers.

The same class also holds the paper's n-NN baseline (cell 'ffn'): a feed-forward net on the last
n = `context` characters (their embeddings or one-hot vectors concatenated, one tanh hidden layer,
then the linear head). Its carried "state" is the last n-1 input ids [B, n-1], padded at the start
of a text with a dedicated start id (= vocab_size, an extra embedding row), so the trainer, the
evaluator, sampling and traces carry it across windows exactly as they carry an RNN's (h, c).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from rnnlens.checks import check_choice, check_range
from rnnlens.errors import RnnlensError

CELLS = ("lstm", "gru", "rnn", "ffn")
INPUTS = ("embedding", "onehot")
INITS = ("uniform", "torch")
# Gates per cell in torch's weight layout: LSTM rows are [i, f, g, o], GRU rows [r, z, n].
GATE_ROWS = {"lstm": 4, "gru": 3, "rnn": 1}
DEFAULT_CONTEXT = 20


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored as JSON in every checkpoint."""

    vocab_size: int
    # defaults: the winner of the 30-minute quality-per-CPU-minute run (docs/benchmarks.md)
    cell: str = "lstm"
    layers: int = 1
    size: int = 512
    dropout: float = 0.2
    input: str = "embedding"
    embedding_size: int = 64
    init: str = "uniform"
    init_range: float = 0.08
    forget_bias: float = 1.0
    context: int = DEFAULT_CONTEXT   # ffn only: n, the characters the n-NN sees (the current one and n-1 before)

    def __post_init__(self):
        check_choice("--model", self.cell, CELLS)
        check_choice("--input", self.input, INPUTS)
        check_choice("--init", self.init, INITS)
        check_range("--layers", self.layers, 1, None, integer=True)
        check_range("--size", self.size, 1, None, integer=True)
        check_range("--embedding-size", self.embedding_size, 1, None, integer=True)
        check_range("vocab_size", self.vocab_size, 1, None, integer=True)
        check_range("--dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_range("--init-range", self.init_range, 0.0, None, low_open=True)
        check_range("--context", self.context, 1, None, integer=True)
        if self.cell == "ffn" and self.layers != 1:
            raise RnnlensError(f"--model ffn (the n-NN baseline) has one hidden layer; drop --layers {self.layers} "
                               "or choose a recurrent --model")

    @property
    def input_vocab(self) -> int:
        """Rows of the input encoding: the vocabulary, plus the start id for an n-NN's padding."""
        return self.vocab_size + (self.cell == "ffn")

    @property
    def start_id(self) -> int:
        """The n-NN's padding id before a text's first character (ffn only)."""
        return self.vocab_size

    @property
    def input_size(self) -> int:
        return self.input_vocab if self.input == "onehot" else self.embedding_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def count_parameters(cfg: ModelConfig) -> int:
    """Closed-form parameter count, equal to sum(p.numel()) of CharRNN(cfg) (tested)."""
    total = cfg.input_vocab * cfg.embedding_size if cfg.input == "embedding" else 0
    head = cfg.size * cfg.vocab_size + cfg.vocab_size
    if cfg.cell == "ffn":
        return total + cfg.context * cfg.input_size * cfg.size + cfg.size + head
    gates = GATE_ROWS[cfg.cell]
    inp = cfg.input_size
    for _ in range(cfg.layers):
        total += gates * cfg.size * (inp + cfg.size) + 2 * gates * cfg.size
        inp = cfg.size
    return total + cfg.size * cfg.vocab_size + cfg.vocab_size


def size_for_params(cfg: ModelConfig, budget: int) -> int:
    """The width whose parameter count is closest to `budget` (the paper compares types at equal size)."""
    check_range("--params", budget, 1, None)
    lo, hi = 1, 1
    while count_parameters(_with_size(cfg, hi)) < budget:
        hi *= 2
    while hi - lo > 1:  # count is increasing in width: bisect for the crossing
        mid = (lo + hi) // 2
        if count_parameters(_with_size(cfg, mid)) < budget:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda h: abs(count_parameters(_with_size(cfg, h)) - budget))


def _with_size(cfg: ModelConfig, size: int) -> ModelConfig:
    return ModelConfig.from_dict({**cfg.to_dict(), "size": size})


class CharRNN(nn.Module):
    """Embedding -> nn.LSTM/GRU/RNN (fused, batch_first) -> linear head over the vocabulary.

    With cell 'ffn' (the n-NN): embedding -> the last `context` inputs concatenated -> linear -> tanh
    -> linear head; `self.rnn` is then None and `self.ffn` holds the hidden layer.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.input_vocab, cfg.embedding_size) if cfg.input == "embedding" else None
        if cfg.cell == "ffn":
            self.rnn = None
            self.ffn = nn.Linear(cfg.context * cfg.input_size, cfg.size)  # [n*I] -> [H], oldest character first
        else:
            rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.cell]
            # torch applies dropout between layers only (not after the last); we add the last one by hand
            self.rnn = rnn_cls(cfg.input_size, cfg.size, num_layers=cfg.layers, batch_first=True,
                               dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.size, cfg.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        cfg = self.cfg
        if cfg.init == "uniform":
            # char-rnn's init, U(-r, r) for the recurrent and output weights and biases. The
            # embedding keeps torch's N(0, 1): char-rnn fed one-hot vectors (entries of size 1),
            # and a U(-0.08, 0.08) embedding leaves training on the unigram plateau for ~100 steps.
            for name, p in self.named_parameters():
                if not name.startswith("embed."):
                    nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.cell == "lstm" and cfg.forget_bias:
            # torch keeps two biases per layer (b_ih, b_hh) that add up; put the whole offset on b_ih.
            h = cfg.size
            for layer in range(cfg.layers):
                getattr(self.rnn, f"bias_ih_l{layer}").data[h:2 * h] = cfg.forget_bias
                getattr(self.rnn, f"bias_hh_l{layer}").data[h:2 * h] = 0.0

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] long -> [B, T, I] float."""
        if self.embed is not None:
            return self.embed(ids)
        return F.one_hot(ids, self.cfg.input_vocab).to(self.head.weight.dtype)

    def forward(self, ids: torch.Tensor, state=None):
        """ids [B, T] -> (logits [B, T, V], state). state: (h, c) each [L, B, H] for LSTM, h for GRU/RNN,
        the last n-1 ids [B, n-1] (long) for an n-NN."""
        if self.rnn is None:
            out, state = self.ffn_hidden(ids, state)
        else:
            out, state = self.rnn(self.inputs(ids), state)  # out [B, T, H]
        return self.head(self.drop(out)), state

    def ffn_hidden(self, ids: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor]:
        """n-NN hidden layer: ids [B, T] and the previous n-1 ids [B, n-1] (None: the start of a text)
        -> (tanh hidden [B, T, H], the last n-1 ids [B, n-1]). All T positions at once, no loop over time."""
        n = self.cfg.context
        B, T = ids.shape
        if state is None:
            state = self.initial_state(B, ids.device)
        full = torch.cat([state.to(ids.dtype), ids], dim=1)  # [B, n-1+T]
        x = self.inputs(full)                                 # [B, n-1+T, I]
        # window t covers full[t : t+n], i.e. ids[t-n+1 .. t]; unfold puts the window last: [B, T, I, n]
        windows = x.unfold(1, n, 1).transpose(2, 3).reshape(B, T, n * x.shape[-1])  # [B, T, n*I]
        hidden = torch.tanh(self.ffn(windows))                # [B, T, H]
        return hidden, full[:, full.shape[1] - (n - 1):]

    def set_dropout(self, p: float) -> None:
        """The dropout training applies from now on (cfg.dropout keeps the configured one). Both torch's
        between-layer dropout and ours before the head read their rate at every forward."""
        self.drop.p = p
        if self.rnn is not None and self.cfg.layers > 1:
            self.rnn.dropout = p

    def initial_state(self, batch: int, device=None):
        device = device or self.head.weight.device
        if self.cfg.cell == "ffn":
            return torch.full((batch, self.cfg.context - 1), self.cfg.start_id, dtype=torch.long, device=device)
        h = torch.zeros(self.cfg.layers, batch, self.cfg.size, device=device)
        return (h, h.clone()) if self.cfg.cell == "lstm" else h


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_tensors(state) -> list[torch.Tensor]:
    """A recurrent state as a list (LSTM: [h, c]; GRU/RNN: [h]; n-NN: [last ids])."""
    return list(state) if isinstance(state, tuple) else [state]


def state_from_tensors(cell: str, tensors: list[torch.Tensor]):
    return (tensors[0], tensors[1]) if cell == "lstm" else tensors[0]
