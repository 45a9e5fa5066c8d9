"""One way to turn options into a run: the config builder every entry point uses.

`rnnlens.train(...)`, `rnnlens train`, `rnnlens demo` and each cell of `rnnlens grid` all call
`start_run` (and `resume_run`), so the options mean the same everywhere and are checked in one
place: model options go to ModelConfig, the rest to TrainConfig, anything else is an error that
names it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from rnnlens import distributed
from rnnlens.checks import parse_count
from rnnlens.corpus import Corpus, load_corpus, parse_split
from rnnlens.errors import RnnlensError
from rnnlens.model import ModelConfig, count_parameters, size_for_params
from rnnlens.threads import ThreadChoice, apply_threads, choose_threads
from rnnlens.trainer import (
    RAISE_GAP,
    RESUMABLE_OPTIONS,
    WIDE_GAP,
    TrainConfig,
    Trainer,
    final_validations,
    measure_updates_per_second,
    parse_duration,
    resolve_device,
    validation_seconds,
)

# ModelConfig's fields a user sets (the cell type is `model`, the vocabulary comes from the corpus)
MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name not in ("vocab_size", "cell"))
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))
# What shapes the network rather than its training: fixed once a run exists
ARCHITECTURE_OPTIONS = ("model", "params") + MODEL_OPTIONS
# The options that set the recurrent model's shape: with none given, the run takes the default shape
SHAPE_OPTIONS = {"model", "layers", "size", "params"}

# Named sets of settings; any option given beside a preset wins over it (docs/training.md, "Presets").
PRESETS = {
    # char-rnn's train.lua defaults, exactly
    "char-rnn": {"model": "lstm", "layers": 2, "size": 128, "input": "onehot", "dropout": 0.0, "init": "uniform",
                 "init_range": 0.08, "batch_size": 50, "seq_len": 50, "optimizer": "rmsprop", "lr": 2e-3,
                 "rmsprop_alpha": 0.95, "lr_schedule": "step", "lr_decay": 0.97, "lr_decay_after": 10,
                 "grad_clip": 5.0, "clip_mode": "value", "max_epochs": 50, "eval_every": 1000,
                 "split": (0.95, 0.05, 0.0), "average_fraction": 0.0},
    # Karpathy et al. 2015 as far as it is known (RMSProp 2e-3, decay 0.95, batch 100, 100 steps, 50 epochs,
    # x0.95 per epoch after 10, early stopping); the model size is the grid's, the split the corpus's own.
    # Our choices where the paper is silent: one-hot input and char-rnn's clipping (its code base), dropout 0,
    # validation at every epoch end, stop after 3 validations without improvement.
    "paper": {"input": "onehot", "init": "uniform", "init_range": 0.08, "dropout": 0.0, "batch_size": 100,
              "seq_len": 100, "optimizer": "rmsprop", "lr": 2e-3, "rmsprop_alpha": 0.95, "lr_schedule": "step",
              "lr_decay": 0.95, "lr_decay_after": 10, "grad_clip": 5.0, "clip_mode": "value", "max_epochs": 50,
              "eval_every": 0, "patience": 3, "average_fraction": 0.0},
}


def apply_preset(preset: str | None, options: dict, skip=()) -> dict:
    """`options` over the preset's settings (less those named in `skip`): what the user gave wins."""
    if preset is None:
        return dict(options)
    if preset not in PRESETS:
        raise RnnlensError(f"unknown --preset {preset!r}; choose from {', '.join(PRESETS)}")
    given = {k: v for k, v in options.items() if v is not None}
    skip = set(skip) | ({"size"} if "params" in given else set())  # a parameter budget replaces the width
    return {**{k: v for k, v in PRESETS[preset].items() if k not in skip}, **given}


# The batch a run takes when none is given (docs/training.md, "Why these defaults"). On a CPU a short run is
# decided by how many updates it gets: batch 16, the most updates per second (on 2 cores batch 32 reads no more
# characters per second with the 1x384). A longer run gains more from less noise in each update: batch 32 once
# the run would take LONG_RUN_UPDATES or more updates at batch 16 (counted on the 1x512). Measured on five texts
# (docs/benchmarks.md, section 5): at ~740-1,090 planned updates batch 16 was 0.021-0.069 better on the prose
# and the man pages, and on the C headers at ~630-950 better in four of six seeded pairs (by -0.050 to +0.068,
# -0.005 on average); at ~1,350 batch 32 was better by 0.106 on the C headers and within 0.011 on the prose.
# The threshold lies between. At ~1,000 updates (60 s) in fixed steps batch 20 was within 0.014 of batch 16 on
# four texts but 0.035-0.100 better on Python (two seeds; 0.030 with the trainer's mean of the last 20%); at
# batch 20 x 790 it was 0.019 worse, and timed on three seeds 0.010 worse; no early signal tells Python apart.
# Timed at 60 s on the C headers (~640-700 planned), batch 24 was 0.016 better over five seeds (-0.047 to +0.054
# seed by seed, with batch 16's updates moving by a quarter with the machine's speed).
SHORT_RUN_BATCH, LONG_RUN_BATCH = 16, 32
LONG_RUN_UPDATES = 1200

