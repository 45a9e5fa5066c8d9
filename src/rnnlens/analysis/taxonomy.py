"""The error taxonomy of the paper's Section 4.4: what kinds of mistakes does a model still make?

An *error* is a predicted character whose true next-character probability is below `threshold`
(0.5, the paper's). Errors are peeled away by the rules below in this order, each taking its
errors only from those the earlier rules left; what no rule takes is `boost`, split by how many
times the true character's probability would have to be multiplied to reach the threshold.

    1. ngram     n-gram oracle: some n-gram model of order 1..9 gives the true character
                 a probability > threshold (orders from one 9-gram fitted on the training text)
    2. memory    dynamic n-long memory: the character is a word's 2nd or later character, and the
                 same word occurred, as a whole word, starting within the `memory` (1000)
                 characters before this word's start
    3. rare      rare word: the character is in a word seen <= `rare` (5) times in the training text
    4. word      word model: the first character of a word right after whitespace or a quote
    5. punct     punctuation: the true character is punctuation, a bracket or a quote
                 (rnnlens.analysis.classes)
    6. boost     the rest, by factor = threshold / p(true character): boost <= 2x (p >= 0.25 at
                 the 0.5 threshold), 2-5x, > 5x (`boost_edges`)

A *word* is a maximal run of word characters, `\\w+` in Python's Unicode regular expressions
(letters, digits and '_'); words are compared exactly (case matters).

The paper (a 3-layer LSTM on the Linux kernel, recalled, not verified): the oracle removes about
18% of the errors; the word model share is the largest (~37%); scaling the model up removes
mostly n-gram errors, the other categories barely shrink.

Each rule is a function `rule(ctx) -> [T-1] bool mask over prediction rows` with its exact rule
in its docstring; `taxonomy` applies them in order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from rnnlens.analysis.classes import CLASSES, QUOTES, class_ids
from rnnlens.analysis.tables import write_csv as write_rows
from rnnlens.errors import RnnlensError
from rnnlens.predictions import Predictions

THRESHOLD = 0.5
ORACLE_ORDERS = tuple(range(1, 10))   # the paper's oracle: n-gram models with n <= 9
MEMORY = 1000                          # dynamic memory window, characters
RARE = 5                               # a word seen at most this often in training is rare
BOOST_EDGES = (2.0, 5.0)              # boost buckets: factor <= 2, 2 < factor <= 5, > 5
WORD = re.compile(r"\w+")
PUNCT_CLASSES = frozenset(CLASSES.index(c) for c in ("punctuation", "brackets", "quotes"))

RULE_CATEGORIES = ("ngram", "memory", "rare", "word", "punct")
LABELS = {"ngram": "n-gram oracle", "memory": "dynamic memory", "rare": "rare words", "word": "word model",
          "punct": "punctuation"}


def boost_categories(edges: Sequence[float] = BOOST_EDGES) -> list[str]:
    """'boost <=2x', 'boost 2-5x', 'boost >5x' for the default edges."""
    names = [f"boost <={edges[0]:g}x"]
    names += [f"boost {a:g}-{b:g}x" for a, b in pairwise(edges)]
    return names + [f"boost >{edges[-1]:g}x"]


@dataclass
class Context:
    """What the rules read, prepared once. Arrays indexed by text position i have length T; the
    rules return masks over prediction rows r = i - 1 (row r predicts text[r + 1])."""

    text: str
    p_true: np.ndarray           # [T-1] the model's probability of the true next character
    oracle_p: np.ndarray | None  # [T-1] the best probability any oracle n-gram gives it (None: no oracle)
    train_counts: Counter | None  # word -> occurrences in the training text (None: no rare-word rule)
    threshold: float
    memory: int
    rare: int
    word_index: np.ndarray = field(init=False)   # [T] index of the word holding each character, -1 outside words
    word_start: np.ndarray = field(init=False)   # [W] first text position of each word
    words: list[str] = field(init=False)         # [W] the words, in text order

    def __post_init__(self):
        spans = [(m.start(), m.end()) for m in WORD.finditer(self.text)]
        self.words = [self.text[s:e] for s, e in spans]
        starts = np.fromiter((s for s, _ in spans), dtype=np.int64, count=len(spans))
        ends = np.fromiter((e for _, e in spans), dtype=np.int64, count=len(spans))
        self.word_start = starts
        index = np.full(len(self.text), -1, dtype=np.int64)
        if len(spans):
            lengths = ends - starts
            at = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths,
                                                                                     lengths))
            index[at] = np.repeat(np.arange(len(spans)), lengths)
        self.word_index = index

    def rows(self, by_position: np.ndarray) -> np.ndarray:
        """A [T] per-position mask -> the [T-1] mask of the rows predicting those positions."""
        return by_position[1:]


def rule_ngram(ctx: Context) -> np.ndarray:
    """n-gram oracle: p_k(true char) > threshold for at least one oracle model k (orders 1..9 of one
    n-gram fitted on the training text), i.e. max_k p_k > threshold. Without an oracle: takes nothing."""
    if ctx.oracle_p is None:
        return np.zeros(len(ctx.p_true), dtype=bool)
    return ctx.oracle_p > ctx.threshold


def rule_memory(ctx: Context) -> np.ndarray:
    """Dynamic n-long memory: text[i] is the 2nd or a later character of a word w starting at s, and
    w occurred before as a whole word starting at s' with s - memory <= s' < s (it was in the last
    `memory` characters, so a model with a copy mechanism could have predicted it)."""
    recent = np.zeros(len(ctx.words), dtype=bool)  # [W] word seen within the window before it
    last: dict[str, int] = {}
    for k, (w, s) in enumerate(zip(ctx.words, ctx.word_start.tolist())):
        prev = last.get(w)
        recent[k] = prev is not None and prev >= s - ctx.memory
        last[w] = s
    idx = ctx.word_index
    inside = idx >= 0
    pos = np.arange(len(ctx.text))
    later = np.zeros(len(ctx.text), dtype=bool)
    later[inside] = pos[inside] > ctx.word_start[idx[inside]]
    hit = later.copy()
    hit[inside] &= recent[idx[inside]]
    return ctx.rows(hit)


def rule_rare(ctx: Context) -> np.ndarray:
    """Rare words: text[i] is any character of a word that occurs at most `rare` times (5) as a whole
    word in the training text (0 times included). Without training counts: takes nothing."""
    if ctx.train_counts is None:
        return np.zeros(len(ctx.p_true), dtype=bool)
    rare_word = np.fromiter((ctx.train_counts.get(w, 0) <= ctx.rare for w in ctx.words), dtype=bool,
                            count=len(ctx.words))
    idx = ctx.word_index
    hit = np.zeros(len(ctx.text), dtype=bool)
    hit[idx >= 0] = rare_word[idx[idx >= 0]]
    return ctx.rows(hit)


def rule_word(ctx: Context) -> np.ndarray:
    """Word model: text[i] is the first character of a word and text[i-1] is whitespace (space,
    newline, tab, ...: str.isspace) or a quote (' \" ` and the typographic quotes)."""
    hit = np.zeros(len(ctx.text), dtype=bool)
    starts = ctx.word_start[ctx.word_start >= 1]
    after = np.fromiter((ctx.text[s - 1].isspace() or ctx.text[s - 1] in QUOTES for s in starts.tolist()),
                        dtype=bool, count=len(starts))
    hit[starts[after]] = True
    return ctx.rows(hit)


def rule_punct(ctx: Context) -> np.ndarray:
    """Punctuation: the true character's class (rnnlens.analysis.classes) is punctuation, brackets or quotes."""
    cls = class_ids(ctx.text)
    return ctx.rows(np.isin(cls, list(PUNCT_CLASSES)))


RULES = {"ngram": rule_ngram, "memory": rule_memory, "rare": rule_rare, "word": rule_word, "punct": rule_punct}


@dataclass
class Taxonomy:
    """The errors of one model on one text, by category."""

    name: str
    categories: list[str]     # RULE_CATEGORIES then the boost buckets
    category: np.ndarray      # [T-1] int8: index into categories of each row's error, -1 = not an error
    threshold: float
    settings: dict            # memory, rare, boost_edges, oracle (whether the oracle was used), train (counts used)

    @property
    def chars(self) -> int:
        return len(self.category)

    @property
    def errors(self) -> int:
        return int((self.category >= 0).sum())

    @property
    def counts(self) -> np.ndarray:
        """[categories] errors in each category."""
        return np.bincount(self.category[self.category >= 0], minlength=len(self.categories))

    @property
    def shares(self) -> np.ndarray:
        """[categories] each category's part of the errors (sums to 1 when there is an error)."""
        return self.counts / max(self.errors, 1)

    def label(self, category: str) -> str:
        return LABELS.get(category, category)

    def rows(self) -> list[dict]:
        return [{"category": c, "label": self.label(c), "count": int(n), "share": float(s)}
                for c, n, s in zip(self.categories, self.counts, self.shares)]

    def to_dict(self) -> dict:
        return {"model": self.name, "chars": self.chars, "errors": self.errors, "error_rate": self.errors / max(self.chars, 1),
                "threshold": self.threshold, **self.settings, "categories": self.rows()}

    def table(self) -> str:
        lines = [(f"{self.name}: {self.errors:,} errors (p(true) < {self.threshold:g}) in {self.chars:,} characters "
                  f"({100 * self.errors / max(self.chars, 1):.1f}%)"),
                 f"  {'category':18s} {'errors':>9s} {'share':>7s}"]
        for row in self.rows():
            lines.append(f"  {row['label']:18s} {row['count']:9,d} {100 * row['share']:6.1f}%")
        return "\n".join(lines)


def oracle_best(oracle: Sequence[Predictions] | np.ndarray | None, text: str) -> np.ndarray | None:
    """[T-1] the best true-character probability over the oracle models (or the array itself)."""
    if oracle is None:
        return None
    if isinstance(oracle, np.ndarray):
        if oracle.shape != (len(text) - 1,):
            raise RnnlensError(f"the oracle's best probabilities have shape {oracle.shape}; expected ({len(text) - 1},)")
        return oracle.astype(np.float64, copy=False)
    oracle = list(oracle)
    if not oracle:
        raise RnnlensError("the n-gram oracle needs at least one model's predictions")
    best = np.zeros(len(text) - 1)
    for p in oracle:
        if p.text != text:
            raise RnnlensError(f"the oracle '{p.name}' was scored on another text than the model; "
                               "score every model on the same --text")
        np.maximum(best, p.target_probs, out=best)
    return best


def ngram_oracle(ngram, text: str, orders: Sequence[int] = ORACLE_ORDERS) -> np.ndarray:
    """[T-1] max over the orders of p_order(true next character), from one fitted n-gram model
    (rnnlens.ngram.NGramModel: predict(text, order=k) is its standalone order-k model; its losses() gives
    the true character's probability without the full distribution). One order is held at a time."""
    if max(orders) > ngram.order:
        raise RnnlensError(f"the oracle needs an n-gram of order >= {max(orders)}; this one has order {ngram.order}; "
                           f"fit one with `rnnlens ngram --order {max(orders)}`")
    best = np.zeros(len(text) - 1)
    if hasattr(ngram, "losses"):  # rnnlens.ngram: the true character's probability alone, no [T-1, V] rows
        ids = ngram.encode(text)
        for k in orders:
            np.maximum(best, np.exp(-ngram.losses(ids, k)), out=best)
        return best
    for k in orders:
        np.maximum(best, ngram.predict(text, order=k).target_probs, out=best)
    return best


def word_counts(text: str) -> Counter:
    """How often each word (\\w+) occurs in `text`."""
    return Counter(WORD.findall(text))


def check_settings(threshold: float, memory: int, rare: int, boost_edges) -> tuple[float, ...]:
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise RnnlensError(f"the error threshold (--threshold) must be in (0, 1]; got {threshold!r}")
    if not (isinstance(memory, int) and memory >= 1):
        raise RnnlensError(f"the memory window (--memory) must be an integer >= 1 character; got {memory!r}")
    if not (isinstance(rare, int) and rare >= 0):
        raise RnnlensError(f"the rare-word count (--rare) must be an integer >= 0; got {rare!r}")
    edges = tuple(float(e) for e in boost_edges)
    if not edges or edges[0] <= 1 or any(b <= a for a, b in pairwise(edges)):
        raise RnnlensError(f"boost edges must be increasing factors > 1, e.g. 2,5; got {boost_edges!r}")
    return edges


def taxonomy(preds: Predictions, *, oracle: Sequence[Predictions] | np.ndarray | None = None,
             train_text: str | None = None, train_counts: Counter | None = None, threshold: float = THRESHOLD,
             memory: int = MEMORY, rare: int = RARE, boost_edges: Sequence[float] = BOOST_EDGES) -> Taxonomy:
    """Sort the errors of `preds` into the paper's categories, peeling in order (see the module docstring).

    oracle: the oracle models' Predictions on the same text (orders 1..9), or the [T-1] array of their
    best true-character probabilities (`ngram_oracle`); None leaves the n-gram category empty.
    train_text / train_counts: the training text (or its word counts) for the rare-word rule; with
    neither, the rare-word category stays empty.
    """
    edges = check_settings(threshold, memory, rare, boost_edges)
    text = preds.text
    if len(text) < 2:
        raise RnnlensError("the error taxonomy needs a text of at least 2 characters")
    if train_counts is None and train_text is not None:
        train_counts = word_counts(train_text)
    p_true = preds.target_probs
    ctx = Context(text=text, p_true=p_true, oracle_p=oracle_best(oracle, text), train_counts=train_counts,
                  threshold=float(threshold), memory=memory, rare=rare)
    categories = list(RULE_CATEGORIES) + boost_categories(edges)
    category = np.full(len(p_true), -1, dtype=np.int8)
    left = p_true < threshold  # errors not yet taken by a rule
    for k, name in enumerate(RULE_CATEGORIES):
        hit = RULES[name](ctx) & left
        category[hit] = k
        left &= ~hit
    # boost: factor = threshold / p; bucket j holds edges[j-1] < factor <= edges[j]
    with np.errstate(divide="ignore"):
        factor = threshold / p_true[left]
    category[left] = len(RULE_CATEGORIES) + np.searchsorted(np.asarray(edges), factor, side="left")
    settings = {"memory": memory, "rare": rare, "boost_edges": list(edges), "oracle": ctx.oracle_p is not None,
                "rare_words": train_counts is not None}
    return Taxonomy(name=preds.name, categories=categories, category=category, threshold=float(threshold),
                    settings=settings)


@dataclass
class ErrorComparison:
    """Which of a small model's errors a large model fixes, per category of the small model's errors."""

    small: Taxonomy
    large: Taxonomy

    def rows(self) -> list[dict]:
        """Per category: the small and large models' errors, how many of the small one's the large one
        fixes (the large model is not wrong there), and that as a fraction of the small one's."""
        s, g = self.small.category, self.large.category
        fixed = np.bincount(s[(s >= 0) & (g < 0)], minlength=len(self.small.categories))
        rows = []
        for c, name in enumerate(self.small.categories):
            n_small = int(self.small.counts[c])
            rows.append({"category": name, "label": self.small.label(name), "small": n_small,
                         "large": int(self.large.counts[c]), "fixed": int(fixed[c]),
                         "fixed_fraction": float(fixed[c] / n_small) if n_small else None,
                         "share_of_fixed": float(fixed[c] / max(fixed.sum(), 1))})
        return rows

    @property
    def fixed(self) -> int:
        return int(((self.small.category >= 0) & (self.large.category < 0)).sum())

    @property
    def new(self) -> int:
        """Errors of the large model where the small one was right."""
        return int(((self.small.category < 0) & (self.large.category >= 0)).sum())

    def to_dict(self) -> dict:
        return {"small": self.small.name, "large": self.large.name, "fixed": self.fixed, "new": self.new,
                "categories": self.rows()}

    def table(self) -> str:
        lines = [(f"{self.large.name} against {self.small.name}: fixes {self.fixed:,} of {self.small.errors:,} "
                  f"errors, makes {self.new:,} new ones"),
                 f"  {'category':18s} {'small':>9s} {'large':>9s} {'fixed':>9s} {'% fixed':>8s} {'of fixed':>9s}"]
        for r in self.rows():
            pct = "" if r["fixed_fraction"] is None else f"{100 * r['fixed_fraction']:.1f}%"
            lines.append(f"  {r['label']:18s} {r['small']:9,d} {r['large']:9,d} {r['fixed']:9,d} {pct:>8s} "
                         f"{100 * r['share_of_fixed']:8.1f}%")
        return "\n".join(lines)


def compare_taxonomies(small: Taxonomy, large: Taxonomy) -> ErrorComparison:
    """Compare two models' taxonomies on the same text and with the same settings."""
    if small.chars != large.chars or small.categories != large.categories or small.threshold != large.threshold:
        raise RnnlensError("the two taxonomies must be over the same text with the same threshold and buckets")
    return ErrorComparison(small, large)


def write_csv(taxonomies: list[Taxonomy], path) -> object:
    """One row per model and category: model, category, label, count, share."""
    rows = [{"model": t.name, **row} for t in taxonomies for row in t.rows()]
    return write_rows(path, rows, ["model", "category", "label", "count", "share"])
