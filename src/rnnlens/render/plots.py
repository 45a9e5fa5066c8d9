"""Figures drawn with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from rnnlens.names import name as activation_name


def plot_loss_curve(rows: list[dict], out_path: str | Path) -> Path:
    """Training and validation loss (nats/char) against step, with bits/char on the right axis; `rows` are a
    run's metrics.jsonl records (rnnlens.runs.read_metrics)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnlens.runs import history

    rows, discarded = history(rows)  # what a rollback or a resume after a crash replaced is not the run's history
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    # the last update's weights at each validation; a row with "averaged" is the mean of the last N updates'
    # weights, which the run kept at its end (rnnlens.trainer, --average-fraction): a point of its own
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r and "averaged" not in r]
    means = [r for r in rows if "val_loss" in r and "averaged" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    rollbacks = [r for r in rows if "rolled_back_from" in r]
    for n, back in enumerate(rollbacks):  # each climb a rollback discarded, faded, a line of its own
        climb = [(d["step"], d["train_loss"]) for d in discarded
                 if "train_loss" in d and back["step"] < d["step"] <= back["rolled_back_from"]]
        if climb:
            ax.plot(*zip(*climb), color="#4c72b0", alpha=0.5, linewidth=1, linestyle="--",
                    label="train, discarded by a rollback" if n == 0 else None)
    if train:
        ax.plot(*zip(*train), label="train", color="#4c72b0", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", color="#dd8452", marker="o", markersize=3)
    for r in means:
        ax.plot([r["step"]], [r["val_loss"]], linestyle="none", marker="*", markersize=11, color="#55a868",
                label=f"validation, the mean of the last {r['averaged']:,} updates' weights (kept)")
    for r in rows:  # a --dropout-on-plateau or --wide-gap-dropout run: where its dropout came on or rose
        if "dropout" in r:
            ax.axvline(r["step"], color="0.45", linestyle=":", linewidth=1.2, label=f"dropout {r['dropout']:g} on")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits/char")
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------------------------------
# Dynamics: gate saturation, memory time constants, gradient flow (rnnlens.analysis)

GATE_COLOURS = {"input": "#4c72b0", "forget": "#55a868", "output": "#c44e52", "reset": "#8172b2",
                "update": "#dd8452"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_path) -> Path:
    import matplotlib.pyplot as plt
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def plot_saturation(sat, out_path: str | Path, title: str | None = None) -> Path:
    """The paper's saturation plot, one panel per layer: each gate unit at (fraction of time
    left-saturated, fraction right-saturated), a colour per gate; the diagonal x + y = 1 bounds them."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, sat.layers, figsize=(3.6 * sat.layers + 0.4, 4.0), dpi=110, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        ax.plot([0, 1], [1, 0], color="0.6", linewidth=1, linestyle="--", zorder=0)
        for g, gate in enumerate(sat.gates):
            ax.scatter(sat.left[layer, g], sat.right[layer, g], s=14, alpha=0.55, linewidths=0,
                       color=GATE_COLOURS.get(gate),
                       label="update z (paper's)" if sat.cell == "gru" and gate == "update" else gate)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel(f"fraction left-saturated (< {sat.low:g})")
        if layer == 0:
            ax.set_ylabel(f"fraction right-saturated (> {sat.high:g})")
        ax.grid(alpha=0.25)
    axes[0][-1].legend(loc="upper right", fontsize=8, markerscale=1.5)
    fig.suptitle(title or f"{sat.cell.upper()} gate saturation over {sat.chars:,} characters")
    fig.tight_layout()
    return _save(fig, out_path)


def plot_half_lives(ts, out_path: str | Path, title: str | None = None) -> Path:
    """Histogram of per-unit memory half-lives (characters, log axis), one panel per layer: from the
    mean keep gate (filled) and from its geometric mean (outline). Infinite and zero half-lives,
    which a log axis cannot show, are counted in each panel's corner."""
    import numpy as np
    plt = _pyplot()
    hl, hg = ts.half_life, ts.half_life_geometric
    shown = np.concatenate([hl.ravel(), hg.ravel()])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    lo, hi = (shown.min(), shown.max()) if len(shown) else (0.1, 10.0)
    bins = np.geomspace(lo / 1.05, hi * 1.05 if hi > lo else lo * 10, 40)
    medians = [row["half_life"]["median"] for row in ts.summary()]
    fig, axes = plt.subplots(1, ts.layers, figsize=(4.2 * ts.layers + 0.4, 3.6), dpi=110, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        a, g = hl[layer], hg[layer]
        ax.hist(a[np.isfinite(a) & (a > 0)], bins=bins, color="#4c72b0", alpha=0.6,
                label=f"from mean {ts.gate} gate")
        ax.hist(g[np.isfinite(g) & (g > 0)], bins=bins, histtype="step", color="#c44e52", linewidth=1.3,
                label="from its geometric mean")
        ax.set_xscale("log")
        ax.set_xlabel("half-life (characters)")
        if layer == 0:
            ax.set_ylabel("units")
        ax.set_title(f"layer {layer}: median " + ("inf" if medians[layer] is None else f"{medians[layer]:.3g} chars"))
        notes = [f"{int(np.isinf(a).sum())} infinite"] if np.isinf(a).any() else []
        notes += [f"{int((g == 0).sum())} at 0 (geometric)"] if (g == 0).any() else []
        if notes:
            ax.text(0.98, 0.80, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.grid(alpha=0.25)
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or f"{ts.cell.upper()} memory half-lives, ln(0.5)/ln({ts.gate}), "
                          f"over {ts.chars:,} characters")
    fig.tight_layout()
    return _save(fig, out_path)


def gradient_flow_label(flow) -> str:
    """'runs/gru (GRU 2x128)', with the recurrent weight scale when it is not 1."""
    scale = f", W_hh x{flow.weight_scale:g}" if flow.weight_scale != 1 else ""
    return f"{flow.label} ({flow.cell.upper()} {flow.layers}x{flow.size}{scale})"


def plot_gradient_flow(flows, out_path: str | Path, title: str | None = None) -> Path:
    """Gradient norm against lag on a log axis, several models side by side: left ||d loss_t / d x_{t-k}||
    with its 10-90% band over positions, right ||d loss_t / d h_{t-k}|| of every layer (solid: layer 0,
    then dashed, dotted). A straight falling line is geometric vanishing; a rising one, exploding."""
    plt = _pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    for n, flow in enumerate(flows):
        colour = colours[n % len(colours)]
        name = gradient_flow_label(flow)
        left.plot(flow.lags, flow.mean("input"), color=colour, label=name)
        left.fill_between(flow.lags, flow.quantile("input", 0.1), flow.quantile("input", 0.9), color=colour,
                          alpha=0.12, linewidth=0)
        for layer in range(flow.layers):
            right.plot(flow.lags, flow.mean(activation_name(layer, "hidden")), color=colour,
                       linestyle=styles[layer % len(styles)],
                       label=name if flow.layers == 1 else f"{name} layer {layer}")
    for ax, what in ((left, "|| d loss_t / d x_{t-k} ||  (input)"), (right, "|| d loss_t / d h_{t-k} ||  (hidden)")):
        ax.set_yscale("log")
        ax.set_xlabel("lag k (characters back)")
        ax.set_ylabel("gradient norm, mean over positions")
        ax.set_title(what)
        ax.grid(alpha=0.25, which="both")
    left.legend(fontsize=8)
    right.legend(fontsize=7)
    positions = ", ".join(sorted({str(len(f.positions)) for f in flows}))
    fig.suptitle(title or f"gradient flow through time ({positions} positions per model)")
    fig.tight_layout()
    return _save(fig, out_path)


# ---------------------------------------------------------------------------------------------
# Training dynamics: resemblance to baselines (rnnlens.analysis.resemblance)


def plot_resemblance(res, out_path: str | Path, title: str | None = None) -> Path:
    """Symmetric KL (nats, log axis) between a run's snapshots and each baseline against the training
    step, one line per baseline, with the run's own loss on the text in a panel below."""
    import numpy as np
    plt = _pyplot()
    fig, (ax, ax_loss) = plt.subplots(2, 1, figsize=(7.5, 5.6), dpi=110, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.2]})
    cmap = plt.get_cmap("viridis")
    names = res.baselines
    for i, name in enumerate(names):
        colour = cmap(i / max(1, len(names) - 1) * 0.9)
        values = np.maximum(res.kl[name], 1e-6)  # a log axis cannot show 0 (a model against itself)
        ax.plot(res.steps, values, marker="o", markersize=3, linewidth=1.4, color=colour,
                label=f"{name} (loss {res.baseline_loss[name]:.2f})")
    ax.set_yscale("log")
    ax.set_ylabel("symmetric KL (nats/char)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title="baseline (its loss, nats/char)", title_fontsize=8)
    ax_loss.plot(res.steps, res.loss, color="0.3", marker="o", markersize=2.5, linewidth=1.2)
    ax_loss.set_ylabel("run's loss")
    ax_loss.set_xlabel("training step")
    ax_loss.grid(alpha=0.3)
    ax.set_title(title or f"{res.run}: resemblance to baselines over {res.chars:,} characters", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


# ---------------------------------------------------------------------------------------------
# Comparisons between models: loss by character class, long-range study, error taxonomy
# (rnnlens.analysis.classes, .longrange, .errors)

MODEL_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c"]


def plot_loss_by_class(result, out_path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: mean loss (nats/char) of each character class, one bar per model; the class's
    character count under its name. Classes absent from the text are left out."""
    import numpy as np
    plt = _pyplot()
    present = [c for c in range(len(result.classes)) if result.counts[c] > 0]
    models = result.models
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(present) + 2), 4.2), dpi=110)
    x = np.arange(len(present))
    for m, model in enumerate(models):
        values = result.mean_loss[m, present]
        ax.bar(x + (m - (len(models) - 1) / 2) * width, values, width, label=f"{model} ({result.overall[m]:.3f})",
               color=MODEL_COLOURS[m % len(MODEL_COLOURS)])
    ax.set_xticks(x)
    ax.set_xticklabels([f"{result.classes[c]}\n{int(result.counts[c]):,}" for c in present], fontsize=9)
    ax.set_ylabel("mean loss (nats/char)")
    bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits/char")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="model (overall nats/char)", title_fontsize=8)
    ax.set_title(title or f"loss by class of the true next character, {result.chars:,} characters", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_long_range(studies, out_path: str | Path, title: str | None = None) -> Path:
    """The paper's closing-brace figure, one column per study: top, each model's mean probability of the
    closing character per distance bin (a line per model); bottom, the first model minus each other one
    (above 0: the first model is better), with the occurrences per bin as grey bars behind."""
    import numpy as np
    plt = _pyplot()
    n = len(studies)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n + 0.4, 6.4), dpi=110, squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, s in enumerate(studies):
        top, bottom = axes[0][j], axes[1][j]
        x = np.arange(len(s.labels))
        for m, model in enumerate(s.models):
            top.plot(x, s.mean_p[m], marker="o", markersize=3.5, color=MODEL_COLOURS[m % len(MODEL_COLOURS)],
                     label=model)
        top.set_ylim(-0.02, 1.02)
        if not len(s.positions):
            top.text(0.5, 0.5, "no occurrences in this text", transform=top.transAxes, ha="center", color="0.4")
        top.set_ylabel(f"mean p({_shown(s.char)})")
        top.grid(alpha=0.3)
        what = "newline by column" if s.study == "newline" else f"'{s.study[1]}' by distance to its '{s.study[0]}'"
        top.set_title(f"{what}: {len(s.positions):,} occurrences", fontsize=10)
        top.legend(fontsize=8)
        counts = bottom.twinx()
        counts.bar(x, s.counts, color="0.85", width=0.8, zorder=0)
        counts.set_ylabel("occurrences", color="0.5")
        bottom.set_zorder(counts.get_zorder() + 1)
        bottom.patch.set_visible(False)
        for m in range(1, len(s.models)):
            bottom.plot(x, s.difference(m), marker="o", markersize=3.5,
                        color=MODEL_COLOURS[m % len(MODEL_COLOURS)], label=f"{s.models[0]} \u2212 {s.models[m]}")
        bottom.axhline(0, color="0.3", linewidth=0.8)
        bottom.set_ylabel("difference in mean p")
        bottom.set_xlabel(s.distance_name)
        bottom.set_xticks(x)
        bottom.set_xticklabels(s.labels, rotation=45, ha="right", fontsize=8)
        bottom.grid(alpha=0.3)
        if len(s.models) > 1:
            bottom.legend(fontsize=8)
    fig.suptitle(title or "probability of the closing character by distance", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_path)


def _shown(ch: str) -> str:
    return {"\n": "\\n", "\t": "\\t", " ": "space"}.get(ch, ch)


def plot_error_taxonomy(taxonomies, out_path: str | Path, comparison=None, title: str | None = None) -> Path:
    """Horizontal bars, one group per category (in peeling order, top to bottom): each model's errors
    in it, labelled with its share. With a comparison of a small and a large model, a second panel
    shows the fraction of the small model's errors in each category that the large model fixes."""
    import numpy as np
    plt = _pyplot()
    first = taxonomies[0]
    labels = [first.label(c) for c in first.categories]
    y = np.arange(len(labels))
    height = 0.8 / len(taxonomies)
    panels = 2 if comparison is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels + 0.6, 0.42 * len(labels) + 1.8), dpi=110,
                             squeeze=False)
    ax = axes[0][0]
    for m, t in enumerate(taxonomies):
        pos = y + (m - (len(taxonomies) - 1) / 2) * height
        bars = ax.barh(pos, t.counts, height, color=MODEL_COLOURS[m % len(MODEL_COLOURS)],
                       label=f"{t.name}: {t.errors:,} errors / {t.chars:,}")
        for bar, share in zip(bars, t.shares):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {100 * share:.1f}%", va="center",
                    fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"errors (p(true char) < {first.threshold:g})")
    ax.margins(x=0.15)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if comparison is not None:
        ax2 = axes[0][1]
        rows = comparison.rows()
        frac = [r["fixed_fraction"] or 0.0 for r in rows]
        bars = ax2.barh(y, frac, 0.6, color=MODEL_COLOURS[1])
        for bar, r in zip(bars, rows):
            ax2.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['fixed']:,}/{r['small']:,}",
                     va="center", fontsize=7)
        ax2.set_yticks(y)
        ax2.set_yticklabels(labels)
        ax2.invert_yaxis()
        ax2.set_xlim(0, 1.15)
        ax2.set_xlabel(f"fraction of {comparison.small.name}'s errors that {comparison.large.name} fixes")
        ax2.grid(axis="x", alpha=0.3)
    fig.suptitle(title or "error taxonomy (categories peeled top to bottom)", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_path)