# The dropout a recurrent model takes when none is given, by how many times the run will read its training text
# (docs/benchmarks.md, section 5). A run that reads its text only a few times has little to overfit: dropout 0
# was better on four of five texts at 60 s (~0.3 passes), and at ~2.1-2.4 passes (120 s, 1x384) on four of five
# (by 0.005-0.05; the C headers 0.007 worse). At 2.8 passes (War and Peace, fixed steps) 0.2 was 0.017 better:
# FEW_PASSES lies between. At 14 passes a 1x512 LSTM overfits with 0.2: 0.4 was better by 0.035-0.056 on prose
# and code; at 8 passes (Python, 1,800 s) 0.2 still improved to the end. MANY_PASSES lies between.
# Between, at ~5-7 passes, texts disagree (War and Peace better with dropout 0 on three seeds, the C headers
# 0.045-0.057 worse on two): the passes alone cannot tell them apart. So there the dropout waits for the text to
# show overfitting: none until a validation does not improve on the best, DROPOUT from then on
# (TrainConfig.dropout_on_plateau); on the C headers that came at 2 passes and read 0.027 better than 0.2 from
# the start, and on War and Peace it never came. At ~7-8.7 passes (600 s, the 1x512) 0.2 from the start was at or
# below it on both, on two seeds each (by 0.028 and 0.000 on the C headers, 0.007 and 0.011 on War and Peace):
# from LATE_DROPOUT_PASSES on it is on from the start.
# At ~17 passes (1,800 s, 1.8M training characters) 0.2 was 0.026 better on War and Peace and within 0.004 on
# Python, where the C headers (same size, 10 passes) had 0.4 0.043 better: neither passes nor size separate them.
# What separates them is how much each holds against what the model can learn by heart: the training split's
# size under lzma, in bits per parameter of the 1x512 model. 0.4 was better, or within 0.004, from 0.3 to 2.2 bits (the
# 200K texts, the C headers, Shakespeare, Python, and the first 1M characters of War and Peace: 0.012 better
# there at 1.8 bits and ~17 passes); 0.2 was better at 3.5 (War and Peace, 1.8M characters). So from MANY_PASSES
# on the dropout goes from MANY_PASSES_DROPOUT at MEMORIZABLE_BITS down to DROPOUT at UNMEMORIZABLE_BITS (a little
# under War and Peace's 3.5), in a straight line between: one text lies on the far side, and where between 2.2
# and 3.5 bits the two cross is not measured (at 2.48, War and Peace's first 1.4M characters at ~13 passes, the
# line's 0.34 read 0.028-0.030 below both 0.2 and 0.4, one seed). The man pages (1.85 bits, ~16 passes) had 0.4
# 0.019 better. The parameters are the default 1x512's, not those of the model the run trains: a pinned 1x320
# (4.1 bits of its own parameters on the C headers, 4.8 on Python, ~17 passes) was better with 0.4 than with 0.2,
# by 0.032 and 0.051; a wider model is not measured.
# Where the dropout waits for a plateau, how the text overfits there tells more than the passes: WIDE_GAP_DROPOUT
# comes on instead of DROPOUT when the validation there lies far above the training loss (the measurements are at
# rnnlens.trainer.WIDE_GAP).
# From LATE_DROPOUT_PASSES on the dropout follows the bits, as from MANY_PASSES: at 5,500 x B32 (9.8 passes, 2M
# characters, seed 1) 0.4 read lower than the 0.2 the rules took there from the start by 0.033 on the man pages
# (1.85 bits) and by 0.025 on the C headers (the LSTM; a GRU 0.022, 0.027 in the mean of two seeds), and War and
# Peace (3.5 bits) keeps 0.2. Below MANY_PASSES, where the line gives less than WIDE_GAP_DROPOUT, the gap raises it
# at the first validation that reads it (rnnlens.trainer.RAISE_GAP): with 0.2 on, the C headers' validation read
# 1.45x the training loss at 3 passes, and 0.2 raised to 0.4 there read the best of three (the LSTM 0.011 below
# 0.4 from the start, helped by a rollback that halved its rate; the GRU 0.004), where War and Peace's stayed
# under 1.05x and the man pages' under 1.21x (1.11x and 1.30x in the rate's decay, where the trainer no longer
# raises it). 4M characters of the C headers (3.0 bits: 0.24 at 7.6 passes) read 1.34x at 2.2 passes, and the
# raise there took them from 0.024 to 0.008 above 0.4 from the start on seed 1, and 0.043 below it on seed 2 (helped
# by a rollback that halved the rate; thirty-fifth session).
DROPOUT, MANY_PASSES_DROPOUT, WIDE_GAP_DROPOUT = 0.2, 0.4, 0.4
FEW_PASSES, LATE_DROPOUT_PASSES, MANY_PASSES = 2.5, 7, 12
MEMORIZABLE_BITS, UNMEMORIZABLE_BITS = 2.2, 3.2
# The rules above were measured on the LSTM. A vanilla RNN (a 1x512 has 0.34-0.43M parameters against the LSTM's
# 1.2M) takes half their dropout (docs/benchmarks.md, section 5, thirtieth and thirty-first sessions): at 6,000 x B32
# (10.7 passes, the rules' 0.2 from the start, its rate 0.001) War and Peace and the man pages read 0.047 and 0.028
# lower without dropout than with 0.2 (seed 1), the C headers 0.019 higher (mean of seeds 1-2). 0.1 was the best
# of 0, 0.1 and 0.2 on the C headers (0.014 below 0.2 in the mean), 0.008 behind dropout 0 on the man pages (both
# seeds), and 0.023 behind it on War and Peace (0.020 and 0.025): a miss of 0.003, where 0.2 missed by 0.027.
# Below 7 passes, at 3,400 x B32 (6.0 passes, 0.002, seed 1), the halved 0.1 at a plateau (0.2 at a wide gap) was the
# best of three on the C headers (the LSTM's 0.4 +0.040, dropout 0 +0.017) and 0.004 behind dropout 0 on the man
# pages (the LSTM's 0.2 +0.014). From 12 passes on not measured. A GRU (three quarters of the LSTM's parameters)
# keeps the LSTM's rules: at 5,500 x B32 (9.8 passes, 0.002, seed 1) their 0.2 beat dropout 0 by 0.006, 0.028 and
# 0.086 on War and Peace, the man pages and the C headers (on the C headers 0.4 read
# 0.027 lower still in the mean of seeds 1-2, a miss the bits from 7 passes fix: above). The RNN's halved rule
# follows the bits from MANY_PASSES on only: at 10.7 passes its 0.1 was the best of three or within 0.023 of dropout
# 0 (above), where half the line would take 0.2 on the man pages (0.028 behind dropout 0 there).
HALF_DROPOUT_CELLS, HALF_DROPOUT_SHARE = ("rnn",), 0.5


