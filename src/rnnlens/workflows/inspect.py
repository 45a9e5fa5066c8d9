"""What the trace-based commands do: `cells`, `saturation`, `timescales` and `gradients`.

Each function reads a model and a text, runs one analysis (rnnlens.analysis.*) and returns a result
whose `.write(folder)` draws it (rnnlens.render.*) and `.summary()` says it in words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.fileio import make_folder
from rnnlens.names import layer_names
from rnnlens.runs import load_model, model_label, trace_for_analysis


def load_rnn(run, device: str = "cpu", what: str = "this command"):
    """A LanguageModel; an n-gram folder is a one-line error (it has no units to look at)."""
    lm = load_model(run, device)
    if getattr(lm, "kind", "rnn") != "rnn":
        raise RnnlensError(f"{run} is an n-gram model; {what} needs an RNN run (a folder written by `rnnlens train`)")
    return lm


def _title(lm, what: str, chars: int) -> str:
    c = lm.config
    return f"{model_label(lm.path)}: {c.cell.upper()} {c.layers}x{c.size} {what} over {chars:,} characters"


# --------------------------------------------------------------------------------------------- cells

@dataclass
class CellSearch:
    """Every unit scored against every feature (`scores`), with the trace kept for the gallery page."""

    scores: object
    model: dict
    run: str
    text_name: str
    top: int = 3
    gallery_html: str | None = None
    paper: list = field(default_factory=list)  # PaperPanel of the paper's four kinds of cell, when asked for

    def write(self, page) -> dict[str, Path]:
        """The gallery page of the best unit of each feature (one HTML file)."""
        from rnnlens.render.html import write_html
        if self.gallery_html is None:
            raise RnnlensError("this cell search kept no gallery; call find_cells(..., gallery=True)")
        return {"gallery": Path(write_html(page, self.gallery_html))}

    def write_paper_figure(self, folder) -> dict[str, Path]:
        """The paper's Figure 2 on this text: one PNG per kind of cell found (line length, quotes, brackets,
        comments), and paper_cells.md, their table."""
        from rnnlens.fileio import write_text_atomic
        from rnnlens.render.textfig import plot_text_values
        if not self.paper:
            raise RnnlensError("this cell search kept no paper figure; call find_cells(..., paper_figure=True)")
        folder = make_folder(folder)
        files, rows = {}, ["| kind of cell | feature | unit | score | contrast | excerpt |", "|---|---|---|---|---|---|"]
        for p in self.paper:
            if p.unit is None:
                rows.append(f"| {p.kind} | - | none visible | | | |")
                continue
            u = p.unit
            png = folder / (p.kind.split()[0] + ".png")
            files[p.kind] = Path(plot_text_values(p.text, p.values, u.activation, png, width=80,
                                                  title=f"{p.kind}: {u.feature}, unit {u.label} "
                                                        f"({_score(u)}, contrast {u.contrast:+.2f})"))
            rows.append(f"| {p.kind} | {u.feature} | {u.label} | {_score(u)} | {u.contrast:+.2f} | "
                        f"[{png.name}]({png.name}) |")
        files["paper_cells.md"] = write_text_atomic(folder / "paper_cells.md", "\n".join(rows) + "\n")
        return files

    def to_dict(self) -> dict:
        out = {"run": self.run, "text": self.text_name, "model": self.model, **self.scores.to_dict(self.top)}
        if self.paper:
            out["paper_cells"] = [{"kind": p.kind, "unit": p.unit.to_dict() if p.unit else None} for p in self.paper]
        return out

    def summary(self) -> str:
        """Per feature, its best units as L:I kind score (contrast); then the faint ones and the share of
        units that track some feature."""
        scores = self.scores
        kinds = sorted({a.split(".", 1)[1] for a in scores.activations})
        cell_values = "tanh(c)" if scores.cells == "tanh" else "c"
        m = self.model
        lines = [(f"{m['cell']} {m['layers']}x{m['size']} over {self.text_name}: {scores.chars:,} characters, "
                  f"{len(scores.activations) * scores.size:,} units ({', '.join(kinds)}"
                  f"{'; cells as ' + cell_values if 'cell' in kinds else ''})"),
                 f"{'feature':18s} {'metric':6s} best units (layer:unit kind score, contrast)"]
        faint = []
        for f in scores.features:
            best = scores.best(f.name, self.top)
            if not best:
                shown = "not present in the text"
            elif f.metric == "r":
                shown = "   ".join(f"{u.label} {u.score:+.2f} ({_contrast(u)})" for u in best)
            else:
                shown = "   ".join(f"{u.label} {u.score:.3f} {'on' if u.sign > 0 else 'off'} ({_contrast(u)})"
                                   for u in best)
            if best and not best[0].visible:
                shown += "   [no visible unit]"
            lines.append(f"{f.name:18s} {f.metric:6s} {shown}")
            faint += [(f.name, u) for u in scores.best(f.name, 1, faint=True) if u.strength >= 0.6]
        lines.append("r: Pearson correlation; auc: ROC AUC, 'on' = the unit is high inside, 'off' = low inside; "
                     f"contrast: how far the displayed value (tanh(c), h, gate) moves with the feature; units "
                     f"moving less than {scores.min_contrast:g} rank after those that visibly switch")
        if faint:
            lines.append("saturated but separable (a strong score, too small a shift to see): "
                         + ", ".join(f"{name} {u.label} ({_contrast(u)})" for name, u in faint))
        lines.append("units that track some feature (score >= 0.3, contrast >= "
                     f"{scores.min_contrast:g}): " + ", ".join(f"layer {row['layer']} {row['kind']} {row['tracking']}/"
                                                              f"{row['units']}" for row in scores.interpretable()))
        return "\n".join(lines)


@dataclass
class PaperPanel:
    """One kind of cell of the paper's Figure 2: the unit found (None: no visible one), its excerpt and the
    unit's stored values over it."""

    kind: str
    unit: object
    text: str = ""
    values: object = None


