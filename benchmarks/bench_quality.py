"""Quality per CPU-minute: validation loss after a fixed training budget, on several kinds of text.

Texts (--texts, named kinds, each built deterministically from files on this machine, then cut to its
first --max-chars characters; default: --data, tiny Shakespeare):

  shakespeare   /work/shared/data/tinyshakespeare.txt (prose/verse, 1,115,394 chars)
  warandpeace   /work/shared/data/warpeace_input.txt (prose, 3.2M chars)
  pystdlib      rnnlens's built-in default corpus (rnnlens.datasets.fetch('pystdlib'): this Python's
                standard library, shuffled by file, 4M chars): code, but with Python 3.11 its characters
                1.53M-2.29M are one file of help text in string literals (pydoc_data/topics.py), so a cut
                of 2M ends inside it and the last 10% (the validation split) is all that file
  pycode        pystdlib's files in its order with pydoc_data/ left out: Python code in both splits
  cheaders      this machine's /usr/include/**/*.h, sorted by path, shuffled with random.Random(0),
                concatenated (files that are not UTF-8 or hold NUL skipped, CR removed): C code
  manpages      this machine's /usr/share/man/man*/*.gz (English pages only), gunzipped, sorted,
                shuffled with random.Random(0), concatenated like cheaders: troff markup and prose
  (any path)    a UTF-8 text file

Every text is split by position: the first 90% trains, the last 10% is the validation split (rnnlens is
given split=(0.9, 0.1, 0) and the script checks it cuts at the same character with the same vocabulary).
The built texts (cheaders, manpages, pycode) depend on what this machine has installed; the script prints their
file counts and sizes. Budgets: --budgets (seconds of training per run, one row group each) and/or a
fixed-step row group (--steps N --batch B [--seq T]): every run then takes exactly N updates of B streams
x T characters (rnnlens through max_steps, its batch_size/seq_len set to B/T over any preset, unless the
configuration gives its own: --rnnlens 'batch_size=24,max_steps=373' beside --steps 560 --batch 16 reads
the same characters at another batch; the gpt reference N steps of B blocks of its context 64), so its loss
does not depend on how loaded the machine is.

Every run's loss is measured in nats/char over the *whole* validation split, by this script:

  recurrent models: 50 contiguous streams, each from a zero state, read in windows of 100 with
      the state carried (every character but a stream's first is predicted with its full left
      context in that stream); the same code scores the bare LSTM and rnnlens's models.
  transformer: the split cut into consecutive blocks of 64 (its context); every position of a
      block is scored, with the context it has inside the block (nanoGPT's estimate_loss, made
      deterministic and run over all of the split instead of random blocks).

References (written for this script):
  gpt   a GPT-style decoder: 4 layers, 4 heads, width 128, context 64, batch 12, no bias, no dropout,
        tied embedding/head, AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1 (matrices only),
        clip 1.0, 100 warm-up steps, then cosine decay to 1e-4 over the budget (nanoGPT's
        schedule counts iterations; in a timed row the budget is time, in a fixed-step row steps).
        nanoGPT's CPU config for shakespeare_char; measured elsewhere at 1.886 after 150 s.
  lstm  a bare fused 2x256 LSTM (nn.Embedding(V, 64) -> nn.LSTM -> nn.Linear, torch's default
        init), RMSProp lr 2e-3 alpha 0.95, batch 50 contiguous streams, seq 100, state carried,
        clip_grad_norm_ 5 (char-rnn style); measured elsewhere at 1.661 after 150 s.
rnnlens runs: rnnlens.train(...) (the Python API) for each --rnnlens config;
    keys are ModelConfig's fields (model or cell, layers, size, dropout, input, embedding_size, init,
    ...), `params`, `preset` (char-rnn, paper) and TrainConfig's fields (optimizer, lr, batch_size,
    seq_len, lr_schedule, eval_every, ...); whatever is not given is rnnlens's default at the time of
    the run (the full resolved configuration is printed under the table). --preset NAME adds a run of
    that preset. With neither: one run of the defaults.
    rnnlens's time_budget is the wall time of its training loop, validations and checkpoints
    included; the table shows it and the wall time of the whole call (reading the text, building the
    model, the final saves). The loss shown is of the *last* weights (like the references); rnnlens's
    own best validation is beside it. By default (average_fraction=0.2) rnnlens's last weights are the
    mean of its weights over the last 20% of the run when that mean validated better than the last
    update's: a choice of one of two models made on the validation split this script scores too; the
    run's line prints both losses (rnnlens's validation reads the same split, so they are this
    script's figures for the two).
    "vs best" is the loss minus the best loss of its row group (text x budget x seed).

--seeds 1,2,3 runs everything once per seed and adds a table of each run's mean over the seeds (single
seeds of one text disagree by ~0.03 at 300 s, as much as the choices being compared). Under the tables,
issue #16's criteria for the run of rnnlens's defaults ('' or only seed=): its loss (the mean, with --seeds)
within 0.02 of the best run of its row, and at or below the bare loop's.

Runs are sequential (a training run cannot be interleaved), so each is bracketed by sgemm probes:
compare timed runs only when the probes agree (fixed-step rows do not depend on them).

    python benchmarks/bench_quality.py --quick                       # 12 s per run on 300K characters, ~1 min
    python benchmarks/bench_quality.py --budget 150 \\
        --rnnlens 'size=512,layers=1,lr=5e-3,optimizer=adam,batch_size=32,seq_len=64'
    python benchmarks/bench_quality.py --budget 1800 --skip gpt,lstm --rnnlens 'layers=2,size=512'
    python benchmarks/bench_quality.py --texts manpages --max-chars 2000000 --budgets 300 --skip gpt \\
        --seeds 1,2 --rnnlens '' --rnnlens 'size=512'
    python benchmarks/bench_quality.py --texts shakespeare,warandpeace,pystdlib,cheaders,manpages \\
        --max-chars 2000000 --budgets 60,300,1800 --steps 400 --batch 50 --rnnlens '' --preset char-rnn
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = "/work/shared/data/tinyshakespeare.txt"
DEFAULT_RNNLENS = [""]  # rnnlens's own defaults
FINAL_WEIGHTS = re.compile(r"final weights: (.*)")  # the trainer's choice between the mean and the last update's
PLANNED_PASSES = re.compile(r"dropout [\d.]+[^(]* \(~([\d.,]+) passes over the training text")  # in the defaults line
SHUFFLE_SEED = 0


# ----------------------------------------------------------------------------- data

def _concat_files(paths: list[Path], max_chars: int, read) -> tuple[str, str]:
    """Files sorted by path, shuffled with a fixed seed, each read by `read` (bytes), kept when UTF-8 without
    NUL, CR removed, concatenated until max_chars: (text, a note on what went in)."""
    paths = sorted(paths)
    random.Random(SHUFFLE_SEED).shuffle(paths)
    parts, total, used, skipped = [], 0, 0, 0
    for path in paths:
        if total >= max_chars:
            break
        try:
            text = read(path).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            skipped += 1
            continue
        if "\x00" in text or not text.strip():
            skipped += 1
            continue
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        parts.append(text)
        total += len(text)
        used += 1
    return "".join(parts)[:max_chars], f"{used} of {len(paths)} files ({skipped} skipped: not UTF-8, NUL or empty)"


def _built_cheaders(max_chars: int) -> tuple[str, str]:
    text, note = _concat_files([p for p in Path("/usr/include").rglob("*.h") if p.is_file()], max_chars,
                               lambda p: p.read_bytes())
    return text, f"/usr/include/**/*.h: {note}"


def _built_manpages(max_chars: int) -> tuple[str, str]:
    paths = [p for p in Path("/usr/share/man").glob("man*/*.gz") if p.is_file()]
    text, note = _concat_files(paths, max_chars, lambda p: gzip.decompress(p.read_bytes()))
    return text, f"/usr/share/man/man*/*.gz: {note}"


def _pystdlib(max_chars: int) -> tuple[str, str]:
    from rnnlens import datasets
    path = datasets.fetch("pystdlib")
    return read_file(path)[:max_chars], f"rnnlens.datasets.fetch('pystdlib') ({path})"


def _pycode(max_chars: int) -> tuple[str, str]:
    """pystdlib without pydoc_data/: the same files in the same shuffled order, concatenated and cut by pystdlib's
    own code, so its validation split is code (a 2M cut of pystdlib ends inside pydoc_data/topics.py, help text in
    string literals)."""
    import sysconfig

    from rnnlens import datasets
    root = Path(sysconfig.get_paths()["stdlib"])
    files = datasets._stdlib_files(root)  # [(relative path, bytes)], sorted, as pystdlib builds them
    random.Random(datasets.SHUFFLE_SEED).shuffle(files)
    files = [f for f in files if not f[0].startswith("pydoc_data/")]
    return (datasets._concat_cut(files, lambda rels: datasets._read_utf8_files(root, rels), max_chars),
            f"{root}/**/*.py in pystdlib's order, pydoc_data/ left out ({len(files)} files to draw from)")


TEXTS = {  # name -> (what it is, builder(max_chars) -> (text, where it came from))
    "shakespeare": ("prose/verse", lambda n: (read_file(DEFAULT_DATA)[:n], DEFAULT_DATA)),
    "warandpeace": ("prose", lambda n: (read_file("/work/shared/data/warpeace_input.txt")[:n],
                                        "/work/shared/data/warpeace_input.txt")),
    "pystdlib": ("code (Python)", _pystdlib),
    "pycode": ("code (Python), code in its validation split", _pycode),
    "cheaders": ("code (C headers)", _built_cheaders),
    "manpages": ("markup (troff)", _built_manpages),
}
DEFAULT_BUILT_CHARS = 2_000_000  # cheaders/manpages/pycode without --max-chars
# --quick without --max-chars: a 2M text's 200K validation split took most of the 12 s budget under load
# (the run reserves time for its last validation), leaving 1-2 updates; 300K leaves a 30K split
QUICK_CHARS = 300_000


def read_file(path) -> str:
    """A UTF-8 file exactly as rnnlens reads it (bytes decoded, no newline translation)."""
    return Path(path).read_bytes().decode("utf-8")


def build_text(name: str, max_chars: int | None, folder: Path) -> tuple[str, str, str]:
    """(path of the text file, kind, where it came from) for a --texts entry: a TEXTS name or a file path."""
    if name in TEXTS:
        kind, builder = TEXTS[name]
        limit = max_chars or (DEFAULT_BUILT_CHARS if name in ("cheaders", "manpages", "pycode") else 10**12)
        text, origin = builder(limit)
    elif Path(name).is_file():
        kind, origin = "file", name
        text = read_file(name)[:max_chars] if max_chars else read_file(name)
    else:
        raise SystemExit(f"--texts: {name!r} is neither one of {', '.join(TEXTS)} nor a file")
    path = folder / f"{Path(name).stem}.txt"
    path.write_bytes(text.encode("utf-8"))
    return str(path), kind, origin


def load_text(path: str) -> tuple[np.ndarray, list[str], int]:
    """ids (int64) of the whole text, the sorted character set, and the train/val cut."""
    text = read_file(path)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    cut = (len(text) * 9) // 10  # floor(0.9 n), exactly
    return ids, chars, cut


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def eval_recurrent(forward, val: np.ndarray, device, streams: int = 50, seq: int = 100) -> float:
    """Mean -log p over every next character of `val`; forward(ids [B, T], state) -> (logits, state)."""
    count = len(val) - 1
    L = -(-count // streams)
    pos = np.arange(streams)[:, None] * L + np.arange(L)[None, :]  # [B, L] target positions - 1
    valid = pos < count
    x_all = torch.from_numpy(np.where(valid, val[np.minimum(pos, count - 1)], 0)).to(device)
    y_all = torch.from_numpy(np.where(valid, val[np.minimum(pos + 1, count)], -1)).to(device)
    total, state = 0.0, None
    for k in range(0, L, seq):
        logits, state = forward(x_all[:, k:k + seq], state)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y_all[:, k:k + seq].reshape(-1),
                                 ignore_index=-1, reduction="sum").item()
    return total / count


@torch.no_grad()
def eval_blocks(model, val: np.ndarray, ctx: int, device, batch: int = 256) -> float:
    """Mean -log p over every next character of `val`, read in consecutive blocks of `ctx`."""
    count = len(val) - 1
    v = torch.from_numpy(val).to(device)
    full = count // ctx
    total = 0.0
    for s in range(0, full, batch):
        e = min(full, s + batch)
        idx = torch.arange(s * ctx, e * ctx, device=device).view(-1, ctx)
        logits = model(v[idx])
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), v[idx + 1].reshape(-1),
                                 reduction="sum").item()
    rest = count - full * ctx
    if rest:
        x = v[full * ctx: full * ctx + rest][None]
        y = v[full * ctx + 1: full * ctx + rest + 1][None]
        total += F.cross_entropy(model(x).float().reshape(-1, model.vocab), y.reshape(-1), reduction="sum").item()
    return total / count


# ----------------------------------------------------------------------------- reference: a small GPT

class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, C/h)
                   for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width, bias=False), nn.GELU(),
                                 nn.Linear(4 * width, width, bias=False))

    def forward(self, x):  # pre-norm residual block
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, layers: int = 4, heads: int = 4, width: int = 128, ctx: int = 64):
        super().__init__()
        self.vocab, self.ctx = vocab, ctx
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(ctx, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual projections scaled down by depth
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):  # (B, T) -> (B, T, V)
        T = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def train_gpt(train: np.ndarray, val: np.ndarray, vocab: int, budget: float | None, device, seed: int = 0,
              steps: int | None = None, batch: int = 12) -> dict:
    """For `budget` seconds, or (budget None) exactly `steps` steps."""
    torch.manual_seed(seed)
    ctx, lr, min_lr, warmup = 64, 1e-3, 1e-4, 100
    max_steps = steps
    model = TinyGPT(vocab, ctx=ctx).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    data = torch.from_numpy(train).to(device)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(ctx + 1, device=device)
    steps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget if max_steps is None else steps < max_steps:
        if steps < warmup:
            cur = lr * (steps + 1) / warmup
        else:
            frac = elapsed / budget if max_steps is None else steps / max_steps
            cur = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = cur
        starts = torch.randint(len(train) - ctx - 1, (batch,), generator=gen).to(device)
        chunk = data[starts[:, None] + offsets]  # (B, T+1)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        steps += 1
    train_s = time.perf_counter() - t0
    model.eval()
    return {"val": eval_blocks(model, val, ctx, device), "train_s": train_s, "steps": steps,
            "chars": steps * batch * ctx}


# ----------------------------------------------------------------------------- reference: a bare LSTM

class BareLSTM(nn.Module):
    def __init__(self, vocab: int, layers: int = 2, size: int = 256, embed: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, size, num_layers=layers, batch_first=True)
        self.head = nn.Linear(size, vocab)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state


def train_lstm(train: np.ndarray, val: np.ndarray, vocab: int, budget: float | None, device, seed: int = 0,
               steps: int | None = None, batch: int = 50, seq: int = 100) -> dict:
    """For `budget` seconds, or (budget None) exactly `steps` steps."""
    torch.manual_seed(seed)
    max_steps = steps
    model = BareLSTM(vocab).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3, alpha=0.95, eps=1e-8)
    n = (len(train) - 1) // batch
    x_all = torch.from_numpy(train[:batch * n].reshape(batch, n)).to(device)
    y_all = torch.from_numpy(train[1:batch * n + 1].reshape(batch, n)).to(device)
    windows = n // seq
    state, k, steps, t0 = None, 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < budget if max_steps is None else steps < max_steps:
        x, y = x_all[:, k * seq:(k + 1) * seq], y_all[:, k * seq:(k + 1) * seq]
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        loss.item()
        state = tuple(s.detach() for s in state)
        k = (k + 1) % windows
        if k == 0:
            state = None
        steps += 1
    train_s = time.perf_counter() - t0
    model.eval()
    return {"val": eval_recurrent(model, val, device), "train_s": train_s, "steps": steps,
            "chars": steps * batch * seq}


# ----------------------------------------------------------------------------- rnnlens

FORBIDDEN = {"data", "out", "split", "time_budget", "progress", "force", "device", "vocab_size"}


def parse_rnnlens(text: str) -> dict:
    """'size=512,layers=1,lr=5e-3' -> {'size': 512, 'layers': 1, 'lr': 0.005}; '' -> {} (rnnlens's defaults)."""
    from rnnlens.model import ModelConfig
    from rnnlens.trainer import TrainConfig
    allowed = (set(ModelConfig.__dataclass_fields__) | set(TrainConfig.__dataclass_fields__)
               | {"model", "params", "preset"})
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed or key in FORBIDDEN:
            raise SystemExit(f"--rnnlens: bad item {item!r}; use key=value with keys from rnnlens.train / "
                             f"TrainConfig, not {', '.join(sorted(FORBIDDEN))}")
        v = value.strip()
        if v.lower() in ("true", "false"):
            parsed = v.lower() == "true"
        elif v.lower() == "none":
            parsed = None
        else:
            try:
                parsed = int(v)
            except ValueError:
                try:
                    parsed = float(v)
                except ValueError:
                    parsed = v
        out["model" if key == "cell" else key] = parsed  # rnnlens.train calls the cell 'model'
    return out


def train_rnnlens(kwargs: dict, data: str, workdir: Path, val: np.ndarray, cut: int, chars: list[str],
                  budget: float | None, device, steps: int | None = None, batch: int = 50, seq: int = 100) -> dict:
    """For `budget` seconds of train_step, or (budget None) exactly `steps` steps of batch x seq (over any
    preset, under the run's own batch_size/seq_len/max_steps if it gives them)."""
    import rnnlens
    from rnnlens.checkpoint import LAST
    from rnnlens.corpus import load_corpus
    from rnnlens.model import count_parameters
    from rnnlens.plan import start_run

    split = (0.9, 0.1, 0.0)
    corpus = load_corpus(data, split=split)
    if corpus.splits["val"] != (cut, cut + len(val)):
        raise SystemExit(f"rnnlens's validation split is {corpus.splits['val']}, this script's {(cut, cut + len(val))}")
    if list(corpus.vocab.chars) != chars:
        raise SystemExit("rnnlens's vocabulary differs from this script's (ids would not match)")
    out = workdir / f"run-{len(list(workdir.iterdir()))}"
    t0 = time.perf_counter()
    stop = {"time_budget": budget} if steps is None else {"max_steps": steps, "batch_size": batch, "seq_len": seq}
    kwargs = {**stop, **kwargs}  # a configuration's own batch_size and max_steps win: the same characters
    # at another batch is e.g. --steps 560 --batch 16 --rnnlens 'batch_size=24,max_steps=373'
    lines = []  # what the run says; its defaults line gives the passes it planned

    def log(line: str) -> None:
        lines.append(line)
        print(line, file=sys.stderr, flush=True)

    start_run(out, data=data, split=split, progress=False, force=True, device=device.type, log=log, **kwargs).run()
    wall = time.perf_counter() - t0
    planned = next((m for m in map(PLANNED_PASSES.search, lines) if m), None)
    final = next((m.group(1) for m in map(FINAL_WEIGHTS.search, lines) if m), None)
    last = rnnlens.load(out, which=LAST, device=device.type)
    state = last.meta["state"]
    model = last.model.eval()
    cfg = last.meta["train"]
    return {"val": eval_recurrent(lambda x, s: model(x, s), val, device), "train_s": state["elapsed"],
            "wall_s": wall, "steps": state["step"], "chars": state["step"] * cfg["batch_size"] * cfg["seq_len"],
            "best_val": state["best_val"], "params": count_parameters(last.config), "final": final,
            "planned_passes": float(planned.group(1).replace(",", "")) if planned else None,
            "resolved": resolved(last.config.to_dict(), cfg, count_parameters(last.config), state)}


def resolved(m: dict, t: dict, params: int, state: dict) -> str:
    """The configuration a run really had (defaults included), in one line."""
    width = f" {m['embedding_size']}" if m["input"] == "embedding" else ""
    dropout, plateau = m["dropout"], ""
    if t.get("dropout_on_plateau"):  # dropout from the first validation that did not improve, if one came
        came, wide = state.get("dropout_from"), state.get("plateau_dropout")
        plateau = f" from step {came} (on plateau)" if came is not None else " on plateau (never came on)"
        if came is not None and wide is not None:  # --wide-gap-dropout came on instead of the model's
            dropout, plateau = wide, f" from step {came} (on plateau, a wide gap)"
    return (f"{m['cell']} {m['layers']}x{m['size']} ({params / 1e6:.2f}M params), input {m['input']}{width}, "
            f"dropout {dropout}{plateau}, init {m['init']}; "
            f"batch {t['batch_size']}, seq {t['seq_len']}, {t['optimizer']} lr {t['lr']:g} ({t['lr_schedule']}), "
            f"clip {t['grad_clip']} ({t['clip_mode']}), eval_every {t['eval_every']}")


# ----------------------------------------------------------------------------- summary

WITHIN_BEST = 0.02  # issue #16: the defaults never more than this above the best configuration of a row


def seed_means(results: list[tuple]) -> list[dict]:
    """One entry per (text, group, run, config), in the order first run: its mean loss over the seeds it ran,
    the lowest and highest seed, and the mean minus the best mean of its (text, group)."""
    runs: dict[tuple, list[float]] = {}
    for tname, glabel, _, name, config, r in results:
        runs.setdefault((tname, glabel, name, config, r.get("defaults", False)), []).append(r["val"])
    means = [{"text": t, "group": g, "name": n, "config": c, "defaults": d, "mean": sum(v) / len(v), "lo": min(v),
              "hi": max(v), "n": len(v)} for (t, g, n, c, d), v in runs.items()]
    best = {}
    for m in means:
        best[m["text"], m["group"]] = min(best.get((m["text"], m["group"]), math.inf), m["mean"])
    for m in means:
        m["vs_best"] = m["mean"] - best[m["text"], m["group"]]
    return means


def criteria(means: list[dict]) -> list[dict]:
    """For each (text, group) with a run of rnnlens's defaults: its mean against the best mean of the row and
    against the bare loop's; met is None where no bare loop ran (only the first half can be judged then)."""
    out = []
    for defaults in (m for m in means if m["defaults"]):
        row = [m for m in means if (m["text"], m["group"]) == (defaults["text"], defaults["group"])]
        best = min(row, key=lambda m: m["mean"])
        bare = next((m["mean"] for m in row if m["name"] == "bare lstm"), None)
        within = defaults["mean"] - best["mean"] <= WITHIN_BEST
        if bare is None:
            met = None if within else False
        else:
            met = within and defaults["mean"] <= bare
        out.append({"text": defaults["text"], "group": defaults["group"], "defaults": defaults["mean"],
                    "best": best["mean"], "best_run": best["config"] if best["name"] == "rnnlens" else best["name"],
                    "bare": bare, "met": met})
    return out


# ----------------------------------------------------------------------------- main

def parse_list(text: str | None, kind=str) -> list:
    return [kind(x.strip()) for x in (text or "").split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="the text when --texts is not given")
    ap.add_argument("--texts", help=f"comma-separated texts: {', '.join(TEXTS)} or file paths (default: --data)")
    ap.add_argument("--max-chars", type=int, help="cut every text to its first N characters (built texts: default "
                    f"{DEFAULT_BUILT_CHARS:,})")
    ap.add_argument("--budget", type=float, help="training seconds per run (default 150, quick 12)")
    ap.add_argument("--budgets", help="comma-separated training seconds, one row group each (e.g. 60,300,1800)")
    ap.add_argument("--steps", type=int, help="a fixed-step row group: every run takes exactly N updates")
    ap.add_argument("--batch", type=int, default=50, help="streams per update in the fixed-step rows (default 50)")
    ap.add_argument("--seq", type=int, default=100, help="characters per stream per update in the fixed-step rows "
                    "(default 100)")
    ap.add_argument("--quick", action="store_true", help="12 s per run, every text cut to its first "
                    f"{QUICK_CHARS:,} characters unless --max-chars: checks that the script works")
    ap.add_argument("--rnnlens", action="append", metavar="K=V,...",
                    help="an rnnlens configuration (repeatable); '' or none given: rnnlens's own defaults")
    ap.add_argument("--preset", action="append", default=[], metavar="NAME",
                    help="also run rnnlens with this preset (char-rnn, paper); repeatable")
    ap.add_argument("--skip", default="", help="comma-separated runs to skip: gpt, lstm (the references), rnnlens (every rnnlens run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0, help="seed of the references (rnnlens runs: their own seed, "
                    "default 0); --seeds replaces it")
    ap.add_argument("--seeds", help="comma-separated seeds: every run once per seed (the references with it, each "
                    "rnnlens configuration as its seed=); the summary then compares means over the seeds")
    args = ap.parse_args(argv)
    seeds = parse_list(args.seeds, int) or [args.seed]
    budgets = parse_list(args.budgets, float) or ([args.budget] if args.budget else [])
    if not budgets and not args.steps:
        budgets = [12.0 if args.quick else 150.0]
    groups = [(b, None) for b in budgets] + ([(None, args.steps)] if args.steps else [])
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    configs = [parse_rnnlens(c) for c in (args.rnnlens or ([] if args.preset else DEFAULT_RNNLENS))]
    configs += [{"preset": p} for p in args.preset]
    if "rnnlens" in skip:
        configs = []
    if args.seeds and any("seed" in kw for kw in configs):
        raise SystemExit("--seeds gives every run its seed: leave seed= out of the --rnnlens configurations")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    texts = parse_list(args.texts) or [args.data]
    max_chars = args.max_chars or (QUICK_CHARS if args.quick else None)

    def group_label(budget, steps):
        return f"{budget:g} s" if steps is None else f"{steps} steps x B{args.batch} T{args.seq}"

    bu.print_header(f"bench_quality: val loss after {', '.join(group_label(*g) for g in groups)} of training on "
                    f"{', '.join(texts)}")
    results = []  # (text, group, seed, name, config, result)

    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["RNNLENS_CACHE"] = str(tmp / "cache")  # keep the prepared corpora out of ~/.cache
        (tmp / "texts").mkdir()
        runs = tmp / "runs"
        runs.mkdir()
        for name in texts:
            data, kind, origin = build_text(name, max_chars, tmp / "texts")
            ids, chars, cut = load_text(data)
            train, val = ids[:cut], ids[cut:]
            tname = Path(name).stem if name not in TEXTS else name
            print(f"\ntext {tname} ({kind}, from {origin}): {len(ids):,} chars, vocab {len(chars)}; split by "
                  f"position: train the first {len(train):,}, val the last {len(val):,}", flush=True)

            for (budget, steps), seed in ((g, s) for g in groups for s in seeds):
                glabel = group_label(budget, steps)

                def record(name, config, fn, defaults=False):
                    p0 = bu.sgemm_probe(f"before {name}")
                    t0 = time.perf_counter()
                    r = fn()
                    r["defaults"] = defaults  # rnnlens's own defaults: #16's criteria are judged on this run
                    r.setdefault("wall_s", time.perf_counter() - t0)
                    p1 = bu.sgemm_probe(f"after {name}")
                    r["probe"] = f"{p0:.0f}/{p1:.0f}"
                    r["epochs"] = r["chars"] / len(train)
                    results.append((tname, glabel, seed, name, config, r))
                    print(f"{tname}, {glabel}, seed {seed}: {name} [{config}]: val {r['val']:.4f} nats/char "
                          f"({r['val'] / math.log(2):.3f} bits), {r['steps']} steps, {r['epochs']:.2f} epochs, "
                          f"{r['train_s']:.0f} s training, {r['wall_s']:.0f} s wall"
                          + (f"; final weights: {r['final']}" if r.get("final") else ""), flush=True)

                if "gpt" not in skip:
                    record("gpt", f"4L 4H 128w ctx 64, B{12 if steps is None else args.batch}, AdamW 1e-3",
                           lambda: train_gpt(train, val, len(chars), budget, device, seed=seed, steps=steps,
                                             batch=12 if steps is None else args.batch))
                if "lstm" not in skip:
                    b, t = (50, 100) if steps is None else (args.batch, args.seq)
                    record("bare lstm", f"2x256, RMSProp 2e-3, B{b} T{t}",
                           lambda: train_lstm(train, val, len(chars), budget, device, seed=seed, steps=steps,
                                              batch=b, seq=t))
                for kw in configs:
                    label = ",".join(f"{k}={v}" for k, v in kw.items()) or "rnnlens defaults"
                    run_kw = {**kw, "seed": seed} if args.seeds else kw
                    record("rnnlens", label, lambda kw=run_kw: train_rnnlens(kw, data, runs, val, cut, chars, budget,
                                                                       device, steps=steps, batch=args.batch,
                                                                       seq=args.seq),
                           defaults=set(kw) <= {"seed"})

    best = {}
    for tname, glabel, seed, _, _, r in results:
        best[tname, glabel, seed] = min(best.get((tname, glabel, seed), math.inf), r["val"])
    rows = []
    for tname, glabel, seed, name, config, r in results:
        bv = r.get("best_val")
        d = r["val"] - best[tname, glabel, seed]
        rows.append([tname, glabel, seed, name, config, f"**{r['val']:.4f}**" if d == 0 else f"{r['val']:.4f}",
                     f"{r['val'] / math.log(2):.3f}", f"+{d:.3f}" if d else "best",
                     f"{bv:.4f}" if bv is not None else "-", f"{r['train_s']:.0f}", f"{r['wall_s']:.0f}", r["steps"],
                     f"{r['epochs']:.2f}", f"{r['planned_passes']:g}" if r.get("planned_passes") is not None else "-",
                     bu.fmt_rate(r["chars"] / max(r["train_s"], 1e-9)), r["probe"]])
    print(f"\ndevice {args.device}, {torch.get_num_threads()} threads; val = last weights over the whole val split "
          "of each text (its last 10%)\n")
    print(bu.markdown_table(["text", "budget", "seed", "run", "config", "val nats/char", "bits/char", "vs best",
                             "rnnlens best val", "train s", "wall s", "steps", "epochs", "planned epochs",
                             "train chars/s", "sgemm before/after"], rows))
    means = seed_means(results)
    if len(seeds) > 1:
        print(f"\nmeans over seeds {', '.join(map(str, seeds))} (spread: the lowest and highest seed)\n")
        print(bu.markdown_table(["text", "budget", "run", "config", "mean val nats/char", "spread", "vs best mean",
                                 "seeds"],
                                [[m["text"], m["group"], m["name"], m["config"], f"{m['mean']:.4f}",
                                  f"{m['lo']:.4f}-{m['hi']:.4f}", f"+{m['vs_best']:.3f}" if m["vs_best"] else "best",
                                  m["n"]] for m in means]))
    verdicts = criteria(means)
    if verdicts:
        print(f"\nissue #16's criteria for the defaults ({'means over the seeds' if len(seeds) > 1 else 'one seed'}):"
              f" within {WITHIN_BEST} of the best run of the row, at or below the bare loop\n")
        print(bu.markdown_table(["text", "budget", "defaults", "best run", "defaults vs best", "bare loop",
                                 "defaults vs bare loop", "met"],
                                [[v["text"], v["group"], f"{v['defaults']:.4f}", f"{v['best']:.4f} ({v['best_run']})",
                                  f"{v['defaults'] - v['best']:+.3f}",
                                  "-" if v["bare"] is None else f"{v['bare']:.4f}",
                                  "-" if v["bare"] is None else f"{v['defaults'] - v['bare']:+.3f}",
                                  "yes" if v["met"] else "no" if v["met"] is False else "not judged (no bare loop)"]
                                 for v in verdicts]))
    seen = set()
    for tname, glabel, _, name, config, r in results:
        if "resolved" in r and (config, r["resolved"]) not in seen:
            seen.add((config, r["resolved"]))
            print(f"\n{name} [{config}] ran as ({tname}, {glabel}): {r['resolved']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