# The width of the default model (no --model, --layers, --size or --params) in a run that a time budget ends
# (docs/benchmarks.md, section 5). Under a time budget the width trades quality per update for updates per
# second: a 1x384 LSTM takes ~1.3-1.5x the updates of a 1x512 in the same time. In a short run that wins: on Python
# at ~1,700 updates (counted at batch 16 and 1x512, as the batch rule counts them) 1x384 was 0.02-0.08 better than
# 1x512 over two seeds, and 0.006-0.040 better on C headers, War and Peace and man pages (0.011 worse on tiny
# Shakespeare); at ~2,600-2,900 0.041 better on Python and 0.055 on the C headers (0.023 worse on War and Peace).
# From ~3,500 to ~4,700 (300 s, five texts) the 1x512 was within 0.005 of the 1x384 on all five and better by
# 0.007 and 0.012 on two (on War and Peace, another seed, by 0.04); at ~7,600 (War and Peace) by 0.028.
# At ~2,300-3,150 (300 s on a machine that counts fewer) the 1x384 was within 0.02 of the 1x512 on ten of eleven
# text-seed pairs on five texts (0.006 better in the mean; the best of the two in the mean over seeds on four
# texts, 0.007 worse on Shakespeare; War and Peace 0.029 worse on seed 1, 0.030 and 0.020 better on seeds 2-3):
# the seeds of one text disagree by as much as the gap.
# At 1,800 s on one thread (~10,300-11,300 planned, ~10-20 passes of the 1x512) a 1x768 read 0.061 better on Python,
# 0.014 on tiny Shakespeare, 0.008 on the C headers, 0.009 on the man pages, and 0.002 worse on War and Peace (one
# seed each, each width with the dropout the rule below takes at its own passes; a 2x512 and a 2x384 read
# 0.025-0.028 worse on War and Peace). On Python at ~3,650 (600 s) the two tied, and at ~6,900 (1,200 s) the 1x768
# was 0.019 better: the run takes it from LONGEST_RUN_SIZE_UPDATES, between there and ~10,300 (docs/benchmarks.md,
# twenty-fourth and twenty-fifth sessions). Not measured: War and Peace between, two threads, and the dropout a
# 1x768 wants from MANY_PASSES on (a 1,800 s run gives it ~5-10 passes; at ~5 the C headers wanted 0.4 at both
# widths, 0.042 better than 0.2 on plateau, where Python wanted the latter: WIDE_GAP_DROPOUT tells them apart).
# A run ended by --max-steps or --max-epochs takes as many updates at any width, and the widths were measured
# against time, not in equal updates: it keeps 512.
SHORT_RUN_SIZE, LONG_RUN_SIZE, LONGEST_RUN_SIZE = 384, ModelConfig.size, 768  # LONG: ModelConfig's width (512)
LONG_RUN_SIZE_UPDATES, LONGEST_RUN_SIZE_UPDATES = 3500, 9000


# Adam's rate for a GRU or a vanilla RNN when neither --lr nor --optimizer is given (docs/benchmarks.md, section 5,
# twenty-seventh session). The LSTM's 0.004 (TrainConfig.lr) was the best of 0.002/0.004/0.006 for it at ~17 passes.
# The 1x512 GRU and RNN, 0.004 against 0.002 in fixed updates on four texts (prose, Python, C headers, man pages;
# 2M characters, seed 1), by the characters the run reads (updates x batch x 100): at 0.48M (300 x B16, a GRU's 60 s
# on one thread) 0.004 was better on all four, by 0.033-0.094; at 0.96M (600 x B16) by 0.026 on War and Peace; at
# 1.28M (800 x B16, an RNN's 60 s) 0.002 was better on three texts (War and Peace by 0.011, the man pages by 0.027,
# the C headers by 0.047 and 0.029 on two seeds) and worse on Python (by 0.015 and 0.087 on two seeds), whose validation
# split is help text: on Python code (pycode, thirtieth session) 0.002 was better on three seeds (by 0.000-0.020), and
# at 7.7M 0.044 better than 0.004 and 0.009 than 0.001. At 2.9M (900 x B32, a GRU's 300 s) 0.002 was better
# on three texts (by 0.025-0.072) and within 0.019 on War and Peace (two seeds), and at 7.7M (2,400 x B32, an RNN's
# 300 s) on all four, by 0.010-0.134. At 19M (6,000 x B32, the C headers' RNN) 0.004 climbed twice, was rolled back at
# half the rate each time (SlowCollapseWatch) and ended 0.012 below 0.002. LOW_RATE_CHARACTERS lies between 0.96M and
# 1.28M; where between is not measured. A GRU at 1.28M: 0.002 better on three texts, 0.013 behind on War and Peace;
# at 17.6M (5,500 x B32) better on War and Peace and Python by 0.019 and 0.033. The miss past 1.28M: War and Peace's
# RNN at 45M (14,000 x B32, 25 passes), 0.055 behind 0.004 rolled back to a quarter of its rate: MANY_PASSES_RATE.
LOW_RATE_CELLS, LOW_RATE, LOW_RATE_CHARACTERS = ("gru", "rnn"), 2e-3, 1_100_000
# An RNN that reads its text many times wants less again (docs/benchmarks.md, section 5, twenty-ninth session): at
# 6,000 x B32 (~10.7 passes) 0.001 was within 0.02 of the best of 0.004/0.002/0.001 on four texts, where 0.002 read
# 0.078 worse on the man pages (its loss climbed from ~7 passes on); at 14,000 x B32 (~25 passes) 0.001 read 0.073
# and 0.027 below 0.002 on War and Peace and the C headers (0.002 collapsed slowly on the first, and was rolled back
# once on the second) and 0.018 below 0.004 on War and Peace, which the collapse watch halved twice. At 2,400 x B32
# (4.3 passes) 0.002 was better on three of four texts (0.001 0.011-0.045 worse, 0.029 better on Python's help text)
# and at 3,400 x B32 (6.0 passes, thirtieth session) on the man pages and War and Peace (0.001 0.013 and 0.030 worse).
# Between 6.0 and 10.7 is not measured: a run planned at 8 passes keeps 0.002's full rate (wsd) to 6.4, short of the
# ~7 where the man pages' climbed. A GRU is not measured at 0.001 past ~1.6 passes, and kept 0.002 better than 0.004
# at ~9.8: it keeps LOW_RATE.
MANY_PASSES_RATE_CELLS, MANY_PASSES_RATE, MANY_PASSES_RATE_PASSES = ("rnn",), 1e-3, 8
# The LSTM's rate in a long run (docs/benchmarks.md, section 5, thirty-sixth to forty-second sessions): in 8,500 updates
# of batch 32 (27M characters, 7.6 passes) over 4M characters of the C headers and of the man pages (3.0 and 3.2 bits
# per parameter), 0.003 read 0.004-0.047 below 0.004 on all four text-seed pairs; 0.004 climbed and was rolled back at
# half its rate on three of them, after 18.7M-22.4M characters (0.003 once, at 22.1M). At 20.8M (3M characters of Python
# code, one seed) 0.003 read 0.010 below 0.004. At 16M (5,000 x B32) it read 0.006-0.046 below on all six pairs of the
# man pages' and the C headers' 4M and the whole of War and Peace, and at 11.2M (3,500 x B32, 3.1-3.9 passes)
# 0.003-0.027 below on the same six, with no climb. At 12.4M (War and Peace's first 1.4M, 3,860 x B32, 9.8 passes) 0.004
# was 0.007 better in the mean of two seeds (0.033 better and 0.020 worse). At 10.2M with the 1x384 a 300 s run takes
# (3,200 x B32, 5.7 passes over 2M characters, the quality table's texts) the texts part, and the seeds too: 0.003 read
# 0.013 and 0.020 below 0.004 in the mean of two seeds on the C headers and War and Peace (0.025 and 0.040 on seed 1),
# 0.003 below on Python and level on Shakespeare (seed 1), and 0.019 above on the man pages (0.030 on seed 1); 0.0035
# was no middle way (0.017 behind 0.003 on the C headers and 0.011 behind 0.004 on the man pages in the mean). At 4.8M
# (1,500 x B32, 1.3-1.7 passes) 0.003 read 0.024 and 0.023 below 0.004 on the C headers (seeds 1-2), 0.007 below on War
# and Peace and 0.003 above on the man pages. LONG_RUN_RATE_CHARACTERS is the least measured where 0.003 is within 0.02
# of the best rate tried on every text (in the mean of the seeds run), and where 0.004 missed on the C headers; under it
# is not measured. All of those runs were 1x512 but the 1x384 at 10.2M. The narrower model wants the higher rate: timed
# at 300 s (the 1x384, 7-8M characters, forty-first to forty-third sessions, the two rates in alternation in the second
# and third) 0.004 read 0.021 and 0.020 lower on War and Peace and the man pages in the mean of six and four runs (0.020
# on Python over three, 0.006 on Shakespeare over four, 0.002 on the C headers over five), and at 10.2M in fixed steps
# 0.004 is within 0.02 of 0.003 in the mean on every text; on the man pages at 10.2M the 1x768 wanted 0.003 (0.006
# lower) where the 1x384 wanted 0.004. So LONG_RUN_RATE_SIZE: a model narrower than it keeps 0.004. Past ~10M
# characters, where a timed 1x384 no longer runs, one seed each: at 16M (5,000 x B32, seed 1) the 1x384 read 0.031 lower
# at 0.004 than at 0.003 over the C headers' 2M (8.9 passes), and 0.009 higher over their 4M (4.4 passes; the 1x512
# 0.046 higher there): within 0.02 where the 1x512 missed by 0.046.
# At 9.1M on the C headers' 600K (~17 passes) 0.004 beat 0.002 by 0.10: 0.003 is not measured that many passes in.
LONG_RUN_RATE_CELLS, LONG_RUN_RATE, LONG_RUN_RATE_CHARACTERS = ("lstm",), 3e-3, 4_800_000
LONG_RUN_RATE_SIZE = LONG_RUN_SIZE  # 512 units