def _score(u) -> str:
    return f"r {u.score:+.2f}" if u.metric == "r" else f"AUC {u.score:.3f}"


def _contrast(u) -> str:
    return f"{u.contrast:+.2f}" if u.contrast == u.contrast else "n/a"


def find_cells(run, text: str, *, features=None, kinds=None, top: int = 3, raw_cells: bool = False,
               gallery: bool = False, paper_figure: bool = False, text_name: str = "the text", unknown: str = "error",
               replacement: str | None = None, device: str = "cpu", progress: bool = False) -> CellSearch:
    """Score every unit of `run` over `text` against features (built-in names, Feature objects, or
    'name=regex' specs; default all built-in ones)."""
    from rnnlens.analysis.cells import EXACT_TOP, discover, gallery_entries, kinds_for
    from rnnlens.analysis.features import FEATURES, parse_feature_spec, resolve_features
    check_range("--top", top, 1, None, integer=True)
    chosen = []
    for f in (features if features is not None else list(FEATURES)):
        chosen.append(parse_feature_spec(f) if isinstance(f, str) and "=" in f else f)
    resolved = resolve_features(chosen)  # checked before the slow part
    lm = load_rnn(run, device, "scoring units")
    cfg = lm.config
    if len(text) < 2:
        raise RnnlensError(f"{text_name} has {len(text)} character; scoring units needs at least 2")
    kind_list = kinds_for(cfg.cell, kinds)
    trace_names = layer_names(cfg.layers, kind_list)
    page = None
    with trace_for_analysis(lm, text, trace_names, unknown=unknown, replacement=replacement,
                            progress=progress) as trace:
        scores = discover(trace, resolved, kind_list, cells="raw" if raw_cells else "tanh",
                          exact_top=max(EXACT_TOP, top), progress=progress)
        if gallery:
            from rnnlens.render.html import GalleryItem, gallery_page
            items = [GalleryItem(**asdict(e)) for e in gallery_entries(scores)]
            page = gallery_page(trace, items, title=f"Interpretable cells: {run} on {text_name}")
        paper = []
        if paper_figure:
            from rnnlens.analysis.cells import paper_cells
            for kind, u in paper_cells(scores):
                if u is None:
                    paper.append(PaperPanel(kind, None))
                    continue
                start, end = u.excerpt
                paper.append(PaperPanel(kind, u, trace.text[start:end],
                                        np.array(trace[u.activation][start:end, u.unit], dtype=np.float32)))
    return CellSearch(scores, {"cell": cfg.cell, "layers": cfg.layers, "size": cfg.size}, str(run), text_name, top,
                      page, paper)


