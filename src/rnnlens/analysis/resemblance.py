"""Training dynamics: how much a model resembles each baseline (n-gram, n-NN) as it trains.

Karpathy et al. (2015) compare an LSTM's next-character distributions with those of n-gram
and n-NN baselines at points during training, and find that the LSTM first resembles the
low-order baselines and only later the high-order ones. The measure is the symmetric KL
divergence, averaged over the positions of a held-out text:

    D(p, q) = mean over t of  KL(p_t || q_t) + KL(q_t || p_t)
            = mean over t of  sum_v (p_t[v] - q_t[v]) * (ln p_t[v] - ln q_t[v])      (nats)

where p_t and q_t are the two models' distributions of the character after text[:t+1].

Two rules make it well defined for any pair of models:
* vocabularies: both distributions are laid over the union of the two models' characters
  (Predictions.on_vocab); a character a model lacks gets probability 0 there;
* floor: every probability is raised to at least `floor` (default 1e-6) and each row is then
  renormalised to sum to 1. Without it a zero (a missing character, or a float32 softmax that
  underflowed) makes the divergence infinite. A character one model gives q and the other ~0 then
  adds about q * ln(q / floor) <= q * 13.8 nats, so the floor caps, rather than hides, such
  disagreements. Distributions whose entries are all >= floor are not changed by it.

The snapshots come from training with `--snapshot-every N` (RUN/snapshots/step-NNNNNN.safetensors).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.checkpoint import read_checkpoint
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text, predict

FLOOR = 1e-6
ROWS_PER_CHUNK = 1 << 15  # positions per block: bounds the float64 work arrays to ~ROWS * V * 8 bytes each
SNAPSHOT_NAME = re.compile(r"^step-(\d+)\.safetensors$")


def symmetric_kl_per_position(p: Predictions, q: Predictions, *, floor: float = FLOOR) -> np.ndarray:
    """[T-1] float64: KL(p_t || q_t) + KL(q_t || p_t) at every position, in nats (see the module docstring)."""
    check_same_text(p, q)
    if not 0 < floor < 1:
        raise RnnlensError(f"the probability floor must be in (0, 1); got {floor!r}")
    known = set(p.chars)
    chars = list(p.chars) + [c for c in q.chars if c not in known]
    pa, qa = p.on_vocab(chars), q.on_vocab(chars)  # [T-1, V'] each
    out = np.empty(len(p), dtype=np.float64)
    for s in range(0, len(p), ROWS_PER_CHUNK):
        a = _floored(pa[s:s + ROWS_PER_CHUNK], floor)
        b = _floored(qa[s:s + ROWS_PER_CHUNK], floor)
        out[s:s + len(a)] = ((a - b) * (np.log(a) - np.log(b))).sum(axis=1)
    return out


def symmetric_kl(p: Predictions, q: Predictions, *, floor: float = FLOOR) -> float:
    """Mean over positions of KL(p_t || q_t) + KL(q_t || p_t), nats; 0 for identical predictions."""
    d = symmetric_kl_per_position(p, q, floor=floor)
    return float(d.mean()) if len(d) else float("nan")


def _floored(probs: np.ndarray, floor: float) -> np.ndarray:
    """Rows raised to >= floor and renormalised to sum to 1, as float64."""
    a = np.maximum(np.asarray(probs, dtype=np.float64), floor)
    return a / a.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------


@dataclass
class Resemblance:
    """The symmetric KL between a run's snapshots and each baseline, over training."""

    run: str
    chars: int                        # positions compared (text length - 1)
    steps: np.ndarray                 # [S] int: training step of each snapshot
    seconds: np.ndarray               # [S] float: training seconds at that step (validation not counted)
    loss: np.ndarray                  # [S] float: the snapshot's cross-entropy on the text, nats/char
    kl: dict[str, np.ndarray]         # baseline name -> [S] float: mean symmetric KL, nats
    baseline_loss: dict[str, float]   # baseline name -> its cross-entropy on the text, nats/char
    floor: float = FLOOR
    meta: dict = field(default_factory=dict)

    @property
    def baselines(self) -> list[str]:
        return list(self.kl)

    def closest(self) -> list[str]:
        """For each snapshot, the baseline it resembles most (smallest KL)."""
        names = self.baselines
        table = np.stack([self.kl[n] for n in names])  # [N, S]
        return [names[i] for i in np.argmin(table, axis=0)]

    def to_rows(self) -> list[dict]:
        closest = self.closest()
        return [{"step": int(self.steps[i]), "seconds": round(float(self.seconds[i]), 3),
                 "loss_nats": float(self.loss[i]),
                 **{f"kl_{n}": float(self.kl[n][i]) for n in self.baselines}, "closest": closest[i]}
                for i in range(len(self.steps))]

    def write_csv(self, path: str | Path) -> Path:
        return write_rows(path, self.to_rows(), ["step", "seconds", "loss_nats",
                                                 *(f"kl_{n}" for n in self.baselines), "closest"])

    def to_dict(self) -> dict:
        return {"chars": self.chars, "floor": self.floor, "unit": "nats",
                "measure": "mean over positions of KL(p||q) + KL(q||p)",
                "steps": self.steps.tolist(), "seconds": self.seconds.tolist(), "loss": self.loss.tolist(),
                "baselines": {n: {"loss": self.baseline_loss[n], "kl": self.kl[n].tolist()} for n in self.baselines},
                "closest": self.closest(), **({"meta": self.meta} if self.meta else {})}


