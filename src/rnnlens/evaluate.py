"""Cross-entropy of a model over a whole text (every character, carried state), in nats and bits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rnnlens.batches import EvalWindows
from rnnlens.model import CharRNN


@dataclass
class EvalResult:
    loss: float            # mean cross-entropy, nats per character
    chars: int             # number of predicted characters (text length - 1)
    losses: np.ndarray | None = None  # [chars] float32: -log p(true next char), in text order

    @property
    def bpc(self) -> float:
        """Bits per character."""
        return self.loss / math.log(2)

    def to_dict(self) -> dict:
        return {"loss_nats": self.loss, "bits_per_char": self.bpc, "chars": self.chars}


@torch.no_grad()
def evaluate(model: CharRNN, data: np.ndarray, *, batch_size: int = 50, seq_len: int = 100,
             keep_losses: bool = False, device=None) -> EvalResult:
    """Mean -log p(next char) over all of `data`.

    The text is laid out as B contiguous streams (see EvalWindows); each stream starts from the
    zero state and carries it across windows, so every character after a stream's first is scored
    with its full left context within that stream. batch_size=1 scores the text as one stream.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    windows = EvalWindows(data, batch_size, seq_len)
    total = torch.zeros((), dtype=torch.float64, device=device)
    per_window = []
    state = None
    for k in range(len(windows)):
        x, y = windows.window(k)
        x, y = x.to(device), y.to(device)
        logits, state = model(x, state)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              ignore_index=-1, reduction="none").reshape(y.shape)  # [B, T']
        total += nll.sum(dtype=torch.float64)
        if keep_losses:
            per_window.append(nll.to("cpu", torch.float32))
    model.train(was_training)
    losses = None
    if keep_losses:
        # [B, L] row-major is text order; drop the padding at the end of the last stream.
        losses = torch.cat(per_window, dim=1).reshape(-1)[: windows.count].numpy()
    return EvalResult(loss=float(total) / windows.count, chars=windows.count, losses=losses)