# --------------------------------------------------------------------------------------------- saturation

@dataclass
class SaturationResult:
    saturation: object
    title: str
    run: str
    text_name: str

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.plots import plot_saturation
        folder = make_folder(folder)
        return {"saturation.png": Path(plot_saturation(self.saturation, folder / "saturation.png", title=self.title)),
                "saturation.csv": Path(self.saturation.write_csv(folder / "saturation.csv"))}

    def to_dict(self) -> dict:
        return {"run": self.run, "text": self.text_name, **self.saturation.to_dict()}

    def summary(self) -> str:
        sat = self.saturation
        lines = [f"{self.title.split(':')[0]}: {sat.cell.upper()} {sat.layers}x{sat.size} over {sat.chars:,} "
                 f"characters; left-saturated < {sat.low:g}, right-saturated > {sat.high:g}"]
        for row in sat.summary():
            lines.append(f"layer {row['layer']} {row['gate']:7s} mean left {row['mean_left']:.3f}  mean right "
                         f"{row['mean_right']:.3f}  units mostly left {row['mostly_left']:>4d}/{row['units']}  "
                         f"mostly right {row['mostly_right']:>4d}/{row['units']}")
        lines.append("(mostly: saturated more than half of the time)")
        return "\n".join(lines)


def saturation(run, text: str, *, low: float = 0.1, high: float = 0.9, text_name: str = "the text",
               unknown: str = "error", replacement: str | None = None, device: str = "cpu",
               progress: bool = False) -> SaturationResult:
    """The fraction of characters each gate unit spends below `low` and above `high` (the paper's figure)."""
    from rnnlens.analysis.saturation import check_thresholds, gate_saturation, saturation_names
    check_thresholds(low, high)
    lm = load_rnn(run, device, "gate saturation")
    names = saturation_names(lm.config.cell, lm.config.layers)  # an RNN stops here, before any reading
    with trace_for_analysis(lm, text, names, unknown=unknown, replacement=replacement, progress=progress) as trace:
        sat = gate_saturation(trace, low=low, high=high)
    return SaturationResult(sat, _title(lm, "gate saturation", sat.chars), str(run), text_name)


# --------------------------------------------------------------------------------------------- timescales

@dataclass
class TimescalesResult:
    timescales: object
    title: str
    run: str
    text_name: str

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.plots import plot_half_lives
        folder = make_folder(folder)
        return {"timescales.png": Path(plot_half_lives(self.timescales, folder / "timescales.png", title=self.title)),
                "timescales.csv": Path(self.timescales.write_csv(folder / "timescales.csv"))}

    def to_dict(self) -> dict:
        return {"run": self.run, "text": self.text_name, **self.timescales.to_dict()}

    def summary(self) -> str:
        from rnnlens.analysis.timescales import LONG
        ts = self.timescales

        def fmt(v):
            return "inf" if v is None else f"{v:.3g}"
        lines = [f"{self.title.split(':')[0]}: {ts.cell.upper()} {ts.layers}x{ts.size} over {ts.chars:,} characters; "
                 f"half-life = ln(0.5)/ln({ts.gate}) in characters, from its mean (geometric mean in brackets)"]
        for row in ts.summary():
            a, g = row["half_life"], row["half_life_geometric"]
            over = "  ".join(f"> {n}: {a[f'over_{n}']:>3d} ({g[f'over_{n}']})" for n in LONG)
            lines.append(f"layer {row['layer']}  mean {ts.gate} {row['mean_gate']:.3f}  half-life median "
                         f"{fmt(a['median'])} ({fmt(g['median'])})  quartiles {fmt(a['q25'])}-{fmt(a['q75'])} "
                         f"({fmt(g['q25'])}-{fmt(g['q75'])})  units {over}  infinite {a['infinite']}")
        return "\n".join(lines)


