"""Checkpoints: one safetensors file each, tensors plus JSON metadata, written atomically.

A checkpoint never executes code when loaded: weights (and, for a training checkpoint, the
optimizer state, the carried recurrent state and the RNG state) are plain tensors, and
everything else (model config, vocabulary, training state) is JSON in the safetensors header.
One file means one atomic os.replace: a crash or a full disk mid-write leaves the previous
checkpoint as it was.

A run folder holds:
    last.safetensors   everything needed to resume training exactly
    best.safetensors   the weights with the best validation loss so far (what `load` uses)
    run.json           the run's configuration, for people
    metrics.jsonl      one JSON object per log line, per validation, when a plateau dropout comes on, at a rollback
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rnnlens.corpus import Vocab
from rnnlens.errors import RnnlensError
from rnnlens.fileio import atomic_write
from rnnlens.model import CharRNN, ModelConfig

FORMAT = "rnnlens-checkpoint"
VERSION = 1
LAST = "last.safetensors"
BEST = "best.safetensors"


@dataclass
class Checkpoint:
    config: ModelConfig
    vocab: Vocab
    meta: dict                      # JSON-able: training state, val loss, run config ...
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # every tensor, by name
    path: Path | None = None

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def build_model(self, device="cpu") -> CharRNN:
        model = CharRNN(self.config)
        model.load_state_dict(self.model_state())
        return model.to(device)


def save_checkpoint(path: str | Path, model: CharRNN, vocab: Vocab, meta: dict,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model weights (+ extra tensors, e.g. 'optim.*', 'state.*', 'rng.*') atomically."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().to("cpu").contiguous()
    header = {
        "format": FORMAT,
        "version": str(VERSION),
        "config": json.dumps(model.cfg.to_dict()),
        "vocab": json.dumps(vocab.to_json()),
        "meta": json.dumps(meta),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def read_checkpoint(path: str | Path, map_location="cpu") -> Checkpoint:
    """Read one checkpoint file; every failure is a one-line RnnlensError."""
    path = Path(path)
    if not path.exists():
        raise RnnlensError(f"checkpoint {path} does not exist; train a model with `rnnlens train --out RUN` first")
    if path.stat().st_size == 0:
        raise RnnlensError(f"checkpoint {path} is empty (truncated); restore it from a backup or retrain")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise RnnlensError(f"{path} is not an rnnlens checkpoint (no rnnlens metadata); "
                                   "point at a run folder or a .safetensors file written by rnnlens")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)
    except RnnlensError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RnnlensError(f"checkpoint {path} is truncated or corrupt ({first_line}); "
                           "restore it from a backup or retrain") from None
    if int(header.get("version", "0")) > VERSION:
        raise RnnlensError(f"checkpoint {path} was written by a newer rnnlens (format {header['version']}); upgrade rnnlens")
    try:
        config = ModelConfig.from_dict(json.loads(header["config"]))
        vocab = Vocab.from_json(json.loads(header["vocab"]))
        meta = json.loads(header.get("meta", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise RnnlensError(f"checkpoint {path} has a damaged header ({e}); restore it from a backup or retrain") from None
    return Checkpoint(config=config, vocab=vocab, meta=meta, tensors=tensors, path=path)


def find_checkpoint(run: str | Path, prefer: str = BEST) -> Path:
    """A run folder -> its best (else last) checkpoint; a file -> itself."""
    run = Path(run)
    if run.is_file():
        if run.suffix != ".safetensors":  # e.g. the text itself given where the run goes
            raise RnnlensError(f"{run} is a {run.suffix or 'plain'} file, not a run; give the folder `rnnlens train "
                               "--out` wrote (or its .safetensors checkpoint)")
        return run
    if not run.exists():
        raise RnnlensError(f"run {run} does not exist; train one with `rnnlens train --out {run}`")
    for name in (prefer, LAST, BEST):
        if (run / name).exists():
            return run / name
    raise RnnlensError(f"no checkpoint in {run} (expected {BEST} or {LAST}); "
                       f"train one with `rnnlens train --out {run}`")
