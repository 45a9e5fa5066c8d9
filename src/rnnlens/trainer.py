"""The trainer: truncated BPTT with carried state, schedules, validation, checkpoints, recovery.

One step = one window of B x T characters through the fused model. The data position is
(epoch, window); with it, the optimizer, the carried state and the RNG state, `last.safetensors`
resumes a run exactly (same final weights as an uninterrupted run on the CPU).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnlens import distributed, reproducibility
from rnnlens.batches import StreamBatches
from rnnlens.checkpoint import BEST, LAST, read_checkpoint, save_checkpoint
from rnnlens.checks import check_choice, check_range
from rnnlens.corpus import Corpus, _validate_split, load_corpus, open_run_corpus
from rnnlens.errors import RnnlensError
from rnnlens.evaluate import evaluate
from rnnlens.fileio import write_json_atomic
from rnnlens.model import CharRNN, ModelConfig, detach_state, state_from_tensors, state_tensors
from rnnlens.threads import ThreadChoice, ThreadWatch, apply_threads, choose_threads

OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
SCHEDULES = ("step", "cosine", "wsd", "constant")
CLIP_MODES = ("norm", "value")
DEVICES = ("auto", "cpu", "cuda")
MAX_ROLLBACKS = 8
# --wide-gap-dropout: a plateau's gap is wide when the validation loss is WIDE_GAP times the mean training loss of
# the last GAP_UPDATES updates or more. At the first plateau of 1x768 LSTMs without dropout (2M characters,
# 90/10): 1.66x on the C headers, whose held-out headers differ from those trained on (0.4 read 0.045 better than
# 0.2 there), and 1.10-1.21x on Python, War and Peace and man pages (0.2 better by 0.004-0.014; docs/benchmarks.md,
# twenty-sixth session; 0.010 on their 1x512 at 1.83x). The ratio, not the difference: a text's loss sets how far
# apart the two can lie.
WIDE_GAP, GAP_UPDATES = 1.4, 100
# --wide-gap-dropout without --dropout-on-plateau: the gap that raises the dropout a run trains with from the start.
# Lower than a plateau's: 4M characters of the C headers (the bits line's 0.24 at 7.6 passes) read at most 1.34x
# before the decay on two seeds, and 0.24 raised to 0.4 there read 0.008 above 0.4 from the start on seed 1, where
# 0.24 throughout read 0.024 above it, and 0.043 below it on seed 2; War and Peace, whose line gives under 0.4 too,
# read at most 1.11x there, and the man pages 1.21x (docs/benchmarks.md, thirty-fourth and thirty-fifth sessions).
RAISE_GAP = 1.3
STOPPING_OPTIONS = ("max_epochs", "max_steps", "time_budget")
# What may change when a run resumes: when to stop, where to run, how often to write things down.
RESUMABLE_OPTIONS = STOPPING_OPTIONS + ("patience", "device", "threads", "eval_every", "checkpoint_every",
                                        "snapshot_every", "log_every", "tensorboard", "compile", "bf16",
                                        "deterministic")


@dataclass
class TrainConfig:
    """How to train; stored in every checkpoint. Defaults: see docs/training.md for why."""

    # data
    data: str = "pystdlib"
    glob: str | None = None
    split: tuple[float, float, float] | None = None
    encoding_errors: str = "strict"
    # batches
    # defaults: what won quality per CPU-minute on 2 cores (docs/benchmarks.md); small batches
    # mean more updates per second, which beats throughput per character in a short run on a CPU.
    # `rnnlens train` and rnnlens.train() take 32 instead for a long run (rnnlens.plan.choose_batch)
    batch_size: int = 16
    seq_len: int = 100
    # optimizer and schedule
    optimizer: str = "adam"
    # at ~17 passes too: 0.002 read 0.05-0.10 worse on the man pages and C headers, 0.006 0.16 worse on the
    # headers (docs/benchmarks.md, twenty-second session); a GRU or an RNN there collapses after ~7 passes and
    # SlowCollapseWatch rolls it back at half the rate (the headers' GRU then ends below a run at 0.002; 23rd session).
    # The LSTM's rate: `rnnlens train` and rnnlens.train() lower it in a long run of 512 units or more, and more for
    # a GRU or an RNN (plan.choose_rate)
    lr: float = 4e-3
    rmsprop_alpha: float = 0.95
    weight_decay: float = 0.0
    lr_schedule: str = "wsd"        # best or within 0.012 of the best on five texts (docs/training.md)
    lr_decay: float = 0.97          # 'step' schedule: x lr_decay per epoch once lr_decay_after epochs are done
    lr_decay_after: int = 10
    min_lr_ratio: float = 0.1       # 'cosine' and 'wsd' schedules end at lr * min_lr_ratio
    # 'wsd' (warmup-stable-decay, without the warm-up): the full rate, then a linear decay to min_lr_ratio over
    # this last fraction of the planned run; the decay anneals like cosine, the stable part keeps the updates
    # a short run still needs (docs/training.md, "Learning-rate schedules"); at ~17 passes a decay over 50% was
    # 0.025-0.066 worse, though the validation sat flat at the full rate, and one over 10% within 0.006
    decay_fraction: float = 0.2
    # the mean of the weights over this last fraction of the planned run becomes the run's final weights when it
    # validates better than the last update's (0: never): it takes out the drift of the last updates toward the
    # few files the streams read then (docs/training.md, "The final weights")
    average_fraction: float = 0.2
    grad_clip: float = 5.0
    clip_mode: str = "norm"
    # train without the model's dropout until a validation does not improve on the best, then with it to the end:
    # dropout only once the text shows overfitting (rnnlens.plan.choose_dropout; docs/training.md)
    dropout_on_plateau: bool = False
    # the dropout a wide gap takes (the gap: the validation loss over the mean training loss of the last
    # GAP_UPDATES updates). With dropout_on_plateau it comes on instead of the model's at a plateau that reads
    # WIDE_GAP or more; without, the model's rises to it at the first validation that reads RAISE_GAP or more
    # before the last decay_fraction of the planned run (None: the model's only)
    wide_gap_dropout: float | None = None
    # stopping
    max_epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None    # wall-clock seconds of the run: validations and checkpoints included
    patience: int | None = None         # validations without improvement before stopping
    # bookkeeping
    eval_every: int = 500               # steps between validations (and at every epoch end)
    checkpoint_every: int | None = None  # steps between last.safetensors writes; default eval_every
    snapshot_every: int | None = None   # steps between weight snapshots in snapshots/ (training dynamics)
    log_every: int = 10
    eval_batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None         # CPU threads; None: torch's, or fewer when other processes hold cores (threads.py)
    deterministic: bool = True         # reproducible kernels (rnnlens/reproducibility.py)
    bf16: bool = False
    compile: bool = False
    tensorboard: bool = False

    def __post_init__(self):
        if self.split is not None:
            self.split = _validate_split(self.split, "--split", need_train=True)
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--lr-schedule", self.lr_schedule, SCHEDULES)
        check_choice("--clip-mode", self.clip_mode, CLIP_MODES)
        check_choice("--device", self.device, DEVICES)
        check_range("--batch-size", self.batch_size, 1, None, integer=True)
        check_range("--seq-len", self.seq_len, 1, None, integer=True)
        check_range("--lr", self.lr, 0.0, None, low_open=True)
        check_range("--rmsprop-alpha", self.rmsprop_alpha, 0.0, 1.0, high_open=True)
        check_range("--weight-decay", self.weight_decay, 0.0, None)
        check_range("--lr-decay", self.lr_decay, 0.0, 1.0, low_open=True)
        check_range("--lr-decay-after", self.lr_decay_after, 0, None, integer=True)
        check_range("--min-lr-ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("--decay-fraction", self.decay_fraction, 0.0, 1.0, low_open=True)
        check_range("--average-fraction", self.average_fraction, 0.0, 1.0)
        check_range("--grad-clip", self.grad_clip, 0.0, None)
        if self.wide_gap_dropout is not None:
            check_range("--wide-gap-dropout", self.wide_gap_dropout, 0.0, 1.0, high_open=True)
        for name, value, integer in (("--max-epochs", self.max_epochs, False), ("--max-steps", self.max_steps, True),
                                     ("--time-budget", self.time_budget, False), ("--patience", self.patience, True)):
            if value is not None:
                check_range(name, value, 0, None, integer=integer, low_open=True)
        check_range("--eval-every", self.eval_every, 0, None, integer=True)
        check_range("--log-every", self.log_every, 1, None, integer=True)
        if self.checkpoint_every is not None:
            check_range("--checkpoint-every", self.checkpoint_every, 1, None, integer=True)
        if self.snapshot_every is not None:
            check_range("--snapshot-every", self.snapshot_every, 1, None, integer=True)
        if self.eval_batch_size is not None:
            check_range("--eval-batch-size", self.eval_batch_size, 1, None, integer=True)
        check_range("--seed", self.seed, 0, 2**63 - 1, integer=True)
        if self.threads is not None:
            check_range("--threads", self.threads, 1, None, integer=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RnnlensError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu "
                           "or install a CUDA build of torch (see README.md)")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "rmsprop":
        # char-rnn's RMSProp: alpha 0.95, eps 1e-8
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=1e-8, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def update(step_model, model: torch.nn.Module, optimizer, cfg: TrainConfig, device: torch.device, x: torch.Tensor,
           y: torch.Tensor, hidden):
    """One training update: forward (`step_model`: the model, or its DDP/compiled wrapper), loss, backward, clip
    `model`'s gradients, step. Returns (loss [], grad norm [], detached state) as device tensors: no sync."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits, hidden = step_model(x, hidden)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.clip_mode == "norm" and cfg.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)  # [] tensor, no sync
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(params, cfg.grad_clip)
    # Step before looking at the values: a non-finite loss makes run() reload the last
    # checkpoint anyway, and reading loss and norm together costs one device sync, not two.
    optimizer.step()
    return loss, grad_norm, detach_state(hidden)


