"""Character n-gram language models: interpolated modified Kneser-Ney (or add-k), counted with numpy.

The rules (docs/baselines.md says the same with examples)
---------------------------------------------------------
Counting. Every j-gram (j = 1..n) of the training ids is counted. The j-grams are never hashed:
each level j keeps a sorted table of exact integer keys

    key_j(a_1..a_j) = rank_{j-1}(a_1..a_{j-1}) * V + a_j

where rank_{j-1} is the index of the prefix in level j-1's sorted table (rank_0 = 0 for the empty
prefix). The key is < N * V (N training characters, V the vocabulary size), so it fits an int64
for any order with no collision: one `np.unique` per level turns the keys into the next ranks.
Sorting by key groups the j-grams hw that share a context h (h's rank is key // V), so a context's
successors are one contiguous range (a per-level table of range starts, built when scoring).
No hashing means no collisions: a 20-gram is identified exactly by its chain of table indices.

Counts per level j: the raw count c(hw); and for j < n the continuation count
N1+(.hw) = the number of distinct characters x such that x h w occurs, plus 1 when h w starts
the training text (the unknown text before it counts as one more distinct left character, so
every j-gram that occurs has a continuation count >= 1).

Interpolated modified Kneser-Ney (Chen & Goodman 1998). For level j with context h (the last j-1
characters) and counts c (raw at the top level, continuation counts below it):

    p_j(w | h) = max(c(hw) - D(c(hw)), 0) / c(h.) + gamma(h) * p_{j-1}(w | h')
    gamma(h)   = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h.)
    p_0(w)     = 1 / V                                    (uniform over the whole vocabulary)

where h' drops h's first character, c(h.) = sum_w c(hw) and N_r(h.) counts the w with c(hw) = r
(N3+ those with >= 3). A context never seen at level j (c(h.) = 0) gives p_j = p_{j-1}.
Three discounts per level and count type, from that level's counts of counts n_r:

    Y = n1 / (n1 + 2 n2);  D_r = r - (r + 1) Y n_{r+1} / n_r   (r = 1, 2, 3; D3+ = D_3)

with Y = 0.5 when n1 = 0, D_r = 0.5 when n_r = 0 (undefined), and each D_r then clipped to
[DISCOUNT_MIN, r]: >= DISCOUNT_MIN keeps gamma > 0 so no character ever gets probability 0, <= r
keeps every numerator >= 0.

Tuned discounts (tune_discounts; the default of train_ngram and `rnnlens ngram`, fit_ngram's with
discounts="tuned"): each level gets one (D1, D2, D3+) per bucket of the context total c(h.) (1, 2, 3-4,
5-9, >= 10), for the count type it uses, D_r in [DISCOUNT_MIN, r], started at the closed form and
fitted by L-BFGS to the val split's loss; kept only if the whole val loss is not above the closed
form's. Both D(c(hw)) and gamma(h) take the bucket of c(h.); the closed form is the case where every
bucket has the same discounts.

Add-k: p(w | h) = (c(hw) + k) / (c(h.) + k V) with raw counts of the top level (uniform for an
unseen context).

Start of a text. Row t of a prediction (the distribution of text[t+1]) sees t + 1 characters. When
fewer than n - 1 precede, the model is the order-(t+2) model (its top level on raw counts), so the
first rows of a 20-gram use a bigram, a trigram, ... exactly as standalone models of those orders
would. `predict(text, order=k)` applies the same rules to the levels 1..k, which makes it equal to
a model of order k fitted alone (tested).

Characters outside the vocabulary: an error by default; "drop" or "replace" as in Vocab.encode.
Vocabulary characters that never occur in the training split get their mass from the uniform p_0.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.corpus import Vocab
from rnnlens.errors import RnnlensError
from rnnlens.predictions import TINY, Predictions

MAX_ORDER = 20
SMOOTHINGS = ("kn", "addk")
DISCOUNT_MIN = 0.05
DISCOUNT_RULES = ("tuned", "closed")
#: Buckets of the tuned discounts: a context's total c(h.) (1, 2, 3-4, 5-9, >= 10), crossed with how
#: often the context occurred per unit of that total (its raw occurrences / c(h.): < 1.5, 1.5-3, 3-6,
#: >= 6). At the top level c(h.) counts occurrences, so the ratio is 1 there; below, a context seen many
#: times after few distinct left characters is a well-worn path whose discounts differ (on War and
#: Peace's val the ratio is worth 0.007 nats/char at order 20: docs/baselines.md).
TOTAL_EDGES = np.array([1.5, 2.5, 4.5, 9.5])
RATIO_EDGES = np.array([1.5, 3.0, 6.0])
TOTAL_BUCKETS, RATIO_BUCKETS = len(TOTAL_EDGES) + 1, len(RATIO_EDGES) + 1
BUCKETS = TOTAL_BUCKETS * RATIO_BUCKETS
TUNE_ITERATIONS = 20           # L-BFGS iterations of the discount tuning (60 gain < 0.0001 nats on War and Peace)
FORMAT = "rnnlens-ngram"
VERSION = 3                    # 3: tuned tables per (total, ratio) bucket; 2: per total bucket; 1: closed form only
FILE = "ngram.safetensors"     # arrays + the JSON header (what `load` reads)
INFO = "ngram.json"            # the same JSON, for people
ROW_CHUNK = 8192               # rows of a full distribution computed at a time: bounds [rows, V] temporaries
STATS_TABLE_MIN = 4096         # contexts asked for at once from which a level's per-context table pays off
BLOCK_ROWS = 1 << 18           # rows whose context ranks are held at once: bounds the [order, rows] ranks


def check_order(order, what: str = "--order") -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise RnnlensError(f"{what} must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    return int(order)


def check_smoothing(smoothing: str, k: float) -> tuple[str, float]:
    if smoothing not in SMOOTHINGS:
        raise RnnlensError(f"--smoothing must be one of {', '.join(SMOOTHINGS)} (Kneser-Ney or add-k), "
                           f"got {smoothing!r}")
    try:
        k = float(k)
    except (TypeError, ValueError):
        raise RnnlensError(f"--k must be a number > 0, got {k!r}") from None
    if smoothing == "addk" and not (math.isfinite(k) and k > 0):
        raise RnnlensError(f"--k must be a finite number > 0 (add-k with k = 0 gives unseen characters "
                           f"probability 0), got {k!r}")
    return smoothing, k


def kn_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """(D1, D2, D3+) of modified Kneser-Ney from one level's counts (see the module docstring)."""
    counts = np.asarray(counts)
    n = [int(np.count_nonzero(counts == r)) for r in range(1, 5)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] > 0 else 0.5
    out = []
    for r in (1, 2, 3):
        d = r - (r + 1) * y * n[r] / n[r - 1] if n[r - 1] > 0 else 0.5
        out.append(float(min(max(d, DISCOUNT_MIN), r)))
    return out[0], out[1], out[2]