@dataclass
class RunLength:
    """How long a run will be, counted before it starts from the stopping rule that ends it first."""
    updates: int | None    # at batch_size; None: not counted (ranks of a distributed run with a time budget)
    measure: str           # that stopping rule, as the defaults line names it
    windows: int           # windows of seq_len per stream at batch_size in the training split
    fixed_steps: bool      # it ends by --max-steps: a larger batch reads more text in as many updates
    batch_size: int = SHORT_RUN_BATCH
    timed: bool = False    # it ends by a time budget, counted at the speed of updates timed at batch_size

    def describe(self) -> str:
        return f"~{self.updates:,} updates at batch {self.batch_size} by {self.measure}"

    def windows_read(self, batch_size: int) -> int | None:
        """Planned windows of seq_len read at `batch_size`; None when not counted. A --max-steps count reads more
        text at a larger batch; any other count reads the same text at any batch."""
        if self.updates is None:
            return None
        return self.updates * (batch_size if self.fixed_steps else self.batch_size)

    def passes(self, batch_size: int) -> float | None:
        """Planned passes over the training split at `batch_size`; None when not counted. A timed length counts
        them at the batch it was timed at (plan_run times the batch the run takes)."""
        read = self.windows_read(batch_size)
        if read is None or not self.windows:
            return None
        return read / (self.windows * self.batch_size)


