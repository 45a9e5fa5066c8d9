"""min-char-rnn (a numpy vanilla RNN, written here from the algorithm) against rnnlens.

Reference: the algorithm of Karpathy's min-char-rnn.py - a vanilla RNN, hidden 100, one-hot input,
windows of 25 characters, hidden state carried between windows, backprop through the 25 steps,
gradients clipped to [-5, 5] element-wise, Adagrad lr 0.1, float64 numpy column vectors, one
stream (batch 1). Written for this script (not copied); like the original it multiplies the
one-hot vector by W_xh as a matrix product.

rnnlens: the same network (`rnn`, 1 layer, 100 units, input='onehot', seq 25, clip by value 5)
trained by the real `Trainer.run` loop (benchutil.TrainerHarness: validation and checkpoint
writes off), at several batch sizes; the best batch is the headline. rnnlens has no Adagrad, so
it uses RMSProp (the same per-parameter element-wise work).

All of it runs in this process on the same generated text (65 symbols), interleaved repeats,
medians; the ratio is taken per repeat against the reference's rate in the same repeat.

    python benchmarks/bench_minchar.py            # full, ~3 min
    python benchmarks/bench_minchar.py --quick    # < 1 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import numpy as np
import torch

HIDDEN, SEQ, VOCAB = 100, 25, 65


class MinCharRNN:
    """Vanilla RNN h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h), y_t = W_hy h_t + b_y, softmax loss."""

    def __init__(self, vocab: int, hidden: int = HIDDEN, seq: int = SEQ, lr: float = 0.1, clip: float = 5.0,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab, self.hidden, self.seq, self.lr, self.clip = vocab, hidden, seq, lr, clip
        self.W_xh = rng.standard_normal((hidden, vocab)) * 0.01
        self.W_hh = rng.standard_normal((hidden, hidden)) * 0.01
        self.W_hy = rng.standard_normal((vocab, hidden)) * 0.01
        self.b_h = np.zeros((hidden, 1))
        self.b_y = np.zeros((vocab, 1))
        self.params = [self.W_xh, self.W_hh, self.W_hy, self.b_h, self.b_y]
        self.adagrad = [np.zeros_like(p) for p in self.params]
        self.h = np.zeros((hidden, 1))
        self.pos = 0

    def loss_and_grads(self, inputs, targets, h_prev):
        """Forward over the window, then backprop through time; returns (loss, grads, last h)."""
        V = self.vocab
        xs, hs, ps = [], [h_prev], []
        loss = 0.0
        for i, j in zip(inputs, targets):
            x = np.zeros((V, 1))
            x[i] = 1.0
            h = np.tanh(self.W_xh @ x + self.W_hh @ hs[-1] + self.b_h)
            y = self.W_hy @ h + self.b_y
            e = np.exp(y - y.max())
            p = e / e.sum()
            loss -= np.log(p[j, 0])
            xs.append(x)
            hs.append(h)
            ps.append(p)
        g_xh, g_hh, g_hy = np.zeros_like(self.W_xh), np.zeros_like(self.W_hh), np.zeros_like(self.W_hy)
        g_bh, g_by = np.zeros_like(self.b_h), np.zeros_like(self.b_y)
        dh_future = np.zeros_like(h_prev)
        for t in range(len(inputs) - 1, -1, -1):
            dy = ps[t].copy()
            dy[targets[t]] -= 1.0           # d loss / d logits of softmax cross-entropy
            g_hy += dy @ hs[t + 1].T
            g_by += dy
            dh = self.W_hy.T @ dy + dh_future
            dpre = (1.0 - hs[t + 1] ** 2) * dh  # through tanh
            g_bh += dpre
            g_xh += dpre @ xs[t].T
            g_hh += dpre @ hs[t].T
            dh_future = self.W_hh.T @ dpre
        grads = [g_xh, g_hh, g_hy, g_bh, g_by]
        for g in grads:
            np.clip(g, -self.clip, self.clip, out=g)
        return loss, grads, hs[-1]

    def train_step(self, data: np.ndarray) -> float:
        if self.pos + self.seq + 1 > len(data):
            self.pos, self.h = 0, np.zeros_like(self.h)
        inputs = data[self.pos:self.pos + self.seq]
        targets = data[self.pos + 1:self.pos + self.seq + 1]
        loss, grads, self.h = self.loss_and_grads(inputs, targets, self.h)
        for p, g, m in zip(self.params, grads, self.adagrad):
            m += g * g
            p -= self.lr * g / np.sqrt(m + 1e-8)
        self.pos += self.seq
        return loss

    def steps(self, data, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.train_step(data)
        return time.perf_counter() - t0


def check_gradients(model: MinCharRNN, data) -> float:
    """Largest error of the analytic gradient against central differences (a few entries), as a
    multiple of the tolerance 1e-6 + 1e-4 * |numeric| (finite differences of a loss near 100 carry
    ~1e-6 of rounding noise); below 1 passes."""
    inputs, targets = data[:SEQ], data[1:SEQ + 1]
    h0 = np.zeros((model.hidden, 1))
    _, grads, _ = model.loss_and_grads(inputs, targets, h0)
    rng = np.random.default_rng(1)
    worst = 0.0
    for p, g in zip(model.params, grads):
        for _ in range(5):
            idx = tuple(rng.integers(0, s) for s in p.shape)
            old = p[idx]
            p[idx] = old + 1e-5
            lp = model.loss_and_grads(inputs, targets, h0)[0]
            p[idx] = old - 1e-5
            lm = model.loss_and_grads(inputs, targets, h0)[0]
            p[idx] = old
            num = (lp - lm) / 2e-5
            if abs(g[idx]) < 4.99:  # skip clipped entries
                worst = max(worst, abs(num - g[idx]) / (1e-6 + 1e-4 * abs(num)))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batches", type=int, nargs="+", help="rnnlens batch sizes to try")
    ap.add_argument("--seconds", type=float, help="target length of one timed segment (default 1.5, quick 0.8)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats (default 5, quick 3)")
    ap.add_argument("--chars", type=int, default=2_000_000)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="rnnlens's device (the reference is numpy)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (0.8 if args.quick else 1.5)
    args.repeats = args.repeats or (3 if args.quick else 5)
    batches = args.batches or ([50, 200] if args.quick else [1, 25, 50, 100, 200, 500, 1000])
    if args.threads:
        torch.set_num_threads(args.threads)

    from rnnlens.corpus import prepare_corpus

    bu.print_header("bench_minchar: numpy min-char-rnn vs rnnlens (RNN 1x100, one-hot, seq 25)"
                    + (" (quick)" if args.quick else ""))
    peak0 = bu.sgemm_probe("before")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rnnlens-bench-") as tmp:
        tmp = Path(tmp)
        text = bu.write_generated_text(tmp / "text.txt", args.chars)
        corpus = prepare_corpus(text, cache_dir=tmp / "cache", split=(0.98, 0.02, 0.0))
        data = np.asarray(corpus.split("train")).astype(np.int64)

        ref = MinCharRNN(VOCAB)
        err = check_gradients(MinCharRNN(VOCAB, seed=3), data)
        print(f"reference gradient check: worst error {err:.2f} of tolerance", flush=True)
        assert err < 1.0, "the numpy reference's gradients are wrong"

        runners = {}
        ref.steps(data, 20)
        t = ref.steps(data, 20) / 20
        n_ref = max(1, round(args.seconds / t))
        runners["min-char-rnn"] = lambda: n_ref * SEQ / ref.steps(data, n_ref)
        for b in batches:
            torch.manual_seed(0)
            h = bu.TrainerHarness(
                tmp / f"run-{b}", corpus,
                bu.model_config(VOCAB, "rnn", 1, HIDDEN, input="onehot"),
                bu.train_config(data=str(text), batch_size=b, seq_len=SEQ, optimizer="rmsprop", lr=2e-3,
                                grad_clip=5.0, clip_mode="value", device=args.device))
            h.steps(3)
            t = h.steps(3)[0] / 3
            n = max(1, round(args.seconds / t))
            runners[f"rnnlens B{b}"] = (lambda h=h, n=n, b=b: n * b * SEQ / h.steps(n)[0])
        res = bu.interleave(runners, args.repeats)
    peak1 = bu.sgemm_probe("after")

    ref_rates = res["min-char-rnn"]
    rows = [["min-char-rnn (numpy float64, batch 1)", bu.fmt_rate(bu.median(ref_rates)), "1.0", bu.spread(ref_rates)]]
    best = None
    for name, rates in res.items():
        if name == "min-char-rnn":
            continue
        ratio = bu.median([o / r for o, r in zip(rates, ref_rates)])
        rows.append([f"rnnlens {name.split()[1]}", bu.fmt_rate(bu.median(rates)), f"{ratio:.1f}", bu.spread(rates)])
        if best is None or ratio > best[1]:
            best = (name, ratio)
    print(f"\nsgemm probe {peak0:.0f} before / {peak1:.0f} after GFLOP/s; device {args.device}; "
          f"{time.perf_counter() - t_start:.0f} s\n")
    print(bu.markdown_table(["run", "chars/s", "x min-char-rnn", "spread"], rows))
    print(f"\nbest: {best[0]} at {best[1]:.1f}x min-char-rnn (goal >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