# A validation reads the validation split forward only, without gradients, at the wider eval batch: 4.7-5.9x the
# characters per second of a training update (1x128 to 1x512 LSTMs on 2 cores; docs/benchmarks.md, section 5b).
EVAL_SPEEDUP = 5.0


def final_validations(cfg: TrainConfig) -> float:
    """How many validations' time a run keeps free at the end of a time budget: the last update's weights, 1.5x
    for a margin, and one more for the mean of the weights (--average-fraction)."""
    return 1.5 + (1.0 if cfg.average_fraction else 0.0)


def validation_seconds(val_chars: int, update_chars: int, update_s: float) -> float:
    """What a validation over `val_chars` characters costs, estimated from a training update of `update_chars`
    characters that takes `update_s` seconds: the plan's count, and a run's until it has timed a validation."""
    return val_chars / update_chars * update_s / EVAL_SPEEDUP if val_chars >= 2 else 0.0


def measure_updates_per_second(model_cfg: ModelConfig, cfg: TrainConfig, batch_size: int, seconds: float = 1.0,
                               min_steps: int = 5, warmup_seconds: float = 1.0) -> float:
    """How many training updates per second this model takes at `batch_size` x cfg.seq_len on cfg's device: updates
    on random characters, `warmup_seconds` of them untimed (at least two), then each timed for at least `seconds`
    and `min_steps`; the rate of the median update. For planning a time-budgeted run before it starts
    (rnnlens.plan); the random state of the caller is left as it was."""
    # Why a second of warm-up and the median (docs/benchmarks.md, section 5b): the first second of a fresh process
    # has updates 2-3x slower than the rest, and single updates spike later too. The mean of a second after two
    # untimed updates counted 0.67-1.05x of the steps the run then took (median 0.81); a run of minutes goes at its
    # typical update, not at those of its first second.
    device = resolve_device(cfg.device)
    reproducibility.configure(cfg.deterministic, device.type)  # the kernels and threads the run will have

    def timed_update(hidden):
        t = time.perf_counter()
        _, _, hidden = update(model, model, optimizer, cfg, device, x[:, :-1], x[:, 1:], hidden)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return hidden, time.perf_counter() - t

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = CharRNN(model_cfg).to(device)
        optimizer = make_optimizer(model, cfg)
        x = torch.randint(model_cfg.vocab_size, (batch_size, cfg.seq_len + 1), device=device)
        hidden, warm, warmed = None, 0, 0.0
        while warm < 2 or warmed < warmup_seconds:
            hidden, took = timed_update(hidden)
            warm, warmed = warm + 1, warmed + took
        durations = []  # seconds of each timed update
        while len(durations) < min_steps or sum(durations) < seconds:
            hidden, took = timed_update(hidden)
            durations.append(took)
    return 1.0 / max(statistics.median(durations), 1e-9)


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90, '10m' -> 600, '1.5h' -> 5400 (seconds)."""
    t = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(t[-1:], None)
    try:
        value = float(t[:-1]) * scale if scale else float(t)
    except ValueError:
        raise RnnlensError(f"--time-budget must be a duration like 90s, 10m or 1.5h; got {text!r}") from None
    check_range("--time-budget", value, 0, None, low_open=True)
    return value


class SlowCollapseWatch:
    """Catches a training loss that climbs over a hundred updates and stays up: too slowly for the rule on single
    updates in Trainer.run (a 1x512 GRU at Adam 0.004 went from ~1.0 to 3.4-3.7 nats/char in ~100 updates after
    ~7 passes over 600K characters of C headers; docs/training.md, "Recovery").

    Each epoch reads the same windows of text in the same order, so the loss of a window is compared with the same
    window's in the epoch before, not with the run's best: a text whose parts differ (a table of hex numbers inside
    prose) moves a small batch's loss up and down by its content, every epoch alike, while a collapse raises it on
    the same text. The watch fires when the mean loss of the last `span` windows read (into the end of the epoch
    before, early in an epoch) is more than `margin` nats above the mean of the same windows one epoch earlier.
    It has no reference in the first epoch, or after dropout comes on (which raises the training loss by itself) or
    a resume moves the schedule's end, until an epoch has passed. last.safetensors keeps its losses: a resumed or
    rolled-back run watches on alike.

    The margin: healthy runs read between -0.4 and +0.01. A 1x512 RNN at Adam 0.002, after ~19 passes over 1.8M
    characters of War and Peace, climbed from 1.44 to 1.86 nats/char in ~100 updates and stayed there, +0.43 at
    most (docs/benchmarks.md, section 5, twenty-ninth session): a margin of 0.5 let it by."""

    def __init__(self, windows: int, span: int = 50, margin: float = 0.3, suspect: float = 0.05):
        self.windows, self.margin, self.suspect = windows, margin, suspect
        self.span = min(span, windows)
        self.forget()

    def forget(self) -> None:
        """Drop every epoch's losses: no comparison until a whole epoch is read again."""
        # loss per window: [the epoch before the last, the last epoch, this epoch so far]; NaN: not read
        self.epochs = [[math.nan] * self.windows for _ in range(3)]
        self.latest_rise = None

    def end_epoch(self) -> None:
        self.epochs = self.epochs[1:] + [[math.nan] * self.windows]

    def to_tensor(self) -> torch.Tensor:
        """[3, windows] float64: what last.safetensors keeps, so a resumed or rolled-back run watches on alike;
        -1 for a window not read (a loss is never negative; NaN would make equal checkpoints compare unequal)."""
        return torch.tensor(self.epochs, dtype=torch.float64).nan_to_num(nan=-1.0)

    def load(self, losses: torch.Tensor | None) -> None:
        """The losses a checkpoint kept (to_tensor), or none: a checkpoint from before the watch, or from a run
        cut into other windows, leaves it without a reference for an epoch."""
        if losses is not None and tuple(losses.shape) == (3, self.windows):
            self.epochs = [[math.nan if loss < 0 else loss for loss in epoch] for epoch in losses.tolist()]
            self.latest_rise = None
        else:
            self.forget()

    @property
    def rising(self) -> bool:
        """Whether the loss now reads more than `suspect` nats above the same windows one epoch before: the
        start of a collapse (a 1x512 GRU went +0.04, +0.10, +0.45 over the ~220 updates before it passed the
        margin), not yet a state to roll back to. Healthy runs read between -0.4 and +0.01."""
        return self.latest_rise is not None and self.latest_rise > self.suspect

    def _means(self, window: int) -> tuple[float, float]:
        """The mean loss of the last `span` windows read up to `window`, and of the same windows one epoch
        before (NaN where one was not read)."""
        before_last, last, this = self.epochs
        here = min(self.span, window + 1)  # windows of this epoch in the span; the rest end the last epoch
        tail = slice(self.windows - (self.span - here), self.windows)
        now = this[window + 1 - here:window + 1] + last[tail]
        before = last[window + 1 - here:window + 1] + before_last[tail]
        return math.fsum(now) / self.span, math.fsum(before) / self.span

    def _record(self, window: int, loss: float) -> tuple[float, float]:
        """Record the loss of `window` and set latest_rise; the two means it compares (_means)."""
        self.epochs[2][window] = loss
        mean_now, mean_before = self._means(window)
        rise = mean_now - mean_before
        self.latest_rise = rise if math.isfinite(rise) else None
        return mean_now, mean_before

    def rise(self, window: int, loss: float) -> float | None:
        """Record the loss of `window`; return how far the last `span` windows' mean loss is above the same
        windows' one epoch before (nats/char), or None without a reference."""
        self._record(window, loss)
        return self.latest_rise

    def collapsed(self, window: int, loss: float) -> str | None:
        """Record the loss of `window`; a description of the collapse when the watch fires, else None."""
        mean_now, mean_before = self._record(window, loss)  # once per update: the means are read once
        rise = self.latest_rise
        if rise is None or rise <= self.margin:
            return None
        return (f"a training loss climbing over many updates (the last {self.span} windows read {mean_now:.2f}, "
                f"{rise:.2f} above the same windows' {mean_before:.2f} one epoch before)")


