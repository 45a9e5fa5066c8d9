"""What the explorer computes, as plain JSON-ready data: no HTTP here (server.py adds that).

One Explorer holds the models (by key) and small caches:

* traces, by (model, text hash): the last few texts each model read. A trace that fits in
  rnnlens.runs.fits_in_memory holds every activation and the predictions, so that one forward pass answers
  every later question about the text (the batch-1 forward is the slow part); a larger one holds
  the activations asked for so far (another one traces the text again with the union of names)
  and lives in a temporary file, read memory-mapped;
* unit rankings (analysis.cells.discover), by (model, text hash).

Characters a model never saw are replaced (its vocabulary's default replacement, usually a
space) so that positions stay positions in the text; answers list the characters replaced.
Calls are serialised by a lock: one computation at a time, which suits a local tool.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlens.analysis import select as selection
from rnnlens.errors import RnnlensError
from rnnlens.model import count_parameters
from rnnlens.names import LAYER_ACTIVATIONS, activation_names, layer_names, resolve_activation
from rnnlens.names import name as activation_name
from rnnlens.render.colours import display_for, unit_label
from rnnlens.render.comparison import difference_scale
from rnnlens.render.html import LEVEL_CODES, SCALE_CLASSES
from rnnlens.runs import fits_in_memory

MAX_TEXT_BYTES = 1_000_000
MAX_SAMPLE_LENGTH = 2000
MAX_TEMPERATURE = 5.0
TRACE_CACHE = 4          # traces kept (model, text) pairs
RANKING_CACHE = 8
RANKED_PER_FEATURE = 3
CAUSAL_UNITS = 20     # ranked units whose ablation is measured (one batched step pass, ~2 s on a CPU)
CAUSAL_CHARS = 2_000  # characters that pass reads
STRIP_TOP = 5


class NotFound(RnnlensError):
    """A model, activation or unit that does not exist (HTTP 404)."""


class TooLarge(RnnlensError):
    """A text over the size limit (HTTP 413)."""


@dataclass
class Entry:
    names: set
    trace: object
    path: Path | None = None


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def unique_keys(runs: list[str]) -> list[str]:
    """Short model keys from run paths: the folder name, made unique with -2, -3 ..."""
    keys: list[str] = []
    for run in runs:
        base = Path(str(run).rstrip("/")).name.removesuffix(".safetensors") or "model"
        key, n = base, 2
        while key in keys:
            key, n = f"{base}-{n}", n + 1
        keys.append(key)
    return keys


CORPUS_FEATURES = ("in_double_quotes", "in_single_quotes", "bracket_depth", "line_position", "word_position")
MAX_WINDOW = 50_000      # characters per /api/window
MAX_LINES = 5_000        # characters x all units per /api/lines


def f16_b64(values) -> str:
    """float16 little-endian, base64: 2 bytes (2.7 in base64) per value instead of ~10 in JSON."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f2").tobytes()).decode("ascii")


