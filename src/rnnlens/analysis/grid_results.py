"""The experiment grid's results as plain data: the paper's Table 1 and a 2-D map of the models.

* `grid_table(records, ...)` -- test cross-entropy (nats/char) with a row per cell type and depth
  and a column per size (the LSTM width of the column; GRU and RNN cells in a column have the
  LSTM's parameter count when the grid matched them), as in Karpathy et al. 2015, Table 1; the
  n-gram baseline rides along.
* `model_map(predictions, info)` -- every model as a point in 2-D: the vector of log-probabilities
  it gives the true characters of a shared test excerpt, projected by PCA (numpy SVD) or t-SNE
  (scikit-learn, when installed). Models that make the same mistakes land close together.

Nothing here draws: rnnlens.render.grid_table writes the table as Markdown and HTML, and
rnnlens.render.plots.plot_model_map draws the map.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlens.errors import RnnlensError
from rnnlens.predictions import TINY, Predictions, check_same_text

MAP_METHODS = ("pca", "tsne")


@dataclass
class GridTable:
    """Test losses laid out like the paper's Table 1."""

    rows: list[tuple[str, int]]        # (cell type, layers), in the grid's order
    columns: list[int]                 # the LSTM width that names each column
    loss: np.ndarray                   # [R, C] float64 test nats/char; NaN where the cell has no result
    width: np.ndarray                  # [R, C] int: the cell's real width (differs from the column when matched)
    params: np.ndarray                 # [R, C] int: parameter count
    status: list[list[str]]            # [R][C]: done, failed, interrupted, pending, ...
    match_params: bool = True
    corpus: str = ""
    test_chars: int | None = None
    ngram_order: int | None = None
    ngram_loss: float | None = None    # the n-gram baseline's test nats/char, when it was fitted

    def row_label(self, r: int) -> str:
        cell, layers = self.rows[r]
        return f"{cell.upper()} {layers} layer{'s' if layers > 1 else ''}"

    def best(self) -> tuple[int, int] | None:
        """(row, column) of the lowest test loss, None when no cell has one."""
        if np.all(np.isnan(self.loss)):
            return None
        r, c = np.unravel_index(np.nanargmin(self.loss), self.loss.shape)
        return int(r), int(c)

    def value(self, cell: str, layers: int, column: int) -> float:
        return float(self.loss[self.rows.index((cell, layers)), self.columns.index(column)])

    def write_csv(self, path: str | Path) -> Path:
        """The wide table: model, layers, then one column per size (empty where a cell has no result)."""
        path = Path(path)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "layers", *self.columns])
            for r, (cell, layers) in enumerate(self.rows):
                w.writerow([cell, layers, *("" if math.isnan(v) else f"{v:.6f}" for v in self.loss[r])])
        return path

    def write_long_csv(self, path: str | Path) -> Path:
        """One row per model (the n-gram last): everything needed to redraw the table."""
        path = Path(path)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "layers", "column", "width", "params", "status", "test_loss_nats", "test_bpc"])
            for r, (cell, layers) in enumerate(self.rows):
                for c, column in enumerate(self.columns):
                    v = self.loss[r, c]
                    w.writerow([cell, layers, column, int(self.width[r, c]), int(self.params[r, c]),
                                self.status[r][c], "" if math.isnan(v) else f"{v:.6f}",
                                "" if math.isnan(v) else f"{v / math.log(2):.6f}"])
            if self.ngram_loss is not None:
                w.writerow([f"ngram-{self.ngram_order}", "", "", "", "", "done", f"{self.ngram_loss:.6f}",
                            f"{self.ngram_loss / math.log(2):.6f}"])
        return path

    def to_dict(self) -> dict:
        return {"rows": [{"model": c, "layers": n} for c, n in self.rows], "columns": self.columns,
                "test_loss_nats": [[None if math.isnan(v) else v for v in row] for row in self.loss.tolist()],
                "width": self.width.tolist(), "params": self.params.tolist(), "status": self.status,
                "match_params": self.match_params, "corpus": self.corpus, "test_chars": self.test_chars,
                "ngram": None if self.ngram_loss is None else {"order": self.ngram_order,
                                                               "test_loss_nats": self.ngram_loss}}


def grid_table(records: list[dict], *, match_params: bool = True, corpus: str = "", test_chars: int | None = None,
               ngram_order: int | None = None, ngram_loss: float | None = None) -> GridTable:
    """The table from one record per cell: dicts with cell, layers, column, size, params, status and
    test_loss (nats/char, absent or None when the cell has none). Rows and columns keep the order in
    which they first appear."""
    if not records:
        raise RnnlensError("the grid has no cells to tabulate")
    rows = list(dict.fromkeys((r["cell"], int(r["layers"])) for r in records))
    columns = list(dict.fromkeys(int(r["column"]) for r in records))
    loss = np.full((len(rows), len(columns)), np.nan)
    width = np.zeros((len(rows), len(columns)), dtype=np.int64)
    params = np.zeros((len(rows), len(columns)), dtype=np.int64)
    status = [["missing"] * len(columns) for _ in rows]
    for rec in records:
        r, c = rows.index((rec["cell"], int(rec["layers"]))), columns.index(int(rec["column"]))
        width[r, c], params[r, c], status[r][c] = rec["size"], rec["params"], rec.get("status", "pending")
        if rec.get("test_loss") is not None:
            loss[r, c] = rec["test_loss"]
    return GridTable(rows, columns, loss, width, params, status, match_params=match_params, corpus=corpus,
                     test_chars=test_chars, ngram_order=ngram_order, ngram_loss=ngram_loss)