def plan_length(model: ModelConfig, train: TrainConfig, corpus: Corpus, *, batch_size: int = SHORT_RUN_BATCH,
                timed: bool = True) -> RunLength:
    """The run's planned length in updates at `batch_size`: `--max-steps` as given, `--max-epochs` x the
    training split's windows, the updates a `--time-budget` holds at the speed of updates timed now at that batch,
    less its validations (unless `timed` is False); the first to end wins."""
    windows = max(0, (len(corpus.split("train")) - 1) // batch_size // train.seq_len)
    counts = []  # (updates, the rule that gives them, whether it is --max-steps, whether it is timed)
    if train.max_steps:
        counts.append((train.max_steps, f"--max-steps {train.max_steps}", True, False))
    if train.max_epochs:
        counts.append((math.ceil(train.max_epochs * windows), f"--max-epochs {train.max_epochs:g}", False, False))
    if train.time_budget and timed:
        updates = updates_in_budget(train, 1.0 / measure_updates_per_second(model, train, batch_size), batch_size,
                                    windows, val_chars=len(corpus.split("val")))
        counts.append((updates, f"--time-budget {train.time_budget:g}s (timed)", False, True))
    if not counts:
        return RunLength(None, "a time budget, not counted in updates when ranks share a run", windows, False,
                         batch_size)
    updates, measure, fixed_steps, by_time = min(counts, key=lambda count: count[0])
    return RunLength(updates, measure, windows, fixed_steps, batch_size, by_time)


def updates_in_budget(train: TrainConfig, update_s: float, batch_size: int, windows: int, val_chars: int) -> int:
    """The updates a run of `update_s` seconds each takes in its time budget, less the time of its validations:
    every eval_every steps, at every epoch end (`windows` updates) and the last one, whose time the trainer keeps
    free at the end (final_validations of its cost)."""
    val_s = validation_seconds(val_chars, batch_size * train.seq_len, update_s)
    per_update = update_s + val_s * ((1 / train.eval_every if train.eval_every else 0) + (1 / windows if windows else 0))
    return max(1, math.ceil((train.time_budget - final_validations(train) * val_s) / per_update))


@dataclass
class Choice:
    """A default the run chose for itself, and the reason the defaults line gives."""
    value: int | float
    why: str


def choose_batch(length: RunLength) -> Choice:
    """LONG_RUN_BATCH when the run is long enough and the training split holds a window for each of its
    streams, else SHORT_RUN_BATCH."""
    if length.windows < 2 * LONG_RUN_BATCH // SHORT_RUN_BATCH:  # not a window per stream at the long-run batch
        return Choice(SHORT_RUN_BATCH, f"the text is too short for {LONG_RUN_BATCH} streams")
    if length.updates is None:
        return Choice(SHORT_RUN_BATCH, length.measure)
    if length.updates < LONG_RUN_UPDATES:
        return Choice(SHORT_RUN_BATCH, f"a short run, {length.describe()}: under {LONG_RUN_UPDATES:,}, the most "
                                       "updates per second win")
    return Choice(LONG_RUN_BATCH, f"a long run, {length.describe()}: from {LONG_RUN_UPDATES:,} on, more text per "
                                  "update wins")


def choose_size(length: RunLength) -> Choice:
    """For a timed length: SHORT_RUN_SIZE under LONG_RUN_SIZE_UPDATES updates, LONG_RUN_SIZE under
    LONGEST_RUN_SIZE_UPDATES, else LONGEST_RUN_SIZE."""
    at = f"updates at batch {length.batch_size}"
    if length.updates < LONG_RUN_SIZE_UPDATES:
        return Choice(SHORT_RUN_SIZE, f"a timed run under {LONG_RUN_SIZE_UPDATES:,} {at}: a narrower model reads "
                                      "more text per second")
    if length.updates < LONGEST_RUN_SIZE_UPDATES:
        return Choice(LONG_RUN_SIZE, f"a timed run of {LONG_RUN_SIZE_UPDATES:,} to {LONGEST_RUN_SIZE_UPDATES:,} "
                                     f"{at}: the capacity pays, and a wider model would take too few updates")
    return Choice(LONGEST_RUN_SIZE, f"a timed run of {LONGEST_RUN_SIZE_UPDATES:,} {at} or more: enough updates for "
                                    "a wider model's capacity to pay")


def choose_dropout(length: RunLength, batch_size: int, can_validate: bool,
                   bits_per_parameter: Callable[[], float], cell: str) -> tuple[Choice, bool, bool]:
    """(the dropout, whether it waits for a plateau, whether a wide gap takes WIDE_GAP_DROPOUT): the LSTM's
    (lstm_dropout), times the cell's dropout_share; a cell of HALF_DROPOUT_CELLS follows the bits only from
    MANY_PASSES on."""
    share = dropout_share(cell)
    choice, on_plateau, wide_gap = lstm_dropout(length, batch_size, can_validate, bits_per_parameter,
                                                bits_from=LATE_DROPOUT_PASSES if share == 1 else MANY_PASSES)
    if share != 1 and choice.value:
        choice = Choice(round(choice.value * share, 2), f"{choice.why}; {cell_name(cell)} half the LSTM's "
                                                        f"{choice.value:g}: fewer parameters to overfit with")
    return choice, on_plateau, wide_gap


def dropout_share(cell: str) -> float:
    """The share of the LSTM's dropout rules a cell takes: HALF_DROPOUT_SHARE for HALF_DROPOUT_CELLS."""
    return HALF_DROPOUT_SHARE if cell in HALF_DROPOUT_CELLS else 1.0


def lstm_dropout(length: RunLength, batch_size: int, can_validate: bool, bits_per_parameter: Callable[[], float],
                 bits_from: float = LATE_DROPOUT_PASSES) -> tuple[Choice, bool, bool]:
    """(the LSTM's dropout, whether it waits for a plateau, whether a wide gap takes WIDE_GAP_DROPOUT): none for a
    run that reads its text fewer than FEW_PASSES times; DROPOUT up to LATE_DROPOUT_PASSES, switched on at the
    first validation that does not improve (when the run has a validation split to watch; WIDE_GAP_DROPOUT instead
    at a wide gap); from bits_from passes on MANY_PASSES_DROPOUT, or less for a text that holds more bits per
    parameter of the default model than MEMORIZABLE_BITS (bits_per_parameter() measures that, called only then),
    below MANY_PASSES raised to WIDE_GAP_DROPOUT at the first validation that reads a wide gap (DROPOUT between
    LATE_DROPOUT_PASSES and bits_from)."""
    passes = length.passes(batch_size)
    if passes is None:
        return Choice(DROPOUT, length.measure), False, False
    read = f"~{f'{passes:.2g}' if passes < 10 else f'{passes:,.0f}'} passes over the training text"
    if passes < FEW_PASSES:
        return Choice(0.0, f"{read}: under {FEW_PASSES:g}, too few to overfit"), False, False
    if passes < LATE_DROPOUT_PASSES and can_validate:
        return Choice(DROPOUT, f"{read}: from {FEW_PASSES:g} on, once the text shows overfitting"), True, True
    if passes < LATE_DROPOUT_PASSES:
        return Choice(DROPOUT, f"{read}: from {FEW_PASSES:g} on, against overfitting"), False, False
    if passes < bits_from:
        return Choice(DROPOUT, f"{read}: from {LATE_DROPOUT_PASSES} on, against overfitting from the start"), False, False
    bits = bits_per_parameter()
    read += f", which holds {bits:.2g} bits per parameter of a {ModelConfig.layers}x{ModelConfig.size} LSTM under lzma"
    if bits <= MEMORIZABLE_BITS:
        choice = Choice(MANY_PASSES_DROPOUT, f"{read}: from {bits_from:g} passes on, up to {MEMORIZABLE_BITS:g} "
                                             "bits, more against overfitting")
    elif bits >= UNMEMORIZABLE_BITS:
        choice = Choice(DROPOUT, f"{read}: from {UNMEMORIZABLE_BITS:g} bits on, too much to learn by heart")
    else:
        share = (bits - MEMORIZABLE_BITS) / (UNMEMORIZABLE_BITS - MEMORIZABLE_BITS)
        dropout = round(MANY_PASSES_DROPOUT - share * (MANY_PASSES_DROPOUT - DROPOUT), 2)
        choice = Choice(dropout, f"{read}: from {MANY_PASSES_DROPOUT:g} at {MEMORIZABLE_BITS:g} bits to {DROPOUT:g} "
                                 f"at {UNMEMORIZABLE_BITS:g}")
    return choice, False, can_validate and passes < MANY_PASSES and choice.value < WIDE_GAP_DROPOUT


def choose_rate(cell: str, size: int, length: RunLength, batch_size: int, seq_len: int) -> Choice:
    """Adam's rate for a recurrent cell of `size` units in a run of `batch_size` x `seq_len`: TrainConfig's (the
    LSTM's) where the run is not counted; for an LSTM of LONG_RUN_RATE_SIZE units or more LONG_RUN_RATE where it
    reads LONG_RUN_RATE_CHARACTERS or more; for a cell of LOW_RATE_CELLS LOW_RATE from LOW_RATE_CHARACTERS on, and
    MANY_PASSES_RATE for a cell of MANY_PASSES_RATE_CELLS that reads its training text MANY_PASSES_RATE_PASSES times
    or more."""
    if length.updates is None:
        return Choice(TrainConfig.lr, length.measure)
    characters = length.windows_read(batch_size) * seq_len
    amount = f"~{characters / 1e6:.2g}M characters"
    if cell in LONG_RUN_RATE_CELLS:  # every LSTM run's line has this reason: the characters alone keep it short
        limit = f"{LONG_RUN_RATE_CHARACTERS / 1e6:g}M"
        if characters < LONG_RUN_RATE_CHARACTERS:
            return Choice(TrainConfig.lr, f"{amount}: under {limit}")
        if size < LONG_RUN_RATE_SIZE:
            return Choice(TrainConfig.lr, f"{amount}, {size} units: under {LONG_RUN_RATE_SIZE} units a model keeps "
                                          f"this rate past {limit} too")
        return Choice(LONG_RUN_RATE, f"{amount}: from {limit} on, a lower rate reads better in a run this long")
    read, limit = f"{cell_name(cell)} in {length.describe()}, {amount}", f"{LOW_RATE_CHARACTERS / 1e6:g}M"
    if characters < LOW_RATE_CHARACTERS:
        return Choice(TrainConfig.lr, f"{read}: under {limit}, the LSTM's rate learns fastest")
    passes = length.passes(batch_size)
    if cell in MANY_PASSES_RATE_CELLS and passes is not None and passes >= MANY_PASSES_RATE_PASSES:
        return Choice(MANY_PASSES_RATE, f"{read}, ~{passes:,.0f} passes over the training text: from "
                                        f"{MANY_PASSES_RATE_PASSES:g} passes on, a quarter of the LSTM's rate "
                                        "keeps learning")
    return Choice(LOW_RATE, f"{read}: from {limit} on, half the LSTM's rate learns more")


def cell_name(cell: str) -> str:
    """'an RNN', 'a GRU', 'an LSTM': the cell as the defaults line names it."""
    return ("an " if cell in ("rnn", "lstm") else "a ") + cell.upper()


def bits_per_default_parameter(corpus: Corpus) -> float:
    """The training split's size under lzma per parameter of the default model, ModelConfig's 1x512 LSTM for the
    corpus's vocabulary, whatever model the run trains: the measure MEMORIZABLE_BITS and UNMEMORIZABLE_BITS are
    set on (a pinned narrower model did not want less dropout: above)."""
    return corpus.compressed_bits("train") / count_parameters(ModelConfig(vocab_size=len(corpus.vocab)))


@dataclass
class RunPlan:
    model: ModelConfig
    train: TrainConfig
    corpus: Corpus
    defaults: str | None = None  # which of rnnlens's defaults the run took, and why (defaults_note)
    same_choices: str | None = None  # flags that make the choices a timing made again (choice_flags)
    threads: ThreadChoice | None = None  # the CPU threads the run takes, chosen before its updates were timed

    def describe(self) -> str:
        m = self.model
        shape = (f"{m.size}-unit n-NN (ffn, context {m.context})" if m.cell == "ffn"
                 else f"{m.layers}x{m.size} {m.cell.upper()}")
        return (f"a {shape} ({count_parameters(m):,} parameters) on {self.corpus.name} "
                f"({len(self.corpus):,} characters, vocabulary {len(self.corpus.vocab)})")


def defaults_note(given: set, model: ModelConfig, train: TrainConfig, choices: dict | None = None) -> str | None:
    """One line: the settings that shape quality which this run took from rnnlens's defaults (none given,
    no preset), and why. choices: option name -> the Choice the run made for it. None when the user set them
    all."""
    m, t, choices = model, train, choices or {}

    def with_reason(name: str, setting: str) -> str:
        return f"{setting} ({choices[name].why})" if name in choices else setting

    parts = []
    if not given & SHAPE_OPTIONS:
        parts.append(with_reason("size", f"{m.layers}x{m.size} {m.cell.upper()}"))
    if "dropout" not in given and m.cell != "ffn":
        plateau = " from the first validation that does not improve" if t.dropout_on_plateau else ""
        dropout = with_reason("dropout", f"dropout {m.dropout:g}{plateau}")
        if t.wide_gap_dropout is not None and "wide_gap_dropout" not in given:
            dropout += (f", {t.wide_gap_dropout:g} if that validation reads {WIDE_GAP:g}x the training loss or more"
                        if t.dropout_on_plateau else f", {t.wide_gap_dropout:g} from the first validation that reads "
                                                     f"{RAISE_GAP:g}x the training loss or more")
        parts.append(dropout)
    if "batch_size" not in given:
        parts.append(with_reason("batch_size", f"batch {t.batch_size}"))
    if not given & {"optimizer", "lr"}:
        parts.append(with_reason("lr", f"{t.optimizer.capitalize()} {t.lr:g}"))
    if "lr_schedule" not in given and t.lr_schedule == "wsd":
        parts.append(f"the wsd schedule (the full rate, then down to {t.min_lr_ratio:g}x over the last "
                     f"{t.decay_fraction:.0%} of the planned run)")
    if "average_fraction" not in given and t.average_fraction:
        parts.append(f"the mean of the weights over the last {t.average_fraction:.0%} if it validates better")
    if not parts:
        return None
    return (f"defaults: {', '.join(parts)}: chosen for quality per CPU-minute on prose, code and markup "
            "(docs/training.md); a flag changes any of them")


def choice_flags(given: set, model: ModelConfig, train: TrainConfig, choices: dict) -> str:
    """The command-line flags that give a run the choices in `choices` (option name -> Choice), less the options
    in `given`."""
    flags = []
    if "size" in choices:
        flags.append(f"--size {model.size}")
    if "batch_size" in choices:
        flags.append(f"--batch-size {train.batch_size}")
    if "dropout" in choices:
        plateau = train.dropout_on_plateau and "dropout_on_plateau" not in given
        flags.append(f"--dropout {model.dropout:g}" + (" --dropout-on-plateau" if plateau else ""))
        if train.wide_gap_dropout is not None and "wide_gap_dropout" not in given:
            flags.append(f"--wide-gap-dropout {train.wide_gap_dropout:g}")
    if "lr" in choices:
        flags.append(f"--lr {train.lr:g}")
    return " ".join(flags)


def train_config(options: dict) -> TrainConfig:
    """TrainConfig from options as a user gives them: '10m' durations and '0.8,0.1,0.1' splits allowed."""
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise RnnlensError(f"unknown training option(s): {', '.join(unknown)}")
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(options.get("time_budget"), str):
        options["time_budget"] = parse_duration(options["time_budget"])
    if isinstance(options.get("split"), str):
        options["split"] = parse_split(options["split"])
    if "data" in options:
        options["data"] = str(options["data"])
    return TrainConfig(**options)


def plan_run(data: str | Path = "pystdlib", *, model: str | None = None, params: int | str | None = None,
             corpus: Corpus | None = None, progress: bool = False, preset: str | None = None, **options) -> RunPlan:
    """Check every option, read the corpus and size the model. Raises RnnlensError naming a bad option.
    preset: 'char-rnn' or 'paper' (PRESETS), under the options given."""
    options = apply_preset(preset, {"model": model, "params": params, **options})
    given = {k for k, v in options.items() if v is not None}
    model, params = options.pop("model", None) or "lstm", options.pop("params", None)
    model_options = {k: options.pop(k) for k in list(options) if k in MODEL_OPTIONS and options[k] is not None}
    cfg = train_config({"data": data, **options})
    if model != "ffn" and "context" in model_options:
        raise RnnlensError("--context is the n of the n-NN baseline; use it with --model ffn")
    if params is not None and "size" in model_options:
        raise RnnlensError("give either --size or --params, not both")
    if not any([cfg.max_steps, cfg.max_epochs, cfg.time_budget]):
        raise RnnlensError("give a stopping rule: --max-epochs, --max-steps or --time-budget")
    ModelConfig(vocab_size=2, cell=model, **model_options)  # checks the model options before reading the corpus
    if corpus is None:
        ctx = distributed.current()
        with ctx.local_main_first():  # one rank per machine prepares the corpus, the others find it cached
            # the preparation's bars are transient: on a terminal only, never in a log
            corpus = load_corpus(cfg.data, glob=cfg.glob, split=cfg.split, encoding_errors=cfg.encoding_errors,
                                 progress=progress and ctx.is_main and sys.stderr.isatty())
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), cell=model, **model_options)
    if params is not None:
        model_cfg.size = size_for_params(model_cfg, parse_count(params) if isinstance(params, str) else params)
    # the updates the plan times run on the threads the run will have
    threads = choose_threads(cfg.threads, timed=bool(cfg.time_budget), device_type=resolve_device(cfg.device).type)
    apply_threads(threads)
    choices, timed = {}, False
    default_shape = not given & SHAPE_OPTIONS
    default_rate = model_cfg.cell in LOW_RATE_CELLS + LONG_RUN_RATE_CELLS and not given & {"optimizer", "lr"}
    # measured on recurrent models only
    if not preset and model_cfg.cell != "ffn" and (default_shape or default_rate
                                                   or not {"batch_size", "dropout"} <= given):
        # ranks of a distributed run must agree, and each would time its own updates: they count steps only
        length = plan_length(model_cfg, cfg, corpus, timed=not distributed.current().active,
                             batch_size=cfg.batch_size if "batch_size" in given else SHORT_RUN_BATCH)
        timed_size, timed = model_cfg.size, length.timed
        if default_shape and length.timed:
            choices["size"] = choose_size(length)
            model_cfg.size = int(choices["size"].value)
        if "batch_size" not in given:
            choices["batch_size"] = choose_batch(length)
            cfg.batch_size = int(choices["batch_size"].value)
        if ("dropout" not in given or default_rate) and length.timed and (
                (cfg.batch_size, model_cfg.size) != (length.batch_size, timed_size)):
            # count the passes at the speed of the model and batch the run takes
            length = plan_length(model_cfg, cfg, corpus, batch_size=cfg.batch_size)
        if "dropout" not in given:
            choices["dropout"], on_plateau, wide_gap = choose_dropout(
                length, cfg.batch_size, can_validate=len(corpus.split("val")) >= 2,
                bits_per_parameter=lambda: bits_per_default_parameter(corpus), cell=model_cfg.cell)
            model_cfg.dropout = choices["dropout"].value
            if "dropout_on_plateau" not in given:
                cfg.dropout_on_plateau = on_plateau
            if wide_gap and "wide_gap_dropout" not in given:  # at the plateau, or up from the start's at a wide gap
                cfg.wide_gap_dropout = round(WIDE_GAP_DROPOUT * dropout_share(model_cfg.cell), 2)
        if default_rate:
            choices["lr"] = choose_rate(model_cfg.cell, model_cfg.size, length, cfg.batch_size, cfg.seq_len)
            cfg.lr = choices["lr"].value
    if cfg.dropout_on_plateau and model_cfg.dropout == 0:
        raise RnnlensError("--dropout-on-plateau turns the model's dropout on when validation stops improving, but "
                           "this run's dropout is 0: give --dropout, e.g. 0.2, or drop --dropout-on-plateau")
    # a timed plan can choose otherwise in another run of the same command (a machine's speed moves): say how to pin it
    same_choices = choice_flags(given, model_cfg, cfg, choices) if timed and choices else None
    return RunPlan(model_cfg, cfg, corpus, None if preset else defaults_note(given, model_cfg, cfg, choices),
                   same_choices, threads)


