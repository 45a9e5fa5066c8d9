"""`rnnlens compare`: where one model beats another (loss by class, long-range study, a diff page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rnnlens.analysis.classes import LossByClass, loss_by_class
from rnnlens.analysis.longrange import LongRange, closing_study, newline_study, parse_bins, parse_pair
from rnnlens.analysis.longrange import write_csv as write_longrange_csv
from rnnlens.analysis.longrange import write_json as write_longrange_json
from rnnlens.analysis.overlap import ErrorOverlap, error_overlap
from rnnlens.checks import check_range
from rnnlens.errors import RnnlensError
from rnnlens.fileio import make_folder, write_text_atomic
from rnnlens.runs import score_texts

DEFAULT_PAIRS = ("{}",)


@dataclass
class Comparison:
    """Two or more models over one text: `classes` (loss by class of the true next character), `studies`
    (each pair's closer by distance to its opener, then newline by column) and the page's span."""

    predictions: list
    classes: LossByClass
    studies: list[LongRange]
    text_name: str
    html_start: int = 0
    html_end: int = 0
    scale: float = 2.0
    runs: list[str] = field(default_factory=list)
    overlap: ErrorOverlap | None = None  # the first two models' errors (p(true char) < 0.5), side by side

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.comparison import comparison_page, overlap_page
        from rnnlens.render.html import write_html
        from rnnlens.render.plots import plot_long_range, plot_loss_by_class
        folder = make_folder(folder)
        files = {"classes.csv": self.classes.write_csv(folder / "classes.csv"),
                 "classes.md": write_text_atomic(folder / "classes.md", self.classes.markdown())}
        files["classes.png"] = plot_loss_by_class(
            self.classes, folder / "classes.png",
            title=f"loss by class of the true next character, {self.classes.chars:,} characters of {self.text_name}")
        files["longrange.csv"] = write_longrange_csv(self.studies, folder / "longrange.csv")
        files["longrange.json"] = write_longrange_json(self.studies, folder / "longrange.json")
        files["longrange.png"] = plot_long_range(self.studies, folder / "longrange.png")
        total = len(self.predictions[0].text)
        files["compare.html"] = write_html(folder / "compare.html", comparison_page(
            self.predictions[0], self.predictions[1], self.html_start, self.html_end, scale=self.scale,
            subtitle=f"{self.text_name}: characters {self.html_start:,}\u2013{self.html_end:,} of {total:,}"))
        files["overlap.html"] = write_html(folder / "overlap.html", overlap_page(
            self.overlap, self.predictions[0].text, self.html_start, self.html_end,
            subtitle=f"{self.text_name}: characters {self.html_start:,}\u2013{self.html_end:,} of {total:,}"))
        return {k: Path(v) for k, v in files.items()}

    def to_dict(self) -> dict:
        return {"runs": self.runs, "text": self.text_name, "classes": self.classes.to_dict(),
                "longrange": [s.to_dict() for s in self.studies], "overlap": self.overlap.to_dict()}

    def summary(self) -> str:
        lines = [f"loss by class of the true next character over {self.classes.chars:,} characters of "
                 f"{self.text_name} (nats/char; share: the class's part of the model's total loss)",
                 self.classes.markdown().rstrip("\n")]
        for s in self.studies:
            what = "newline by column" if s.study == "newline" else f"'{s.char}' by distance to its '{s.study[0]}'"
            if not len(s.positions):
                lines.append(f"{what}: no occurrences in this text")
                continue
            means = ", ".join(f"{m} {p.mean():.3f}" for m, p in zip(s.models, s.probs))
            lines.append(f"{what}: {len(s.positions):,} occurrences; mean p: {means}")
        lines.append(self.overlap.table())
        return "\n".join(lines)


def compare(runs, text: str, *, text_name: str = "the text", pairs=DEFAULT_PAIRS, bins=None, scale: float = 2.0,
            html_start: int = 0, html_length: int = 20_000, device: str = "cpu") -> Comparison:
    """Score `text` with every model in `runs` (run folders, checkpoints or n-gram folders) and compare them;
    the page shows the first two, characters html_start .. html_start + html_length (clamped to the text)."""
    from rnnlens.render.comparison import difference_scale
    runs = [str(r) for r in runs]
    if len(runs) < 2:
        raise RnnlensError("compare needs at least two models: rnnlens compare RUN_A RUN_B --text FILE")
    pairs = list(pairs or DEFAULT_PAIRS)
    for pair in pairs:
        parse_pair(pair)
    edges = parse_bins(bins)
    difference_scale(scale)
    check_range("--html-length", html_length, 1, None, integer=True)
    check_range("--html-start", html_start, 0, None, integer=True)
    if html_start >= len(text):
        raise RnnlensError(f"--html-start {html_start} is past the text's end ({len(text):,} characters)")
    preds = score_texts(runs, text, device)
    studies = [closing_study(*preds, pair=pair, bins=edges) for pair in pairs] + [newline_study(*preds, bins=edges)]
    return Comparison(preds, loss_by_class(*preds), studies, text_name, html_start,
                      min(len(text), html_start + html_length), scale, runs, error_overlap(preds[0], preds[1]))