@dataclass
class TrainState:
    """Where a run is; JSON in last.safetensors. `window` is the next window to train on."""

    step: int = 0
    epoch: int = 0
    window: int = 0
    elapsed: float = 0.0         # training seconds so far (all sessions)
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0           # validations since the last improvement
    lr_scale: float = 1.0        # lowered by each rollback after a NaN / exploding loss
    rollbacks: int = 0
    dropout_from: int | None = None  # the step a --dropout-on-plateau dropout came on or a wide gap raised it
    plateau_dropout: float | None = None  # the dropout from then on (None: the model's)
    averaged: int = 0            # updates in the running mean of the weights (--average-fraction); 0: none yet
    done: bool = False
    stop_reason: str | None = None


class Trainer:
    """Train a CharRNN on a corpus into a run folder. Use `Trainer.start(...)` or `Trainer.resume(run)`."""

    # plot_loss(metrics_path, png_path) draws loss.png at the end of a run; None: no picture. The trainer is
    # core and must not import rendering, so the package facade (rnnlens/__init__.py), which every entry point
    # imports first, sets this class-wide default; a caller may pass its own.
    plot_loss = None

    def __init__(self, run_dir: Path, corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig,
                 state: TrainState | None = None, progress: bool = True, log=None, plot_loss=None,
                 threads: ThreadChoice | None = None):
        """threads: the thread count a plan chose before it timed updates (rnnlens.plan); None: choose it here."""
        self.run_dir = Path(run_dir)
        if plot_loss is not None:
            self.plot_loss = plot_loss
        self.corpus = corpus
        self.model_cfg = model_cfg
        self.cfg = cfg
        self.state = state or TrainState()
        # data-parallel (torchrun / --nproc): this rank owns streams `rows` of the global batch;
        # rank 0 alone logs and writes files (see rnnlens/distributed.py)
        self.dist = distributed.setup(cfg.device)
        self.progress = progress and self.dist.is_main
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.dist.is_main:
            self.log = lambda msg: None
        self.device = resolve_device(cfg.device)
        threads = threads or choose_threads(cfg.threads, timed=bool(cfg.time_budget), device_type=self.device.type)
        apply_threads(threads)
        if threads.note:
            self.log(threads.note)
        # a run that chose its own threads keeps looking at the cores (rnnlens.threads)
        self.thread_watch = ThreadWatch(threads) if threads.watched and not self.dist.active else None
        if cfg.tensorboard:
            _check_tensorboard()
        reproducibility.configure(cfg.deterministic, self.device.type)
        train_start = corpus.splits["train"][0] * corpus.data.dtype.itemsize
        self.batches = StreamBatches(corpus.split("train"), cfg.batch_size, cfg.seq_len, "train",
                                     file=(corpus.directory / "data.bin", train_start),
                                     rows=self.dist.rows(cfg.batch_size))
        self.collapse_watch = SlowCollapseWatch(len(self.batches))
        self._recent_losses: deque[float] = deque(maxlen=GAP_UPDATES)  # since the last validation, for the gap
        self._last_saved_step = self.state.step  # of last.safetensors (a resumed run starts from it)
        val = corpus.split("val")
        self.val_data = val if len(val) >= 2 else None
        if self.val_data is None:
            self.log("note: the validation split is empty; best.safetensors will track the last step instead")
        torch.manual_seed(cfg.seed)
        self.model = CharRNN(model_cfg).to(self.device)
        for flag, does, given in (("--dropout-on-plateau", "turns dropout on when the validation loss stops "
                                   "improving", cfg.dropout_on_plateau),
                                  ("--wide-gap-dropout", "sets the dropout when the validation loss lies far above "
                                   "the training loss", cfg.wide_gap_dropout is not None)):
            if given and self.val_data is None:
                raise RnnlensError(f"{flag} {does}, but the validation split is empty: give --split a validation "
                                   f"share (e.g. 0.9,0.1,0) or drop {flag}")
        self._sync_dropout()  # (a resumed run goes on at the dropout it had come to)
        if cfg.bf16 and self.device.type == "cpu":
            _check_cpu_bf16(self.model)
        self.dist.seed_rank(cfg.seed)
        self.step_model = self.dist.wrap(self.model)  # DDP averages the gradients over ranks
        if cfg.compile:
            self.step_model = torch.compile(self.step_model)
        self.optimizer = make_optimizer(self.model, cfg)
        self.hidden = None
        self.weight_mean: list[torch.Tensor] | None = None  # the mean of state.averaged updates' weights, per param
        self._tb = None
        self._stop_signal = None
        self._agreed_stop = None  # distributed: a stop signal every rank knows of (see run)
        self._last_eval_step = None  # the step of the last validation of this process; None: none timed yet
        self._last_val = None  # its loss
        self.log(reproducibility.start_line(cfg.deterministic, self.device.type, self.dist.world))
        self._final_cost = 0.0  # seconds: the last validation's, kept free at the end of a time budget
        self._agreed_final_cost = 0.0  # distributed: the ranks' mean _final_cost, agreed at each update (see run)
        self._save_cost = 0.0   # seconds the last save_last took
        self._plot_cost = 0.0   # seconds the last loss.png took
        self._last_plot = None  # perf_counter() of the last loss.png

    # ---------------------------------------------------------------- construction
    @classmethod
    def start(cls, run_dir, model_cfg: ModelConfig | None = None, cfg: TrainConfig | None = None,
              force: bool = False, progress: bool = True, corpus: Corpus | None = None, log=None,
              plot_loss=None, threads: ThreadChoice | None = None, **model_kwargs) -> Trainer:
        """A new run. `model_cfg` may be None: then it is built from model_kwargs and the corpus vocab. `threads`: as
        for Trainer()."""
        cfg = cfg or TrainConfig()
        run_dir = Path(run_dir)
        ctx = distributed.setup(cfg.device)
        if run_dir.exists() and not run_dir.is_dir():
            raise RnnlensError(f"--out {run_dir} is a file, not a folder; choose another path")
        if run_dir.exists() and any(run_dir.iterdir()) and not force:
            raise RnnlensError(f"{run_dir} already holds files of another run; use --resume {run_dir} to continue it, "
                               "--force to overwrite it, or another --out")
        ctx.barrier()  # every rank has looked at the folder before rank 0 writes into it
        data_path = Path(cfg.data).expanduser()
        if data_path.exists():  # the run must find its text again from any folder
            cfg.data = str(data_path.resolve())
        if corpus is None:
            with ctx.local_main_first():
                corpus = load_corpus(cfg.data, glob=cfg.glob, split=cfg.split,
                                     encoding_errors=cfg.encoding_errors, progress=progress and ctx.is_main)
        if model_cfg is None:
            model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **model_kwargs)
        elif model_cfg.vocab_size != len(corpus.vocab):
            raise RnnlensError(f"model vocab_size {model_cfg.vocab_size} does not match the corpus ({len(corpus.vocab)})")
        # everything that can fail on the user's settings (a text too short for one batch, no GPU, a missing
        # package) fails here, in building the trainer, before the run folder is touched
        trainer = cls(run_dir, corpus, model_cfg, cfg, progress=progress, log=log, plot_loss=plot_loss, threads=threads)
        if ctx.is_main:
            if force and run_dir.exists():
                for name in (LAST, BEST, "metrics.jsonl", "run.json", "summary.json", "loss.png"):
                    (run_dir / name).unlink(missing_ok=True)
                for old in (run_dir / SNAPSHOTS).glob("step-*.safetensors"):  # another run's history
                    old.unlink()
            run_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main:
            write_json_atomic(run_dir / "run.json", trainer.describe())
        trainer.save_last()  # a good state to roll back to from the very first step
        if not (run_dir / LAST).exists():  # a rank on another machine that does not share the folder
            raise RnnlensError(f"rank {ctx.rank} cannot see {run_dir / LAST}, which rank 0 has written; with several "
                               "machines, --out must be a folder every machine shares (NFS or the like)")
        if cfg.snapshot_every:
            trainer.save_snapshot()  # step 0: where the training-dynamics curves start
        return trainer

    @classmethod
    def resume(cls, run_dir, overrides: dict | None = None, progress: bool = True, log=None,
               plot_loss=None) -> Trainer:
        """Continue a run from last.safetensors. `overrides` may change stopping rules and the device."""
        run_dir = Path(run_dir)
        ckpt = read_checkpoint(_existing_last(run_dir))
        meta = ckpt.meta
        if "train" not in meta or "state" not in meta:
            raise RnnlensError(f"{ckpt.path} holds weights only, not a training state; it cannot be resumed")
        cfg_dict = dict(meta["train"])
        overrides = dict(overrides or {})
        data = overrides.pop("data", None)  # where the original text is now, checked against its hash
        for k, v in overrides.items():
            if k not in RESUMABLE_OPTIONS:
                raise RnnlensError(f"--{k.replace('_', '-')} cannot change when resuming; only "
                                   + ", ".join("--" + a.replace("_", "-") for a in RESUMABLE_OPTIONS))
        if any(k in overrides for k in STOPPING_OPTIONS):  # a new stopping rule replaces the old one
            for k in STOPPING_OPTIONS:
                cfg_dict[k] = None
        cfg_dict.update(overrides)
        cfg = TrainConfig.from_dict(cfg_dict)
        ctx = distributed.setup(cfg.device)
        with ctx.local_main_first():
            corpus = open_run_corpus(meta["train"], meta.get("corpus", {}), data=data, run=str(run_dir),
                                     progress=progress and ctx.is_main)
        state = TrainState(**meta["state"])
        state.done = False
        state.stop_reason = None
        trainer = cls(run_dir, corpus, ckpt.config, cfg, state=state, progress=progress, log=log,
                      plot_loss=plot_loss)
        trainer.load_training_tensors(ckpt)
        old_rule = {k: meta["train"].get(k) for k in STOPPING_OPTIONS}
        new_rule = {k: getattr(cfg, k) for k in STOPPING_OPTIONS}
        if old_rule != new_rule and cfg.lr_schedule in ("cosine", "wsd"):
            # a later end raises the rate the last epochs decayed, and with it their windows' loss: no reference
            trainer.collapse_watch.forget()
            trainer.log(f"note: the stopping rule changed, so the {cfg.lr_schedule} learning-rate schedule now ends at the new "
                        "stop: from here on the run is not bit-identical to one trained with this rule from the start "
                        "(the step and constant schedules do not depend on the stop)")
        saved_by = int(meta.get("world_size", 1))
        if saved_by != ctx.world:
            rng = (f"ranks {saved_by}..{ctx.world - 1} start new random streams" if ctx.world > saved_by else
                   f"the random streams of ranks {ctx.world}..{saved_by - 1} are dropped")
            trainer.log(f"note: this run was saved by {saved_by} rank(s) and resumes on {ctx.world}: the carried state "
                        f"of all {cfg.batch_size} streams is redistributed (exact); {rng}, so with dropout the masks "
                        "differ from an uninterrupted run")
        note = reproducibility.resume_note(meta.get("reproducibility"),
                                           reproducibility.mode(cfg.deterministic, trainer.device.type),
                                           saved_by, ctx.world)
        if note:
            trainer.log(note)
        return trainer

    def load_training_tensors(self, ckpt) -> None:
        self.model.load_state_dict(ckpt.model_state())
        per_param: dict[int, dict] = {}
        for key, value in ckpt.group("optim").items():  # 'optim.{param index}.{name}'
            idx, name = key.split(".", 1)
            per_param.setdefault(int(idx), {})[name] = value
        sd = self.optimizer.state_dict()
        sd["state"] = per_param
        self.optimizer.load_state_dict(sd)  # moves tensors to each parameter's device and dtype
        hidden = ckpt.group("state")
        if hidden:  # [layers, B, H] of all streams; this rank carries its rows
            tensors = self.dist.shard_state([hidden[str(i)] for i in range(len(hidden))], self.cfg.batch_size)
            self.hidden = state_from_tensors(self.model_cfg.cell, [t.to(self.device) for t in tensors])
        else:
            self.hidden = None
        self.dist.restore_rng(ckpt.group("rng"), self.device, self.cfg.seed, self.state.step)
        self.collapse_watch.load(ckpt.group("watch").get("losses"))
        averaged = ckpt.meta["state"].get("averaged", 0)  # (a rollback sets the state after this)
        mean = ckpt.group("average")
        if averaged and len(mean) != len(list(self.model.parameters())):
            raise RnnlensError(f"{ckpt.path} counts {averaged} averaged updates but does not hold their mean; the "
                               "file is damaged: start the run again")
        self.weight_mean = [mean[str(i)].to(self.device) for i in range(len(mean))] if averaged else None

    def describe(self) -> dict:
        from rnnlens.model import count_parameters
        return {
            "format": "rnnlens-run",
            "model": self.model_cfg.to_dict(),
            "parameters": count_parameters(self.model_cfg),
            "train": self.cfg.to_dict(),
            "corpus": self.corpus_info(),
        }

    def corpus_info(self) -> dict:
        c = self.corpus
        return {"name": c.name, "content_hash": c.content_hash, "chars": len(c),
                "split_fractions": list(c.split_fractions),
                "splits": {k: list(v) for k, v in c.splits.items()}, "vocab_size": len(c.vocab)}

    # ---------------------------------------------------------------- checkpoints
    def save_last(self) -> None:
        t0 = time.perf_counter()
        extra = {}
        for idx, entry in self.optimizer.state_dict()["state"].items():
            for k, v in entry.items():
                extra[f"optim.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        if self.hidden is not None:  # all B streams: the ranks' rows gathered in rank order
            for i, t in enumerate(self.dist.gather_state(state_tensors(self.hidden))):
                extra[f"state.{i}"] = t
        extra.update(self.dist.rng_tensors(self.device))  # 'rng.cpu' is rank 0's, 'rng.cpu.R' rank R's
        extra["watch.losses"] = self.collapse_watch.to_tensor()
        if self.state.averaged:  # a resumed run goes on with the same mean
            extra.update({f"average.{i}": t for i, t in enumerate(self.weight_mean)})
        meta = {"kind": "training", "train": self.cfg.to_dict(), "state": asdict(self.state),
                "corpus": self.corpus_info(), "world_size": self.dist.world,
                "reproducibility": reproducibility.mode(self.cfg.deterministic, self.device.type)}
        if self.dist.is_main:  # every rank holds the same weights and optimizer state
            save_checkpoint(self.run_dir / LAST, self.model, self.corpus.vocab, meta, extra)
        self.dist.barrier()  # the others wait until the file is complete
        self._save_cost = time.perf_counter() - t0
        self._last_saved_step = self.state.step

    def save_best(self, val_loss: float | None) -> None:
        if not self.dist.is_main:
            return
        meta = {"kind": "weights", "step": self.state.step, "epoch": self.state.epoch, "val_loss": val_loss,
                "train": self.cfg.to_dict(), "corpus": self.corpus_info()}
        save_checkpoint(self.run_dir / BEST, self.model, self.corpus.vocab, meta)

    def save_snapshot(self) -> Path | None:
        """The weights at this step, as snapshots/step-NNNNNN.safetensors (loadable like best.safetensors);
        rnnlens.analysis.resemblance reads them to follow a model over training. Rank 0 writes it."""
        if not self.dist.is_main:
            return None
        s = self.state
        meta = {"kind": "snapshot", "step": s.step, "epoch": s.epoch, "elapsed_s": s.elapsed,
                "train": self.cfg.to_dict(), "corpus": self.corpus_info()}
        return save_checkpoint(snapshot_path(self.run_dir, s.step), self.model, self.corpus.vocab, meta)

    def rollback(self, reason: str) -> int:
        """Reload last.safetensors and lower the learning rate: a NaN must not end a long run. Returns the step
        that failed."""
        self.state.rollbacks += 1
        if self.state.rollbacks > MAX_ROLLBACKS:
            raise RnnlensError(f"training diverged {MAX_ROLLBACKS} times ({reason}); the last good state is in "
                               f"{self.run_dir / LAST}; lower --lr or --grad-clip and resume or restart")
        keep, elapsed, failed_step = self.state.rollbacks, self.state.elapsed, self.state.step + 1
        ckpt = read_checkpoint(self.run_dir / LAST)
        self.load_training_tensors(ckpt)
        # update in place: run() holds this object
        for k, v in ckpt.meta["state"].items():
            setattr(self.state, k, v)
        self.state.rollbacks, self.state.elapsed = keep, elapsed
        self.state.lr_scale *= 0.5
        self._sync_dropout()
        self.log(f"warning: {reason} at step {failed_step}; rolled back to step {self.state.step} "
                 f"and halved the learning rate (now x{self.state.lr_scale:g} of --lr)")
        return failed_step

    # ---------------------------------------------------------------- schedule
    @property
    def epochs_read(self) -> float:
        """Passes over the training split so far, fractional."""
        return self.state.epoch + self.state.window / len(self.batches)

    def progress_fraction(self) -> float | None:
        """How far through the planned run we are, in [0, 1], or None when no end is known."""
        s, cfg = self.state, self.cfg
        fractions = []
        if cfg.max_steps:
            fractions.append(s.step / cfg.max_steps)
        if cfg.max_epochs:
            fractions.append(self.epochs_read / cfg.max_epochs)
        if cfg.time_budget:
            # the run ends where it stops, before the final validation and saves: the decay of a schedule
            # must end there too, not that many seconds later (a 60 s run once ended at 0.375x, not 0.1x)
            fractions.append(s.elapsed / max(cfg.time_budget - self.reserved_seconds, 1e-9))
        return min(1.0, max(fractions)) if fractions else None

    @property
    def reserved_seconds(self) -> float:
        """Seconds a time budget keeps free at its end for the final validation and saves; with ranks, their
        agreed mean, so that every rank stops at the same update and decays its rate alike."""
        return self._agreed_final_cost if self.dist.active else self._final_cost

    def _final_validation_near(self) -> bool:
        """Whether a time budget is so near its end that a periodic validation now would leave less than half its
        own time for updates before the final one (the reserve is final_validations() validations and the saves,
        so that is when under two reserves are left): it is skipped, and the final validation measures the same
        run a little later. Before, the run spent that time validating and stopped right after (decided from
        agreed values, so every rank skips alike)."""
        cfg = self.cfg
        return bool(cfg.time_budget) and self.state.elapsed + 2 * self.reserved_seconds >= cfg.time_budget

    def current_lr(self) -> float:
        cfg, s = self.cfg, self.state
        lr = cfg.lr * s.lr_scale
        if cfg.lr_schedule == "step":
            done_epochs = s.epoch
            if done_epochs >= cfg.lr_decay_after and done_epochs > 0:
                lr *= cfg.lr_decay ** (done_epochs - cfg.lr_decay_after + 1)
        elif cfg.lr_schedule == "cosine":
            frac = self.progress_fraction()
            if frac is not None:
                lo = cfg.min_lr_ratio
                lr *= lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac))
        elif cfg.lr_schedule == "wsd":
            frac = self.progress_fraction()
            if frac is not None and frac > 1 - cfg.decay_fraction:
                lo = cfg.min_lr_ratio
                lr *= 1 - (1 - lo) * (frac - (1 - cfg.decay_fraction)) / cfg.decay_fraction
        return lr

    # ---------------------------------------------------------------- the loop
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One window: forward, loss, backward, clip, update. Returns (loss, grad norm)."""
        loss, grad_norm, self.hidden = update(self.step_model, self.model, self.optimizer, self.cfg, self.device, x, y,
                                              self.hidden)
        loss_value, norm_value = torch.stack([loss.detach(), grad_norm.detach().float()]).tolist()
        return loss_value, norm_value

    def should_stop(self) -> str | None:
        s, cfg = self.state, self.cfg
        if cfg.max_steps and s.step >= cfg.max_steps:
            return f"reached --max-steps {cfg.max_steps}"
        if cfg.max_epochs and self.epochs_read >= cfg.max_epochs - 1e-9:
            return f"reached --max-epochs {cfg.max_epochs:g}"
        if cfg.time_budget and s.elapsed + self.reserved_seconds >= cfg.time_budget:
            return f"used the --time-budget of {cfg.time_budget:g} s"
        if cfg.patience and s.bad_evals >= cfg.patience:
            return f"validation loss did not improve for {cfg.patience} validations (--patience)"
        stop_signal = self._agreed_stop if self.dist.active else self._stop_signal
        if stop_signal:
            return f"interrupted ({stop_signal})"
        return None

    def validate(self) -> float | None:
        if self.val_data is None:
            return None
        bs = self.cfg.eval_batch_size or max(self.cfg.batch_size, 50)  # no gradients: wider is faster
        if self.dist.active:  # each rank scores its share of the streams; sums and counts all_reduced
            return distributed.evaluate_sharded(self.model, self.val_data, bs, self.cfg.seq_len, self.dist)
        return evaluate(self.model, self.val_data, batch_size=bs, seq_len=self.cfg.seq_len).loss

    def leave_ranks(self) -> None:
        """In a distributed run, let go of the process group (the DDP wrapper holds it) so that
        `distributed.shutdown` can end it; the model stays, and this trainer trains no more."""
        if self.dist.active:
            self.step_model = None

    def run(self) -> TrainState:
        """Train until a stopping rule fires; always leaves last.safetensors and best.safetensors."""
        cfg, s = self.cfg, self.state
        if self.step_model is None:
            raise RnnlensError("this trainer has left its ranks' process group; continue the run with "
                               f"rnnlens train --resume {self.run_dir}")
        if not any([cfg.max_steps, cfg.max_epochs, cfg.time_budget]):
            raise RnnlensError("give a stopping rule: --max-epochs, --max-steps or --time-budget")
        checkpoint_every = cfg.checkpoint_every or cfg.eval_every or 500
        chars_per_step = cfg.batch_size * cfg.seq_len
        metrics = open(self.run_dir / "metrics.jsonl" if self.dist.is_main else os.devnull, "a")  # noqa: SIM115
        bar = self._progress_bar()
        old_handlers = self._install_signal_handlers()
        loss_sum, loss_n, window_t0, window_steps = 0.0, 0, time.perf_counter(), 0
        smooth = None
        clock = time.perf_counter()  # the time budget is wall time: steps, validations and checkpoints
        timed_steps, timed_s = 0, 0.0  # the updates of this process before its first validation, and their seconds
        try:
            while (reason := self.should_stop()) is None:
                lr = self.current_lr()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                if s.window == 0:
                    self.hidden = None  # a new epoch starts each stream at the beginning of its text again
                x, y = self.batches.window(s.window)
                if self.device.type == "cuda":  # pinned pages let the copy overlap the previous step
                    x, y = x.pin_memory(), y.pin_memory()
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                loss, grad_norm = self.train_step(x, y)
                now = time.perf_counter()
                dt, clock = now - clock, now  # since the last step: this one and whatever ran in between
                if self.dist.active:  # one decision for all ranks: the global loss, one clock, any stop
                    loss, dt, stop, self._agreed_final_cost = self.dist.agree(
                        loss, dt, self._stop_signal is not None, self._final_cost)
                    if stop and not self._agreed_stop:
                        self._agreed_stop = self._stop_signal or "a stop signal on another rank"
                s.elapsed += dt
                exploding = smooth is not None and loss > max(3.0 * smooth, smooth + 5.0)
                finite = math.isfinite(loss) and math.isfinite(grad_norm)
                collapse = self.collapse_watch.collapsed(s.window, loss) if finite and not exploding else None
                if not finite or exploding or collapse:
                    failed_step = self.rollback(
                        "a non-finite loss" if not math.isfinite(loss) else
                        "a non-finite gradient" if not math.isfinite(grad_norm) else
                        f"an exploding loss ({loss:.2f} against a running {smooth:.2f})" if exploding else collapse)
                    # the rows logged after this step were of the weights just discarded (rnnlens.runs.history)
                    self._write_metrics(metrics, {"step": s.step, "epoch": round(self.epochs_read, 4),
                                                  "rolled_back_from": failed_step, "elapsed_s": s.elapsed})
                    smooth = None
                    self._recent_losses.clear()  # of the weights just discarded
                    loss_sum, loss_n, window_t0, window_steps = 0.0, 0, time.perf_counter(), 0  # not in the next row
                    continue
                smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                self._recent_losses.append(loss)
                self._accumulate_mean()
                if self._last_eval_step is None and self.val_data is not None:
                    # A run whose budget ends before its first validation must still hold its last one: until a
                    # validation is timed, its cost is estimated from the updates' as the plan counts it.
                    timed_steps, timed_s = timed_steps + 1, timed_s + dt
                    val_s = validation_seconds(len(self.val_data), chars_per_step, timed_s / timed_steps)
                    self._final_cost = final_validations(self.cfg) * val_s + 2 * self._save_cost + self._plot_cost
                s.step += 1
                s.window += 1
                epoch_end = s.window >= len(self.batches)
                if epoch_end:
                    s.epoch += 1
                    s.window = 0
                    self.collapse_watch.end_epoch()
                loss_sum += loss
                loss_n += 1
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                if s.step % cfg.log_every == 0 or epoch_end:
                    dt = time.perf_counter() - window_t0
                    row = {"step": s.step, "epoch": round(self.epochs_read, 4),
                           "train_loss": loss_sum / loss_n, "lr": lr,
                           "chars_per_s": window_steps * chars_per_step / max(dt, 1e-9), "elapsed_s": s.elapsed}
                    self._write_metrics(metrics, row)
                    if bar is not None:
                        bar.set_postfix_str(self._postfix(row), refresh=False)
                    loss_sum, loss_n, window_t0, window_steps = 0.0, 0, time.perf_counter(), 0
                if self.thread_watch is not None and (msg := self.thread_watch.look(s.step)):
                    self._say(msg, bar)
                validated = False
                if ((cfg.eval_every and s.step % cfg.eval_every == 0) or epoch_end) and not self._final_validation_near():
                    self._validate_and_track(metrics, bar)
                    validated = True
                # last.safetensors is the state a rollback returns to: not one from the start of a collapse, unless
                # the last write is so old that a crash would cost more than that
                if (validated or s.step % checkpoint_every == 0) and (
                        not self.collapse_watch.rising or s.step - self._last_saved_step >= 4 * checkpoint_every):
                    self.save_last()
                if cfg.snapshot_every and s.step % cfg.snapshot_every == 0:
                    self.save_snapshot()
                if bar is not None:
                    self._update_total(bar)
            s.stop_reason = reason
        except KeyboardInterrupt:
            # a second Ctrl-C may land inside an update: keep the last consistent checkpoint
            self._restore_signal_handlers(old_handlers)
            metrics.close()
            if bar is not None:
                bar.close()
            s.stop_reason = "interrupted (Ctrl-C twice, not saved)"
            self.log(f"quit without saving; the last checkpoint is step "
                     f"{read_checkpoint(self.run_dir / LAST).meta['state']['step']}")
            return s
        finally:
            self._restore_signal_handlers(old_handlers)
            if bar is not None:
                bar.close()
        took_mean = False
        try:
            if not s.stop_reason.startswith("interrupted") and self._last_eval_step != s.step:
                self._validate_and_track(metrics, None)
            if not s.stop_reason.startswith("interrupted") and s.averaged:
                took_mean = self._settle_mean(metrics)
            s.done = not s.stop_reason.startswith("interrupted")
            self.save_last()
            if cfg.snapshot_every and (took_mean or not snapshot_path(self.run_dir, s.step).exists()):
                self.save_snapshot()  # the final weights end the curves
            if not (self.run_dir / BEST).exists():
                self.save_best(None)
        finally:
            metrics.close()
            if self._tb is not None:
                self._tb.close()
        self._plot()
        return s

    def _accumulate_mean(self) -> None:
        """Fold the weights this update left into the running mean once the run is in its last
        --average-fraction (the update that brings it there is the first in the mean)."""
        s, fraction = self.state, self.cfg.average_fraction
        if not fraction:
            return
        done = self.progress_fraction()  # (before this update is counted in state.step: its weights' place)
        if done is None or done < 1 - fraction:
            return
        with torch.no_grad():
            params = [p.detach() for p in self.model.parameters()]
            if not s.averaged:
                self.weight_mean = [p.clone() for p in params]
            else:  # mean_n = mean_(n-1) + (w - mean_(n-1)) / n
                torch._foreach_lerp_(self.weight_mean, params, 1.0 / (s.averaged + 1))
        s.averaged += 1

    def _settle_mean(self, metrics) -> bool:
        """At the end of a run: keep the mean of the last state.averaged updates' weights if it validates better
        than the last update's (just validated), else the last update's. The mean is a different model, not a
        smoother estimate of the same one: on some texts it lags behind a model still improving fast, on others
        it removes the drift of the last updates, so the validation split decides. Without one the run keeps
        the last update's weights. A resumed run that trains on starts a new mean. True when the mean is kept."""
        s, n = self.state, self.state.averaged
        mean, s.averaged, self.weight_mean = self.weight_mean, 0, None
        if n < 2:  # the mean of one update's weights is the last update's
            return False
        if self.val_data is None:
            self.log(f"note: kept the last update's weights, not the mean of the last {n:,}: no validation split "
                     "tells which is better")
            return False
        last_val, last = self._last_val, [p.detach().clone() for p in self.model.parameters()]
        self._set_weights(mean)
        mean_val = self.validate()
        if mean_val >= last_val:
            self._set_weights(last)
            self.log(f"final weights: the last update's (val {last_val:.4f}); the mean of the last {n:,} "
                     f"updates' read {mean_val:.4f}")
            return False
        self.log(f"final weights: the mean of the last {n:,} updates' (val {mean_val:.4f}; the last update's "
                 f"read {last_val:.4f})")
        self._write_metrics(metrics, self._validation_row(mean_val, averaged=n))
        self._keep_if_best(mean_val)
        return True

    def _set_weights(self, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, t in zip(self.model.parameters(), tensors, strict=True):
                p.copy_(t)

    def _validation_row(self, val: float, **extra) -> dict:
        s = self.state
        return {"step": s.step, "epoch": round(self.epochs_read, 4), "val_loss": val, "val_bpc": val / math.log(2),
                "elapsed_s": s.elapsed, **extra}

    def _keep_if_best(self, val: float) -> bool:
        """A validation lower than the best so far becomes the best: best.safetensors holds these weights."""
        s = self.state
        if s.best_val is not None and val >= s.best_val:
            return False
        s.best_val, s.best_step, s.bad_evals = val, s.step, 0
        self.save_best(val)
        return True

    def _validate_and_track(self, metrics, bar) -> None:
        s = self.state
        self._last_eval_step = s.step
        t0 = time.perf_counter()
        val = self.validate()
        seconds = time.perf_counter() - t0
        self._last_val = val
        if val is None:
            self.save_best(None)
            s.best_step = s.step
        else:
            improved = self._keep_if_best(val)
            if not improved:
                s.bad_evals += 1
            self._write_metrics(metrics, self._validation_row(val))
            if bar is not None:
                bar.write(f"step {s.step}: val {val:.4f} nats/char ({val / math.log(2):.3f} bits/char)"
                          + (" *best*" if improved else ""))
            # not at the validation that ends the run, nor in the planned run's last decay_fraction: there the rate
            # decays (--lr-schedule wsd), which lowers the training loss faster than the validation loss (the man
            # pages' 1.15-1.2x rose to 1.30x), and a new dropout has little time to help (a plateau's 0.2 at 81% of a
            # 300 s War and Peace run cost ~0.017; the C headers' 0.4 at 82% gained nothing: docs/benchmarks.md)
            if s.dropout_from is None and s.stop_reason is None and not self._in_last_decay():
                if self.cfg.dropout_on_plateau and not improved:
                    self._dropout_on(val, bar, metrics)
                elif not self.cfg.dropout_on_plateau and self.cfg.wide_gap_dropout is not None:
                    self._dropout_up_at_wide_gap(val, bar, metrics)
        self._recent_losses.clear()  # the gap compares a validation with the updates since the one before
        self._plot_now_and_then()
        # what the final validation, its best checkpoint, the last checkpoint and the picture will cost: a run
        # with a time budget stops early enough to fit them inside it
        self._final_cost = final_validations(self.cfg) * seconds + 2 * self._save_cost + self._plot_cost

    @property
    def dropout_now(self) -> float:
        """The dropout the model trains with now: a --dropout-on-plateau run has none until it came on, then the
        one it came on at; a --wide-gap-dropout run without it has the model's until a wide gap raised it."""
        s = self.state
        if s.dropout_from is not None:
            return self.model_cfg.dropout if s.plateau_dropout is None else s.plateau_dropout
        return 0.0 if self.cfg.dropout_on_plateau else self.model_cfg.dropout

    def _in_last_decay(self) -> bool:
        done = self.progress_fraction()
        return done is not None and done > 1 - self.cfg.decay_fraction

    def _sync_dropout(self) -> None:
        self.model.set_dropout(self.dropout_now)

    def _gap(self, val: float) -> tuple[float, int, float] | None:
        """(the validation loss over the mean training loss of the updates since the validation before, how many
        updates, that mean): how much worse the held-out text is learned. None without a training loss."""
        losses = self._recent_losses
        train = sum(losses) / len(losses) if losses else None
        if train is None or train <= 0:
            return None
        return val / train, len(losses), train

    def _dropout_on(self, val: float, bar, metrics) -> None:
        s, wide = self.state, self.cfg.wide_gap_dropout
        why = "--dropout-on-plateau"
        if wide is not None:
            gap = self._gap(val)
            if gap is None:
                why += "; no training loss since the last validation to weigh the gap by"
            elif gap[0] >= WIDE_GAP:
                s.plateau_dropout = wide
                why = (f"--wide-gap-dropout: {gap[0]:.2f}x the training loss of the last {gap[1]} updates, "
                       f"{gap[2]:.4f}; from {WIDE_GAP:g}x the held-out text is learned much worse")
            else:
                why += f"; {gap[0]:.2f}x the training loss of the last {gap[1]} updates, under {WIDE_GAP:g}x"
        s.dropout_from = s.step
        self._dropout_changed(f"step {s.step}: val {val:.4f} did not improve on {s.best_val:.4f}: dropout "
                              f"{self.dropout_now:g} on from here ({why})", bar, metrics)

    def _dropout_up_at_wide_gap(self, val: float, bar, metrics) -> None:
        s, gap = self.state, self._gap(val)
        if gap is None or gap[0] < RAISE_GAP:
            return
        s.plateau_dropout, s.dropout_from = self.cfg.wide_gap_dropout, s.step
        self._dropout_changed(f"step {s.step}: val {val:.4f} is {gap[0]:.2f}x the training loss of the last "
                              f"{gap[1]} updates, {gap[2]:.4f}: dropout {self.dropout_now:g} from here instead of "
                              f"{self.model_cfg.dropout:g} (--wide-gap-dropout: from {RAISE_GAP:g}x the held-out text "
                              "is learned much worse)", bar, metrics)

    def _dropout_changed(self, msg: str, bar, metrics) -> None:
        """Train with dropout_now from this step (state.dropout_from) on, and say so in metrics.jsonl and msg."""
        s = self.state
        self._sync_dropout()
        self.collapse_watch.forget()  # dropout raises the training loss by itself
        self._write_metrics(metrics, {"step": s.step, "epoch": round(self.epochs_read, 4),
                                      "dropout": self.dropout_now, "elapsed_s": s.elapsed})
        self._say(msg, bar)

    def _say(self, msg: str, bar) -> None:
        """One line for the run's log, above the progress bar when there is one."""
        if bar is not None:
            bar.write(msg)
        else:
            self.log(msg)

    def _write_metrics(self, metrics, row: dict) -> None:
        if not self.dist.is_main:
            return
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if self.cfg.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter  # checked when the trainer was built
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self._tb.add_scalar(k, v, row["step"])

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm
        return tqdm(total=self._estimate_total(), initial=self.state.step, unit="step", dynamic_ncols=True,
                    file=sys.stderr, smoothing=0.1, mininterval=0.5)

    def _estimate_total(self) -> int | None:
        cfg, s = self.cfg, self.state
        totals = []
        if cfg.max_steps:
            totals.append(cfg.max_steps)
        if cfg.max_epochs:
            totals.append(math.ceil(cfg.max_epochs * len(self.batches)))
        if cfg.time_budget and s.elapsed > 0 and s.step > 0:
            totals.append(int(s.step + (cfg.time_budget - self.reserved_seconds - s.elapsed) * s.step / s.elapsed))
        return min(totals) if totals else None

    def _update_total(self, bar) -> None:
        if self.cfg.time_budget and self.state.step % 20 == 0:
            bar.total = self._estimate_total()

    def _postfix(self, row: dict) -> str:
        txt = f"loss {row['train_loss']:.3f} | {row['chars_per_s'] / 1000:.1f}K chars/s | lr {row['lr']:.2e}"
        if self.state.best_val is not None:
            txt += f" | best val {self.state.best_val:.3f}"
        return txt

    def _install_signal_handlers(self):
        """Ctrl-C and SIGTERM stop at the next step boundary, so the saved state is consistent.

        A second Ctrl-C quits at once without writing (the last periodic checkpoint stays).
        """
        if not _in_main_thread():
            return None

        def on_signal(signum, frame):
            # distributed: torchrun's agent forwards the signal to every rank and kills them after its
            # shutdown timeout; a rank must not quit mid-step alone (the others would wait on it)
            if signum == signal.SIGINT and self._stop_signal and not self.dist.active:
                raise KeyboardInterrupt
            self._stop_signal = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            again = "" if self.dist.active else " (Ctrl-C again to quit without saving)"
            self.log(f"\n{self._stop_signal}: stopping after this step and saving{again}")
        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return old

    def _restore_signal_handlers(self, old) -> None:
        for sig, handler in (old or {}).items():
            signal.signal(sig, handler)

    def _plot(self) -> None:
        if not self.dist.is_main or self.plot_loss is None:
            return
        t0 = time.perf_counter()
        try:
            self.plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        except Exception as e:  # noqa: BLE001  a figure must never cost a finished run
            self.log(f"note: could not draw loss.png ({e})")
        self._plot_cost = time.perf_counter() - t0
        self._last_plot = time.perf_counter()

    def _plot_now_and_then(self) -> None:
        """loss.png during the run, at most once a minute: it follows a long run, and the first drawing (which
        imports the plotting library) falls inside the time budget instead of after it."""
        if self._last_plot is None or time.perf_counter() - self._last_plot >= PLOT_EVERY_S:
            self._plot()


SNAPSHOTS = "snapshots"
PLOT_EVERY_S = 60.0


def _check_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise RnnlensError("--tensorboard needs the tensorboard package: pip install 'rnnlens[tensorboard]'") from None


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step-{step:06d}.safetensors"


def _check_cpu_bf16(model: CharRNN) -> None:
    """oneDNN runs a bf16 LSTM only on CPUs with bf16 instructions; elsewhere say so in one line."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.zeros(1, 2, dtype=torch.long))
    except RuntimeError as e:
        raise RnnlensError(f"--bf16 does not run on this CPU ({str(e).splitlines()[0][:80]}...); drop --bf16: "
                           "bf16 autocast is meant for GPUs (--device cuda)") from None


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _existing_last(run_dir: Path) -> Path:
    if not run_dir.exists():
        raise RnnlensError(f"--resume {run_dir}: no such run folder; start it with `rnnlens train --out {run_dir}`")
    last = run_dir / LAST
    if not last.exists():
        raise RnnlensError(f"--resume {run_dir}: no {LAST} in it, so there is nothing to resume; "
                           "start a new run with --out")
    return last