def start_run(out: str | Path, *, force: bool = False, progress: bool = True, log=None, **options) -> Trainer:
    """A new run in `out`, ready to `.run()`: options as for plan_run."""
    cfg_device = options.get("device") or TrainConfig.device
    distributed.setup(cfg_device)
    plan = plan_run(progress=progress, **options)
    trainer = Trainer.start(out, plan.model, plan.train, force=force, progress=progress, corpus=plan.corpus, log=log,
                            threads=plan.threads)
    if trainer.dist.is_main:
        trainer.log(f"training {plan.describe()} into {out}{ranks_note(trainer)}")
        if plan.defaults:
            trainer.log(plan.defaults)
        if plan.same_choices:
            trainer.log(f"these choices follow the updates timed before the run; to make them again: {plan.same_choices}")
    return trainer


def resume_run(run: str | Path, *, progress: bool = True, log=None, **options) -> Trainer:
    """Continue a run from its last checkpoint; only RESUMABLE_OPTIONS (and `data`, where its text is now) may
    be given, and a new stopping rule replaces the old one."""
    given = {k: v for k, v in options.items() if v is not None}
    fixed = [k for k in given if k in ARCHITECTURE_OPTIONS + ("preset",)
             or (k in TRAIN_OPTIONS and k not in RESUMABLE_OPTIONS and k != "data")]
    if fixed:
        raise RnnlensError(f"--resume continues a run as it was; drop --{fixed[0].replace('_', '-')} (only "
                           + ", ".join("--" + a.replace("_", "-") for a in RESUMABLE_OPTIONS) + " may change)")
    unknown = sorted(set(given) - set(TRAIN_OPTIONS))
    if unknown:
        raise RnnlensError(f"unknown training option(s): {', '.join(unknown)}")
    if isinstance(given.get("time_budget"), str):
        given["time_budget"] = parse_duration(given["time_budget"])
    trainer = Trainer.resume(run, overrides=given, progress=progress, log=log)
    if trainer.dist.is_main:
        s = trainer.state
        trainer.log(f"resuming {run} at step {s.step} (epoch {s.epoch}, window {s.window}){ranks_note(trainer)}")
    return trainer


