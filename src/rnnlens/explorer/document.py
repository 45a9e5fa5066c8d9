"""One model over one editable text of up to millions of characters: traced once, in the background,
into memory-mapped arrays, with the recurrent state kept at checkpoints so that an edit re-traces only
from the last checkpoint before its first changed character.

What is stored, per character (row t = after reading character t, as in rnnlens.trace):

* every layer's state: `layer{i}.cell` and `layer{i}.hidden` (LSTM), `layer{i}.hidden` (GRU, RNN, n-NN),
  float16 by default (what the page draws and what match scans), in one raw file per name;
* `loss`, float32: -log p of the next character (NaN at the last character).

Gates and candidates are not stored: a window of them is re-traced exactly from the checkpoint before it
(at most `every` characters more than the window; see `window_trace`).

The checkpoints: `states[j]` is the exact float32 TraceState before character j * every (states[0] the zero
state). After an edit whose first changed character is f, rows before j * every (j = f // every) and
states[0..j] still hold; everything from there is traced again (`advance`), the part the page shows at once
and the rest in the background (`run_background`), in spans of whole blocks of about BACKGROUND_SECONDS
under the lock, so that requests interleave with it. A span is one call of rnnlens.trace.trace_ids, which
pipelines its blocks over two cores and writes straight into the memory maps.

The cache: the first trace of a text goes to cache_root()/explorer/<model hash>-<text hash>-<dtype>/ (the
arrays, checkpoints.npz and meta.json, written last, when the trace is complete, by a thread of its own
while the document already serves). The next start with the
same model and text opens it and traces nothing. The first edit copies the arrays to a private folder (the
cache keeps the original text's trace).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from rnnlens.errors import RnnlensError
from rnnlens.names import LAYER_ACTIVATIONS
from rnnlens.names import name as activation_name
from rnnlens.trace import TraceState, trace_ids

EVERY = 2000  # characters between checkpoints: an edit re-traces at most this many characters before it
BACKGROUND_SECONDS = 0.25  # the background trace holds the lock for spans of about this long
CHECK_EVERY = 16  # the trace's recomputation is checked against the fused outputs on every 16th row
FORMAT = 1


def model_hash(lm) -> str:
    """A hash of the model's weights and configuration: the cache key's model half."""
    h = hashlib.sha256(repr(lm.config).encode())
    h.update("\0".join(lm.vocab.chars).encode("utf-8", "surrogatepass"))
    for name, t in sorted(lm.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def stored_names(cell: str, layers: int) -> list[str]:
    """The per-layer state arrays a Document keeps (cell and hidden for an LSTM, hidden otherwise)."""
    kinds = ("cell", "hidden") if cell == "lstm" else ("hidden",)
    return [activation_name(i, k) for i in range(layers) for k in kinds if k in LAYER_ACTIVATIONS[cell]]


class Document:
    """Model `lm` (an rnnlens.LanguageModel) over `text`, traced into memory-mapped arrays with checkpoints.

    cache: use and fill the cache (else a private temporary folder); dtype: float16 (default) or float32
    for the stored states; every: characters between checkpoints.
    """

    def __init__(self, lm, text: str, *, cache: bool = True, dtype=np.float16, every: int = EVERY,
                 cache_root: Path | None = None, threads: int | None = 1):
        if every < 1:
            raise RnnlensError(f"every must be >= 1; got {every}")
        self.lm, self.every = lm, int(every)
        self.threads = threads  # torch threads while tracing (as rnnlens.trace.trace_ids: one, at batch 1)
        cfg = lm.config
        self.dtype = np.dtype(dtype)
        self.names = stored_names(cfg.cell, cfg.layers)
        self.size = cfg.size
        self.lock = threading.RLock()
        self.version = 0               # edits so far
        self.recomputed = 0            # characters traced since the document opened (all edits included)
        self.last_edit: dict | None = None
        self.trace_seconds = 0.0       # time spent tracing the current text's rows, for the status
        self.started = time.monotonic()
        self.cache_hit = False
        self._private: Path | None = None
        self._window = None            # the last window_trace: (start, stop, names, version, trace)
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._chars_per_second = 0.0   # of the last traced span: sizes the background's spans
        self._set_text(text)
        self._model_hash = model_hash(lm)
        key = f"{self._model_hash[:16]}-{text_hash(text)[:16]}-{self.dtype.name}-{self.every}"
        if cache:
            from rnnlens.cache import cache_root as root
            self.folder = Path(cache_root or root()) / "explorer" / key
            self.shared = True
        else:
            self.folder = self._private_folder()
            self.shared = False
        self.folder.mkdir(parents=True, exist_ok=True)
        self.states: list[TraceState] = [TraceState([None] * cfg.layers, None)]
        self.valid = 0
        if self.shared and self._load_cache():
            self.cache_hit = True
        else:
            self._open_arrays(len(self.text), fresh=True)

    # -- text ---------------------------------------------------------------------------------------

    def _set_text(self, text: str) -> None:
        if not text:
            raise RnnlensError("the text is empty")
        self.text = text
        self.ids = self.lm.vocab.encode(text, unknown="replace")

    def __len__(self) -> int:
        return len(self.text)

    @property
    def complete(self) -> bool:
        return self.valid >= len(self.text)

    # -- storage ------------------------------------------------------------------------------------

    def _private_folder(self) -> Path:
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="rnnlens-document-"))
        return self._private

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.bin"

    def _open_arrays(self, rows: int, *, fresh: bool = False) -> None:
        """(Re)open the arrays with room for `rows` rows (raw files grow in place: rows are row-major)."""
        self.capacity = max(1, rows)
        self.arrays = {}
        for name in [*self.names, "loss"]:
            dtype = np.dtype(np.float32) if name == "loss" else self.dtype
            width = 1 if name == "loss" else self.size
            path = self._path(name)
            need = self.capacity * width * dtype.itemsize
            with open(path, "r+b" if path.exists() and not fresh else "w+b") as f:
                if f.seek(0, 2) < need:
                    f.truncate(need)
            shape = (self.capacity,) if name == "loss" else (self.capacity, width)
            self.arrays[name] = np.memmap(path, dtype=dtype, mode="r+", shape=shape)

    def _ensure_capacity(self, rows: int) -> None:
        if rows > self.capacity:
            for a in self.arrays.values():
                a.flush()
            self._open_arrays(max(rows, int(self.capacity * 1.25) + self.every))

    def _meta(self) -> dict:
        return {"format": FORMAT, "model": self._model_hash, "text": text_hash(self.text), "length": len(self.text),
                "dtype": self.dtype.name, "every": self.every, "names": self.names}

    def _load_cache(self) -> bool:
        meta_path = self.folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            if meta != self._meta():
                return False
            packed = np.load(self.folder / "checkpoints.npz")
            self._open_arrays(len(self.text))
            self.states = [self._unpack(packed, j) for j in range(len(packed["h"]))]
        except (OSError, ValueError, KeyError):
            return False
        self.valid = len(self.text)
        return True

    def _start_save(self) -> None:
        """Write the cache in a thread of its own: the document is complete and serves meanwhile. What is
        saved is taken now, under the lock (an edit then goes private and leaves the cached arrays alone)."""
        arrays, packed, meta = list(self.arrays.values()), self._pack(self.states), self._meta()
        self._saver = threading.Thread(target=self._save_cache, args=(self.folder, arrays, packed, meta),
                                       name="rnnlens-document-save", daemon=True)
        self._saver.start()

    def _save_cache(self, folder: Path, arrays: list, packed: dict, meta: dict) -> None:
        from rnnlens.fileio import atomic_write, write_json_atomic
        for a in arrays:  # on disk before meta.json says the cache is whole
            a.flush()
        atomic_write(folder / "checkpoints.npz", lambda p: _savez(p, packed))
        write_json_atomic(folder / "meta.json", meta)

    def wait_saved(self) -> None:
        """Until the cache is written (when a complete trace started writing it)."""
        if self._saver is not None:
            self._saver.join()

    def _pack(self, states: list[TraceState]) -> dict:
        """Checkpoints as arrays: h [n, layers, H] (and c for an LSTM; ffn ids for an n-NN), zeros for None."""
        cfg, H = self.lm.config, self.size
        out = {"h": np.zeros((len(states), cfg.layers, H), np.float32)}
        if cfg.cell == "lstm":
            out["c"] = np.zeros_like(out["h"])
        if cfg.cell == "ffn":
            out["ffn"] = np.stack([(s.ffn if s.ffn is not None else self.lm.model.initial_state(1, "cpu"))
                                   .numpy().reshape(-1) for s in states])
        for j, s in enumerate(states):
            for i, layer in enumerate(s.layers):
                if layer is None:
                    continue
                if cfg.cell == "lstm":
                    out["h"][j, i], out["c"][j, i] = layer[0].reshape(-1).numpy(), layer[1].reshape(-1).numpy()
                else:
                    out["h"][j, i] = layer.reshape(-1).numpy()
        return out

    def _unpack(self, packed, j: int) -> TraceState:
        cfg, H = self.lm.config, self.size
        if cfg.cell == "ffn":
            return TraceState([None] * cfg.layers, torch.from_numpy(packed["ffn"][j].copy()).reshape(1, -1))
        layers = []
        for i in range(cfg.layers):
            h = torch.from_numpy(packed["h"][j, i].copy()).reshape(1, 1, H)
            layers.append((h, torch.from_numpy(packed["c"][j, i].copy()).reshape(1, 1, H))
                          if cfg.cell == "lstm" else h)
        return TraceState(layers, None)

    def _go_private(self) -> None:
        """Before the first edit of a cached text: copy the arrays to a private folder (the cache keeps them)."""
        if not self.shared:
            return
        old, self.folder = self.folder, self._private_folder()
        rows = self.valid
        for name, a in self.arrays.items():
            a.flush()
            row_bytes = a.dtype.itemsize * (1 if a.ndim == 1 else a.shape[1])
            with open(old / f"{name}.bin", "rb") as src, open(self._path(name), "wb") as dst:
                shutil.copyfileobj(_Limited(src, rows * row_bytes), dst, 1 << 22)
        self.shared = False
        self._open_arrays(self.capacity)

    # -- tracing ------------------------------------------------------------------------------------

    def advance(self, to: int | None = None) -> int:
        """Trace until row `to` (default: the end) is done, in one pipelined pass; returns the characters traced."""
        T = len(self.text)
        to = T if to is None else min(int(to), T)
        with self.lock:
            return self._trace_span(to) if self.valid < to else 0

    def _trace_span(self, to: int) -> int:
        """Trace from row `valid` (always a checkpoint) through the block that holds row to-1, writing the
        states and losses straight into the memory maps and keeping a checkpoint at every block's end."""
        t0 = time.perf_counter()
        s, every, T = self.valid, self.every, len(self.text)
        j = s // every
        assert s == j * every
        e = min(T, -(-to // every) * every)  # whole blocks
        self._ensure_capacity(T)
        names = [*self.names, "loss"]
        tr = trace_ids(self.lm.model, self.ids[s:e], self.lm.vocab.chars, names=names, chunk=every,
                       initial_state=self.states[j], check_every=CHECK_EVERY, threads=self.threads,
                       into={n: self.arrays[n][s:e] for n in names}, next_id=self.ids[e] if e < T else None)
        prev = self.states[j].layers[-1] if s > 0 else None
        if prev is not None:  # the row before the span: its next character may have changed
            h = (prev[0] if isinstance(prev, tuple) else prev).reshape(1, -1).numpy()
            self.arrays["loss"][s - 1:s] = self._loss(h, s - 1, s)
        del self.states[j + 1:]
        self.states.extend(tr.chunk_states[:(e - s) // every])  # the states at whole blocks' ends
        self.valid = e
        self.recomputed += e - s
        took = time.perf_counter() - t0
        self.trace_seconds += took
        self._chars_per_second = (e - s) / max(took, 1e-6)
        if self.complete and self.shared and self.version == 0:
            self._start_save()
        return e - s

    @torch.no_grad()
    def _loss(self, h: np.ndarray, s: int, e: int) -> np.ndarray:
        """-log p(next character) for rows s..e-1 from the last layer's states h [e-s, H] (NaN at the end)."""
        head = self.lm.model.head
        logp = torch.log_softmax(head(torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32))
                                      .to(head.weight.device)).float(), dim=-1).cpu()
        out = np.full(e - s, np.nan, np.float32)
        nxt = self.ids[s + 1:e + 1]
        out[:len(nxt)] = -logp[torch.arange(len(nxt)), torch.from_numpy(nxt)].numpy()
        return out

    def edit(self, start: int, end: int, insert: str, *, upto: int | None = None) -> dict:
        """Replace text[start:end] by `insert`; re-trace from the checkpoint before `start` up to row `upto`
        (default: to the end; the rest is left to run_background). Returns what was recomputed."""
        with self.lock:
            T = len(self.text)
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= T):
                raise RnnlensError(f"an edit replaces text[from:to] with 0 <= from <= to <= {T}; got {start}..{end}")
            text = self.text[:start] + insert + self.text[end:]
            if not text:
                raise RnnlensError("an edit may not leave the text empty")
            t0 = time.perf_counter()
            self._go_private()
            self.text = text
            self.ids = np.concatenate([self.ids[:start], self.lm.vocab.encode(insert, unknown="replace"),
                                       self.ids[end:]]) if insert or end > start else self.ids
            j = min(start, self.valid) // self.every
            del self.states[j + 1:]
            self.valid = j * self.every
            self.version += 1
            self._window = None
            before = self.recomputed
            self.advance(len(text) if upto is None else max(upto, min(len(text), start + 1)))
            self.last_edit = {"version": self.version, "from": start, "to": end, "inserted": len(insert),
                              "retraced_from": j * self.every, "recomputed": self.recomputed - before,
                              "traced_to": self.valid, "length": len(text),
                              "seconds": round(time.perf_counter() - t0, 4)}
            self._wake.set()
            return dict(self.last_edit)

    def run_background(self) -> None:
        """Trace what is left in a daemon thread (and again after every edit), writing the cache when done."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name="rnnlens-document", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop:
            with self.lock:
                if not self.complete:  # spans of about BACKGROUND_SECONDS, so that requests interleave
                    blocks = max(2, min(64, round(BACKGROUND_SECONDS * self._chars_per_second / self.every)))
                    self._trace_span(self.valid + blocks * self.every)
                    continue
            self._wake.wait(0.5)
            self._wake.clear()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.wait_saved()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)

    def status(self) -> dict:
        return {"length": len(self.text), "traced": self.valid, "complete": self.complete, "version": self.version,
                "recomputed": self.recomputed, "checkpoint_every": self.every, "cache_hit": self.cache_hit,
                "trace_seconds": round(self.trace_seconds, 3), "last_edit": self.last_edit}

    # -- reading ------------------------------------------------------------------------------------

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Stored rows [start, stop) of `name` (traced first if need be): a view of the memory map."""
        with self.lock:
            self.advance(stop)
            return self.arrays[name][start:stop]

    def window_trace(self, start: int, stop: int, names: list[str]):
        """A trace (rnnlens.trace.Trace) of text[start:stop] with any activations, exact: re-traced from
        the checkpoint before `start` (at most `every` characters more). Returns (trace, offset of start)."""
        with self.lock:
            self.advance(stop)
            j = start // self.every
            key = (j, stop, tuple(names), self.version)
            if self._window is None or self._window[0] != key:
                tr = trace_ids(self.lm.model, self.ids[j * self.every:stop], self.lm.vocab.chars, names=names,
                               chunk=max(self.every, stop - j * self.every), initial_state=self.states[j],
                               threads=self.threads)
                self._window = (key, tr)
            return self._window[1], start - j * self.every


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


class _Limited:
    """A file object that reads at most `n` bytes (copy only the traced rows)."""

    def __init__(self, f, n: int):
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        if self.n <= 0:
            return b""
        data = self.f.read(self.n if size < 0 else min(size, self.n))
        self.n -= len(data)
        return data
