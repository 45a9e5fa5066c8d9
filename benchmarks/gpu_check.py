"""GPU path check (run on a CUDA machine): train with cuDNN, bf16 autocast and torch.compile,
move checkpoints between GPU and CPU, and, with 2+ GPUs, train data-parallel (NCCL) with --nproc.
Throughput against a bare cuDNN loop and a paper grid cell: benchmarks/bench_gpu.py.
Without a CUDA GPU it says so and exits with status 0.

    PYTHONPATH=src python benchmarks/gpu_check.py --data FILE
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch

import rnnlens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    from bench_gpu import no_gpu_message
    if no_gpu_message():
        print(no_gpu_message())
        return 0
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
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
        if torch.cuda.device_count() >= 2:  # DDP over NCCL, one GPU per rank
            ddp = os.path.join(d, "ddp")
            subprocess.run([sys.executable, "-m", "rnnlens", "train", "--data", args.data, "--nproc", "2",
                            "--device", "cuda", "--layers", "2", "--size", "256", "--batch-size", "64",
                            "--max-steps", "100", "--eval-every", "50", "--quiet", "--out", ddp], check=True)
            print("--nproc 2 on 2 GPUs (NCCL) finished:", rnnlens.load(ddp, device="cpu").meta.get("val_loss"))
        else:
            print("one GPU: skipped the --nproc 2 NCCL check")
    print("throughput against a bare cuDNN loop: python benchmarks/bench_gpu.py")


if __name__ == "__main__":
    sys.exit(main())