def ranks_note(trainer) -> str:
    d = trainer.dist
    if not d.active:
        return ""
    return (f" on {d.world} ranks ({d.backend}, {trainer.cfg.batch_size // d.world} of the "
            f"{trainer.cfg.batch_size} streams each)")


def stop_message(trainer, state) -> str:
    """What the run did, in one line, as printed after training."""
    import math
    msg = f"stopped: {state.stop_reason} at step {state.step} (epoch {state.epoch})"
    if state.best_val is not None:
        msg += (f"; best val {state.best_val:.4f} nats/char ({state.best_val / math.log(2):.3f} bits/char) "
                f"at step {state.best_step}")
    if state.dropout_from is not None:  # (--dropout-on-plateau or --wide-gap-dropout)
        msg += f"; dropout {trainer.dropout_now:g} from step {state.dropout_from}"
    elif trainer.cfg.dropout_on_plateau:
        msg += (f"; dropout stayed off (no validation before the last {trainer.cfg.decay_fraction:.0%} of the run "
                "failed to improve)")
    return msg


def default_run_dir() -> str:
    import time
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}"


def train(*, resume: str | Path | None = None, out: str | Path | None = None, force: bool = False,
          progress: bool = True, **options):
    """Start (or resume) a run and train it to its stop: (trainer, final state). In a rank of a
    distributed run, a lost peer becomes one RnnlensError that says how to go on, and the process group
    ends with the run (the trainer returned trains no more)."""
    import re
    trainer = None
    try:
        if resume is not None:
            if out is not None:
                raise RnnlensError("--resume continues a run in its own folder; drop --out")
            trainer = resume_run(resume, progress=progress, **options)
        else:
            if out is None:
                if distributed.launched_by_torchrun():
                    raise RnnlensError("with several ranks give --out (each rank would name its own run folder "
                                       "otherwise)")
                out = default_run_dir()
            trainer = start_run(out, force=force, progress=progress, **options)
        return trainer, trainer.run()
    except Exception as e:
        ctx = distributed.current()
        if ctx.active and distributed.is_comm_error(e):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            first = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", first)  # gloo's source location
            raise RnnlensError(f"rank {ctx.rank} of {ctx.world} lost contact with the other ranks ({first[:200]}); "
                               "a rank died or the network failed; the last checkpoint is intact: continue with "
                               "--resume") from None
        raise
    finally:
        if trainer is not None:
            trainer.leave_ranks()
        distributed.shutdown()


