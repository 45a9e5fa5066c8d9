"""The experiment grid of Karpathy et al. 2015 (their Table 1): cell type x depth x size.

`run_grid` trains every cell in a process of its own (`python -m rnnlens.grid.worker SPEC.json`, which
calls rnnlens.plan.train), N at a time,
then evaluates each cell's best checkpoint on the test split, fits the n-gram baseline, and
writes the table of test losses and a 2-D map of the models by their test predictions.

Parameter matching: the sizes name LSTM widths. With match_params, the GRU and RNN cells of a
column get the width whose parameter count (rnnlens.model.count_parameters: embedding,
recurrent layers, output layer) is closest to the LSTM's at the same depth
(rnnlens.model.size_for_params).

Resumable cell by cell. The run folder of a cell is the truth about it, not the manifest:
  * no checkpoint             -> train it from scratch;
  * last.safetensors, not done -> resume it (an interrupted run goes on exactly);
  * last.safetensors, done     -> skip it.
A cell that fails (its worker writes the one-line error to logs/<name>.result.json) is recorded with it and the others go
on; running the same command again retries it. The settings that shape the results (corpus,
split, matching, every training flag but the device and the logging) are stored in grid.json,
and a re-run with different ones is refused rather than mixing two grids in one table.

Layout of the output folder GRID:
    grid.json                      the manifest (written atomically): settings, a record per cell
    cells/<type>-<L>x<width>/      each cell's run folder (best.safetensors, last.safetensors, ...)
    cells/<name>/test.json         its test evaluation (reused while best.safetensors is unchanged)
    cells/<name>/excerpt_logp.npy  log p(true char) on the map's test excerpt, [map_chars - 1]
    logs/<name>.log                output of every training attempt of that cell
    ngram-<order>/                 the n-gram baseline (rnnlens.ngram), when available
    table.md table.csv table.html  the table of test losses; results.csv one row per model
    map.png map.json               the 2-D map of the models
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlens.checkpoint import BEST, LAST
from rnnlens.errors import RnnlensError
from rnnlens.fileio import atomic_write, write_json_atomic
from rnnlens.model import (
    CELLS,
    ModelConfig,
    check_range,
    count_parameters,
    size_for_params,
)
from rnnlens.recurrence import available_cores
from rnnlens.runs import read_json
from rnnlens.trainer import RESUMABLE_OPTIONS

FORMAT = "rnnlens-grid"
DEFAULT_TYPES = ("lstm", "gru", "rnn")
DEFAULT_LAYERS = (1, 2, 3)
DEFAULT_SIZES = (64, 128, 256, 512)
DEFAULT_MAP_CHARS = 20_000
# Options of `rnnlens train` each cell sets itself, so a grid does not take them.
CELL_OPTIONS = ("model", "layers", "size", "params", "context", "out", "resume", "force", "quiet")
MODEL_OPTIONS = ("dropout", "input", "embedding_size", "init", "init_range", "forget_bias")
# Options that may differ between two invocations on one grid: they do not change what is learned.
UNCOMPARED = ("device", "log_every", "tensorboard", "compile", "eval_batch_size")


# --------------------------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class GridCell:
    cell_type: str   # lstm, gru or rnn
    layers: int
    column: int      # the LSTM width that names the column
    size: int        # this cell's width (= column for an LSTM or without matching)
    params: int      # its parameter count
    target: int      # the LSTM's parameter count at this depth and column

    @property
    def name(self) -> str:
        return f"{self.cell_type}-{self.layers}x{self.size}"

    @property
    def mismatch(self) -> float:
        """(params - LSTM params) / LSTM params."""
        return (self.params - self.target) / self.target

    def to_dict(self) -> dict:
        return {"cell": self.cell_type, "layers": self.layers, "column": self.column, "size": self.size,
                "params": self.params, "lstm_params": self.target}


def parse_list(flag: str, value, *, choices=None) -> list:
    """'lstm,gru' or ['lstm', 'gru'] -> a list without duplicates; integers unless `choices` is given."""
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    items = [i for i in items if i != ""]
    if not items:
        raise RnnlensError(f"{flag} is empty; give a comma-separated list, e.g. "
                           + (",".join(choices) if choices else "1,2,3"))
    out = []
    for item in items:
        if choices is not None:
            if item not in choices:
                raise RnnlensError(f"{flag}: unknown {item!r}; choose from {', '.join(choices)}")
        else:
            try:
                item = int(item)
            except (TypeError, ValueError):
                raise RnnlensError(f"{flag} must list whole numbers, e.g. 64,128; got {item!r}") from None
            check_range(flag, item, 1, None, integer=True)
        if item in out:
            raise RnnlensError(f"{flag} lists {item} twice; give each value once")
        out.append(item)
    return out


def plan_cells(types, layers, sizes, *, vocab_size: int, match_params: bool = True, **model_options) -> list[GridCell]:
    """Every cell of the grid in table order (type, then depth, then size).

    model_options: ModelConfig fields other than cell, layers, size (input and embedding_size change
    parameter counts; the others are validated here so that a bad value fails before any training).
    """
    types = parse_list("--types", types, choices=CELLS)
    layers = parse_list("--layers", layers)
    sizes = parse_list("--sizes", sizes)
    unknown = set(model_options) - set(MODEL_OPTIONS)
    if unknown:
        raise RnnlensError(f"unknown model option(s) for a grid: {', '.join(sorted(unknown))}")
    cells = []
    for cell in types:
        for n in layers:
            for column in sizes:
                lstm = ModelConfig(vocab_size=vocab_size, cell="lstm", layers=n, size=column, **model_options)
                target = count_parameters(lstm)
                cfg = ModelConfig(vocab_size=vocab_size, cell=cell, layers=n, size=column, **model_options)
                if match_params and cell != "lstm":
                    cfg.size = size_for_params(cfg, target)
                cells.append(GridCell(cell, n, column, cfg.size, count_parameters(cfg), target))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):  # two columns matched to one width: the table would be ambiguous
        dup = next(n for n in names if names.count(n) > 1)
        raise RnnlensError(f"two cells of the grid get the same width ({dup}); choose --sizes further apart")
    return cells


def format_plan(cells: list[GridCell], states: dict[str, str] | None = None) -> str:
    """The dry-run listing: one line per cell with its width and parameter count."""
    lines = [f"{'cell':16s} {'type':5s} {'layers':>6s} {'column':>6s} {'width':>6s} {'params':>12s} "
             f"{'vs LSTM':>8s}" + ("  state" if states else "")]
    for c in cells:
        line = (f"{c.name:16s} {c.cell_type:5s} {c.layers:6d} {c.column:6d} {c.size:6d} {c.params:12,d} "
                f"{100 * c.mismatch:+7.2f}%")
        if states:
            line += f"  {states.get(c.name, '')}"
        lines.append(line)
    total = sum(c.params for c in cells)
    lines.append(f"{len(cells)} cells, {total:,} parameters in all")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- run folders

def run_state(run_dir: Path) -> dict | None:
    """The training state in a run folder's last.safetensors (read from its JSON header only),
    None when there is none, {'damaged': True} when it cannot be read."""
    last = Path(run_dir) / LAST
    if not last.exists():
        return None
    try:
        from safetensors import safe_open
        with safe_open(str(last), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["meta"])
        return dict(meta["state"])
    except Exception:  # any damage: let `rnnlens train --resume` say exactly what is wrong
        return {"damaged": True}


def cell_action(run_dir: Path) -> tuple[str, dict | None]:
    """What a grid does with a cell: 'train' (from scratch), 'restart' (a folder with leftovers but no
    checkpoint: from scratch with --force), 'resume' or 'skip' (finished)."""
    run_dir = Path(run_dir)
    state = run_state(run_dir)
    if state is None:
        return ("restart" if run_dir.is_dir() and any(run_dir.iterdir()) else "train"), None
    if state.get("done") and (run_dir / BEST).exists():
        return "skip", state
    return "resume", state


def cell_state_text(run_dir: Path) -> str:
    """A cell's run folder in words, for --dry-run."""
    action, state = cell_action(run_dir)
    if action == "train":
        return "new"
    if action == "restart":
        return "new (leftovers in its folder)"
    if action == "skip":
        return f"done (step {state.get('step')})"
    if state.get("damaged"):
        return "damaged checkpoint"
    return f"interrupted at step {state.get('step')}"