def list_snapshots(run: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot of a run folder, by step."""
    folder = Path(run) / "snapshots"
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            m = SNAPSHOT_NAME.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
    if not found:
        if not Path(run).is_dir():
            raise RnnlensError(f"{run} is not a run folder; give the folder a run was trained into")
        raise RnnlensError(f"{run} has no snapshots; train it with --snapshot-every N (e.g. "
                           f"`rnnlens train ... --snapshot-every 100 --out {run}`) to keep its weights along the way")
    return sorted(found)


def baseline_predictions(baselines: dict, text: str, *, device: str = "cpu") -> dict[str, Predictions]:
    """Each baseline as Predictions over `text`: a Predictions (checked to be on `text`), anything
    rnnlens.predictions.predict accepts (a LanguageModel, an n-gram model, an object with predict(text)),
    or a path that rnnlens.load reads."""
    if not baselines:
        raise RnnlensError("no baselines to compare with; give at least one")
    out = {}
    for name, b in baselines.items():
        if isinstance(b, (str, Path)):
            from rnnlens.api import load
            b = load(b, device=device)
        pred = b if isinstance(b, Predictions) else predict(b, text)
        if pred.text != text:
            raise RnnlensError(f"baseline '{name}' was scored on another text; score every baseline on the same text")
        out[str(name)] = replace(pred, name=str(name))  # a copy: the caller's object keeps its name
    return out


def resemblance_over_training(run: str | Path, baselines: dict, text: str, *, floor: float = FLOOR,
                              device: str = "cpu", progress=None) -> Resemblance:
    """Symmetric KL between every snapshot of `run` and each baseline on `text` (see the module docstring).

    baselines: name -> Predictions, model (LanguageModel, n-gram, n-NN) or path of one.
    progress: optional callable(i, total, step) called after each snapshot.
    """
    from rnnlens.api import LanguageModel
    from rnnlens.trainer import resolve_device
    snaps = list_snapshots(run)
    where = resolve_device(device) if isinstance(device, str) else device
    if len(text) < 2:
        raise RnnlensError(f"the text has {len(text)} character(s); comparing predictions needs at least 2")
    base = baseline_predictions(baselines, text, device=device)
    steps, seconds, losses = [], [], []
    kl = {n: [] for n in base}
    for i, (step, path) in enumerate(snaps):
        ckpt = read_checkpoint(path)
        lm = LanguageModel(ckpt.build_model(where).eval(), ckpt.vocab, ckpt.meta, path)
        pred = predict(lm, text, name=f"step {step}")
        steps.append(step)
        seconds.append(float(ckpt.meta.get("elapsed_s", math.nan)))
        losses.append(pred.loss)
        for n, b in base.items():
            kl[n].append(symmetric_kl(pred, b, floor=floor))
        if progress is not None:
            progress(i + 1, len(snaps), step)
    return Resemblance(run=str(run), chars=len(text) - 1, steps=np.array(steps, dtype=np.int64),
                       seconds=np.array(seconds, dtype=np.float64), loss=np.array(losses, dtype=np.float64),
                       kl={n: np.array(v, dtype=np.float64) for n, v in kl.items()},
                       baseline_loss={n: b.loss for n, b in base.items()}, floor=floor)