def launch_ranks(nproc: int, argv: list[str], *, resume=None, out=None, batch_size: int | None = None) -> int:
    """`rnnlens train --nproc N ...`: the same command line as N ranks under torch.distributed.run. The batch
    must split evenly over the ranks; that is checked here, before any rank starts or any folder is made."""
    from rnnlens.checkpoint import LAST, read_checkpoint
    if nproc < 1:
        raise RnnlensError(f"--nproc must be a number of processes >= 1, got {nproc}")
    if distributed.launched_by_torchrun():
        raise RnnlensError("--nproc starts the processes itself, but this one was started by torchrun; "
                           "drop --nproc (torchrun's --nproc-per-node sets the count)")
    if resume is not None:
        batch_size = int(read_checkpoint(Path(resume) / LAST).meta["train"]["batch_size"])
    batch_size = batch_size or TrainConfig.batch_size
    if batch_size % nproc:
        raise RnnlensError(f"--batch-size {batch_size} does not split over --nproc {nproc} ranks; use a batch "
                           f"size that is a multiple of {nproc}, e.g. {max(nproc, batch_size - batch_size % nproc)}")
    rank_argv, skip = [], False
    for a in argv:  # the command line as given, less --nproc (the ranks must not launch again)
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rank_argv.append(a)
    run_dir = str(resume) if resume is not None else str(out or default_run_dir())
    if resume is None and out is None:  # one name for all ranks (each would read its own clock)
        rank_argv += ["--out", run_dir]
    return distributed.launch(nproc, rank_argv, run_dir)
