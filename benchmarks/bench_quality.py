"""Quality per CPU-minute on tiny Shakespeare: validation loss after a fixed training budget.

Data: --data (default /work/shared/data/tinyshakespeare.txt), split by position: the first 90%
trains, the last 10% is the validation split (rnnlens is given split=(0.9, 0.1, 0) and the script
checks it cuts at the same character). Every run trains for --budget seconds, then its loss is
measured in nats/char over the *whole* validation split, by this script:

  recurrent models: 50 contiguous streams, each from a zero state, read in windows of 100 with
      the state carried (every character but a stream's first is predicted with its full left
      context in that stream); the same code scores the bare LSTM and rnnlens's models.
  transformer: the split cut into consecutive blocks of 64 (its context); every position of a
      block is scored, with the context it has inside the block (nanoGPT's estimate_loss, made
      deterministic and run over all of the split instead of random blocks).

References (written for this script):
  gpt   a GPT-style decoder: 4 layers, 4 heads, width 128, context 64, batch 12, no bias, no dropout,
        tied embedding/head, AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1 (matrices only),
        clip 1.0, 100 warm-up steps, then cosine decay to 1e-4 over the time budget (nanoGPT's
        schedule counts iterations; here the budget is time). nanoGPT's CPU config for
        shakespeare_char; measured elsewhere at 1.886 after 150 s.
  lstm  a bare fused 2x256 LSTM (nn.Embedding(V, 64) -> nn.LSTM -> nn.Linear, torch's default
        init), RMSProp lr 2e-3 alpha 0.95, batch 50 contiguous streams, seq 100, state carried,
        clip_grad_norm_ 5; measured elsewhere at 1.661 after 150 s.
rnnlens runs: rnnlens.train(...) (the Python API, with time_budget) for each --rnnlens config;
    keys are ModelConfig's fields (model or cell, layers, size, dropout, input, embedding_size, init,
    ...), `params`, and TrainConfig's fields (optimizer, lr, batch_size, seq_len, lr_schedule,
    eval_every, ...); whatever is not given is rnnlens's default at the time of the run (the table
    prints the full resolved configuration under it). With no --rnnlens: one run of the defaults.
    rnnlens's time_budget counts only its train_step time (validation and checkpoints are extra),
    so the table shows both its training seconds and the wall time of the whole call. The loss
    shown is of the *last* weights (like the references); rnnlens's own best validation is beside it.

Runs are sequential (a training run cannot be interleaved), so each is bracketed by sgemm probes:
compare runs only when the probes agree.

    python benchmarks/bench_quality.py --quick                       # 12 s per run, ~1 min
    python benchmarks/bench_quality.py --budget 150 \\
        --rnnlens 'size=512,layers=1,lr=5e-3,optimizer=adam,batch_size=32,seq_len=64'
    python benchmarks/bench_quality.py --budget 1800 --skip gpt,lstm --rnnlens 'layers=2,size=512'
"""

from __future__ import annotations

import argparse
import math
import os
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


# ----------------------------------------------------------------------------- data

def load_text(path: str) -> tuple[np.ndarray, list[str], int]:
    """ids (int64) of the whole text, the sorted character set, and the train/val cut."""
    text = Path(path).read_text(encoding="utf-8")
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


def train_gpt(train: np.ndarray, val: np.ndarray, vocab: int, budget: float, device, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    ctx, batch, lr, min_lr, warmup = 64, 12, 1e-3, 1e-4, 100
    model = TinyGPT(vocab, ctx=ctx).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    data = torch.from_numpy(train).to(device)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(ctx + 1, device=device)
    steps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget:
        if steps < warmup:
            cur = lr * (steps + 1) / warmup
        else:
            cur = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
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


def train_lstm(train: np.ndarray, val: np.ndarray, vocab: int, budget: float, device, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    batch, seq = 50, 100
    model = BareLSTM(vocab).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3, alpha=0.95, eps=1e-8)
    n = (len(train) - 1) // batch
    x_all = torch.from_numpy(train[:batch * n].reshape(batch, n)).to(device)
    y_all = torch.from_numpy(train[1:batch * n + 1].reshape(batch, n)).to(device)
    windows = n // seq
    state, k, steps, t0 = None, 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < budget:
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
               | {"model", "params"})
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
                  budget: float, device) -> dict:
    import rnnlens
    from rnnlens.checkpoint import LAST
    from rnnlens.corpus import load_corpus
    from rnnlens.model import count_parameters

    split = (0.9, 0.1, 0.0)
    corpus = load_corpus(data, split=split)
    if corpus.splits["val"] != (cut, cut + len(val)):
        raise SystemExit(f"rnnlens's validation split is {corpus.splits['val']}, this script's {(cut, cut + len(val))}")
    if list(corpus.vocab.chars) != chars:
        raise SystemExit("rnnlens's vocabulary differs from this script's (ids would not match)")
    out = workdir / f"run-{len(list(workdir.iterdir()))}"
    t0 = time.perf_counter()
    rnnlens.train(data=data, out=out, split=split, time_budget=budget, progress=False, force=True,
                  device=device.type, **kwargs)
    wall = time.perf_counter() - t0
    last = rnnlens.load(out, which=LAST, device=device.type)
    state = last.meta["state"]
    model = last.model.eval()
    cfg = last.meta["train"]
    return {"val": eval_recurrent(lambda x, s: model(x, s), val, device), "train_s": state["elapsed"],
            "wall_s": wall, "steps": state["step"], "chars": state["step"] * cfg["batch_size"] * cfg["seq_len"],
            "best_val": state["best_val"], "params": count_parameters(last.config),
            "resolved": resolved(last.config.to_dict(), cfg, count_parameters(last.config))}