def check_discounts(rule: str) -> str:
    if rule not in DISCOUNT_RULES:
        raise RnnlensError(f"--discounts must be one of {', '.join(DISCOUNT_RULES)} (tuned on the val split, or "
                           f"the closed-form estimate from counts of counts), got {rule!r}")
    return rule


def bucket_of(total: np.ndarray, occurrences: np.ndarray) -> np.ndarray:
    """The discount bucket (0..BUCKETS-1) of contexts with these totals c(h.) and these raw occurrences
    (the sum of their successors' raw counts at the same level); see TOTAL_EDGES and RATIO_EDGES."""
    total = np.asarray(total, dtype=np.float64)
    ratio = np.asarray(occurrences, dtype=np.float64) / np.maximum(total, 1.0)
    return (np.searchsorted(TOTAL_EDGES, total, side="right") * RATIO_BUCKETS
            + np.searchsorted(RATIO_EDGES, ratio, side="right"))


@dataclass
class Level:
    """The j-grams of one order: sorted exact keys (prefix rank * V + last char) and their counts."""
    keys: np.ndarray            # [E] int64, strictly increasing
    raw: np.ndarray             # [E] uint32: occurrences
    cont: np.ndarray | None     # [E] uint32: distinct left extensions (+1 at the text start); None at the top
    d_raw: tuple                # (D1, D2, D3+) from the raw counts
    d_cont: tuple | None        # from the continuation counts
    t_raw: np.ndarray | None = None    # [BUCKETS, 3] tuned (D1, D2, D3+) per context bucket, raw counts
    t_cont: np.ndarray | None = None   # the same for the continuation counts

    def table(self, kind: str) -> np.ndarray:
        """[BUCKETS, 4] float64: column 0 = 0 (no discount for a count of 0), then D1, D2, D3+ per bucket;
        the tuned table when there is one, else the closed-form discounts in every bucket."""
        tuned, closed = (self.t_raw, self.d_raw) if kind == "raw" else (self.t_cont, self.d_cont)
        d = np.asarray(tuned, dtype=np.float64) if tuned is not None else np.tile(np.asarray(closed, float), (BUCKETS, 1))
        return np.concatenate([np.zeros((BUCKETS, 1)), d], axis=1)


def unique_inverse(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct values, inverse [len(key)], a position of each distinct value) of non-negative
    int64 keys: np.unique(return_inverse=True) but several times faster, because it sorts each key
    with its position packed into one int64 (np.sort) instead of an argsort; argsort when they do not fit."""
    m = len(key)
    bits = max(1, int(m - 1).bit_length())
    if m and int(key.max()) < (1 << (62 - bits)):
        packed = np.sort((key << bits) | np.arange(m, dtype=np.int64))
        order = packed & ((1 << bits) - 1)
        packed >>= bits                                  # now the sorted keys
    else:
        order = np.argsort(key, kind="stable")
        packed = key[order]
    new = np.empty(m, dtype=bool)
    new[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    keys = packed[new]
    inv = np.empty(m, dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return keys, inv, order[new]


def count_levels(ids: np.ndarray, vocab_size: int, order: int, progress=None) -> list[Level]:
    """The count tables of levels 1..order of `ids` (values in [0, vocab_size))."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n_chars, v = len(ids), int(vocab_size)
    if n_chars >= 2 ** 32:
        raise RnnlensError(f"the training split has {n_chars:,} characters; n-gram counts are limited to "
                           "2^32 - 1 characters; train on a smaller corpus")
    rank = np.zeros(n_chars + 1, dtype=np.int64)   # rank of the (j-1)-gram starting at each position
    keys_list, raw_list, cont_list = [], [], []
    for j in range(1, order + 1):
        m = n_chars - j + 1                         # j-grams in the text
        if m <= 0:                                  # text shorter than j: an empty level
            keys_list.append(np.zeros(0, np.int64))
            raw_list.append(np.zeros(0, np.uint32))
            if j >= 2:
                cont = np.zeros(len(keys_list[j - 2]), np.int64)
                if len(cont):
                    cont[rank[0]] += 1
                cont_list.append(cont.astype(np.uint32))
            rank = np.zeros(0, np.int64)
            continue
        key = rank[:m] * v + ids[j - 1:j - 1 + m]
        keys, inv, rep = unique_inverse(key)
        del key
        keys_list.append(keys)
        raw_list.append(np.bincount(inv, minlength=len(keys)).astype(np.uint32))
        if j >= 2:
            # Level j-1's continuation counts: each distinct j-gram x g (at a representative position p)
            # adds one to its suffix g, the (j-1)-gram at p + 1; the text start adds one more.
            cont = np.bincount(rank[rep + 1], minlength=len(keys_list[j - 2]))
            cont[rank[0]] += 1
            cont_list.append(cont.astype(np.uint32))
        del rep
        rank = inv
        if progress:
            progress(j)
    cont_list.append(None)                          # the top level has raw counts only
    levels = []
    for j in range(order):
        raw, cont = raw_list[j], cont_list[j]
        levels.append(Level(keys_list[j], raw, cont, kn_discounts(raw),
                            kn_discounts(cont) if cont is not None else None))
    return levels