class CorpusMixin:
    """The corpus endpoints: one long text (a Document per model) read in windows, edited in place."""

    def open_document(self, text: str, *, cache: bool = True, every: int | None = None, background: bool = True,
                      dtype=np.float16) -> None:
        from rnnlens.explorer.document import EVERY, Document
        for doc in self.docs.values():
            doc.close()
        self.docs = {key: Document(lm, text, cache=cache, every=every or EVERY, dtype=dtype)
                     for key, lm in self.models.items()}
        if background:
            for doc in self.docs.values():
                doc.run_background()

    def doc(self, key: str | None):
        key, lm = self.model(key)
        if key not in self.docs:
            raise NotFound("no text is open: start the explorer with --text FILE or --split test")
        return key, lm, self.docs[key]

    def doc_status(self) -> dict:
        if not self.docs:
            return {"open": False, "models": {}}
        first = next(iter(self.docs.values()))
        return {"open": True, "length": len(first), "version": first.version, "text_note": self.text_note,
                "complete": all(d.complete for d in self.docs.values()),
                "models": {k: d.status() for k, d in self.docs.items()}}

    def _span(self, doc, start: int, stop: int, cap: int) -> tuple[int, int]:
        T = len(doc)
        start, stop = max(0, int(start)), min(T, int(stop))
        if not start < stop:
            raise RnnlensError(f"from..to must be a span of the text's 0..{T} characters; got {start}..{stop}")
        if stop - start > cap:
            raise RnnlensError(f"at most {cap:,} characters per request; got {stop - start:,}")
        return start, stop

    def doc_text(self, start: int, stop: int) -> dict:
        _, _, doc = self.doc(None)
        start, stop = self._span(doc, start, stop, 1 << 22)
        return {"from": start, "to": stop, "length": len(doc), "version": doc.version, "text": doc.text[start:stop]}

    def _doc_shown(self, doc, lm, name: str, start: int, stop: int) -> np.ndarray:
        """Shown values [n, H] of `name` over rows start..stop: stored states from the memory map, anything
        else re-traced exactly from the checkpoint before the window."""
        display = display_for(name)
        if name in doc.arrays:
            raw = doc.rows(name, start, stop)
        else:
            tr, off = doc.window_trace(start, stop, [name])
            raw = tr[name][off:]
        return np.asarray(display.transform(np.asarray(raw, dtype=np.float32)), dtype=np.float32)

    def doc_window(self, key: str | None, name: str | None, unit: int, start: int, stop: int) -> dict:
        """One unit over text[from:to]: float16 values (base64) and colour levels, as /api/trace but windowed."""
        key, lm, doc = self.doc(key)
        name = self.check_name(lm, name)
        unit = self.check_unit(lm, unit)
        with doc.lock:
            start, stop = self._span(doc, start, stop, MAX_WINDOW)
            display = display_for(name)
            if name in doc.arrays:
                raw = np.asarray(doc.rows(name, start, stop)[:, unit], dtype=np.float32)
            else:
                tr, off = doc.window_trace(start, stop, [name])
                raw = np.asarray(tr[name][off:, unit], dtype=np.float32)
            levels = display.scale.level(display.transform(raw))
            scale = display.scale
            return {"model": key, "name": name, "unit": unit, "from": start, "to": stop, "version": doc.version,
                    "length": len(doc), "text": doc.text[start:stop],
                    "label": unit_label(name, unit, display), "shown_label": display.label,
                    "raw_label": display.raw_label, "transform": display.transform_name,
                    "scale": {"name": scale.name, "lo": scale.lo, "hi": scale.hi, "steps": scale.steps,
                              "class_prefix": SCALE_CLASSES[scale.name]},
                    "values_f16": f16_b64(raw), "levels": "".join(np.array(list(LEVEL_CODES))[levels])}

    def doc_lines(self, key: str | None, name: str | None, start: int, stop: int, units=None) -> dict:
        """Shown values of many units over text[from:to], for the line plot: float16 [n, k] row-major, base64."""
        key, lm, doc = self.doc(key)
        name = self.check_name(lm, name)
        H = lm.config.size
        units = list(range(H)) if not units else [self.check_unit(lm, int(u)) for u in units]
        with doc.lock:
            start, stop = self._span(doc, start, stop, max(1, MAX_LINES * 128 // max(1, len(units))))
            shown = self._doc_shown(doc, lm, name, start, stop)[:, units]
            return {"model": key, "name": name, "from": start, "to": stop, "version": doc.version,
                    "units": units, "shown_label": display_for(name).label, "values_f16": f16_b64(shown)}

    def doc_edit(self, start: int, stop: int, insert: str, upto: int | None = None) -> dict:
        """Replace text[from:to] with `insert` in every model's document; re-trace from the checkpoint before
        `from` up to `upto` now (default: 20,000 characters past the edit), the rest in the background."""
        if not self.docs:
            raise NotFound("no text is open: start the explorer with --text FILE or --split test")
        first = next(iter(self.docs.values()))
        size = len(first.text.encode("utf-8", "surrogatepass")) - len(first.text[start:stop].encode(
            "utf-8", "surrogatepass")) + len(insert.encode("utf-8", "surrogatepass"))
        if size > self.max_text_bytes:
            raise TooLarge(f"the edited text would be {size:,} bytes; this explorer takes at most "
                           f"{self.max_text_bytes:,} (--max-text-bytes)")
        upto = start + len(insert) + 20_000 if upto is None else int(upto)
        out = {key: doc.edit(start, stop, insert, upto=upto) for key, doc in self.docs.items()}
        if self.labels is not None:
            self.labels = np.concatenate([self.labels[:start], np.full(len(insert), 0, self.labels.dtype),
                                          self.labels[stop:]])
        one = next(iter(out.values()))
        return {"version": one["version"], "length": one["length"], "from": start, "to": stop,
                "retraced_from": one["retraced_from"], "models": out}

    def doc_select(self, key: str | None, name: str | None, start: int, stop: int, threshold: float) -> dict:
        key, lm, doc = self.doc(key)
        name = self.check_name(lm, name)
        with doc.lock:
            start, stop = self._span(doc, start, stop, MAX_WINDOW)
            shown = self._doc_shown(doc, lm, name, start, stop)
            units = np.flatnonzero(shown.min(axis=0) >= threshold)
            return {"model": key, "name": name, "from": start, "to": stop, "threshold": threshold,
                    "units": units.tolist(), "of": shown.shape[1], "span": doc.text[start:stop]}

    def doc_match(self, key: str | None, name: str | None, units, threshold: float, *, min_length: int,
                  max_length: int, before: int = 1, after: int = 1, min_units: int = 1, top: int = 50,
                  bins: int = 400) -> dict:
        """LSTMVis's match over the whole text (analysis.select.match_runs): spans where the units are on
        throughout and off just before and after, ranked; a histogram of all of them for the minimap."""
        key, lm, doc = self.doc(key)
        name = self.check_name(lm, name)
        if name not in doc.arrays:
            raise RnnlensError(f"match over the whole text reads the stored states: choose one of "
                               f"{', '.join(doc.names)}")
        if not 1 <= top <= 500 or not 0 <= bins <= 4000:
            raise RnnlensError("top must be 1..500 and bins 0..4000")
        doc.advance()
        with doc.lock:
            display = display_for(name)
            units = np.asarray([self.check_unit(lm, int(u)) for u in units], dtype=np.int64)
            T = len(doc)
            stored = doc.arrays[name][:T]
            # the threshold on the shown value, moved to the stored one (tanh is monotonic): no transform pass
            raw_threshold = float(np.arctanh(np.clip(threshold, -0.999999, 0.999999))) \
                if display.transform_name == "tanh" else threshold
            found, hist, total = selection.match_runs(stored, units, raw_threshold, min_length=min_length,
                                                      max_length=max_length, before=before, after=after,
                                                      min_units=min_units, top=top, bins=bins)
            return {"model": key, "name": name, "units": units.tolist(), "threshold": threshold, "length": T,
                    "version": doc.version, "min_length": min_length, "max_length": max_length, "before": before,
                    "after": after, "total": total, "histogram": hist.tolist(),
                    "rule": "a unit matches a span when it is on (>= threshold) at every character of it and off "
                            "at the `before` characters before and the `after` characters after; spans ranked by "
                            "how many selected units match",
                    "matches": [{**m.to_dict(), "score": round(m.score, 4),
                                 "text": doc.text[m.start:m.end]} for m in found]}

    def doc_tracks(self, key: str | None, start: int, stop: int) -> dict:
        """Annotation tracks under the text: built-in features, the model's loss per character (nats) and
        the user's labels, over text[from:to]."""
        from rnnlens.analysis.features import compute_features
        key, lm, doc = self.doc(key)
        with doc.lock:
            start, stop = self._span(doc, start, stop, MAX_WINDOW)
            if self._features is None or self._features[0] != (doc.version, len(doc)):
                self._features = ((doc.version, len(doc)), compute_features(doc.text, list(CORPUS_FEATURES)))
            feats = {n: np.asarray(v[start:stop], dtype=np.float32) for n, v in self._features[1].items()}
            loss = np.asarray(doc.rows("loss", start, stop), dtype=np.float32)
            tracks = [{"name": n, "kind": "binary" if v.max(initial=0) <= 1 and n.startswith("in_") else "numeric",
                       "values_f16": f16_b64(v)} for n, v in feats.items()]
            tracks.append({"name": "loss", "kind": "loss", "values_f16": f16_b64(np.nan_to_num(loss))})
            if self.labels is not None:
                labels = self.labels[start:stop]
                tracks.append({"name": "labels", "kind": "labels", "text": "".join(labels.tolist())})
            return {"model": key, "from": start, "to": stop, "version": doc.version, "tracks": tracks}

    def set_labels(self, labels: str) -> None:
        """Per-character labels, one character each (a space: no label), as long as the open text."""
        if not self.docs:
            raise RnnlensError("labels need an open text (--text or --split)")
        n = len(next(iter(self.docs.values())))
        if len(labels) != n:
            raise RnnlensError(f"the labels file has {len(labels):,} characters; it needs one per character of "
                               f"the text ({n:,})")
        self.labels = np.array(list(labels))

    def doc_predict(self, key: str | None, position: int, top: int = STRIP_TOP) -> dict:
        key, lm, doc = self.doc(key)
        with doc.lock:
            if not 0 <= position < len(doc):
                raise RnnlensError(f"position must be 0..{len(doc) - 1}; got {position}")
            tr, off = doc.window_trace(position, position + 1, ["probs"])
            row = np.asarray(tr["probs"][off], dtype=np.float32)
            best = np.argsort(-row, kind="stable")[:top]
            nxt = doc.text[position + 1] if position + 1 < len(doc) else None
            return {"model": key, "position": position, "char": doc.text[position], "next": nxt,
                    "top": [{"char": lm.vocab.chars[i], "p": round(float(row[i]), 5)} for i in best]}


class Explorer(CorpusMixin):
    """The models and caches behind the explorer. `models` maps key -> rnnlens.LanguageModel."""

    def __init__(self, models: dict, *, default_text: str = "", text_note: str = "",
                 max_text_bytes: int = MAX_TEXT_BYTES):
        if not models:
            raise RnnlensError("the explorer needs at least one model")
        self.models = dict(models)
        self.default_text = default_text
        self.text_note = text_note
        self.max_text_bytes = int(max_text_bytes)
        self._lock = threading.RLock()
        self._traces: OrderedDict = OrderedDict()
        self._rankings: OrderedDict = OrderedDict()
        self._folder: Path | None = None
        self.docs: dict = {}           # model key -> Document: the long text the corpus endpoints read
        self.labels: np.ndarray | None = None  # the user's per-character labels (one character each)
        self._features = None          # (version, {name: values}) of the document's text

    @classmethod
    def from_runs(cls, runs, *, device: str = "cpu", **kwargs) -> Explorer:
        from rnnlens.api import load
        runs = [str(r) for r in runs]
        return cls({k: load(r, device=device) for k, r in zip(unique_keys(runs), runs)}, **kwargs)

    def close(self) -> None:
        for doc in self.docs.values():
            doc.close()
        with self._lock:
            self._traces.clear()
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None

    # -- checks -------------------------------------------------------------------------------

    def model(self, key: str | None):
        """(key, LanguageModel); None means the first model."""
        if key is None:
            key = next(iter(self.models))
        if key not in self.models:
            raise NotFound(f"no model {key!r}; this explorer has {', '.join(repr(k) for k in self.models)}")
        return key, self.models[key]

    def check_text(self, text: str, what: str = "the text") -> str:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_text_bytes:
            raise TooLarge(f"{what} is {size:,} bytes (UTF-8); this explorer takes at most {self.max_text_bytes:,}: "
                           "send a shorter text, or restart it with a larger --max-text-bytes")
        return text

    def check_name(self, lm, name: str | None) -> str:
        cfg = lm.config
        if name is None:
            return activation_name(cfg.layers - 1, resolve_activation(None, cfg.cell))
        valid = activation_names(cfg.cell, cfg.layers)[:-2]  # not probs and loss
        if name not in valid:
            raise NotFound(f"this {cfg.cell.upper()} of {cfg.layers} layer(s) has no activation {name!r}; "
                           f"choose from {', '.join(valid)}")
        return name

    def check_unit(self, lm, unit: int) -> int:
        size = lm.config.size
        if not isinstance(unit, int) or not 0 <= unit < size:
            raise NotFound(f"unit {unit!r} does not exist: each layer of this model has units 0..{size - 1}")
        return unit

    # -- tracing ------------------------------------------------------------------------------

    def trace(self, key: str, text: str, names, edit: Edit | None = None) -> tuple[object, list[str]]:
        """The trace of model `key` over `text` holding at least `names` (cached), and the characters
        that were replaced because the model never saw them; with `edit`, of the model with that unit
        ablated or clamped (cached apart)."""
        key, lm = self.model(key)
        self.check_text(text)
        if not text:
            raise RnnlensError("the text is empty; type or paste some")
        names = set(names)
        with self._lock:
            cache_key = (key, text_key(text)) + ((edit.tag,) if edit is not None else ())
            entry = self._traces.get(cache_key)
            if entry is None or not names <= entry.names:
                every = activation_names(lm.config.cell, lm.config.layers)
                cfg = lm.config
                if fits_in_memory(len(text) * (cfg.size * (len(every) - 2) + len(lm.vocab) + 1) * 4):
                    wanted = set(every)  # one forward pass answers every later question about this text
                else:
                    wanted = names | (entry.names if entry else set())
                ordered = [n for n in every if n in wanted]
                out = None
                if not fits_in_memory(len(text) * lm.config.size * len(ordered) * 4):
                    if self._folder is None:
                        self._folder = Path(tempfile.mkdtemp(prefix="rnnlens-explorer-"))
                    out = self._folder / f"{key}-{cache_key[1][:16]}-{len(wanted)}{'-edit' if edit else ''}.safetensors"
                trace = lm.trace(text, names=ordered, unknown="replace", out=out,
                                 interventions=edit.interventions() if edit is not None else None)
                if entry is not None:
                    self._drop(entry)
                entry = Entry(set(ordered), trace, out)
                self._traces[cache_key] = entry
            self._traces.move_to_end(cache_key)
            while len(self._traces) > TRACE_CACHE:
                self._drop(self._traces.popitem(last=False)[1])
            return entry.trace, lm.vocab.unknown_chars(text)

    @staticmethod
    def _drop(entry: Entry) -> None:
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)  # an open memory map keeps its pages until it is closed

    # -- answers ------------------------------------------------------------------------------

    def info(self) -> dict:
        models = []
        for key, lm in self.models.items():
            cfg = lm.config
            names = activation_names(cfg.cell, cfg.layers)[:-2]
            models.append({"key": key, "run": str(lm.path), "cell": cfg.cell, "layers": cfg.layers, "size": cfg.size,
                           "vocab_size": len(lm.vocab), "parameters": count_parameters(cfg),
                           "activations": names, "default_activation": self.check_name(lm, None),
                           "kinds": list(LAYER_ACTIVATIONS[cfg.cell])})
        return {"models": models, "text": self.default_text, "text_note": self.text_note,
                "limits": {"max_text_bytes": self.max_text_bytes, "max_sample_length": MAX_SAMPLE_LENGTH,
                           "max_temperature": MAX_TEMPERATURE}}

    def unit_values(self, key: str | None, text: str, name: str | None, unit: int, edit=None) -> dict:
        """One unit over the whole text: the stored values, the colour level of each character
        (as a string of LEVEL_CODES, the scale's CSS classes) and how it is drawn; `edit` (a dict as
        /api/intervene takes, or an Edit): of the model with that unit ablated or clamped."""
        key, lm = self.model(key)
        name = self.check_name(lm, name)
        unit = self.check_unit(lm, unit)
        edit = self.edit(key, edit)
        trace, replaced = self.trace(key, text, [name], edit)
        display = display_for(name)
        raw = np.asarray(trace[name][:, unit], dtype=np.float32)
        shown = display.transform(raw)
        levels = display.scale.level(shown)
        scale = display.scale
        return {"model": key, "name": name, "unit": unit, "label": unit_label(name, unit, display),
                "description": display.description, "shown_label": display.label, "raw_label": display.raw_label,
                "transform": display.transform_name,
                "scale": {"name": scale.name, "lo": scale.lo, "hi": scale.hi, "steps": scale.steps,
                          "class_prefix": SCALE_CLASSES[scale.name]},
                "values": np.round(raw.astype(np.float64), 5).tolist(),
                "levels": "".join(np.array(list(LEVEL_CODES))[levels]),
                "replaced": replaced, "intervention": edit.to_dict() if edit is not None else None}

    def ranked_units(self, key: str | None, text: str, top: int = RANKED_PER_FEATURE) -> dict:
        """Units ranked by how well they track a built-in feature of the text (analysis.cells.discover):
        the best `top` of each feature, strongest first, each unit once (under its strongest feature)."""
        from rnnlens.analysis.causal import causal_effects
        from rnnlens.analysis.cells import describe, discover, kinds_for
        key, lm = self.model(key)
        cfg = lm.config
        if not 1 <= top <= 50:
            raise RnnlensError(f"top must be 1..50; got {top}")
        if len(text) < 2:
            return {"model": key, "units": [], "note": "type at least two characters to rank the units"}
        with self._lock:
            cache_key = (key, text_key(text), top)
            if cache_key in self._rankings:
                self._rankings.move_to_end(cache_key)
                return self._rankings[cache_key]
            kinds = kinds_for(cfg.cell)
            trace, _ = self.trace(key, text, layer_names(cfg.layers, kinds))
            scores = discover(trace, kinds=kinds, excerpts=0, exact_top=max(top, 3))
            best = [(u, f) for f in scores.features for u in scores.best(f.name, top)]
            best.sort(key=lambda uf: (not uf[0].visible, -uf[0].strength))  # units that visibly switch first
            seen, units = set(), []
            for u, f in best:
                if (u.activation, u.unit) in seen:
                    continue
                seen.add((u.activation, u.unit))
                units.append({"name": u.activation, "unit": u.unit, "layer": u.layer, "kind": u.kind,
                              "feature": f.name, "metric": u.metric, "score": round(u.score, 4), "sign": u.sign,
                              "strength": round(u.strength, 4), "contrast": _rounded(u.contrast),
                              "visible": u.visible, "why": describe(u, f.description)})
            # does the model use the unit? the loss change on its feature when it is ablated, beside its score
            effects = causal_effects(lm, text, units[:CAUSAL_UNITS], max_chars=CAUSAL_CHARS)
            for entry, e in zip(units, effects.effects):
                entry["ablated"] = {"change_on": _rounded(e.change_on), "change_switch": _rounded(e.change_switch),
                                    "change_all": _rounded(e.change_all)}
            answer = {"model": key, "units": units,
                      "note": f"ranked over {len(text):,} characters: units that visibly move with a feature "
                              "(contrast >= 0.3 on the colour scale) first, each by Pearson r (numeric features) "
                              "or ROC AUC (on/off features); see docs/cells.md. \"ablated\": the loss change (nats/char) "
                              f"on the feature's characters when the unit is ablated, over the first "
                              f"{effects.chars:,} predicted characters (the first {CAUSAL_UNITS} units)"}
            self._rankings[cache_key] = answer
            while len(self._rankings) > RANKING_CACHE:
                self._rankings.popitem(last=False)
            return answer

    def _shown(self, key, text, name):
        key, lm = self.model(key)
        name = self.check_name(lm, name)
        trace, _ = self.trace(key, text, [name])
        return key, name, display_for(name), np.asarray(display_for(name).transform(
            np.asarray(trace[name], dtype=np.float32)), dtype=np.float32)

    def select(self, key: str | None, text: str, name: str | None, start: int, end: int, threshold: float) -> dict:
        """The units of `name` on (shown value >= threshold) at every character of text[start:end]."""
        key, name, display, values = self._shown(key, text, name)
        start, end = selection.check_range_in(len(text), start, end)
        units = selection.units_on(values, start, end, threshold)
        return {"model": key, "name": name, "start": start, "end": end, "threshold": threshold,
                "shown_label": display.label, "units": units.tolist(), "of": values.shape[1],
                "span": text[start:end]}

    def match(self, key: str | None, text: str, name: str | None, units, threshold: float, start: int, end: int,
              top: int = 10, min_score: float = selection.MIN_SCORE) -> dict:
        """Windows of the selection's length elsewhere in the text where the same units are on, ranked
        (rule: rnnlens.analysis.select)."""
        key, name, _, values = self._shown(key, text, name)
        start, end = selection.check_range_in(len(text), start, end)
        if not 0 <= min_score <= 1:
            raise RnnlensError(f"min_score must be 0..1; got {min_score}")
        if not 1 <= top <= 100:
            raise RnnlensError(f"top must be 1..100; got {top}")
        found = selection.match(values, units, threshold, end - start, exclude=(start, end), top=top,
                                min_score=min_score)
        return {"model": key, "name": name, "units": [int(u) for u in units], "threshold": threshold,
                "length": end - start,
                "rule": "score = fraction of (selected unit, character) pairs of the window with value >= threshold",
                "matches": [{**m.to_dict(), "score": round(m.score, 4), "text": text[m.start:m.end]} for m in found]}

    def predict(self, key: str | None, text: str, position: int, *, before: int = 0, after: int = 0,
                top: int = STRIP_TOP, edit=None) -> dict:
        """The model's `top` most likely next characters after each character of
        text[position - before : position + after + 1], with the one that really came next (`edit`: of the
        model with a unit ablated or clamped)."""
        key, lm = self.model(key)
        edit = self.edit(key, edit)
        if not isinstance(position, int) or not 0 <= position < len(text):
            raise RnnlensError(f"position must be 0..{len(text) - 1} (a character of the text); got {position!r}")
        if not 1 <= top <= len(lm.vocab):
            raise RnnlensError(f"top must be 1..{len(lm.vocab)} (the vocabulary size); got {top}")
        if not (0 <= before <= 200 and 0 <= after <= 200):
            raise RnnlensError("before and after must be 0..200 characters")
        trace, replaced = self.trace(key, text, ["probs"], edit)
        start, end = max(0, position - before), min(len(text), position + after + 1)
        probs = np.asarray(trace["probs"][start:end], dtype=np.float32)  # [n, V]
        best = np.argsort(-probs, axis=1, kind="stable")[:, :top]
        chars = lm.vocab.chars
        columns = []
        for t in range(start, end):
            row = probs[t - start]
            following = text[t + 1] if t + 1 < len(text) else None
            p_next = float(row[lm.vocab.index(following)]) if following is not None and following in lm.vocab else None
            columns.append({"position": t, "char": text[t],
                            "top": [{"char": chars[i], "p": round(float(row[i]), 5)} for i in best[t - start]],
                            "next": following, "next_p": None if p_next is None else round(p_next, 5)})
        return {"model": key, "position": position, "start": start, "end": end, "columns": columns,
                "replaced": replaced, "intervention": edit.to_dict() if edit is not None else None}

    def sample(self, key: str | None, prime: str, temperature: float, length: int, seed: int | None,
               steer=(), edit=None) -> dict:
        """`length` characters sampled after `prime` (unknown prime characters replaced); `steer`: units clamped
        while sampling, as `rnnlens sample --steer` (LAYER:UNIT=VALUE); `edit`: a unit ablated or clamped
        (with a value: clamp_low and clamp_high need a text to find it)."""
        from rnnlens.interventions import steer as parse_steer
        key, lm = self.model(key)
        cfg = lm.config
        edit = self.edit(key, edit)
        interventions = parse_steer(list(steer or ())[:64], cfg.cell, cfg.layers, cfg.size, flag="steer")
        interventions = (interventions + (edit.interventions() if edit is not None else [])) or None
        self.check_text(prime, "the prime")
        if not isinstance(length, int) or not 1 <= length <= MAX_SAMPLE_LENGTH:
            raise RnnlensError(f"length must be 1..{MAX_SAMPLE_LENGTH} characters; got {length!r}")
        if not 0 < temperature <= MAX_TEMPERATURE:
            raise RnnlensError(f"temperature must be > 0 and <= {MAX_TEMPERATURE:g}; got {temperature!r}")
        with self._lock:
            out = lm.sample(length, prime or None, temperature=float(temperature), seed=seed, unknown="replace",
                            interventions=interventions)
        return {"model": key, "prime": prime, "temperature": temperature, "length": length, "seed": seed,
                "steer": list(steer or ()), "intervention": edit.to_dict() if edit is not None else None,
                "text": out, "replaced": lm.vocab.unknown_chars(prime)}

    # -- interventions: the unit shown, ablated or clamped --------------------------------------

    def edit(self, key: str | None, spec, text: str | None = None) -> Edit | None:
        """An Edit from a request's `intervention` ({name, unit, mode, value}) checked against model `key`;
        clamp_low / clamp_high take the unit's minimum / maximum over `text` as trained."""
        if spec is None or isinstance(spec, Edit):
            return spec
        spec = dict(spec)
        key, lm = self.model(key)
        name = self.check_name(lm, spec.get("name"))
        unit = self.check_unit(lm, spec.get("unit", 0))
        mode, value = spec.get("mode", "ablate"), spec.get("value")
        if mode not in EDIT_MODES:
            raise RnnlensError(f"intervention mode must be one of {', '.join(EDIT_MODES)}; got {mode!r}")
        if mode in ("clamp_low", "clamp_high"):
            if text is None:
                raise RnnlensError(f"{mode} takes the unit's value over a text; send mode clamp with the value "
                                   "/api/intervene returned")
            trace, _ = self.trace(key, text, [name])
            column = np.asarray(trace[name][:, unit], dtype=np.float64)
            value = float(column.min() if mode == "clamp_low" else column.max())
        if mode == "ablate":
            value = 0.0
        elif value is None or not np.isfinite(float(value)):
            raise RnnlensError("clamp needs a finite value: {name, unit, mode: 'clamp', value}")
        return Edit(name, unit, mode, float(value))

    def intervene(self, key: str | None, text: str, spec, *, show_name: str | None = None,
                  show_unit: int | None = None, start: int = 0, stop: int | None = None,
                  position: int | None = None, before: int = 14, after: int = 14, top: int = STRIP_TOP,
                  sample: dict | None = None) -> dict:
        """Read `text` with one unit ablated or clamped (`spec`) and return what the page redraws: the loss
        as trained and edited over the whole text, the change per character over text[start:stop] (at most
        MAX_WINDOW characters; character t: the change in the loss of predicting it), the shown unit over
        the same window as edited, the prediction strip around `position`, and a sample (`sample`: the
        fields of /api/sample)."""
        key, lm = self.model(key)
        self.check_text(text)
        if len(text) < 2:
            raise RnnlensError("type at least two characters: the loss change needs a character to predict")
        edit = self.edit(key, spec, text)
        T = len(text)
        stop = T if stop is None else min(T, int(stop))
        start = max(0, int(start))
        if not start < stop or stop - start > MAX_WINDOW:
            raise RnnlensError(f"from..to must be a span of at most {MAX_WINDOW:,} of the text's 0..{T} characters; "
                               f"got {start}..{stop}")
        clean, _ = self.trace(key, text, ["loss"])
        edited, replaced = self.trace(key, text, ["loss"], edit)
        clean_loss = np.asarray(clean["loss"][:-1], dtype=np.float64)  # row t: the loss of text[t + 1]
        edited_loss = np.asarray(edited["loss"][:-1], dtype=np.float64)
        change = np.concatenate([[np.nan], edited_loss - clean_loss])  # at t: predicting text[t]
        window = change[start:stop]
        colours = difference_scale(CHANGE_SCALE)
        levels = colours.level(np.nan_to_num(-window))  # red: harder to predict with the edit, as `rnnlens ablate`
        shown_name = show_name if show_name is not None else edit.name
        shown = self.unit_values(key, text, shown_name, edit.unit if show_unit is None else show_unit, edit)
        shown["values"], shown["levels"] = shown["values"][start:stop], shown["levels"][start:stop]
        answer = {"model": key, "intervention": edit.to_dict(), "chars": T - 1, "from": start, "to": stop,
                  "loss": {"as_trained": float(clean_loss.mean()), "edited": float(edited_loss.mean()),
                           "change": float(edited_loss.mean() - clean_loss.mean()),
                           "window_change": _rounded(float(np.nanmean(window))) if np.isfinite(window).any()
                           else None},
                  "change": [None if not np.isfinite(x) else round(float(x), 4) for x in window],
                  "change_levels": "".join(np.array(list(LEVEL_CODES))[levels]),
                  "change_scale": {"name": colours.name, "lo": -CHANGE_SCALE, "hi": CHANGE_SCALE,
                                   "steps": colours.steps, "class_prefix": SCALE_CLASSES[colours.name],
                                   "note": "red: harder to predict with the edit; full colour at "
                                           f"{CHANGE_SCALE:g} nats"},
                  "trace": shown, "replaced": replaced, "strip": None, "sample": None}
        if position is not None:
            answer["strip"] = self.predict(key, text, position, before=before, after=after, top=top, edit=edit)
        if sample is not None:
            answer["sample"] = self.sample(key, sample.get("prime", ""), float(sample.get("temperature", 1.0)),
                                           int(sample.get("length", 200)), sample.get("seed"), edit=edit)
        return answer


EDIT_MODES = ("ablate", "clamp", "clamp_low", "clamp_high")
CHANGE_SCALE = 2.0  # nats: a change in loss of 2 nats is full colour, as in `rnnlens ablate`'s page


@dataclass(frozen=True)
class Edit:
    """One unit of the page ablated (set to 0) or clamped (held at `value`) at every position."""

    name: str
    unit: int
    mode: str    # 'ablate' or a clamp ('clamp', 'clamp_low', 'clamp_high': how the value was chosen)
    value: float

    @property
    def tag(self) -> tuple:
        return (self.name, self.unit, self.value)

    def interventions(self) -> list:
        from rnnlens.interventions import Ablate, Clamp
        if self.mode == "ablate":
            return [Ablate(self.name, self.unit)]
        return [Clamp(self.name, self.unit, self.value)]

    def to_dict(self) -> dict:
        held = "ablated (set to 0)" if self.mode == "ablate" else f"clamped to {self.value:.3g}" + \
            {"clamp_low": " (its minimum over the text)", "clamp_high": " (its maximum over the text)"}.get(self.mode, "")
        return {"name": self.name, "unit": self.unit, "mode": self.mode, "value": self.value,
                "label": f"{self.name} unit {self.unit} {held}"}


def _rounded(x: float, digits: int = 4):
    """A float for JSON: rounded, None when not finite."""
    import math
    return round(x, digits) if math.isfinite(x) else None