# --------------------------------------------------------------------------------------------- the map

@dataclass
class ModelMap:
    """Models as points in 2-D by what they predict on a shared text."""

    names: list[str]
    kinds: list[str]                   # lstm, gru, rnn, ngram, ...
    layers: list[int | None]
    widths: list[int | None]
    params: list[int | None]
    losses: list[float]                # each model's mean nats/char on the excerpt
    coords: np.ndarray                 # [M, 2]
    method: str                        # pca or tsne
    chars: int                         # positions each model was scored on (excerpt length - 1)
    explained: list[float] | None = None  # PCA: fraction of the variance along each axis
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"method": self.method, "chars": self.chars, "explained_variance": self.explained,
                "models": [{"name": n, "kind": k, "layers": lay, "width": w, "params": p, "loss_nats": l,
                            "x": float(x), "y": float(y)}
                           for n, k, lay, w, p, l, (x, y) in zip(self.names, self.kinds, self.layers, self.widths,
                                                                 self.params, self.losses, self.coords)]}


def prediction_features(preds: list[Predictions]) -> np.ndarray:
    """[M, T-1] float64: log p(true next character) of each model at each position of their shared text.

    The probability of the truth rather than whole distributions: one number per position carries
    what differs between models (where each is surprised), and it keeps the matrix small
    (20K positions x 36 models is 6 MB; the full distributions would be V times that).
    """
    check_same_text(*preds)
    return np.stack([np.log(np.maximum(p.target_probs, TINY)) for p in preds])


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Project the rows of `features` [M, N] onto their first two principal components.

    Returns coordinates [M, 2] and the fraction of the total variance each axis explains. The sign
    of each axis is fixed (its largest-magnitude coordinate is positive) so reruns draw the same map.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise RnnlensError("the map needs at least one model's predictions")
    x = x - x.mean(axis=0, keepdims=True)
    # economy SVD of the [M, N] matrix: M models is small, so this is cheap however long the text
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(2, len(s))
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = u[:, :k] * s[:k]
    for j in range(k):
        if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
            coords[:, j] = -coords[:, j]
    total = float((s ** 2).sum())
    explained = [float(s[j] ** 2 / total) if total > 0 and j < k else 0.0 for j in range(2)]
    return coords, explained


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE coordinates [M, 2] (scikit-learn); the perplexity is scaled down for a few dozen models."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise RnnlensError("--map-method tsne needs scikit-learn (pip install scikit-learn); "
                           "or use --map-method pca") from None
    x = np.asarray(features, dtype=np.float64)
    m = x.shape[0]
    if m < 3:
        raise RnnlensError(f"t-SNE needs at least 3 models; the grid has {m}: use --map-method pca")
    perplexity = float(min(30.0, max(1.0, (m - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def model_map(preds: list[Predictions], info: list[dict], *, method: str = "pca", seed: int = 0) -> ModelMap:
    """The 2-D map of models by their predictions on one shared text.

    preds: one Predictions per model, all on the same text; info: one dict per model with kind and,
    where they apply, name, layers, width, params (name defaults to the Predictions' name).
    """
    if len(preds) != len(info):
        raise ValueError(f"{len(preds)} predictions but {len(info)} model descriptions")
    if not preds:
        raise RnnlensError("the map needs at least one model's predictions")
    info = [{"name": p.name, **i} for p, i in zip(preds, info)]
    return model_map_from_features(prediction_features(preds), info, method=method, seed=seed)


def model_map_from_features(features: np.ndarray, info: list[dict], *, method: str = "pca",
                            seed: int = 0) -> ModelMap:
    """The map from precomputed features [M, N] (prediction_features: log p of the true characters)."""
    if method not in MAP_METHODS:
        raise RnnlensError(f"--map-method must be one of {', '.join(MAP_METHODS)}; got {method!r}")
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise RnnlensError("the map needs at least one model's predictions")
    if feats.shape[0] != len(info):
        raise ValueError(f"{feats.shape[0]} feature rows but {len(info)} model descriptions")
    if method == "pca":
        coords, explained = pca_2d(feats)
    else:
        coords, explained = tsne_2d(feats, seed=seed), None
    return ModelMap(names=[i.get("name", f"model {n}") for n, i in enumerate(info)],
                    kinds=[i["kind"] for i in info], layers=[i.get("layers") for i in info],
                    widths=[i.get("width") for i in info], params=[i.get("params") for i in info],
                    losses=[float(-f.mean()) for f in feats], coords=np.asarray(coords, dtype=np.float64),
                    method=method, chars=feats.shape[1], explained=explained)