def timescales(run, text: str, *, text_name: str = "the text", unknown: str = "error",
               replacement: str | None = None, device: str = "cpu", progress: bool = False) -> TimescalesResult:
    """Each unit's mean forget (LSTM) or update (GRU) gate and its half-life ln(0.5)/ln(f) in characters."""
    from rnnlens.analysis.timescales import memory_timescales, timescale_names
    lm = load_rnn(run, device, "memory time constants")
    names = timescale_names(lm.config.cell, lm.config.layers)  # an RNN stops here, before any reading
    with trace_for_analysis(lm, text, names, unknown=unknown, replacement=replacement, progress=progress) as trace:
        ts = memory_timescales(trace)
    return TimescalesResult(ts, _title(lm, f"memory half-lives, ln(0.5)/ln({ts.gate}),", ts.chars), str(run),
                            text_name)


# --------------------------------------------------------------------------------------------- gradients

@dataclass
class GradientFlows:
    flows: list
    runs: list[str]
    text_name: str
    max_lag: int

    def write(self, figure) -> dict[str, Path]:
        """The figure (one file, .png)."""
        from rnnlens.render.plots import plot_gradient_flow
        figure = Path(figure)
        if figure.parent != Path("."):
            make_folder(figure.parent)
        return {"figure": Path(plot_gradient_flow(self.flows, figure))}

    def to_dict(self) -> dict:
        return {"text": self.text_name, "models": [{"run": run, **flow.to_dict()}
                                                   for run, flow in zip(self.runs, self.flows)]}

    def summary(self) -> str:
        from rnnlens.render.plots import gradient_flow_label
        flows = self.flows
        lags = sorted({k for k in (0, 1, 10, 50, 100) if k <= self.max_lag} | {self.max_lag})
        lines = [f"mean gradient norm over {len(flows[0].positions)} positions; decay: its mean factor per "
                 f"character from lag 1 to lag {self.max_lag}"]
        width = max(32, *(len(gradient_flow_label(f)) + 1 for f in flows))
        for flow in flows:
            lines.append(f"{gradient_flow_label(flow):{width}s}" + "".join(f"{'lag ' + str(k):>11s}" for k in lags))
            for series in ["input"] + [n for n in layer_names(flow.layers, ("hidden", "cell")) if n in flow.norms]:
                m = flow.mean(series)
                decay = flow.decay_per_lag(series)
                lines.append(f"  {series:{width - 2}s}" + "".join(f"{m[k]:11.3g}" for k in lags)
                             + (f"   decay {decay:.3f}/char" if decay is not None else ""))
        return "\n".join(lines)


def gradients(runs, text: str, *, max_lag: int = 100, positions: int = 64, seed: int = 0, weight_scales=(1.0,),
              text_name: str = "the text", unknown: str = "error", replacement: str | None = None,
              device: str = "cpu") -> GradientFlows:
    """|d loss_t / d x_{t-k}| and |d loss_t / d h_{t-k}| against the lag k, per model and weight scale."""
    from rnnlens.analysis.gradients import gradient_flow
    for scale in weight_scales:
        check_range("--weight-scale", scale, 0, None, low_open=True)
    flows, names = [], []
    for run in runs:
        lm = load_rnn(run, device, "gradient flow")
        for scale in weight_scales:
            flows.append(gradient_flow(lm, text, max_lag=max_lag, positions=positions, seed=seed,
                                       weight_scale=scale, unknown=unknown, replacement=replacement))
            names.append(str(run))
    return GradientFlows(flows, names, text_name, max_lag)
