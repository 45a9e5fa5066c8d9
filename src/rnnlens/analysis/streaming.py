"""Helpers for analyses that read trace arrays a block of rows at a time.

A trace of a long text is memory-mapped from disk (Trace.load, or lm.trace(..., out=)); reading
it in blocks of rows keeps the working memory to one block however long the text is.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rnnlens.errors import RnnlensError

BLOCK_VALUES = 1 << 20  # values per block: 4 MB of float32 at a time


def row_blocks(array: np.ndarray, block_values: int = BLOCK_VALUES) -> Iterator[np.ndarray]:
    """The rows of a [T, H] array in consecutive blocks of about `block_values` values each."""
    rows = max(1, block_values // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        yield array[start:start + rows]


def check_gate_array(name: str, array: np.ndarray, rows: int, size: int) -> None:
    if array.ndim != 2 or array.shape != (rows, size):
        raise RnnlensError(f"trace array {name} has shape {tuple(array.shape)}; expected ({rows}, {size})")
    if not np.issubdtype(array.dtype, np.floating):
        raise RnnlensError(f"trace array {name} holds {array.dtype} values; gate activations are floats")
