"""GPU path check (run on a CUDA machine): train with cuDNN, bf16 autocast and torch.compile,
move checkpoints between GPU and CPU, and compare training throughput with a bare cuDNN loop.

    PYTHONPATH=src python benchmarks/gpu_check.py --data FILE
"""

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlens
from rnnlens.corpus import load_corpus
from rnnlens.model import CharRNN, ModelConfig
from rnnlens.train import TrainConfig, Trainer


def bare_loop_chars_per_s(V, layers, size, batch, seq, steps, bf16):
    model = CharRNN(ModelConfig(vocab_size=V, layers=layers, size=size, dropout=0.0)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.randint(0, V, (batch, seq * (steps + 1) + 1), device="cuda")
    state = None
    for k in range(steps + 5):
        if k == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        i = k % steps
        x, y = data[:, i * seq:(i + 1) * seq], data[:, i * seq + 1:(i + 1) * seq + 1]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in state)
        loss.item()  # the same per-step sync our trainer has
    torch.cuda.synchronize()
    return steps * batch * seq / (time.perf_counter() - t0)


def ours_chars_per_s(corpus, layers, size, batch, seq, steps, bf16, compile_):
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(data="x", max_steps=5, batch_size=batch, seq_len=seq, eval_every=0, checkpoint_every=10**9,
                          device="cuda", bf16=bf16, compile=compile_)
        t = Trainer.start(os.path.join(d, "r"), cfg=cfg, corpus=corpus, progress=False, log=lambda m: None,
                          layers=layers, size=size, dropout=0.0)
        t.run()  # warm-up (and compilation)
        t.cfg.max_steps = 5 + steps
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        t.run()
        torch.cuda.synchronize()
        return steps * batch * seq / (time.perf_counter() - t0 - 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    corpus = load_corpus(args.data)
    with tempfile.TemporaryDirectory() as d:
        run = os.path.join(d, "gpu")
        lm = rnnlens.train(data=args.data, out=run, layers=2, size=256, batch_size=64, seq_len=100, max_steps=300,
                           eval_every=100, device="cuda", bf16=True, progress=False)
        print("trained on cuda with bf16:", lm.meta.get("val_loss"))
        cpu = rnnlens.load(run, device="cpu")
        assert cpu.device.type == "cpu"
        print("GPU checkpoint on CPU: sample =", repr(cpu.sample(60, prime="ROMEO:", seed=0)))
        print("CPU eval of GPU model:", cpu.evaluate(split="val").loss)
        back = rnnlens.load(run, device="cuda")
        print("GPU eval:", back.evaluate(split="val").loss)
        print("GPU sample:", repr(back.sample(60, prime="ROMEO:", seed=0)))
        rnnlens.resume(run, max_steps=350, device="cuda", progress=False)
        print("resumed on cuda to step 350")
        rnnlens.resume(run, max_steps=380, device="cpu", progress=False)
        print("resumed the GPU run on the CPU to step 380")
        c = os.path.join(d, "compiled")
        rnnlens.train(data=args.data, out=c, layers=1, size=128, batch_size=32, max_steps=30, eval_every=0,
                      device="cuda", compile=True, progress=False)
        print("torch.compile run finished")
    V = len(corpus.vocab)
    print("| model | batch | bf16 | bare cuDNN chars/s | rnnlens chars/s | ratio |")
    for layers, size, batch, bf16 in [(2, 512, 100, False), (3, 512, 100, False), (2, 512, 100, True),
                                      (2, 1024, 256, True)]:
        bare = bare_loop_chars_per_s(V, layers, size, batch, 100, args.steps, bf16)
        ours = ours_chars_per_s(corpus, layers, size, batch, 100, args.steps, bf16, False)
        print(f"| LSTM {layers}x{size} | {batch} | {bf16} | {bare:,.0f} | {ours:,.0f} | {ours / bare:.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