# ---------------------------------------------------------------------------------------------
# The experiment grid (rnnlens.analysis.grid_results)

KIND_COLOURS = {"lstm": "#4c72b0", "gru": "#55a868", "rnn": "#c44e52", "ngram": "#333333", "nnn": "#8172b2"}
KIND_MARKERS = {"lstm": "o", "gru": "s", "rnn": "^", "ngram": "X", "nnn": "D"}


def plot_model_map(model_map, out_path: str | Path, title: str | None = None) -> Path:
    """The models as points in 2-D (rnnlens.analysis.grid_results.ModelMap): colour and marker by type,
    marker area growing with the width, each point labelled with its depth x width."""
    import numpy as np
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.0), dpi=110)
    widths = [w for w in model_map.widths if w]
    wmin, wmax = (min(widths), max(widths)) if widths else (1, 1)

    def area(w):
        if not w or wmax == wmin:
            return 90.0
        return 30.0 + 270.0 * (math.log(w) - math.log(wmin)) / (math.log(wmax) - math.log(wmin))

    xy = np.asarray(model_map.coords)
    for kind in dict.fromkeys(model_map.kinds):
        idx = [i for i, k in enumerate(model_map.kinds) if k == kind]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=[area(model_map.widths[i]) for i in idx], alpha=0.75,
                   color=KIND_COLOURS.get(kind, "#999999"), marker=KIND_MARKERS.get(kind, "o"),
                   edgecolors="white", linewidths=0.6, label=kind.upper() if kind != "ngram" else "n-gram")
    for i, name in enumerate(model_map.names):
        layers, width = model_map.layers[i], model_map.widths[i]
        label = f"{layers}x{width}" if layers and width else name
        ax.annotate(label, xy[i], xytext=(4, 4), textcoords="offset points", fontsize=7, color="0.25")
    if model_map.method == "pca" and model_map.explained:
        ax.set_xlabel(f"PC 1 ({100 * model_map.explained[0]:.0f}% of the variance)")
        ax.set_ylabel(f"PC 2 ({100 * model_map.explained[1]:.0f}% of the variance)")
    else:
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, markerscale=0.7, loc="best")
    ax.set_title(title or f"models by their log p(true char) on {model_map.chars:,} test characters "
                          f"({model_map.method.upper()})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)
