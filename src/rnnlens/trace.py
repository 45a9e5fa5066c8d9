"""Tracer and Trace: every activation of a model over a text, exactly, by a stable name.

Train fast, inspect exactly. The fused kernels (oneDNN, cuDNN) return only each layer's
hidden states h_t. Given a layer's inputs x_t and those outputs, everything they hide is
recomputed in bulk:

* the gate pre-activations for all t are one matmul: [x_t, h_{t-1}] @ [W_ih, W_hh]^T + b;
* LSTM cells are the linear recurrence c_t = f_t * c_{t-1} + i_t * g_t, solved by a blocked
  scan (a Python loop of about 3*sqrt(T/2) vectorised steps, not T);
* and the recomputation is checked: h_t = o_t * tanh(c_t) (LSTM), (1-z)*n + z*h_{t-1} (GRU),
  tanh(pre) (RNN) must equal the fused outputs. The largest difference is kept in the trace
  (`Trace.max_recompute_error`) and the tests hold it to 1e-5. It is checked on every row, or on
  every k-th (`check_every`), where what is not kept is then computed only on those rows.

Names (i = layer, from 0), each an array [T, H] for T characters and H units:

    RNN:  layer{i}.hidden
    LSTM: layer{i}.gate.input  layer{i}.gate.forget  layer{i}.gate.output  layer{i}.gate.candidate (g)
          layer{i}.cell (c)  layer{i}.hidden (h)
    GRU:  layer{i}.gate.reset  layer{i}.gate.update  layer{i}.gate.candidate (n)  layer{i}.hidden
    n-NN (ffn): layer0.hidden, its one tanh hidden layer

plus `probs` [T, V], the next-character distribution after each character, and `loss` [T],
-log p of the true next character (NaN at the last character, which has no next one).

Long texts go through in chunks with the state carried between them, so memory is bounded by
the chunk; with `out=` the arrays are written straight into a safetensors file on disk and the
returned Trace reads them memory-mapped, so a 1M-character trace needs little RAM.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnlens.errors import RnnlensError
from rnnlens.interventions import compile_interventions
from rnnlens.model import CharRNN

# The names live in rnnlens.names and the cell math in rnnlens.recurrence; these are re-exported here
# because `from rnnlens.trace import LAYER_ACTIVATIONS, parse_unit, linear_scan, ...` is public.
from rnnlens.names import GATES, LAYER_ACTIVATIONS, OUTPUTS, activation_names, parse_unit  # noqa: F401
from rnnlens.names import name as activation_name
from rnnlens.recurrence import (  # noqa: F401
    available_cores,
    input_projection,
    layer_weights,
    linear_scan,
    recompute,
    run_layer,
    torch_threads,
)

DEFAULT_CHUNK = 8192  # characters per forward chunk: bounds working memory to ~chunk * 14 * H floats per layer

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32"}
_NP_DTYPES = {v: k for k, v in _ST_DTYPES.items()}


class Trace:
    """Activations of one model over one text. `trace[name]` is a numpy array ([T, H], [T, V] or [T]).

    Arrays may be memory-mapped from a file (Trace.load, or a trace made with out=); they are
    float32 unless the trace was made with float16=True.
    """

    def __init__(self, text: str, ids: np.ndarray, arrays: Mapping[str, np.ndarray], *, cell: str,
                 layers: int, size: int, chars: list[str], max_recompute_error: float = 0.0,
                 source: str | None = None, path: Path | None = None):
        self.text = text
        self.ids = ids
        self._arrays = dict(arrays)
        self.cell, self.layers, self.size = cell, layers, size
        self.chars = list(chars)
        self.max_recompute_error = float(max_recompute_error)
        self.source = source  # the checkpoint that made it, when known
        self.path = path      # the file it lives in, when saved or loaded
        self.final_state = None  # the TraceState after the last character, when traced (not loaded)
        self.chunk_states = []   # the TraceState after each chunk, when traced
        for name, a in self._arrays.items():
            if a.shape[0] != len(text):
                raise RnnlensError(f"trace array {name} has {a.shape[0]} rows for a text of {len(text)} characters")

    def __len__(self) -> int:
        return len(self.text)

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            close = [n for n in self._arrays if name.split(".")[-1] in n][:6] or self.names()[:8]
            raise RnnlensError(f"this trace has no {name!r}; it has {', '.join(close)}"
                               f"{' ...' if len(self._arrays) > len(close) else ''}") from None

    def __repr__(self) -> str:
        return (f"Trace({self.cell} {self.layers}x{self.size}, {len(self):,} characters, "
                f"{len(self._arrays)} arrays)")

    def names(self) -> list[str]:
        return list(self._arrays)

    def unit(self, name: str, index: int) -> np.ndarray:
        """One unit's activation over the text: trace['layer0.cell'][:, 42] as float32 [T]."""
        a = self[name]
        if a.ndim != 2 or not 0 <= index < a.shape[1]:
            raise RnnlensError(f"{name} has units 0..{a.shape[1] - 1 if a.ndim == 2 else 0}; got {index}")
        return np.asarray(a[:, index], dtype=np.float32)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def info(self) -> dict:
        return {"cell": self.cell, "layers": self.layers, "size": self.size, "chars": self.chars,
                "max_recompute_error": self.max_recompute_error, "source": self.source}

    def save(self, path: str | Path) -> Path:
        """Write to one safetensors file (atomically); Trace.load reads it back memory-mapped."""
        specs = {"ids": (self.ids.shape, np.dtype(np.int32))}
        specs.update({n: (a.shape, a.dtype) for n, a in self._arrays.items()})
        with _TraceFile(path, specs, self.info()) as f:
            f.write("ids", 0, self.ids)
            for n, a in self._arrays.items():
                step = max(1, (1 << 24) // max(1, int(np.prod(a.shape[1:]))))  # copy ~64 MB at a time
                for s in range(0, a.shape[0], step):
                    f.write(n, s, a[s:s + step])
        return Trace.load(path)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Open a trace file memory-mapped; nothing in it is executed."""
        path = Path(path)
        header, offset = _read_header(path)
        meta = header.pop("__metadata__", {})
        try:
            info = json.loads(meta["rnnlens.trace"])
        except (KeyError, ValueError):
            raise RnnlensError(f"{path} is a safetensors file but not an rnnlens trace; "
                               "make one with `rnnlens trace RUN --text F --out FILE`") from None
        arrays = {}
        for name, spec in header.items():
            dtype = _NP_DTYPES.get(spec.get("dtype"))
            begin, end = spec["data_offsets"]
            shape = tuple(spec["shape"])
            if dtype is None or end - begin != int(np.prod(shape)) * dtype.itemsize:
                raise RnnlensError(f"{path} is damaged (array {name!r}); trace the text again")
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset + begin, shape=shape) \
                if end > begin else np.zeros(shape, dtype)
        ids = np.asarray(arrays.pop("ids"), dtype=np.int64)
        chars = info["chars"]
        text = "".join(chars[i] for i in ids)
        return cls(text, ids, arrays, cell=info["cell"], layers=info["layers"], size=info["size"], chars=chars,
                   max_recompute_error=info.get("max_recompute_error", 0.0), source=info.get("source"),
                   path=path)

    # Drawing belongs to rendering, a layer below inspection, so this module never imports it. The
    # package facade (rnnlens/__init__.py, which sits above every layer) plugs the drawer in here:
    # Trace.viewer = a function (trace, name, unit, start, end) -> rnnlens.render.html.UnitView.
    # Since importing rnnlens.trace always runs rnnlens/__init__.py first, it is always set.
    viewer = None

    def view(self, name: str, unit: int, start: int = 0, end: int | None = None):
        """One unit over text[start:end]: shows inline in Jupyter; .html(), .save('x.html' or 'x.png')."""
        if Trace.viewer is None:
            raise RnnlensError("no viewer: use rnnlens.render.html.UnitView(trace, name, unit, start, end)")
        return Trace.viewer(self, name, unit, start, end)


# ---------------------------------------------------------------------------------------------
# Tracing


@torch.no_grad()
def trace_ids(model: CharRNN, ids: np.ndarray, chars: list[str], *, names: Iterable[str] | None = None,
              float16: bool = False, out: str | Path | None = None, chunk: int = DEFAULT_CHUNK,
              progress: bool = False, source: str | None = None, initial_state=None,
              interventions=None, check_every: int = 1, threads: int | None = 1,
              into: Mapping[str, np.ndarray] | None = None, next_id: int | None = None) -> Trace:
    """Run `model` over the id sequence from the zero state (or from `initial_state`) and keep the
    activations named in `names` (default: all). With `out`, arrays go to that safetensors file instead of RAM.

    The recurrent state after the last character is kept as `trace.final_state` (a TraceState): pass it
    as `initial_state` to go on where this trace stopped, so that tracing a text in pieces gives the same
    arrays as tracing it whole (rnnlens.explorer re-traces an edited text from a checkpoint this way).
    `trace.chunk_states` holds the state after each chunk of `chunk` characters (the last is final_state).
    `into`: write the arrays into these (name -> array of at least len(ids) rows, any float dtype, e.g.
    memory maps; converted on the way) instead of new ones. `next_id`: the id of the character after the
    text, when known: the last row's loss is then that of predicting it, not NaN.
    Row t's `loss` needs character t+1: the last row's is NaN unless `next_id` is given.

    `interventions` (rnnlens.interventions) edit units inside the recurrence. Batched where the maths
    allows: the layers below the first edited one run fused as always; an edited layer runs step by step
    (rnnlens.recurrence.run_layer, exact); a layer above it without interventions runs fused again, on the
    edited inputs. The trace then holds the edited activations.

    `check_every`: the recomputed h is compared with the fused h on every row (1, the default) or on every
    check_every-th row only, so that what is not kept is computed only there (rnnlens.recurrence.recompute;
    the explorer's document keeps only cells and hidden states).

    `threads`: torch threads for the trace on a CPU (None: torch's setting). One by default: the trace runs
    at batch 1, where every step of the fused kernel is a small matrix-vector product and each parallel region
    a thread barrier; on a busy machine that barrier waits for a descheduled thread, and two threads ran 10
    to 100x slower than one (docs/benchmarks.md, section 11). A text of several chunks uses a second core
    all the same: each chunk's recomputation runs in a worker thread beside the next chunk's fused pass."""
    device = next(model.parameters()).device
    with torch_threads(threads if device.type == "cpu" else None):
        return _trace_ids(model, ids, chars, names=names, float16=float16, out=out, chunk=chunk, progress=progress,
                          source=source, initial_state=initial_state, interventions=interventions,
                          check_every=check_every, into=into, next_id=next_id)


def _trace_ids(model: CharRNN, ids: np.ndarray, chars: list[str], *, names, float16, out, chunk, progress, source,
               initial_state, interventions, check_every, into, next_id) -> Trace:
    cfg = model.cfg
    edits = compile_interventions(interventions, cfg.cell, cfg.layers, cfg.size) if interventions else {}
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise RnnlensError("nothing to trace: the text is empty (after dropping unknown characters)")
    all_names = activation_names(cfg.cell, cfg.layers)
    wanted = list(all_names) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in all_names]
    if unknown:
        raise RnnlensError(f"a {cfg.cell} {cfg.layers}-layer trace has no {', '.join(unknown)}; "
                           f"choose from {', '.join(all_names)}")
    if chunk < 1 or check_every < 1:
        raise RnnlensError(f"chunk and check_every must be >= 1; got {chunk} and {check_every}")
    T, H, V = len(ids), cfg.size, cfg.vocab_size
    store = np.dtype(np.float16 if float16 else np.float32)
    store_torch = torch.float16 if float16 else torch.float32  # converted by torch: numpy's float16 cast is slow
    shapes = {n: ((T, V) if n == "probs" else (T,) if n == "loss" else (T, H)) for n in wanted}
    dtypes = {n: (np.dtype(np.float32) if n == "loss" else store) for n in wanted}
    text = "".join(map(chars.__getitem__, ids.tolist()))
    info = {"cell": cfg.cell, "layers": cfg.layers, "size": H, "chars": list(chars), "source": source}

    device = next(model.parameters()).device
    layers = _single_layers(model) if model.rnn is not None else []
    first_inputs = _input_table(model, layers[0]) if layers else None  # [V, G*H]: layer 0's W_ih x + b_ih per id
    ffn_state = None  # n-NN: the last n-1 ids, carried between chunks
    state = [None] * cfg.layers  # carried between chunks: (h [1, 1, H], c [1, 1, H]) or h
    if initial_state is not None:
        if not isinstance(initial_state, TraceState) or len(initial_state.layers) != cfg.layers:
            raise RnnlensError("initial_state must be the final_state of a trace of this model")
        state = [_to_device(s, device) for s in initial_state.layers]
        ffn_state = _to_device(initial_state.ffn, device)
    max_err = 0.0
    chunk_states = []  # the TraceState after each chunk (the last is the final state)
    was_training = model.training
    model.eval()
    bar = _progress(T, progress)
    file = _TraceFile(out, {"ids": ((T,), np.dtype(np.int32)), **{n: (shapes[n], dtypes[n]) for n in wanted}},
                      info) if out is not None else None
    pool = None
    try:
        if into is not None and file:
            raise RnnlensError("give trace_ids out= (a file) or into= (arrays), not both")
        if into is not None:
            missing = [n for n in wanted if n not in into or len(into[n]) < T]
            if missing:
                raise RnnlensError(f"into= needs an array of at least {T} rows for each of {', '.join(missing)}")
            arrays = {n: into[n][:T] for n in wanted}
        else:
            arrays = None if file else {n: np.empty(shapes[n], dtypes[n]) for n in wanted}

        def store(name: str, start: int, value: torch.Tensor) -> None:
            if file:
                file.write(name, start, value.to("cpu", store_torch if name != "loss" else torch.float32).numpy())
            else:  # torch converts to the array's dtype on the way (numpy's float16 cast is slow)
                torch.from_numpy(arrays[name][start:start + len(value)]).copy_(value)

        @torch.no_grad()  # grad mode is per thread: the worker's own
        def finish(s: int, e: int, seen: list, x: torch.Tensor) -> float:
            """Chunk s..e's second half: what the fused layers hid, recomputed from their inputs and outputs
            (`seen`: (layer index, layer, inputs, fused outputs, state before)), stored; then probs/loss
            from the last layer's outputs x [1, n, H]. Returns the largest recomputation error."""
            err = 0.0
            for i, layer, x_in, fused, before in seen:
                mine = {activation_name(i, a): a for a in LAYER_ACTIVATIONS[cfg.cell]}
                keep = [a for name, a in mine.items() if name in shapes]
                gi = first_inputs[ids_t[s:e]] if i == 0 else None
                acts, recomputed = recompute_layer(cfg.cell, layer, x_in[0], fused[0], before, keep, check_every, gi)
                err = max(err, float((recomputed - fused[0, ::check_every]).abs().max()))
                for name, a in mine.items():
                    if name in shapes:
                        store(name, s, acts[a])
            if "probs" in shapes or "loss" in shapes:
                logp = torch.log_softmax(model.head(x[0]).float(), dim=-1)  # [n, V]
                if "probs" in shapes:
                    store("probs", s, logp.exp())
                if "loss" in shapes:
                    nxt = targets[s + 1:e + 1]  # the true next characters (one fewer at the end, unless next_id)
                    loss = torch.full((e - s,), float("nan"))
                    loss[:len(nxt)] = -logp[torch.arange(len(nxt), device=device), nxt].cpu()
                    store("loss", s, loss)
            bar.update(e - s)
            return err

        # On a CPU with cores to spare, chunk k's recomputation runs in a second thread while this one runs
        # chunk k+1's fused layers (which need only chunk k's fused state): at batch 1 the fused kernel is a
        # chain of small matrix-vector products that one core runs no slower than two, so the second core
        # is otherwise idle. Interventions step layers exactly, in order, on this thread: no pipeline then.
        if (device.type == "cpu" and not edits and model.rnn is not None and T > chunk
                and available_cores() > 1):
            from concurrent.futures import ThreadPoolExecutor
            # the worker gets this thread's torch thread count (a new thread would start from torch's default)
            pool = ThreadPoolExecutor(1, thread_name_prefix="rnnlens-trace", initializer=torch.set_num_threads,
                                      initargs=(torch.get_num_threads(),))
        pending = []  # at most one chunk's second half in flight: memory stays ~2 chunks

        if file:
            file.write("ids", 0, ids)
        ids_t = torch.from_numpy(ids).to(device)
        targets = ids_t if next_id is None else torch.cat([ids_t, ids_t.new_tensor([int(next_id)])])
        for s in range(0, T, chunk):
            e = min(T, s + chunk)
            seen = []
            if model.rnn is None:  # n-NN: its hidden layer is computed exactly as in training
                x, ffn_state = model.ffn_hidden(ids_t[None, s:e], ffn_state)  # [1, n, H]
                if "layer0.hidden" in shapes:
                    store("layer0.hidden", s, x[0])
            else:
                x = model.inputs(ids_t[None, s:e])  # [1, n, I]
            for i, layer in enumerate(layers):
                if i in edits:
                    x = _edited_layer(cfg.cell, layer, i, x, state, edits[i], s, shapes, store)
                    continue
                fused, new_state = layer(x, state[i])  # [1, n, H]
                if any(activation_name(i, a) in shapes for a in LAYER_ACTIVATIONS[cfg.cell]):
                    seen.append((i, layer, x, fused, state[i]))  # only probs/loss wanted: the fused pass suffices
                state[i] = new_state
                x = fused
            chunk_states.append(TraceState([_to_device(st, "cpu") for st in state], _to_device(ffn_state, "cpu")))
            if pool is None:
                max_err = max(max_err, finish(s, e, seen, x))
                continue
            pending.append(pool.submit(finish, s, e, seen, x))
            if len(pending) > 1:
                max_err = max(max_err, pending.pop(0).result())
        for job in pending:
            max_err = max(max_err, job.result())
        info["max_recompute_error"] = max_err
        final = chunk_states[-1]
        if file:
            file.info = info
            file.close()
            trace = Trace.load(out)
            trace.source = source
            trace.final_state, trace.chunk_states = final, chunk_states
            return trace
        trace = Trace(text, ids, arrays, max_recompute_error=max_err, **{k: v for k, v in info.items()
                                                                        if k != "max_recompute_error"})
        trace.final_state, trace.chunk_states = final, chunk_states
        return trace
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        model.train(was_training)
        if file:
            file.abort()


def _edited_layer(cell: str, layer: nn.Module, i: int, x: torch.Tensor, state: list, edit, t0: int, shapes,
                  store) -> torch.Tensor:
    """Layer i step by step with its interventions over x [1, n, I], from state[i] (updated in place); stores
    the activations wanted and returns the layer's (edited) outputs [1, n, H]."""
    H = layer.hidden_size
    w_ih, b_ih, w_hh, b_hh = layer_weights(layer, 0)
    zeros = x.new_zeros(1, H)
    if state[i] is None:
        st = [zeros, zeros.clone()] if cell == "lstm" else [zeros]
    elif cell == "lstm":
        st = [state[i][0].reshape(1, H), state[i][1].reshape(1, H)]
    else:
        st = [state[i].reshape(1, H)]
    mine = {activation_name(i, a): a for a in LAYER_ACTIVATIONS[cell]}
    keep = tuple(a for n, a in mine.items() if n in shapes)
    acts, st = run_layer(cell, input_projection(x[0], w_ih, b_ih), st, w_hh, b_hh,
                         getattr(layer, "nonlinearity", "tanh"), edit, t0, keep)
    for a in keep:
        store(activation_name(i, a), t0, acts[a])
    state[i] = (st[0][None], st[1][None]) if cell == "lstm" else st[0][None]
    return acts["hidden"][None]


class TraceState:
    """A model's recurrent state between two characters: per layer (h, c) each [1, 1, H] (LSTM) or h
    [1, 1, H] (GRU, RNN), None for the zero state; for an n-NN, the last n-1 ids. On the CPU, immutable
    by convention (the tracer never writes into it), so one state may start many traces."""

    def __init__(self, layers: list, ffn=None):
        self.layers, self.ffn = list(layers), ffn

    def nbytes(self) -> int:
        def size(s):
            if s is None:
                return 0
            if isinstance(s, tuple):
                return sum(size(x) for x in s)
            return s.numel() * s.element_size()
        return sum(size(s) for s in self.layers) + size(self.ffn)


def _to_device(s, device):
    if s is None:
        return None
    if isinstance(s, tuple):
        return tuple(x.to(device) for x in s)
    return s.to(device)


def recompute_layer(cell: str, layer: nn.Module, x: torch.Tensor, h: torch.Tensor, state,
                    keep: Iterable[str] | None = None, check_every: int = 1, gi: torch.Tensor | None = None):
    """What a fused single-layer `layer` computed inside, from its inputs and outputs (rnnlens.recurrence).

    x [n, I] the layer's inputs, h [n, H] its fused outputs, state its initial state (None for
    zeros; LSTM (h0, c0) each [1, 1, H]). Returns ({activation: [n, H]} for the activations in `keep`
    (default: all), recomputed h [rows 0, check_every, ..., H]); the 'hidden' activation is the fused h itself.
    gi [n, G*H]: the input projections W_ih x + b_ih when known (computed from x otherwise).
    """
    H = h.shape[1]
    zeros = h.new_zeros(1, H)
    if state is None:
        h0, c0 = zeros, zeros
    elif cell == "lstm":
        h0, c0 = state[0].reshape(1, H), state[1].reshape(1, H)
    else:
        h0, c0 = state.reshape(1, H), None
    w_ih, b_ih, w_hh, b_hh = layer_weights(layer, 0)
    if gi is None:
        gi = input_projection(x, w_ih, b_ih)
    acts = recompute(cell, gi, h, h0, c0, w_hh, b_hh,
                     getattr(layer, "nonlinearity", "tanh"), keep, check_every)
    recomputed = acts["hidden"]
    acts["hidden"] = h
    return acts, recomputed


def _input_table(model: CharRNN, layer: nn.Module) -> torch.Tensor:
    """The first layer's input projection W_ih x + b_ih for every character id [V, G*H]: its inputs are an
    embedding or one-hot row per id, so the projections of a text are rows of this table (a gather, not a
    [T, I] x [I, G*H] matmul)."""
    w_ih, b_ih, _, _ = layer_weights(layer, 0)
    every_id = torch.arange(model.cfg.input_vocab, device=w_ih.device)
    return input_projection(model.inputs(every_id[None])[0], w_ih, b_ih)


def _single_layers(model: CharRNN) -> list[nn.Module]:
    """The fused stack as separate one-layer modules with the same weights (eval mode: no dropout
    between layers), so each layer's inputs and outputs can be seen."""
    rnn, cfg = model.rnn, model.cfg
    # kept on the model (the explorer traces many short pieces): rebuilt when its weights are new tensors
    key = tuple(p.data_ptr() for p in rnn.parameters())
    cached = getattr(model, "_rnnlens_single_layers", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    extra = {"nonlinearity": rnn.nonlinearity} if cfg.cell == "rnn" else {}
    layers = []
    for i in range(cfg.layers):
        one = type(rnn)(cfg.input_size if i == 0 else cfg.size, cfg.size, num_layers=1, batch_first=True, **extra)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{kind}_l0").data = getattr(rnn, f"{kind}_l{i}").data
        layers.append(one.eval())
    model._rnnlens_single_layers = (key, layers)
    return layers


def _progress(total: int, enabled: bool):
    if enabled:
        from tqdm import tqdm
        return tqdm(total=total, unit="char", unit_scale=True, desc="trace", leave=False)

    class _Silent:
        def update(self, n):
            pass

        def close(self):
            pass
    return _Silent()


# ---------------------------------------------------------------------------------------------
# The file format: safetensors (8-byte little-endian header length, JSON header, raw arrays),
# written in place chunk by chunk so that a trace larger than RAM streams to disk.


class _TraceFile:
    def __init__(self, path, specs: dict[str, tuple[tuple, np.dtype]], info: dict):
        self.path = Path(path)
        self.info = info
        self.specs = specs
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        header, pos = {}, 0
        for name, (shape, dtype) in specs.items():
            size = int(np.prod(shape)) * dtype.itemsize
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [pos, pos + size]}
            pos += size
        self.header = header
        # room for the metadata written at close (its length is known only then): reserve generously
        reserve = len(json.dumps(info)) + 4096
        self.header_bytes = self._encode_header(info, reserve)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.tmp, "wb") as f:
                f.truncate(len(self.header_bytes) + pos)
        except OSError as e:
            raise RnnlensError(f"cannot write the trace to {self.path}: {e.strerror or e}") from None
        self.fd = os.open(self.tmp, os.O_WRONLY)

    def write(self, name: str, row: int, values: np.ndarray) -> None:
        """Rows [row, row + len(values)) of array `name`: a contiguous byte range of the file, written with
        pwrite rather than through a memory map, so the pages written never count in this process's RSS."""
        shape, dtype = self.specs[name]
        data = np.ascontiguousarray(values, dtype=dtype)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        offset = len(self.header_bytes) + self.header[name]["data_offsets"][0] + row * row_bytes
        view = memoryview(data).cast("B")
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as e:
            raise RnnlensError(f"cannot write the trace to {self.path}: {e.strerror or e}; free some disk space "
                               "or store less (--names, --float16)") from None

    def _encode_header(self, info: dict, length: int | None = None) -> bytes:
        body = json.dumps({"__metadata__": {"rnnlens.trace": json.dumps(info)}, **self.header}).encode()
        length = length or len(body)
        if len(body) > length:
            raise RnnlensError("trace metadata outgrew its reserved space")  # 4 KB of slack: only a float is added at close
        total = -(-(length + 8) // 8) * 8 - 8  # keep the arrays 8-byte aligned
        return struct.pack("<Q", total) + body + b" " * (total - len(body))

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None:
            self.close()
        self.abort()

    def close(self) -> None:
        head = self._encode_header(self.info, len(self.header_bytes) - 8)
        os.pwrite(self.fd, head, 0)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def _read_header(path: Path) -> tuple[dict, int]:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("too short")
            (n,) = struct.unpack("<Q", raw)
            if n > 1 << 30:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
        return header, 8 + n
    except FileNotFoundError:
        raise RnnlensError(f"no such trace file: {path}; make one with `rnnlens trace RUN --text F --out {path}`") \
            from None
    except (ValueError, UnicodeDecodeError, OSError):
        raise RnnlensError(f"{path} is not a trace file (unreadable safetensors header); trace the text again") \
            from None