def resolved(m: dict, t: dict, params: int) -> str:
    """The configuration a run really had (defaults included), in one line."""
    return (f"{m['cell']} {m['layers']}x{m['size']} ({params / 1e6:.2f}M params), input {m['input']} "
            f"{m['embedding_size'] if m['input'] == 'embedding' else ''}, dropout {m['dropout']}, init {m['init']}; "
            f"batch {t['batch_size']}, seq {t['seq_len']}, {t['optimizer']} lr {t['lr']:g} ({t['lr_schedule']}), "
            f"clip {t['grad_clip']} ({t['clip_mode']}), eval_every {t['eval_every']}")


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--budget", type=float, help="training seconds per run (default 150, quick 12)")
    ap.add_argument("--quick", action="store_true", help="12 s per run: checks that the script works")
    ap.add_argument("--rnnlens", action="append", metavar="K=V,...",
                    help="an rnnlens configuration (repeatable); '' or none given: rnnlens's own defaults")
    ap.add_argument("--skip", default="", help="comma-separated references to skip: gpt, lstm")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    budget = args.budget or (12.0 if args.quick else 150.0)
    configs = [parse_rnnlens(c) for c in (args.rnnlens or DEFAULT_RNNLENS)]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    bu.print_header(f"bench_quality: val loss after {budget:g} s of training on {args.data}")
    ids, chars, cut = load_text(args.data)
    train, val = ids[:cut], ids[cut:]
    print(f"{len(ids):,} chars, vocab {len(chars)}; train {len(train):,}, val {len(val):,}", flush=True)

    results = []

    def record(name, config, fn):
        p0 = bu.sgemm_probe(f"before {name}")
        t0 = time.perf_counter()
        r = fn()
        r.setdefault("wall_s", time.perf_counter() - t0)
        p1 = bu.sgemm_probe(f"after {name}")
        r["probe"] = f"{p0:.0f}/{p1:.0f}"
        results.append((name, config, r))
        print(f"{name} [{config}]: val {r['val']:.4f} nats/char ({r['val'] / math.log(2):.3f} bits), "
              f"{r['steps']} steps, {r['train_s']:.0f} s training, {r['wall_s']:.0f} s wall", flush=True)

    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["RNNLENS_CACHE"] = str(tmp / "cache")  # keep the prepared corpus out of ~/.cache
        if "gpt" not in skip:
            record("gpt", "4L 4H 128w ctx 64, B12, AdamW 1e-3",
                   lambda: train_gpt(train, val, len(chars), budget, device))
        if "lstm" not in skip:
            record("bare lstm", "2x256, RMSProp 2e-3, B50 T100",
                   lambda: train_lstm(train, val, len(chars), budget, device))
        runs = tmp / "runs"
        runs.mkdir()
        for kw in configs:
            label = ",".join(f"{k}={v}" for k, v in kw.items()) or "rnnlens defaults"
            record("rnnlens", label, lambda kw=kw: train_rnnlens(kw, args.data, runs, val, cut, chars, budget,
                                                          device))

    rows = []
    for name, config, r in results:
        best = r.get("best_val")
        rows.append([name, config, f"{r['val']:.4f}", f"{r['val'] / math.log(2):.3f}",
                     f"{best:.4f}" if best is not None else "-", f"{r['train_s']:.0f}", f"{r['wall_s']:.0f}",
                     r["steps"], bu.fmt_rate(r["chars"] / max(r["train_s"], 1e-9)), r["probe"]])
    print(f"\nbudget {budget:g} s per run, device {args.device}; val = last weights over the whole val split "
          f"({len(val):,} chars)\n")
    print(bu.markdown_table(["run", "config", "val nats/char", "bits/char", "rnnlens best val", "train s",
                             "wall s", "steps", "train chars/s", "sgemm before/after"], rows))
    for i, (name, config, r) in enumerate(results):
        if "resolved" in r:
            print(f"\n{name} [{config}] ran as: {r['resolved']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
