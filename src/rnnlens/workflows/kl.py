"""`rnnlens kl`: which baseline a run resembles, snapshot by snapshot, over training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnlens.analysis.resemblance import FLOOR, Resemblance, list_snapshots, resemblance_over_training
from rnnlens.checkpoint import read_checkpoint
from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.fileio import make_folder, write_json_atomic
from rnnlens.runs import load_model, model_label, training_corpus


@dataclass
class KLResult:
    resemblance: Resemblance
    run: str
    text_name: str

    @property
    def label(self) -> str:
        return model_label(Path(self.run) / "best.safetensors")

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.plots import plot_resemblance
        folder = make_folder(folder)
        res = self.resemblance
        return {"kl.png": Path(plot_resemblance(res, folder / "kl.png", title=f"{self.label}: symmetric KL to "
                                                f"baselines over {res.chars:,} characters")),
                "kl.csv": Path(res.write_csv(folder / "kl.csv")),
                "kl.json": write_json_atomic(folder / "kl.json", self.to_dict())}

    def to_dict(self) -> dict:
        return {"run": self.run, "text": self.text_name, **self.resemblance.to_dict()}

    def summary(self) -> str:
        res = self.resemblance
        names = res.baselines
        width = max(10, *(len(n) + 2 for n in names))
        lines = [f"{self.label}: symmetric KL, KL(p||q) + KL(q||p) in nats per character, over {res.chars:,} "
                 f"characters of {self.text_name}",
                 f"{'step':>8s} {'seconds':>8s} {'loss':>7s}" + "".join(f"{n:>{width}s}" for n in names) + "  closest",
                 f"{'':8s} {'':8s} {'':7s}" + "".join(f"{'(' + format(res.baseline_loss[n], '.3f') + ')':>{width}s}"
                                                      for n in names) + "  (baselines' own loss)"]
        for row in res.to_rows():
            lines.append(f"{row['step']:8d} {row['seconds']:8.1f} {row['loss_nats']:7.3f}"
                         + "".join(f"{row['kl_' + n]:{width}.4f}" for n in names) + f"  {row['closest']}")
        return "\n".join(lines)


def kl(run, text: str, *, baselines: dict | None = None, ngram_orders=(), data=None, floor: float = FLOOR,
       unknown: str = "error", replacement: str | None = None, text_name: str = "the text", device: str = "cpu",
       progress=None) -> KLResult:
    """Symmetric KL between every snapshot of `run` (trained with snapshot_every) and each baseline on `text`.

    baselines: name -> path, model or Predictions; ngram_orders: also n-gram models of these orders, fitted
    on `data` (default: the run's own training corpus)."""
    from rnnlens.ngram import train_ngram
    check_range("--floor", floor, 0.0, 1.0, low_open=True, high_open=True)
    baselines = dict(baselines or {})
    orders = sorted(set(ngram_orders or ()))
    if not baselines and not orders:
        raise RnnlensError("nothing to compare with: give --baseline NAME=PATH (repeatable) and/or --ngram-orders")
    if data and not orders:
        raise RnnlensError("--data is the corpus for --ngram-orders; give --ngram-orders too, or drop --data")
    snaps = list_snapshots(run)  # before any slow work
    latest = read_checkpoint(snaps[-1][1])
    if unknown != "error":  # one text for every model: clean it against the run's vocabulary
        vocab = latest.vocab
        text = "".join(vocab.chars[i] for i in vocab.encode(text, unknown=unknown, replacement=replacement))
    if len(text) < 2:
        raise RnnlensError(f"{text_name} has {len(text)} usable character(s); comparing predictions needs at least 2")
    loaded = {name: load_model(path, device) if isinstance(path, (str, Path)) else path
              for name, path in baselines.items()}
    if orders:
        if data:
            ngram = train_ngram(data, max(orders))
        else:
            ngram = train_ngram(corpus=training_corpus(latest), order=max(orders))
        for k in orders:
            name = f"{k}-gram"
            if name in loaded:
                raise RnnlensError(f"--baseline name {name!r} clashes with --ngram-orders; rename that baseline")
            loaded[name] = ngram.predict(text, order=k)
    res = resemblance_over_training(run, loaded, text, floor=floor, device=device, progress=progress)
    return KLResult(res, str(run), text_name)