def visible_gpus(device: str) -> list[str]:
    """The GPUs a grid spreads its workers over: more than one CUDA device and --device cuda or auto."""
    if device not in ("cuda", "auto"):
        return []
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(count)]
    return ids[:count]


def worker_env(slot: int, threads: int, gpus: list[str], base: dict | None = None) -> dict:
    """The environment of the process a worker slot starts: its thread count, and its own GPU when there are several."""
    env = dict(os.environ if base is None else base)
    # N processes of T threads each must not ask for more cores than there are: OpenMP
    # threads that spin-wait on a shared core slow everything down many times
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


# --------------------------------------------------------------------------------------------- the runner

@dataclass
class GridResult:
    out: Path
    manifest: dict
    table: object = None        # rnnlens.analysis.grid_results.GridTable
    map: object = None          # rnnlens.analysis.grid_results.ModelMap, None when no model finished
    files: dict = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)


class _Manifest:
    """grid.json, rewritten atomically after every change; threads share it under a lock."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data
        self.lock = threading.Lock()

    def update(self, name: str, **fields) -> None:
        with self.lock:
            self.data["cells"].setdefault(name, {}).update(fields)
            self.save_locked()

    def set(self, key: str, value) -> None:
        with self.lock:
            self.data[key] = value
            self.save_locked()

    def save_locked(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(self.path, self.data)


def _split_options(options: dict) -> tuple[dict, dict]:
    """Keyword options -> (model options, train options), each checked against its dataclass."""
    from rnnlens.trainer import TrainConfig
    taken = [k for k in options if k in CELL_OPTIONS]
    if taken:
        raise RnnlensError(f"a grid sets --{taken[0].replace('_', '-')} for each cell itself; drop it "
                           "(use --types, --layers and --sizes)")
    model = {k: v for k, v in options.items() if k in MODEL_OPTIONS and v is not None}
    train = {k: v for k, v in options.items() if k not in MODEL_OPTIONS and v is not None}
    unknown = set(train) - set(TrainConfig.__dataclass_fields__) - {"data", "glob", "split", "encoding_errors"}
    if unknown:
        raise RnnlensError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return model, train


def plan_grid(data: str, *, types=DEFAULT_TYPES, layers=DEFAULT_LAYERS, sizes=DEFAULT_SIZES,
              match_params: bool = True, glob: str | None = None, split=None, encoding_errors: str = "strict",
              **options) -> tuple[list[GridCell], object]:
    """The cells of a grid and the prepared corpus (whose vocabulary sets the parameter counts)."""
    from rnnlens.corpus import load_corpus
    from rnnlens.plan import apply_preset
    model_options, _ = _split_options(apply_preset(options.pop("preset", None), options, CELL_OPTIONS))
    corpus = load_corpus(data, glob=glob, split=split, encoding_errors=encoding_errors)
    cells = plan_cells(types, layers, sizes, vocab_size=len(corpus.vocab), match_params=match_params,
                       **model_options)
    return cells, corpus


def run_grid(data: str, out: str | Path, *, types=DEFAULT_TYPES, layers=DEFAULT_LAYERS, sizes=DEFAULT_SIZES,
             match_params: bool = True, workers: int | None = None, threads: int | None = None,
             ngram_order: int | None = 20, map_chars: int = DEFAULT_MAP_CHARS, map_method: str = "pca",
             glob: str | None = None, split=None, encoding_errors: str = "strict", log=None,
             **options) -> GridResult:
    """Train, evaluate, tabulate and map a grid into `out` (see the module docstring).

    options: `rnnlens train`'s options as keywords (max_steps, time_budget, batch_size, lr, dropout,
    device, ...), given to every cell. ngram_order=None skips the n-gram baseline.
    """
    from rnnlens.analysis.grid_results import MAP_METHODS
    from rnnlens.plan import train_config
    log = log or (lambda msg: print(msg, flush=True))
    from rnnlens.plan import apply_preset
    model_options, train_options = _split_options(apply_preset(options.pop("preset", None), options, CELL_OPTIONS))
    cfg = train_config(dict(data=data, glob=glob, split=split, encoding_errors=encoding_errors, **train_options))
    if not any([cfg.max_steps, cfg.max_epochs, cfg.time_budget]):
        raise RnnlensError("give a stopping rule for every cell: --max-epochs, --max-steps or --time-budget")
    if map_method not in MAP_METHODS:
        raise RnnlensError(f"--map-method must be one of {', '.join(MAP_METHODS)}; got {map_method!r}")
    check_range("--map-chars", map_chars, 2, None, integer=True)
    if ngram_order is not None:
        check_range("--ngram-order", ngram_order, 1, None, integer=True)
    gpus = visible_gpus(cfg.device)
    if workers is None:
        workers = len(gpus) or 1
    check_range("--workers", workers, 1, None, integer=True)
    threads = threads if threads is not None else max(1, available_cores() // workers)
    check_range("--threads", threads, 1, None, integer=True)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RnnlensError(f"--out {out} is a file, not a folder; choose another path")

    cells, corpus = plan_grid(str(data), types=types, layers=layers, sizes=sizes, match_params=match_params,
                              glob=glob, split=cfg.split, encoding_errors=encoding_errors, **model_options)
    data_arg = str(Path(data).resolve()) if Path(data).expanduser().exists() else str(data)
    settings = {"data": data_arg, "content_hash": corpus.content_hash, "glob": glob,
                "split": list(corpus.split_fractions), "encoding_errors": encoding_errors,
                "match_params": match_params,
                "options": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in sorted({**model_options, **train_options}.items()) if k not in UNCOMPARED}}
    manifest = _open_manifest(out, settings)
    runner = _Runner(out, cells, corpus, manifest, data_arg=data_arg, glob=glob, split=corpus.split_fractions,
                     encoding_errors=encoding_errors, model_options=model_options, train_options=train_options,
                     workers=workers, threads=threads, gpus=gpus, log=log)
    def count(n, what):
        return f"{n} {what}{'s' if n != 1 else ''}"
    dims = " x ".join([count(len(dict.fromkeys(c.cell_type for c in cells)), "type"),
                       count(len(dict.fromkeys(c.layers for c in cells)), "depth"),
                       count(len(dict.fromkeys(c.column for c in cells)), "size")])
    where = f"{len(gpus)} GPUs" if gpus else f"{threads} CPU thread{'s' if threads > 1 else ''} each"
    log(f"grid {out}: {len(cells)} cells ({dims}) on {corpus.name} ({len(corpus):,} characters, vocabulary "
        f"{len(corpus.vocab)}); {workers} worker{'s' if workers > 1 else ''}, {where}")
    interrupted = runner.train_all()
    result = GridResult(out=out, manifest=manifest.data)
    result.failed = [c.name for c in cells if manifest.data["cells"][c.name].get("status") == "failed"]
    result.interrupted = [c.name for c in cells if manifest.data["cells"][c.name].get("status") == "interrupted"]
    if interrupted:
        return result
    runner.evaluate_all(map_chars)
    result.failed = [c.name for c in cells if manifest.data["cells"][c.name].get("status") == "failed"]
    result.interrupted = [c.name for c in cells if manifest.data["cells"][c.name].get("status") == "interrupted"]
    ngram = runner.ngram(ngram_order, map_chars) if ngram_order is not None else None
    if ngram_order is None:
        log("n-gram baseline: skipped (--no-ngram)")
    result.table, result.map, result.files = runner.write_outputs(ngram, map_method)
    return result


def _open_manifest(out: Path, settings: dict) -> _Manifest:
    path = out / "grid.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise RnnlensError(f"{path} is damaged ({e}); delete it (the cells' run folders stay the truth) "
                               "and run the grid again") from None
        if data.get("format") != FORMAT:
            raise RnnlensError(f"{path} is not an rnnlens grid manifest; choose another --out")
        old = data.get("settings", {})
        diff = _settings_diff(old, settings)
        if diff:
            raise RnnlensError(f"{out} holds a grid made with other settings ({'; '.join(diff)}); run it with the "
                               "same settings to resume it, or choose another --out")
        data["settings"] = settings
        data.setdefault("cells", {})
    else:
        out.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "settings": settings, "cells": {}}
    manifest = _Manifest(path, data)
    with manifest.lock:
        manifest.save_locked()
    return manifest


def _settings_diff(old: dict, new: dict) -> list[str]:
    diff = []
    if old.get("content_hash") != new["content_hash"]:
        diff.append(f"the corpus was {old.get('data')!r}, now {new['data']!r} with other content")
    for key in ("glob", "split", "encoding_errors", "match_params"):
        if old.get(key) != new[key]:
            diff.append(f"{key} was {old.get(key)!r}, now {new[key]!r}")
    a, b = old.get("options", {}), new["options"]
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            flag = "--" + k.replace("_", "-")
            diff.append(f"{flag} was {'unset' if k not in a else repr(a[k])}, now "
                        f"{'unset' if k not in b else repr(b[k])}")
    return diff


class _Runner:
    def __init__(self, out: Path, cells: list[GridCell], corpus, manifest: _Manifest, *, data_arg: str, glob, split,
                 encoding_errors: str, model_options: dict, train_options: dict, workers: int, threads: int,
                 gpus: list[str], log):
        self.out, self.cells, self.corpus, self.manifest = out, cells, corpus, manifest
        self.data_arg, self.glob, self.split, self.encoding_errors = data_arg, glob, split, encoding_errors
        self.model_options, self.train_options = model_options, train_options
        self.workers, self.threads, self.gpus, self.log = workers, threads, gpus, log
        self.stop = threading.Event()
        self.print_lock = threading.Lock()
        self.python = [sys.executable]

    def say(self, msg: str) -> None:
        with self.print_lock:
            self.log(msg)

    def run_dir(self, cell: GridCell) -> Path:
        return self.out / "cells" / cell.name

    # ------------------------------------------------------------------------- training
    def spec(self, cell: GridCell, action: str, result: Path) -> dict:
        """The keyword arguments of rnnlens.plan.train for this cell (what rnnlens.grid.worker runs)."""
        run_dir = str(self.run_dir(cell))
        if action == "resume":
            return {"resume": run_dir, "result": str(result),
                    **{k: v for k, v in self.train_options.items() if k in RESUMABLE_OPTIONS}}
        return {"out": run_dir, "force": action == "restart", "result": str(result), "data": self.data_arg,
                "glob": self.glob, "split": list(self.split) if self.split else None,
                "encoding_errors": self.encoding_errors, "model": cell.cell_type, "layers": cell.layers,
                "size": cell.size, **self.model_options, **self.train_options}

    def env(self, slot: int) -> dict:
        return worker_env(slot, self.threads, self.gpus)

    def train_all(self) -> bool:
        """Train every unfinished cell; True when Ctrl-C stopped the grid."""
        for cell in self.cells:  # the plan first, so grid.json lists every cell from the start
            rec = self.manifest.data["cells"].get(cell.name, {})
            self.manifest.data["cells"][cell.name] = {**rec, **cell.to_dict(), "status": rec.get("status", "pending")}
        with self.manifest.lock:
            self.manifest.save_locked()
        order = list(self.cells)
        if self.workers > 1:  # longest first: the pool then ends with small cells, not one big straggler
            order.sort(key=lambda c: -c.params)
        slots = list(range(self.workers))
        slot_lock = threading.Lock()
        counter = iter(range(1, len(order) + 1))

        def task(cell):
            if self.stop.is_set():
                return
            with slot_lock:
                slot = slots.pop()
                number = next(counter)
            try:
                self.train_cell(cell, slot, f"[{number}/{len(order)}]")
            finally:
                with slot_lock:
                    slots.append(slot)

        pool = ThreadPoolExecutor(max_workers=self.workers)
        futures = [pool.submit(task, c) for c in order]
        try:
            pending = set(futures)
            while pending:  # a timeout keeps the main thread able to take Ctrl-C
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            # the cells' processes got the same Ctrl-C from the terminal: each saves and stops
            self.stop.set()
            self.say("Ctrl-C: waiting for the running cells to save; run the same command again to resume")
            pool.shutdown(wait=True, cancel_futures=True)
            return True
        pool.shutdown(wait=True)
        for f in futures:
            f.result()  # a bug in the runner itself must not pass silently
        return False

    def train_cell(self, cell: GridCell, slot: int, number: str) -> None:
        run_dir = self.run_dir(cell)
        action, state = cell_action(run_dir)
        rec = self.manifest.data["cells"].get(cell.name, {})
        if action == "skip":
            self.manifest.update(cell.name, status="done", action="skipped", **_state_fields(state))
            self.say(f"{number} skip {cell.name}: done at step {state.get('step')}")
            return
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{cell.name}.log"
        for stale in ("test.json", "excerpt_logp.npy"):
            (run_dir / stale).unlink(missing_ok=True)
        result_path = logs / f"{cell.name}.result.json"
        result_path.unlink(missing_ok=True)
        spec_path = logs / f"{cell.name}.spec.json"
        write_json_atomic(spec_path, self.spec(cell, action, result_path))
        cmd = [*self.python, "-m", "rnnlens.grid.worker", str(spec_path)]
        started = f" at step {state.get('step')}" if action == "resume" and state and "step" in state else ""
        verb = {"train": "train", "restart": "restart", "resume": "resume"}[action]
        self.say(f"{number} {verb} {cell.name}{started} ({cell.params:,} parameters)")
        self.manifest.update(cell.name, status="running", action={"resume": "resumed"}.get(action, "trained"),
                             error=None, log=str(log_path.relative_to(self.out)),
                             attempts=rec.get("attempts", 0) + 1,
                             resumed_from_step=state.get("step") if action == "resume" and state else None,
                             test_loss=None, test_bpc=None, test_chars=None,
                             started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        t0 = time.perf_counter()
        with open(log_path, "a") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            f.flush()
            code = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=self.env(slot)).returncode
        wall = time.perf_counter() - t0
        wall_total = rec.get("wall_seconds", 0.0) + wall if action == "resume" else wall
        new_state = run_state(run_dir) or {}
        fields = dict(wall_seconds=round(wall_total, 3), exit_code=code, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      **_state_fields(new_state))
        if code == 0 and new_state.get("done"):
            self.manifest.update(cell.name, status="done", **fields)
            best = new_state.get("best_val")
            self.say(f"done {cell.name}: step {new_state.get('step')}, {new_state.get('elapsed', 0):.1f} s of "
                     f"training" + (f", best val {best:.4f} nats/char" if best is not None else "")
                     + f" ({wall:.1f} s wall)")
        elif code in (130, -2) or (code == 0 and not new_state.get("done")):
            self.manifest.update(cell.name, status="interrupted", **fields)
            self.say(f"interrupted {cell.name} at step {new_state.get('step')}; it resumes on the next run")
        else:
            outcome = read_json(result_path)
            error = outcome.get("error") or f"the worker exited with status {code} without a word; see its log"
            if new_state.get("damaged"):
                error += f"; delete {run_dir} to train this cell from scratch"
            self.manifest.update(cell.name, status="failed", error=error, **fields)
            self.say(f"FAILED {cell.name} (exit {code}): {error} (log: {log_path})")

    # ------------------------------------------------------------------------- evaluation
    def eval_device(self) -> str:
        from rnnlens.trainer import resolve_device
        return resolve_device(self.train_options.get("device", "auto")).type

    def excerpt(self, map_chars: int) -> str:
        return self.corpus.text("test", 0, map_chars)

    def evaluate_all(self, map_chars: int) -> None:
        """Each finished cell's best checkpoint on the test split, and its log p on the map's excerpt."""
        from rnnlens.recurrence import torch_threads
        excerpt = self.excerpt(map_chars)
        key = hashlib.sha256(excerpt.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        # --threads binds here too: on a busy machine, more threads than free cores make the
        # evaluation many times slower, not faster (spin-waiting OpenMP threads)
        with torch_threads(self.threads):
            self._evaluate_cells(excerpt, key)

    def _evaluate_cells(self, excerpt: str, key: str) -> None:
        for cell in self.cells:
            if self.manifest.data["cells"][cell.name].get("status") != "done":
                continue
            try:
                result = self.evaluate_cell(cell, excerpt, key)
            except Exception as e:  # one bad checkpoint must not cost the table of the others
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.manifest.update(cell.name, status="failed", error=f"evaluation: {msg}")
                self.say(f"FAILED {cell.name}: evaluation: {msg}")
                continue
            self.manifest.update(cell.name, test_loss=result["test_loss"], test_bpc=result["test_bpc"],
                                 test_chars=result["chars"])

    def evaluate_cell(self, cell: GridCell, excerpt: str, key: str) -> dict:
        from rnnlens.api import load
        from rnnlens.predictions import TINY, predict
        run_dir = self.run_dir(cell)
        best = run_dir / BEST
        stat = best.stat()
        stamp = {"best_mtime_ns": stat.st_mtime_ns, "best_size": stat.st_size}
        cache = run_dir / "test.json"
        if cache.exists():
            try:
                cached = json.loads(cache.read_text())
                if all(cached.get(k) == v for k, v in stamp.items()) and (run_dir / "excerpt_logp.npy").exists() \
                        and cached.get("excerpt") == key:
                    return cached
            except ValueError:
                pass
        lm = load(run_dir, device=self.eval_device())
        t0 = time.perf_counter()
        res = lm.evaluate(data=self.data_arg, split="test", glob=self.glob, split_fractions=self.split,
                          encoding_errors=self.encoding_errors)
        seconds = time.perf_counter() - t0
        logp = np.log(np.maximum(predict(lm, excerpt).target_probs, TINY)).astype(np.float32)  # [map_chars - 1]
        np.save(run_dir / "excerpt_logp.npy", logp)
        record = {**stamp, "test_loss": res.loss, "test_bpc": res.bpc, "chars": res.chars, "excerpt": key,
                  "excerpt_chars": len(excerpt), "eval_seconds": round(seconds, 3),
                  "best_step": lm.meta.get("step"), "val_loss": lm.meta.get("val_loss")}
        write_json_atomic(cache, record)
        self.say(f"test {cell.name}: {res.loss:.4f} nats/char ({res.bpc:.3f} bits/char)")
        return record

    # ------------------------------------------------------------------------- baseline, table, map
    def ngram(self, order: int, map_chars: int) -> dict | None:
        """Fit (or reload) the n-gram baseline and score it."""
        from rnnlens import ngram as ngram_module
        from rnnlens.predictions import TINY, predict
        folder = self.out / f"ngram-{order}"
        try:
            if ngram_module.is_ngram(folder):
                model = ngram_module.NGramModel.load(folder)
            else:
                self.say(f"fitting the {order}-gram baseline on the train split ...")
                model = ngram_module.train_ngram(self.data_arg, order, out=folder, glob=self.glob,
                                                 split=self.split)
            cached = self.manifest.data.get("ngram") or {}
            if cached.get("order") == order and cached.get("test_loss") is not None:
                loss = cached["test_loss"]
            else:
                loss = float(model.evaluate(self.corpus.text("test")).loss)
            logp = np.log(np.maximum(predict(model, self.excerpt(map_chars)).target_probs, TINY))
        except Exception as e:  # a baseline that fails must not cost the grid's own results
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.say(f"note: the {order}-gram baseline failed ({type(e).__name__}: {msg}); the table is written "
                     "without it")
            return None
        info = {"order": order, "test_loss": loss, "test_bpc": loss / math.log(2), "folder": folder.name}
        self.manifest.set("ngram", info)
        self.say(f"test {order}-gram: {loss:.4f} nats/char ({loss / math.log(2):.3f} bits/char)")
        return {**info, "logp": logp}

    def write_outputs(self, ngram: dict | None, map_method: str):
        from rnnlens.analysis.grid_results import grid_table, model_map_from_features
        from rnnlens.render.grid_table import table_html, table_markdown
        from rnnlens.render.plots import plot_model_map
        records = [{**self.manifest.data["cells"][c.name], **c.to_dict()} for c in self.cells]
        test_chars = next((r.get("test_chars") for r in records if r.get("test_chars")), None)
        table = grid_table(records, match_params=self.manifest.data["settings"]["match_params"],
                           corpus=self.corpus.name, test_chars=test_chars,
                           ngram_order=ngram["order"] if ngram else None,
                           ngram_loss=ngram["test_loss"] if ngram else None)
        files = {}
        files["table.md"] = atomic_write(self.out / "table.md", lambda p: p.write_text(table_markdown(table)))
        files["table.csv"] = atomic_write(self.out / "table.csv", table.write_csv)
        files["results.csv"] = atomic_write(self.out / "results.csv", table.write_long_csv)
        files["table.html"] = atomic_write(
            self.out / "table.html", lambda p: p.write_text(table_html(table, f"Experiment grid: {self.corpus.name}")))
        feats, info = [], []
        for c in self.cells:
            path = self.run_dir(c) / "excerpt_logp.npy"
            if self.manifest.data["cells"][c.name].get("status") == "done" and path.exists():
                feats.append(np.load(path))
                info.append({"name": c.name, "kind": c.cell_type, "layers": c.layers, "width": c.size, "params": c.params})
        if ngram is not None and feats and len(ngram["logp"]) == len(feats[0]):
            feats.append(ngram["logp"])
            info.append({"name": f"{ngram['order']}-gram", "kind": "ngram"})
        mp = None
        if feats:
            mp = model_map_from_features(np.stack(feats).astype(np.float64), info, method=map_method)
            files["map.png"] = plot_model_map(mp, self.out / "map.png")
            write_json_atomic(self.out / "map.json", mp.to_dict())
            files["map.json"] = self.out / "map.json"
        else:
            self.say("note: no cell finished, so there is no map")
        self.manifest.set("files", {k: str(Path(v).name) for k, v in files.items()})
        self.manifest.set("table", table.to_dict())
        return table, mp, files


def _state_fields(state: dict | None) -> dict:
    state = state or {}
    return {"step": state.get("step"), "train_seconds": round(state["elapsed"], 3) if "elapsed" in state else None,
            "best_val": state.get("best_val"), "best_step": state.get("best_step"),
            "stop_reason": state.get("stop_reason")}