class NGramModel:
    """A character n-gram model over a fixed vocabulary; see the module docstring for the rules.

    It shares predict, evaluate, vocab, meta and path with rnnlens.LanguageModel; `kind` tells them apart."""

    kind = "ngram"

    def __init__(self, levels: list[Level], vocab: Vocab, *, smoothing: str = "kn", k: float = 1.0,
                 meta: dict | None = None, path: Path | None = None):
        self.levels = levels
        self.vocab = vocab
        self.order = len(levels)
        self.smoothing, self.k = check_smoothing(smoothing, k)
        self.meta = meta or {}
        self.path = path

    # ------------------------------------------------------------------ description
    @property
    def chars(self) -> list[str]:
        return list(self.vocab.chars)

    @property
    def name(self) -> str:
        return f"{self.order}-gram" + ("" if self.smoothing == "kn" else f" add-{self.k:g}")

    @property
    def entries(self) -> int:
        """Distinct j-grams stored, all orders together."""
        return sum(len(lv.keys) for lv in self.levels)

    def __repr__(self) -> str:
        how = "interpolated modified Kneser-Ney" if self.smoothing == "kn" else f"add-{self.k:g}"
        if self.smoothing == "kn":
            how += ", discounts tuned on held-out text" if self.tuned else ", closed-form discounts"
        return (f"NGramModel(order {self.order}, {how}, vocab {len(self.vocab)}, {self.entries:,} n-grams"
                + (f", from {self.path}" if self.path else "") + ")")

    def discounts(self) -> dict:
        """{'raw': [[D1, D2, D3+] per order 1..n], 'cont': [... per order 1..n-1]}: the closed-form
        discounts; with tuned ones also 'tuned': {'raw' or 'cont': {order: [[D1, D2, D3+] per bucket]}}."""
        out = {"raw": [list(lv.d_raw) for lv in self.levels],
               "cont": [list(lv.d_cont) for lv in self.levels if lv.d_cont is not None]}
        tuned = {kind: {str(j): np.asarray(t).tolist() for j, lv in enumerate(self.levels, start=1)
                        if (t := getattr(lv, f"t_{kind}")) is not None} for kind in ("raw", "cont")}
        if tuned["raw"] or tuned["cont"]:
            out["tuned"] = tuned
        return out

    @property
    def tuned(self) -> bool:
        """True when some level's discounts were tuned on held-out text (`tune_discounts`)."""
        return any(lv.t_raw is not None or lv.t_cont is not None for lv in self.levels)

    # ------------------------------------------------------------------ scoring
    # Scoring rests on three things per level j (built lazily, kept in memory, never saved):
    #   first_j [P+1]: level j's entries whose context is parent c (an entry of level j-1, P of them;
    #                  P = 1 at level 1, the empty context) are first_j[c] .. first_j[c+1]-1;
    #   stats (total c(h.), gamma(h)) per parent, for raw or continuation counts;
    #   ranks: for a scored text, the index in level m of the m-gram ending at each position.
    # A loss needs only gathers from these; a full distribution scatters each context's successors.

    def _order(self, order) -> int:
        if order is None:
            return self.order
        order = check_order(order, "order")
        if order > self.order:
            raise RnnlensError(f"order {order} is above this model's order {self.order}; "
                               f"ask for 1..{self.order} or fit a model of order {order}")
        return order

    def _parents(self, j: int) -> int:
        return len(self.levels[j - 2].keys) if j >= 2 else 1

    def _first(self, j: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_first_cache", {})
        if j not in cache:
            per_parent = np.bincount(self.levels[j - 1].keys // len(self.vocab), minlength=self._parents(j))
            first = np.zeros(len(per_parent) + 1, dtype=np.int64)
            np.cumsum(per_parent, out=first[1:])
            # uint32 halves the table; entry indices stay below 2^32 (the training text is shorter)
            cache[j] = first.astype(np.uint32) if first[-1] < 2 ** 32 else first
        return cache[j]

    def _counts(self, j: int, top: bool) -> tuple[np.ndarray, np.ndarray]:
        """(counts [E], discount table [BUCKETS, 4]: index [bucket of c(h.), min(c, 3)]) of level j: raw at
        the top, else continuation."""
        lv = self.levels[j - 1]
        if top or self.smoothing == "addk":
            return lv.raw, lv.table("raw")
        return lv.cont, lv.table("cont")

    def _expand(self, j: int, ctx: np.ndarray):
        """Every successor entry of the contexts ctx (ranks in level j-1, all >= 0) at level j:
        (row r into ctx, entry index) pairs, flattened, contexts in order."""
        first = self._first(j)
        lo, hi = first[ctx].astype(np.int64), first[ctx + 1].astype(np.int64)
        length = hi - lo
        r = np.repeat(np.arange(len(ctx)), length)
        idx = np.arange(len(r)) - np.repeat(np.cumsum(length) - length, length) + np.repeat(lo, length)
        return r, idx

    def _stats(self, j: int, top: bool, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(total c(h.) float64, gamma(h) float64, discount bucket int) [len(ctx)] for contexts ctx (ranks
        in level j-1, >= 0). Many contexts: from a per-parent table built once; a few (the start of a
        text): from their ranges."""
        lv = self.levels[j - 1]
        counts, dtab = self._counts(j, top)
        cache = self.__dict__.setdefault("_stats_cache", {})
        key = (j, top or self.smoothing == "addk")
        if key not in cache and len(ctx) < STATS_TABLE_MIN:
            r, idx = self._expand(j, ctx)
            c = counts[idx].astype(np.float64)
            # (bincount of nothing is int64: cast, for contexts with no successor)
            total = np.bincount(r, c, minlength=len(ctx)).astype(np.float64)
            bucket = bucket_of(total, np.bincount(r, lv.raw[idx].astype(np.float64), minlength=len(ctx)))
            gnum = np.bincount(r, dtab[bucket[r], np.minimum(c, 3).astype(np.int64)], minlength=len(ctx))
            return total, np.divide(gnum, total, out=np.ones(len(ctx)), where=total > 0), bucket
        if key not in cache:
            parent = lv.keys // len(self.vocab)
            c = counts.astype(np.float64)
            total = np.bincount(parent, c, minlength=self._parents(j)).astype(np.float64)
            bucket = bucket_of(total, np.bincount(parent, lv.raw.astype(np.float64), minlength=self._parents(j)))
            bucket = bucket.astype(np.uint8)
            gnum = np.bincount(parent, dtab[bucket[parent], np.minimum(counts, 3).astype(np.int64)],
                               minlength=self._parents(j))
            # totals are whole numbers below 2^32: kept as uint32 (exact, half the size of float64)
            cache[key] = (total.astype(np.uint32), np.divide(gnum, total, out=np.ones(len(total)), where=total > 0),
                          bucket)
            del parent, c, gnum
        total, gamma, bucket = cache[key]
        return total[ctx].astype(np.float64), gamma[ctx], bucket[ctx].astype(np.int64)

    def _ranks(self, ids: np.ndarray, upto: int) -> list[np.ndarray]:
        """R[m][t] = index in level m of the m-gram ending at position t, -1 when it was never seen (or
        starts before the text), for m = 0..upto; R[0] is all zeros (the empty context)."""
        v, n = len(self.vocab), len(ids)
        ranks = [np.zeros(n, dtype=np.int64)]
        for m in range(1, upto + 1):
            keys = self.levels[m - 1].keys
            prev = np.zeros(n, dtype=np.int64)       # the (m-1)-gram ending at t-1
            if m >= 2:
                prev[0] = -1
                prev[1:] = ranks[-1][:-1]
            r = np.full(n, -1, dtype=np.int64)
            ok = np.flatnonzero(prev >= 0)
            if len(ok) and len(keys):
                q = prev[ok] * v + ids[ok]
                pos = np.minimum(sorted_searchsorted(keys, q), len(keys) - 1)
                hit = keys[pos] == q
                r[ok[hit]] = pos[hit]
            ranks.append(r)
        return ranks

    def _target_probs(self, ids: np.ndarray, order: int) -> np.ndarray:
        """[len(ids)-1] float64: p(ids[t+1] | the order-`order` context ending at t), every row as if it
        had the full context (the caller handles the first rows)."""
        v = len(self.vocab)
        ranks = self._ranks(ids, order)
        n = len(ids) - 1
        if self.smoothing == "addk":
            ctx, ent = ranks[order - 1][:-1], ranks[order][1:]
            total = np.zeros(n)
            ok = ctx >= 0
            total[ok] = self._stats(order, True, ctx[ok])[0]
            c = np.where(ent >= 0, self.levels[order - 1].raw[np.maximum(ent, 0)], 0).astype(np.float64)
            return (c + self.k) / (total + self.k * v)
        p = np.zeros(n)
        weight = np.ones(n)
        for j in range(order, 0, -1):
            counts, dtab = self._counts(j, j == order)
            ctx, ent = ranks[j - 1][:-1], ranks[j][1:]
            rows = np.flatnonzero(ctx >= 0)
            if len(rows) == 0:
                continue
            total, gamma, bucket = self._stats(j, j == order, ctx[rows])
            has = total > 0
            rows, total, gamma, bucket = rows[has], total[has], gamma[has], bucket[has]
            e = ent[rows]
            c = np.where(e >= 0, counts[np.maximum(e, 0)], 0).astype(np.float64)
            p[rows] += weight[rows] * (c - dtab[bucket, np.minimum(c, 3).astype(np.int64)]) / total
            weight[rows] *= gamma
        return p + weight / v

    def _dense_rows(self, ranks: list[np.ndarray], rows: np.ndarray, order: int) -> np.ndarray:
        """[len(rows), V] float64: the whole order-`order` distribution at prediction rows `rows`."""
        v, n = len(self.vocab), len(rows)
        if self.smoothing == "addk":
            ctx = ranks[order - 1][rows]
            total = np.zeros(n)
            seen = np.flatnonzero(ctx >= 0)
            total[seen] = self._stats(order, True, ctx[seen])[0]
            denom = total + self.k * v
            p = np.repeat((self.k / denom)[:, None], v, axis=1)
            seen = seen[total[seen] > 0]
            r, idx = self._expand(order, ctx[seen])
            p[seen[r], self.levels[order - 1].keys[idx] % v] += self.levels[order - 1].raw[idx] / denom[seen[r]]
            return p
        p = np.zeros((n, v), dtype=np.float64)
        flat = p.reshape(-1)
        weight = np.ones(n, dtype=np.float64)   # product of the gammas of the levels above
        for j in range(order, 1, -1):
            counts, dtab = self._counts(j, j == order)
            ctx = ranks[j - 1][rows]
            seen = np.flatnonzero(ctx >= 0)
            if len(seen) == 0:
                continue
            total, gamma, bucket = self._stats(j, j == order, ctx[seen])
            has = total > 0
            seen, total, gamma, bucket = seen[has], total[has], gamma[has], bucket[has]
            r, idx = self._expand(j, ctx[seen])
            c = counts[idx].astype(np.float64)
            at = seen[r] * v + self.levels[j - 1].keys[idx] % v   # flat [row, char]; distinct within a level
            flat[at] += (weight[seen] / total)[r] * (c - dtab[bucket[r], np.minimum(c, 3).astype(np.int64)])
            weight[seen] *= gamma
        # level 1 (the empty context, with the uniform base) is one vector for every row
        p += weight[:, None] * self._level1(top=order == 1)[None, :]
        return p

    def _level1(self, top: bool) -> np.ndarray:
        """[V] float64: the level-1 distribution, uniform base included (raw counts if it is the top)."""
        v = len(self.vocab)
        counts, dtab = self._counts(1, top)
        total, gamma, bucket = self._stats(1, top, np.zeros(1, np.int64))
        out = np.full(v, float(gamma[0]) / v)
        if total[0] > 0:
            c = counts.astype(np.float64)
            out[self.levels[0].keys] += (c - dtab[bucket[0], np.minimum(c, 3).astype(np.int64)]) / total[0]
        return out

    def _blocks(self, ids: np.ndarray, order: int):
        """(first row, ids of a piece, rows of the piece to keep, order) covering every prediction row once.
        Row t < order-2 sees fewer than order-1 characters: it is the last row of ids[:t+2] at order t+2.
        Longer texts go in blocks that start order-1 characters early, so that each kept row has its
        whole context, and memory stays bounded."""
        n_rows = len(ids) - 1
        start = min(n_rows, max(order - 2, 0))
        for t in range(start):
            yield t, ids[:t + 2], slice(t, t + 1), t + 2
        for s in range(start, n_rows, BLOCK_ROWS):
            e = min(n_rows, s + BLOCK_ROWS)
            lo = max(0, s - (order - 1))
            yield s, ids[lo:e + 1], slice(s - lo, e - lo), order

    def encode(self, text: str, unknown: str = "error", replacement: str | None = None) -> np.ndarray:
        if not isinstance(text, str):
            raise RnnlensError(f"predict needs text (str), got {type(text).__name__}")
        return self.vocab.encode(text, unknown=unknown, replacement=replacement)

    def predict(self, text: str, order: int | None = None, *, unknown: str = "error",
                replacement: str | None = None) -> Predictions:
        """The next-character distribution at every position of `text`: Predictions with probs [T-1, V].

        order: use only levels 1..order (a model of that order fitted alone). unknown: characters outside
        the vocabulary: "error" (default), "drop" or "replace" (the Predictions' text is then the text
        as scored)."""
        order = self._order(order)
        ids = self.encode(text, unknown=unknown, replacement=replacement)
        probs = self.probs(ids, order)
        name = f"{order}-gram" + ("" if self.smoothing == "kn" else f" add-{self.k:g}")
        return Predictions(self.vocab.decode(ids), self.chars, probs, name=name,
                           meta={"kind": "ngram", "order": order, "smoothing": self.smoothing, "k": self.k,
                                 "path": str(self.path) if self.path else None})

    def probs(self, ids: np.ndarray, order: int | None = None) -> np.ndarray:
        """[len(ids)-1, V] float32: row t = p(next = each character | ids[:t+1])."""
        order = self._order(order)
        ids = np.asarray(ids, dtype=np.int64)
        v = len(self.vocab)
        out = np.zeros((max(len(ids) - 1, 0), v), dtype=np.float32)
        step = max(1, min(ROW_CHUNK, (1 << 22) // v))       # [step, V] float64 temporaries <= 32 MB
        for start, piece, keep, piece_order in self._blocks(ids, order):
            ranks = self._ranks(piece, piece_order - 1)
            rows = np.arange(keep.start, keep.stop)
            for i in range(0, len(rows), step):
                chunk = rows[i:i + step]
                out[start + i:start + i + len(chunk)] = self._dense_rows(ranks, chunk, piece_order)
        return out

    def losses(self, ids: np.ndarray, order: int | None = None) -> np.ndarray:
        """[len(ids)-1] float64: -log p(ids[t+1] | ids[:t+1]) in nats, without the [T, V] array."""
        order = self._order(order)
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(max(len(ids) - 1, 0))
        for start, piece, keep, piece_order in self._blocks(ids, order):
            p = self._target_probs(piece, piece_order)[keep]
            out[start:start + len(p)] = -np.log(np.maximum(p, TINY))
        return out

    def evaluate(self, text: str | None = None, *, data: str | None = None, split: str = "test",
                 keep_losses: bool = False, unknown: str = "error", glob: str | None = None,
                 split_fractions=None, encoding_errors: str = "strict", order: int | None = None):
        """Cross-entropy (nats/char) over `text`, or over a split of a corpus (`data`; with neither, the
        corpus the model was trained on). Every character after the first is scored with its whole
        history inside the text."""
        from rnnlens.evaluate import EvalResult
        from rnnlens.runs import split_ids
        if text is not None:
            ids = self.encode(text, unknown=unknown)
        else:
            ids = split_ids(self, data=data, split=split, glob=glob, split_fractions=split_fractions,
                            encoding_errors=encoding_errors, unknown=unknown)
        if len(ids) < 2:
            raise RnnlensError(f"the {split if text is None else 'text'} has {len(ids)} character(s); "
                               "scoring needs at least 2")
        losses = self.losses(ids, order)
        return EvalResult(loss=float(losses.mean()), chars=len(losses),
                          losses=losses.astype(np.float32) if keep_losses else None)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the folder `path` (ngram.safetensors: arrays + JSON header; ngram.json: the same JSON)."""
        from safetensors.numpy import save_file

        from rnnlens.fileio import atomic_write, make_folder, write_json_atomic
        folder = make_folder(path, "n-gram model")
        arrays = {}
        for j, lv in enumerate(self.levels, start=1):
            arrays[f"level{j}.keys"] = np.ascontiguousarray(lv.keys, dtype=np.int64)
            arrays[f"level{j}.raw"] = np.ascontiguousarray(lv.raw, dtype=np.uint32)
            if lv.cont is not None:
                arrays[f"level{j}.cont"] = np.ascontiguousarray(lv.cont, dtype=np.uint32)
        info = self.info()
        header = {"format": FORMAT, "version": str(VERSION), "info": json.dumps(info)}
        atomic_write(folder / FILE, lambda tmp: save_file(arrays, str(tmp), metadata=header))
        write_json_atomic(folder / INFO, info)
        self.path = folder
        return folder

    def info(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "order": self.order, "smoothing": self.smoothing,
                "k": self.k, "vocab": self.vocab.to_json(), "discounts": self.discounts(),
                "ngrams": [len(lv.keys) for lv in self.levels], "meta": self.meta}

    @classmethod
    def load(cls, path: str | Path) -> "NGramModel":
        from safetensors import SafetensorError, safe_open
        path = Path(path)
        file = path / FILE if path.is_dir() else path
        if not file.exists():
            raise RnnlensError(f"no n-gram model at {path} (expected {FILE}); fit one with "
                               f"`rnnlens ngram --data CORPUS --out {path}`")

        def damaged(why: str) -> RnnlensError:
            return RnnlensError(f"n-gram model {file} is truncated or corrupt ({why}); fit it again with "
                                "`rnnlens ngram`")
        if file.stat().st_size == 0:
            raise damaged("empty file")
        try:
            with safe_open(str(file), framework="numpy") as f:
                header = f.metadata() or {}
                if header.get("format") != FORMAT:
                    raise RnnlensError(f"{file} is not an rnnlens n-gram model; point at a folder written by "
                                       "`rnnlens ngram --out`")
                if int(header.get("version", "0")) > VERSION:
                    raise RnnlensError(f"{file} was written by a newer rnnlens (format {header['version']}); "
                                       "upgrade rnnlens")
                info = json.loads(header["info"])
                arrays = {name: f.get_tensor(name) for name in f.keys()}
        except RnnlensError:
            raise
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise damaged(first) from None
        try:
            vocab = Vocab.from_json(info["vocab"])
            order = check_order(info["order"], "the stored order")
            disc = info["discounts"]
            levels = []
            for j in range(1, order + 1):
                keys = arrays[f"level{j}.keys"].astype(np.int64, copy=False)
                raw = arrays[f"level{j}.raw"]
                cont = arrays.get(f"level{j}.cont") if j < order else None
                if raw.shape != keys.shape or (j < order and (cont is None or cont.shape != keys.shape)):
                    raise ValueError(f"level {j} arrays have different lengths")
                if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
                    raise ValueError(f"level {j} keys are not sorted")
                if len(keys) and (keys[0] < 0 or keys[-1] >= (len(levels[-1].keys) if j > 1 else 1) * len(vocab)):
                    raise ValueError(f"level {j} keys are out of range")
                tuned = disc.get("tuned", {})
                t_raw, t_cont = (tuned.get(kind, {}).get(str(j)) for kind in ("raw", "cont"))
                t_raw, t_cont = (None if t is None else stored_table(t) for t in (t_raw, t_cont))
                levels.append(Level(keys, raw, cont, tuple(disc["raw"][j - 1]),
                                    tuple(disc["cont"][j - 1]) if j < order else None, t_raw, t_cont))
            model = cls(levels, vocab, smoothing=info["smoothing"], k=info["k"], meta=info.get("meta", {}),
                        path=path)
        except RnnlensError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise damaged(str(e) or type(e).__name__) from None
        return model


def stored_table(table) -> np.ndarray:
    """A tuned discount table as read from a file, as [BUCKETS, 3]. A version-2 file has one row per
    total bucket only: each row serves every ratio bucket of its total, which is exactly that model."""
    t = np.asarray(table, dtype=np.float64)
    if t.size == TOTAL_BUCKETS * 3:
        return np.repeat(t.reshape(TOTAL_BUCKETS, 3), RATIO_BUCKETS, axis=0)
    return t.reshape(BUCKETS, 3)


def sorted_searchsorted(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.searchsorted(keys, q) for non-negative int64 q, about 5x faster on large random queries:
    sorting the queries first keeps consecutive binary searches in the same cache lines. The sort
    carries each query's position in the low bits of one int64 (np.sort is much faster than argsort)
    when key and position fit in 63 bits, else it falls back to argsort."""
    if len(q) < 1024:
        return np.searchsorted(keys, q)
    bits = max(1, int(len(q) - 1).bit_length())
    top = int(max(int(q.max()), int(keys[-1]) if len(keys) else 0))
    if top < (1 << (62 - bits)):
        packed = np.sort((q << bits) | np.arange(len(q), dtype=np.int64))
        order = packed & ((1 << bits) - 1)
        sorted_q = packed >> bits
    else:
        order = np.argsort(q)
        sorted_q = q[order]
    out = np.empty(len(q), dtype=np.int64)
    out[order] = np.searchsorted(keys, sorted_q)
    return out


def _tuning_features(model: NGramModel, ids: np.ndarray, order: int, bucket=None):
    """What the loss of the order-`order` model on `ids` needs, as a function of the discounts.

    `bucket(total, occurrences, distinct successors)` -> bucket per context replaces bucket_of (for
    comparing bucket rules: benchmarks/ngram_buckets.py).

    Rows (predictions) are sorted by the length of their longest seen context, deepest first, so that
    the rows with a seen context at level j are the first m_j (contexts are nested: an unseen context
    has no seen extension). Per level j: (c, c(h.), N1, N2, N3+ [5, m_j] float64, flat discount index
    of c [m_j], bucket * 3 [m_j]). Rows whose full context precedes the text start are left out."""
    import torch
    ids = np.asarray(ids, dtype=np.int64)
    v = len(model.vocab)
    ranks = model._ranks(ids, order)
    lo = max(order - 2, 0)                       # first row with a whole context
    n = len(ids) - 1 - lo
    depth = np.zeros(n, dtype=np.int64)
    for j in range(1, order + 1):
        depth[ranks[j - 1][lo:-1] >= 0] = j
    perm = np.argsort(-depth, kind="stable") + lo
    feats = []
    for j in range(1, order + 1):
        lv = model.levels[j - 1]
        counts = lv.raw if j == order else lv.cont
        sel = perm[:int((depth >= j).sum())]
        ctx, ent = ranks[j - 1][sel], ranks[j][sel + 1]
        parent = lv.keys // v
        total = np.bincount(parent, counts.astype(np.float64), minlength=model._parents(j))[ctx]
        occurrences = np.bincount(parent, lv.raw.astype(np.float64), minlength=model._parents(j))[ctx]
        ns = [np.bincount(parent, (counts == r) if r < 3 else (counts >= 3), minlength=model._parents(j))[ctx]
              for r in (1, 2, 3)]
        del parent
        c = np.where(ent >= 0, counts[np.maximum(ent, 0)], 0).astype(np.float64)
        b3 = (bucket_of(total, occurrences) if bucket is None else bucket(total, occurrences, sum(ns))) * 3
        ic = np.where(c > 0, b3 + np.minimum(c, 3).astype(np.int64), 0)
        feats.append((torch.from_numpy(np.stack([c, total] + ns).astype(np.float64)),
                      torch.from_numpy(ic), torch.from_numpy(b3)))
    return feats, n


def _tuning_loss(feats, n: int, d, v: int):
    """Mean -log p over the rows of `feats` for discounts d [order, BUCKETS, 3] (a torch tensor)."""
    import torch
    p = torch.full((n,), 1.0 / v, dtype=torch.float64)
    for j, (f, ic, b3) in enumerate(feats):
        c, total, n1, n2, n3 = f
        m = c.shape[0]
        flat = torch.cat([torch.zeros(1, dtype=d.dtype), d[j].reshape(-1)])   # index 0: no discount
        gnum = flat.index_select(0, b3 + 1) * n1 + flat.index_select(0, b3 + 2) * n2 + flat.index_select(0, b3 + 3) * n3
        p = torch.cat([(c - flat.index_select(0, ic) + gnum * p[:m]) / total, p[m:]])
    return -torch.log(p).mean()


def _fit_discounts(model: NGramModel, feats, n: int, buckets: int, iterations: int = TUNE_ITERATIONS) -> np.ndarray:
    """The discounts [order, buckets, 3] that minimise _tuning_loss over `feats`: L-BFGS from the closed
    form of each level (the same in every bucket), each D_r kept in [DISCOUNT_MIN, r] by a sigmoid."""
    import torch
    order, v = model.order, len(model.vocab)
    closed = np.array([model.levels[j].d_raw if j == order - 1 else model.levels[j].d_cont for j in range(order)])
    lo, hi = DISCOUNT_MIN, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    start = torch.from_numpy(closed)[:, None, :].repeat(1, buckets, 1)
    x0 = ((start - lo) / (hi - lo)).clamp(1e-3, 1 - 1e-3)
    theta = torch.log(x0 / (1 - x0)).requires_grad_()
    opt = torch.optim.LBFGS([theta], max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def discounts():
        return lo + (hi - lo) * torch.sigmoid(theta)

    def closure():
        opt.zero_grad()
        loss = _tuning_loss(feats, n, discounts(), v)
        loss.backward()
        return loss
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # small tensors: threads only add overhead
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return discounts().detach().numpy()


def tune_discounts(model: NGramModel, val_ids: np.ndarray, iterations: int = TUNE_ITERATIONS) -> dict:
    """Tune the model's discounts on held-out ids, in place, and return what happened.

    The tuned model has, at each level, one (D1, D2, D3+) per bucket of the context total c(h.)
    and occurrence ratio (TOTAL_EDGES, RATIO_EDGES), for the count type the level uses (raw at the top,
    continuation below), each D_r kept in [DISCOUNT_MIN, r] (a sigmoid), starting from the closed-form estimate. L-BFGS
    minimises the mean loss of the rows of val_ids that have a whole context; the tuned discounts
    are then kept only if the loss of all of val_ids (model.losses) is not above the closed form's."""
    if model.smoothing != "kn":
        raise RnnlensError("only Kneser-Ney discounts can be tuned; use --smoothing kn")
    order = model.order
    val_ids = np.asarray(val_ids, dtype=np.int64)
    for lv in model.levels:
        lv.t_raw = lv.t_cont = None
    model.__dict__.pop("_stats_cache", None)
    closed_loss = float(model.losses(val_ids).mean()) if len(val_ids) >= 2 else float("nan")
    if len(val_ids) < order + 1:
        return {"kept": False, "val_closed": closed_loss, "why": "held-out text too short"}
    feats, n = _tuning_features(model, val_ids, order)
    d = _fit_discounts(model, feats, n, BUCKETS, iterations)
    feats.clear()                                 # free the features before scoring val again
    for j in range(order):
        if j == order - 1:
            model.levels[j].t_raw = d[j].copy()
        else:
            model.levels[j].t_cont = d[j].copy()
    model.__dict__.pop("_stats_cache", None)
    tuned_loss = float(model.losses(val_ids).mean())
    kept = tuned_loss <= closed_loss
    if not kept:                                  # never worse on val than the closed form
        for lv in model.levels:
            lv.t_raw = lv.t_cont = None
        model.__dict__.pop("_stats_cache", None)
    return {"kept": kept, "val_closed": closed_loss, "val_tuned": tuned_loss}


def fit_ngram(ids: np.ndarray, vocab: Vocab, order: int, *, smoothing: str = "kn", k: float = 1.0,
              meta: dict | None = None, discounts: str = "closed", val_ids: np.ndarray | None = None) -> NGramModel:
    """Count every j-gram (j = 1..order) of `ids` (ids in `vocab`) into an NGramModel.

    discounts="tuned" (Kneser-Ney only) tunes them on `val_ids` (see tune_discounts); "closed" (the
    default here) keeps the closed-form estimate."""
    order = check_order(order)
    smoothing, k = check_smoothing(smoothing, k)
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise RnnlensError("the training text is empty; give a corpus whose train split has some characters")
    if len(vocab) == 0:
        raise RnnlensError("the vocabulary is empty; build it from some text")
    if ids.min() < 0 or ids.max() >= len(vocab):
        raise RnnlensError(f"ids must lie in 0..{len(vocab) - 1} (the vocabulary); encode the text with it")
    discounts = check_discounts(discounts)
    levels = count_levels(ids, len(vocab), order)
    model = NGramModel(levels, vocab, smoothing=smoothing, k=k, meta=meta)
    if discounts == "tuned" and smoothing == "kn":
        if val_ids is None:
            raise RnnlensError("tuned discounts need held-out text (val_ids); or use discounts='closed'")
        val_ids = np.asarray(val_ids)
        if len(val_ids) and (val_ids.min() < 0 or val_ids.max() >= len(vocab)):
            raise RnnlensError(f"val ids must lie in 0..{len(vocab) - 1} (the vocabulary)")
        model.tuning = tune_discounts(model, val_ids)
    return model


def train_ngram(data: str | None = None, order: int = 20, out=None, *, smoothing: str = "kn", k: float = 1.0,
                glob: str | None = None, split=None, encoding_errors: str = "strict", corpus=None,
                progress: bool = False, discounts: str = "tuned", fit_on: str = "train") -> NGramModel:
    """Fit an n-gram model on the train split of a corpus (a file, a folder with `glob`, or a named
    corpus, as `rnnlens train --data` takes; or a prepared rnnlens.corpus.Corpus) and save it into `out`
    when given. Kneser-Ney discounts are tuned on the val split by default (discounts="closed": the
    closed-form estimate; an empty val split also falls back to it).

    fit_on="train+val": choose the discounts on val with the train counts as above, then count train and
    val together and keep those discounts (tuned tables, or the closed form of the train+val counts).
    Test is still unseen, but val is then training text: its loss no longer measures anything."""
    from rnnlens.corpus import load_corpus, parse_split
    order = check_order(order)
    smoothing, k = check_smoothing(smoothing, k)
    if isinstance(split, str):
        split = parse_split(split)
    if corpus is None:
        if data is None:
            raise RnnlensError("train_ngram needs a corpus: give data (a file, folder or corpus name) or corpus")
        corpus = load_corpus(data, glob=glob, split=split, encoding_errors=encoding_errors, progress=progress)
    else:
        data, encoding_errors = corpus.meta.get("source", corpus.name), corpus.meta.get("encoding_errors", "strict")
    train = corpus.split("train")
    if len(train) == 0:
        raise RnnlensError(f"the train split of {corpus.name} is empty; give a larger corpus or a larger "
                           "train fraction in --split")
    discounts = check_discounts(discounts)
    if fit_on not in ("train", "train+val"):
        raise RnnlensError(f"fit_on must be 'train' or 'train+val', got {fit_on!r}")
    val = corpus.split("val")
    if discounts == "tuned" and len(val) < order + 1:
        discounts = "closed"                      # nothing to tune on
    t0 = time.perf_counter()
    model = fit_ngram(train, corpus.vocab, order, smoothing=smoothing, k=k, discounts=discounts, val_ids=val)
    if fit_on == "train+val":
        tables = [(lv.t_raw, lv.t_cont) for lv in model.levels]
        tuning = getattr(model, "tuning", None)
        train = np.concatenate([np.asarray(train), np.asarray(val)])
        model = NGramModel(count_levels(train, len(corpus.vocab), order), corpus.vocab, smoothing=smoothing, k=k)
        for lv, (t_raw, t_cont) in zip(model.levels, tables):
            lv.t_raw, lv.t_cont = t_raw, t_cont
        if tuning is not None:
            model.tuning = tuning
    seconds = time.perf_counter() - t0
    data_path = Path(str(data)).expanduser()
    model.meta = {"train": {"data": str(data_path.resolve()) if data_path.exists() else str(data), "glob": glob,
                            "split": list(corpus.split_fractions), "encoding_errors": encoding_errors,
                            "train_chars": int(len(train)), "seconds": round(seconds, 3),
                            "discounts": "tuned on val" if model.tuned else "closed form", "fit_on": fit_on},
                  "corpus": {"name": corpus.name, "content_hash": corpus.content_hash, "chars": len(corpus),
                             "split_fractions": list(corpus.split_fractions)}}
    if out is not None:
        model.save(out)
    return model


def is_ngram(path) -> bool:
    """True for a folder written by NGramModel.save (or its ngram.safetensors file)."""
    path = Path(path)
    if path.is_dir():
        return (path / FILE).exists()
    if path.is_file() and path.suffix == ".safetensors":
        try:
            from safetensors import safe_open
            with safe_open(str(path), framework="numpy") as f:
                return (f.metadata() or {}).get("format") == FORMAT
        except Exception:  # not readable as safetensors: not ours; the RNN loader explains the problem
            return False
    return False
