"""Truncated-BPTT batches: B contiguous streams cut from one split, read in windows of T steps.

Row i of window k+1 continues row i of window k, so the recurrent state can be carried from
one window to the next (detached). The layout never shuffles: the data position of a run is
just (epoch, window), which makes resuming exact.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from rnnlens.errors import RnnlensError


class StreamBatches:
    """Training windows over `data` ([N] integer array, may be a memmap; never copied whole).

    Stream i covers data[i*L : i*L + L + 1] with L = (N - 1) // B; window k yields
    x = stream[:, k*T : (k+1)*T] and y shifted by one. Each epoch has W = L // T windows;
    the last L mod T characters of each stream are not used in that epoch.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, split_name: str = "train",
                 file: tuple[str | os.PathLike, int] | None = None, rows: range | None = None):
        """`file` = (path, byte offset of data[0]) of the array on disk: windows are then read
        with pread, so the process never maps the corpus and its RSS does not grow with it.
        `rows`: the streams this process owns (data-parallel training: rank r of N owns
        range(r*B/N, (r+1)*B/N)); the layout, L and W stay those of all B streams."""
        self.data = data
        self.batch_size = batch_size
        self.rows = range(batch_size) if rows is None else rows
        if len(self.rows) == 0 or self.rows.start < 0 or self.rows.stop > batch_size:
            raise ValueError(f"rows {self.rows} is not a part of the {batch_size} streams")
        self.seq_len = seq_len
        self.stream_len = (len(data) - 1) // batch_size
        self.windows = self.stream_len // seq_len
        if self.windows < 1:
            raise RnnlensError(too_short_message(len(data), batch_size, seq_len, split_name))
        self._fd = None
        if file is not None and hasattr(os, "pread"):
            self._fd = os.open(file[0], os.O_RDONLY)
            self._base = int(file[1])

    def __len__(self) -> int:
        return self.windows

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def window(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for window k, both [b, T] int64 on the CPU (b = len(rows), B when all)."""
        T, L = self.seq_len, self.stream_len
        starts = np.arange(self.rows.start, self.rows.stop) * L + k * T  # [b]
        b = len(starts)
        if self._fd is not None:
            size = self.data.dtype.itemsize
            rows = [os.pread(self._fd, (T + 1) * size, self._base + int(s) * size) for s in starts]
            chunk = np.frombuffer(b"".join(rows), dtype=self.data.dtype).reshape(b, T + 1)
        else:
            idx = starts[:, None] + np.arange(T + 1)[None, :]  # [b, T+1]; fancy indexing reads only these
            chunk = self.data[idx]
        chunk = torch.from_numpy(np.asarray(chunk, dtype=np.int64))
        return chunk[:, :-1], chunk[:, 1:]


def too_short_message(n: int, batch_size: int, seq_len: int, split_name: str) -> str:
    need = batch_size * seq_len + 1
    fits = []
    for b in (batch_size, 32, 16, 8, 4, 1):
        t = (n - 1) // b
        t = min(t, seq_len)
        if t >= 2 and b <= batch_size and (b, t) not in fits:
            fits.append((b, t))
    hint = ", ".join(f"--batch-size {b} --seq-len {t}" for b, t in fits[:3]) or "a longer text"
    return (f"the {split_name} split has {n} characters, but --batch-size {batch_size} x --seq-len {seq_len} "
            f"needs at least {need}; use a longer text or smaller sizes, e.g. {hint}")


class EvalWindows:
    """Every prediction of `data` (targets data[1:]) laid out over B streams, read in windows of T.

    Stream i predicts targets i*L .. i*L+L-1 with L = ceil((N-1)/B), so reading the outputs back
    row by row restores text order. Windows are cut lazily (a memmap is never copied whole);
    positions past the end get target -1, which the loss ignores.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int):
        self.data = data
        self.count = len(data) - 1  # number of real targets
        if self.count < 1:
            raise RnnlensError("the text to evaluate needs at least 2 characters")
        self.batch_size = max(1, min(batch_size, self.count))
        self.stream_len = -(-self.count // self.batch_size)
        self.seq_len = max(1, min(seq_len, self.stream_len))
        self.windows = -(-self.stream_len // self.seq_len)

    def __len__(self) -> int:
        return self.windows

    def window(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for window k, [B, T'] int64 with T' <= T (the last window may be shorter)."""
        L, T = self.stream_len, self.seq_len
        width = min(T, L - k * T)
        pos = np.arange(self.batch_size)[:, None] * L + k * T + np.arange(width)[None, :]  # [B, T']
        valid = pos < self.count
        safe = np.where(valid, pos, 0)
        x = np.asarray(self.data[safe], dtype=np.int64)
        y = np.where(valid, np.asarray(self.data[safe + 1], dtype=np.int64), -1)
        return torch.from_numpy(x), torch.from_numpy(y)
