"""Loss by character class: where in the text one model beats another (the paper's Section 4.3).

Every predicted character (the TRUE next character, text[t+1] for prediction row t) falls in
exactly one class, tested in this order (the first that matches wins):

    carriage return  '\\r' (War and Peace as the paper had it ends its lines with '\\r\\n': the seed
                 slides single this class out)
    newline      '\\n'
    space        ' '
    whitespace   any other character for which str.isspace() is true (tab, form feed, ...)
    quotes       ' " ` and the typographic quotes \u2018 \u2019 \u201a \u201b \u201c \u201d \u201e \u201f \u00ab \u00bb
    brackets     ( ) [ ] { }          (< and > are operators in code: they are punctuation)
    capitals     str.isupper() letters: A-Z and the other cased capitals
    letters      any other str.isalpha() character: lowercase and uncased letters
    digits       str.isdecimal(): 0-9 and the other Unicode decimal digits
    punctuation  any other character of Unicode category P* (punctuation) or S* (symbols):
                 . , ; : ! ? - _ / \\ @ # $ % ^ & * + = < > | ~ ...
    other        everything else (control characters, combining marks, ...)

Per model and class: how many characters, the mean loss -ln p(true char) in nats, and the class's
share of the model's total loss (the shares of a model add up to 1).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions, check_same_text

CLASSES = ("letters", "capitals", "space", "whitespace", "newline", "carriage return", "punctuation", "digits",
           "brackets", "quotes", "other")
QUOTES = frozenset("'\"`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb")
BRACKETS = frozenset("()[]{}")


def char_class(ch: str) -> str:
    """The class of one character (see the module docstring for the exact rules and their order)."""
    if ch == "\r":
        return "carriage return"
    if ch == "\n":
        return "newline"
    if ch == " ":
        return "space"
    if ch.isspace():
        return "whitespace"
    if ch in QUOTES:
        return "quotes"
    if ch in BRACKETS:
        return "brackets"
    if ch.isalpha():
        return "capitals" if ch.isupper() else "letters"
    if ch.isdecimal():
        return "digits"
    if unicodedata.category(ch)[0] in "PS":
        return "punctuation"
    return "other"


def class_ids(text: str) -> np.ndarray:
    """[len(text)] int8: the index in CLASSES of each character's class (classified once per distinct character)."""
    table = {c: CLASSES.index(char_class(c)) for c in set(text)}
    return np.fromiter((table[c] for c in text), dtype=np.int8, count=len(text))


@dataclass
class LossByClass:
    """Loss by class of the true next character, for one or more models scored on one text."""

    models: list[str]        # model names, in the order given
    classes: tuple[str, ...]  # CLASSES
    counts: np.ndarray       # [C] int: predicted characters of each class
    mean_loss: np.ndarray    # [M, C] nats per character (NaN for a class with no character)
    share: np.ndarray        # [M, C] the class's part of the model's summed loss (a row sums to 1)
    overall: np.ndarray      # [M] mean loss over every class, nats/char

    @property
    def chars(self) -> int:
        return int(self.counts.sum())

    def rows(self) -> list[dict]:
        """One row per class (and a last 'all' row): count, fraction of characters, and per model
        the mean loss (nats and bits) and the share of its total loss."""
        out = []
        for c, name in enumerate(self.classes):
            row = {"class": name, "count": int(self.counts[c]),
                   "fraction": float(self.counts[c] / max(self.chars, 1))}
            for m, model in enumerate(self.models):
                row[f"{model} loss_nats"] = _num(self.mean_loss[m, c])
                row[f"{model} bits"] = _num(self.mean_loss[m, c] / math.log(2))
                row[f"{model} share"] = float(self.share[m, c])
            out.append(row)
        total = {"class": "all", "count": self.chars, "fraction": 1.0}
        for m, model in enumerate(self.models):
            total.update({f"{model} loss_nats": float(self.overall[m]), f"{model} bits": float(self.overall[m] / math.log(2)),
                          f"{model} share": 1.0})
        out.append(total)
        return out

    def write_csv(self, path: str | Path) -> Path:
        return write_rows(path, self.rows())

    def markdown(self) -> str:
        """The table as Markdown: class, count, and per model loss (nats/char) and share of its loss;
        with two models a last column, A - B (negative: the first model is better on that class)."""
        head = ["class", "count"]
        for model in self.models:
            head += [f"{model} nats", f"{model} share"]
        if len(self.models) == 2:
            head.append(f"{self.models[0]} \u2212 {self.models[1]} nats")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for row in self.rows():
            cells = [row["class"], f"{row['count']:,}"]
            for model in self.models:
                cells += [_fmt(row[f"{model} loss_nats"]), f"{100 * row[f'{model} share']:.1f}%"]
            if len(self.models) == 2:
                a, b = row[f"{self.models[0]} loss_nats"], row[f"{self.models[1]} loss_nats"]
                cells.append("" if a is None or b is None else f"{a - b:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"models": self.models, "classes": list(self.classes), "rows": self.rows()}


def _num(v) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _fmt(v) -> str:
    return "\u2013" if v is None else f"{v:.3f}"


def loss_by_class(*preds: Predictions) -> LossByClass:
    """Per model: count, mean loss (nats) and share of the total loss of each class of the true next
    character. Every Predictions must be over the same text."""
    text = check_same_text(*preds)
    if len(text) < 2:
        raise RnnlensError("loss by class needs a text of at least 2 characters")
    names = unique_names(preds)
    cls = class_ids(text)[1:]  # [T-1]: the class of the predicted character of each row
    counts = np.bincount(cls, minlength=len(CLASSES))
    mean = np.full((len(preds), len(CLASSES)), np.nan)
    share = np.zeros((len(preds), len(CLASSES)))
    overall = np.zeros(len(preds))
    for m, p in enumerate(preds):
        losses = p.losses  # [T-1] nats
        sums = np.bincount(cls, weights=losses, minlength=len(CLASSES))
        has = counts > 0
        mean[m, has] = sums[has] / counts[has]
        total = sums.sum()
        share[m] = sums / total if total > 0 else 0.0
        overall[m] = losses.mean()
    return LossByClass(models=names, classes=CLASSES, counts=counts, mean_loss=mean, share=share, overall=overall)


def unique_names(preds) -> list[str]:
    """The models' names, made distinct ('model', 'model (2)') so that tables and legends tell them apart."""
    names: list[str] = []
    for p in preds:
        name, k = p.name, 2
        while name in names:
            name, k = f"{p.name} ({k})", k + 1
        names.append(name)
    return names
