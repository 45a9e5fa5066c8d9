"""`rnnlens ablate`: change units and see what happens, over a text and in samples.

The model reads the text twice, as trained and with the units ablated (rnnlens.interventions, inside the
recurrence); the result holds the per-character change in loss (a page coloured like `compare`'s), the
classes of characters and the features of the text (quotes, brackets, line position, ...) whose loss rises
or falls most, and samples with the units clamped low, left alone and clamped high, at the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlens.analysis.classes import LossByClass, loss_by_class
from rnnlens.analysis.features import compute_features
from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.fileio import make_folder, write_text_atomic
from rnnlens.interventions import Ablate, Clamp, parse_unit_spec


@dataclass
class Ablation:
    """One model over one text, as trained (`clean`) and with `units` ablated (`ablated`): Predictions each."""

    run: str
    text_name: str
    units: list[str]
    interventions: list
    clean: object
    ablated: object
    classes: LossByClass
    features: list[dict]
    samples: dict[str, str]
    clamp_values: dict[str, list[float]]
    seed: int
    prime: str
    html_start: int = 0
    html_end: int = 0
    scale: float = 2.0
    extra: dict = field(default_factory=dict)

    @property
    def delta(self) -> np.ndarray:
        """[T-1] the change in loss at each predicted character, nats (ablated - clean)."""
        return self.ablated.losses - self.clean.losses

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.comparison import comparison_page
        from rnnlens.render.html import write_html
        from rnnlens.render.plots import plot_loss_by_class
        folder = make_folder(folder)
        total = len(self.clean.text)
        # the ablated model is A, so that its losses rising (loss_as-trained - loss_ablated < 0) show red
        files = {"ablate.html": write_html(folder / "ablate.html", comparison_page(
            self.ablated, self.clean, self.html_start, self.html_end, scale=self.scale,
            title=f"ablating {', '.join(self.units)}",
            subtitle=f"{self.text_name}: characters {self.html_start:,}\u2013{self.html_end:,} of {total:,}; "
                     f"red: the ablated model predicts worse"))}
        files["delta.npy"] = folder / "delta.npy"
        np.save(files["delta.npy"], self.delta.astype(np.float32))
        files["classes.csv"] = self.classes.write_csv(folder / "classes.csv")
        files["classes.md"] = write_text_atomic(folder / "classes.md", self.classes.markdown())
        files["classes.png"] = plot_loss_by_class(
            self.classes, folder / "classes.png", title=f"loss by class of the true next character, "
            f"{self.classes.chars:,} characters of {self.text_name}, as trained and ablated")
        files["features.csv"] = write_rows(folder / "features.csv", self.features)
        files["samples.md"] = write_text_atomic(folder / "samples.md", self.samples_markdown())
        files["ablate.json"] = write_text_atomic(folder / "ablate.json", _json(self.to_dict()))
        return {k: Path(v) for k, v in files.items()}

    def samples_markdown(self) -> str:
        lines = [f"# Samples, seed {self.seed}, prime {self.prime!r}", ""]
        for label, text in self.samples.items():
            values = self.clamp_values.get(label)
            head = label + (f" (clamped to {', '.join(f'{v:.3g}' for v in values)})" if values else "")
            lines += [f"## {head}", "", "```", self.prime + text, "```", ""]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"run": self.run, "text": self.text_name, "units": self.units,
                "loss_clean": self.clean.loss, "loss_ablated": self.ablated.loss,
                "loss_change": self.ablated.loss - self.clean.loss, "chars": len(self.clean),
                "classes": self.classes.to_dict(), "features": self.features, "samples": self.samples,
                "clamp_values": self.clamp_values, "seed": self.seed, "prime": self.prime}

    def summary(self) -> str:
        d = self.delta
        lines = [f"ablating {', '.join(self.units)} over {len(d):,} characters of {self.text_name}: loss "
                 f"{self.clean.loss:.4f} -> {self.ablated.loss:.4f} nats/char ({self.ablated.loss - self.clean.loss:+.4f})",
                 "loss by class of the true next character:", self.classes.markdown().rstrip("\n")]
        if self.features:
            lines.append("features (mean change in loss where the feature is on, minus where it is off):")
            for row in self.features[:3] + ([r for r in self.features[-3:] if r not in self.features[:3]]):
                lines.append(f"  {row['feature']:<18} on {row['chars_on']:>7,} chars: {row['change_on']:+.4f} nats, "
                             f"off {row['change_off']:+.4f}, difference {row['difference']:+.4f}")
        for label, text in self.samples.items():
            lines.append(f"sample, {label}: {(self.prime + text)[:120]!r}")
        return "\n".join(lines)


def feature_effects(text: str, delta: np.ndarray, features=None) -> list[dict]:
    """Per feature of the text (rnnlens.analysis.features), at the predicted characters: the mean change in
    loss where the feature is on (true, or above zero) and where it is off; sorted by the difference, the
    feature whose loss rises most first."""
    values = compute_features(text, features)
    rows = []
    for name, v in values.items():
        on = np.asarray(v[1:], dtype=np.float64) > 0  # the feature at each predicted character
        n_on = int(on.sum())
        if n_on == 0 or n_on == len(on):
            continue
        d_on, d_off = float(delta[on].mean()), float(delta[~on].mean())
        rows.append({"feature": name, "chars_on": n_on, "change_on": d_on, "change_off": d_off,
                     "difference": d_on - d_off})
    return sorted(rows, key=lambda r: -r["difference"])


def ablate(run, text: str, *, units, to: str | float = "zero", text_name: str = "the text", features=None,
           sample_length: int = 200, prime: str | None = None, seed: int = 0, temperature: float = 0.8,
           low: float | None = None, high: float | None = None, html_start: int = 0, html_length: int = 20_000,
           scale: float = 2.0, device: str = "cpu", unknown: str = "error") -> Ablation:
    """Ablate `units` (specs 'LAYER:UNIT' or 'NAME:UNIT[,UNIT]', or rnnlens.interventions objects) of the model in
    `run` (to 'zero', 'mean' over the text, or a number) and measure what changes on `text`.

    Samples: the units clamped to `low`, left alone, clamped to `high` (default: each unit's minimum and
    maximum over the text), `sample_length` characters after `prime` at the same seed."""
    from rnnlens.render.comparison import difference_scale
    from rnnlens.workflows.inspect import load_rnn
    lm = load_rnn(run, device, "ablate")
    cfg = lm.config
    check_range("--sample-length", sample_length, 0, None, integer=True)
    check_range("--html-length", html_length, 1, None, integer=True)
    check_range("--html-start", html_start, 0, None, integer=True)
    difference_scale(scale)
    if isinstance(to, str) and to not in ("zero", "mean"):
        try:
            to = float(to)
        except ValueError:
            raise RnnlensError(f"--to is zero, mean or a number; got {to!r}") from None
    if not units:
        raise RnnlensError("name at least one unit to ablate: --unit LAYER:UNIT, e.g. --unit 1:42")
    targets, labels = [], []
    for u in units:
        if isinstance(u, str):
            name, idx, _ = parse_unit_spec(u, cfg.cell, cfg.layers, cfg.size)
            targets.append((name, idx))
            labels.append(u)
        else:
            targets.append((u.name, u.units))
            labels.append(f"{u.name}:{u.units}")
    interventions = [Ablate(name, idx, to=to) for name, idx in targets]
    ids = lm.vocab.encode(text, unknown=unknown)
    text = "".join(lm.vocab.chars[i] for i in ids)
    if len(text) < 2:
        raise RnnlensError("the text needs at least two characters")
    if html_start >= len(text):
        raise RnnlensError(f"--html-start {html_start} is past the text's end ({len(text):,} characters)")
    names = sorted({name for name, _ in targets})
    clean_trace = lm.trace(text, names=names + ["probs"])
    from rnnlens.predictions import Predictions
    clean = Predictions(text, list(lm.vocab.chars), np.asarray(clean_trace["probs"][:-1], np.float32), name="as trained")
    ablated = lm.predict(text, interventions=interventions)
    ablated.name = "ablated"
    delta = ablated.losses - clean.losses

    # samples: clamped low / free / clamped high, the same seed
    def unit_values(fn):
        out = []
        for name, idx in targets:
            a = np.asarray(clean_trace[name], dtype=np.float32)[:, np.atleast_1d(np.asarray(idx, dtype=np.int64))]
            out.append(fn(a, axis=0))
        return out
    lows = unit_values(np.min) if low is None else [np.full(len(np.atleast_1d(i)), low) for _, i in targets]
    highs = unit_values(np.max) if high is None else [np.full(len(np.atleast_1d(i)), high) for _, i in targets]
    if prime is None:
        prime = "\n" if "\n" in lm.vocab.chars else lm.vocab.chars[0]
    samples, clamp_values = {}, {}
    for label, values in (("clamped low", lows), ("left alone", None), ("clamped high", highs)):
        iv = None if values is None else [Clamp(name, idx, list(map(float, v))) for (name, idx), v in
                                          zip(targets, values)]
        samples[label] = lm.sample(sample_length, prime, seed=seed, temperature=temperature, interventions=iv,
                                   unknown=unknown) if sample_length else ""
        if values is not None:
            clamp_values[label] = [float(x) for v in values for x in np.atleast_1d(v)]
    return Ablation(str(run), text_name, labels, interventions, clean, ablated, loss_by_class(clean, ablated),
                    feature_effects(text, delta, features), samples, clamp_values, seed, prime, html_start,
                    min(len(text), html_start + html_length), scale)


def _json(obj) -> str:
    import json
    return json.dumps(obj, indent=2, default=lambda o: None if isinstance(o, float) and not np.isfinite(o) else str(o))
