"""`rnnlens errors`: the paper's error taxonomy of one model, and what a larger one fixes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnlens.analysis.overlap import error_overlap
from rnnlens.analysis.taxonomy import (
    check_settings,
    compare_taxonomies,
    ngram_oracle,
    taxonomy,
    word_counts,
)
from rnnlens.analysis.taxonomy import write_csv as write_errors_csv
from rnnlens.errors import RnnlensError
from rnnlens.fileio import make_folder, write_json_atomic
from rnnlens.runs import load_model, score_texts, training_corpus

ORACLE_ORDER = 9


@dataclass
class TaxonomyResult:
    taxonomies: list
    comparison: object | None
    runs: list[str]
    text_name: str
    train_name: str
    overlap: object | None = None  # with two models: which errors both make, and which only one

    def write(self, folder) -> dict[str, Path]:
        from rnnlens.render.plots import plot_error_taxonomy
        folder = make_folder(folder)
        return {"errors.csv": Path(write_errors_csv(self.taxonomies, folder / "errors.csv")),
                "errors.json": write_json_atomic(folder / "errors.json", self.to_dict()),
                "errors.png": Path(plot_error_taxonomy(self.taxonomies, folder / "errors.png",
                                                       comparison=self.comparison))}

    def to_dict(self) -> dict:
        return {"runs": self.runs, "text": self.text_name, "train": self.train_name,
                "models": [t.to_dict() for t in self.taxonomies],
                "comparison": self.comparison.to_dict() if self.comparison else None,
                "overlap": self.overlap.to_dict() if self.overlap else None}

    def summary(self) -> str:
        lines = [t.table() for t in self.taxonomies]
        if not self.taxonomies[0].settings["oracle"]:
            lines.append("(--no-oracle: the n-gram oracle category is empty)")
        if self.comparison:
            lines.append(self.comparison.table())
        if self.overlap:
            lines.append(self.overlap.table())
        return "\n".join(lines)


def error_taxonomy(run, text: str, *, larger=None, data=None, glob=None, split_fractions=None, ngram=None,
                   oracle: bool = True, threshold: float = 0.5, memory: int = 1000, rare: int = 5,
                   text_name: str = "the text", device: str = "cpu", log=None) -> TaxonomyResult:
    """The errors of `run` on `text` (p(true char) < threshold) peeled in the paper's order; with `larger`,
    which of them the larger model fixes.

    data/glob/split_fractions: the training corpus (rare words, the oracle's 9-gram); default: the one `run`
    was trained on. ngram: a fitted n-gram (folder or model) for the oracle instead of fitting a 9-gram;
    oracle=False leaves the oracle category empty."""
    from rnnlens.corpus import load_corpus, parse_split
    from rnnlens.ngram import NGramModel, train_ngram
    check_settings(threshold, memory, rare, (2, 5))
    runs = [str(run)] + ([str(larger)] if larger is not None else [])
    first = load_model(run, device)
    if data is not None:
        split = parse_split(split_fractions) if isinstance(split_fractions, str) else split_fractions
        corpus = load_corpus(data, glob=glob, split=split)
    else:
        corpus = training_corpus(first)
    preds = score_texts(runs, text, device)
    oracle_best = None
    if oracle:
        if ngram is not None:
            model = ngram if isinstance(ngram, NGramModel) else load_model(ngram)
            if not isinstance(model, NGramModel):
                raise RnnlensError(f"--ngram {ngram} is not an n-gram folder; fit one with "
                                   f"`rnnlens ngram --data CORPUS --order 9 --out {ngram}`")
        else:
            if log is not None:
                log(f"fitting a {ORACLE_ORDER}-gram on the training split of {corpus.name} for the oracle")
            model = train_ngram(corpus=corpus, order=ORACLE_ORDER)
        missing = sorted(set(text) - set(model.chars))
        if missing:
            raise RnnlensError(f"the oracle's n-gram never saw {len(missing)} of the text's characters "
                               f"({', '.join(repr(c) for c in missing[:10])}); use --ngram with one fitted on "
                               "the models' corpus")
        oracle_best = ngram_oracle(model, text)
    counts = word_counts(corpus.text("train"))
    taxonomies = [taxonomy(p, oracle=oracle_best, train_counts=counts, threshold=threshold, memory=memory,
                           rare=rare) for p in preds]
    comparison = compare_taxonomies(*taxonomies) if len(taxonomies) == 2 else None
    overlap = error_overlap(*preds, threshold=threshold) if len(preds) == 2 else None
    return TaxonomyResult(taxonomies, comparison, runs, text_name, str(data if data is not None else corpus.name),
                          overlap)
