"""Data-parallel training (DDP over gloo on 127.0.0.1): the same weights as one process with the same
global batch, a clear error and an intact checkpoint when a rank dies, and resume on another rank count.

The multi-process tests start real ranks (`python -m torch.distributed.run`, i.e. torchrun, and
`rnnlens train --nproc 2`) with one thread each on a tiny model; they take some seconds each.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_text, run_cli

import rnnlens
from rnnlens import distributed
from rnnlens.batches import StreamBatches
from rnnlens.checkpoint import LAST, read_checkpoint
from rnnlens.errors import RnnlensError

SRC = Path(__file__).resolve().parents[1] / "src"
# dropout 0: each rank draws its own masks, so only a dropout-free model can match one process exactly;
# 5 eval streams split 3 + 2 over the ranks
TRAIN = ["--size", "16", "--batch-size", "8", "--seq-len", "20", "--dropout", "0", "--eval-every", "5",
         "--eval-batch-size", "5", "--quiet"]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensors(run) -> dict:
    return read_checkpoint(Path(run) / LAST).tensors


def val_losses(run) -> list[float]:
    import json
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r]


def assert_same_training_state(a: dict, b: dict, atol=1e-5):
    for k, value in a.items():
        if k.startswith(("model.", "optim.", "state.")):
            torch.testing.assert_close(b[k], value, atol=atol, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


# ---------------------------------------------------------------- layout (one process)

def test_ranks_own_contiguous_blocks_of_the_global_streams():
    data = np.arange(1000, dtype=np.uint16) % 251
    full = StreamBatches(data, 8, 10)
    parts = [StreamBatches(data, 8, 10, rows=distributed.Context(rank=r, world=4).rows(8)) for r in range(4)]
    assert [p.rows for p in parts] == [range(2), range(2, 4), range(4, 6), range(6, 8)]
    assert all(len(p) == len(full) for p in parts)  # the same windows per epoch: L is the global one
    for k in (0, 3, len(full) - 1):
        x, y = full.window(k)
        torch.testing.assert_close(torch.cat([p.window(k)[0] for p in parts]), x)
        torch.testing.assert_close(torch.cat([p.window(k)[1] for p in parts]), y)
    # carried state [layers, B, H]: gathering the shards in rank order restores it
    state = torch.randn(2, 8, 3)
    shards = [distributed.Context(rank=r, world=4).shard_state([state], 8)[0] for r in range(4)]
    assert shards[1].shape == (2, 2, 3)
    torch.testing.assert_close(torch.cat(shards, dim=1), state)
    # an n-NN carries the last n-1 ids of each stream, [B, n-1]: split by rows too
    ids = torch.arange(8 * 4).reshape(8, 4)
    shards = [distributed.Context(rank=r, world=4).shard_state([ids], 8)[0] for r in range(4)]
    assert shards[3].tolist() == ids[6:8].tolist()
    torch.testing.assert_close(torch.cat(shards, dim=0), ids)


def test_a_global_batch_that_does_not_split_is_refused():
    with pytest.raises(RnnlensError, match=r"--batch-size 8 \(the global batch\) does not split evenly over 3 "
                                           r"ranks; use a multiple of 3 \(e.g. --batch-size 9\)"):
        distributed.Context(rank=0, world=3).rows(8)
    with pytest.raises(RnnlensError, match="carries state for 4 streams but --batch-size is 8"):
        distributed.Context(rank=0, world=2).shard_state([torch.zeros(1, 4, 3)], 8)


def test_nproc_relaunches_the_same_command_without_nproc(tmp_path, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr(distributed, "launch", lambda n, argv, run_dir: seen.update(n=n, argv=argv, run=run_dir) or 0)
    data = tmp_path / "in.txt"
    data.write_text(make_text(50))
    code, _, _ = run_cli(capsys, "train", "--data", data, "--nproc", "3", "--max-steps", "2", "--batch-size", "6")
    assert code == 0 and seen["n"] == 3
    assert seen["argv"][:6] == ["train", "--data", str(data), "--max-steps", "2", "--batch-size"]
    assert "--nproc" not in seen["argv"]
    out = seen["argv"][seen["argv"].index("--out") + 1]  # one folder name for every rank
    assert out.startswith("runs/") and seen["run"] == out
    rnnlens.train(data=str(data), out=tmp_path / "r", size=8, max_steps=1, batch_size=6, seq_len=8, progress=False)
    code, _, _ = run_cli(capsys, "train", "--resume", tmp_path / "r", "--nproc=2")
    assert code == 0 and seen["argv"] == ["train", "--resume", str(tmp_path / "r")] and seen["run"] == str(tmp_path / "r")


def test_nproc_bad_values(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "train", "--data", "x", "--nproc", "0", "--max-steps", "1")
    assert code == 2 and "--nproc must be a number of processes >= 1, got 0" in err
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli(capsys, "train", "--data", "x", "--nproc", "2", "--max-steps", "1")
    assert code == 2 and "started by torchrun; drop --nproc" in err


# ---------------------------------------------------------------- real ranks

def test_two_torchrun_nodes_match_one_process_and_resume_on_one(tmp_path):
    """Two 'machines' (two torchrun invocations, --nnodes 2, one rank each, rendezvous on
    127.0.0.1) train to the weights of one process with the same global batch; the 2-rank
    checkpoint then resumes in one process, as if it had never been split."""
    data = tmp_path / "in.txt"
    data.write_text(make_text(300))
    single = tmp_path / "single"
    rnnlens.train(data=str(data), out=single, size=16, batch_size=8, seq_len=20, dropout=0.0, eval_every=5,
                  eval_batch_size=5, max_steps=10, progress=False)  # also prepares the corpus for the ranks
    single10 = tensors(single)

    port = free_port()
    ddp = tmp_path / "ddp"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(i),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "rnnlens", "train", "--data", str(data), *TRAIN, "--max-steps", "10",
                               "--out", str(ddp)], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    assert "on 2 ranks (gloo, 4 of the 8 streams each)" in outs[0][1]
    got = tensors(ddp)
    assert_same_training_state(single10, got)
    assert got["state.0"].shape == (1, 8, 16)  # every stream's carried state, gathered
    assert "rng.cpu.1" in got and not torch.equal(got["rng.cpu.1"], got["rng.cpu"])
    np.testing.assert_allclose(val_losses(ddp), val_losses(single), rtol=1e-5)  # sharded validation
    assert read_checkpoint(ddp / LAST).meta["world_size"] == 2

    rnnlens.resume(single, max_steps=20, progress=False)
    rnnlens.resume(ddp, max_steps=20, progress=False)  # 2 ranks -> 1: the streams' state is regathered
    assert_same_training_state(tensors(single), tensors(ddp))
    assert read_checkpoint(ddp / LAST).meta["state"]["step"] == 20


def test_two_ranks_under_a_time_budget_stop_at_the_same_update(tmp_path):
    """Only rank 0 draws loss.png, so its own estimate of the time to keep free for the end is larger: the
    ranks once stopped at different updates and crashed in a mismatched collective. They agree on it now."""
    data = tmp_path / "in.txt"
    data.write_text(make_text(300))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "rnnlens", "train", "--data", str(data), *TRAIN, "--time-budget", "4",
                          "--out", str(run), "--nproc", "2"], env=env(), capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert "stopped: used the --time-budget of 4 s" in res.stderr and "Traceback" not in res.stderr
    state = read_checkpoint(run / LAST).meta["state"]
    assert state["done"] and state["step"] > 10
    assert (run / "loss.png").exists()


RANK_SCRIPT = """
import os, sys, threading
import rnnlens
import torch

def native_threads():  # the process's threads that are not Python's: gloo's, while a group lives
    return len(os.listdir("/proc/self/task")) - threading.active_count()

before = native_threads()
rnnlens.train(data=sys.argv[1], out=sys.argv[2], size=16, batch_size=8, seq_len=20, dropout=0.0, eval_every=5,
              eval_batch_size=5, max_steps=6, progress=False)
print(f"rank {os.environ['RANK']}: group alive {torch.distributed.is_initialized()}, native threads "
      f"{before} before, {native_threads()} after")
"""


def test_the_process_group_and_its_threads_end_with_the_run(tmp_path):
    """A group still alive when Python exits let gloo's worker thread free tensors during finalization: the rank
    died of SIGABRT after a finished run, now and then. The Python API's run ends it, threads and all."""
    data = tmp_path / "in.txt"
    data.write_text(make_text(300))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script), str(data), str(tmp_path / "run")], env=env(), capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    lines = sorted(line for line in res.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2, res.stdout
    for rank, line in enumerate(lines):
        m = re.fullmatch(rf"rank {rank}: group alive False, native threads (\d+) before, (\d+) after", line)
        assert m and m.group(1) == m.group(2), line
    assert read_checkpoint(tmp_path / "run" / LAST).meta["world_size"] == 2


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """{local rank: pid} of the worker processes the launcher started (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            environ = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"LOCAL_RANK="):
                out[int(item.split(b"=", 1)[1])] = int(d.name)
    return out


def test_killing_a_rank_reports_it_keeps_the_checkpoint_and_resume_completes(tmp_path):
    data = tmp_path / "in.txt"
    data.write_text(make_text(300))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rnnlens", "train", "--data", str(data), *TRAIN, "--max-steps", "100000",
           "--checkpoint-every", "5", "--out", str(run), "--nproc", "2"]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        step = 0
        while step < 10:  # until the ranks have saved a few checkpoints
            assert p.poll() is None and time.monotonic() < deadline, p.communicate(timeout=30)
            time.sleep(0.5)
            try:
                step = read_checkpoint(run / LAST).meta["state"]["step"]
            except RnnlensError:
                pass
        pids = _rank_pids(p.pid)
        assert sorted(pids) == [0, 1], f"the ranks of launcher {p.pid} were not found in /proc: {pids}"
        os.kill(pids[1], signal.SIGKILL)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2, err
    m = re.search(r"error: rank 1 of 2 was killed by SIGKILL .*the last checkpoint, (\S+), is intact at step (\d+); "
                  r"continue with: rnnlens train --resume (\S+) --nproc 2", err)
    assert m, err
    assert "rank 0 of 2 lost contact with the other ranks" in err or "SIGTERM" in err  # rank 0 was stopped too
    assert "Traceback" not in err
    saved = read_checkpoint(run / LAST)  # intact: it reads, and it is the step the message names
    step = saved.meta["state"]["step"]
    assert step >= 10 and step == int(m.group(2)) and not saved.meta["state"]["done"]
    assert not list(run.glob(".*.tmp"))  # no half-written checkpoint left behind

    res = subprocess.run([sys.executable, "-m", "rnnlens", "train", "--resume", str(run), "--max-steps",
                          str(step + 5), "--nproc", "2", "--quiet"], env=env(), capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert f"resuming {run} at step {step}" in res.stderr
    state = read_checkpoint(run / LAST).meta["state"]
    assert state["step"] == step + 5 and state["done"]
    shutil.rmtree(run)


def test_bf16_on_a_cpu_trains_or_says_why_in_one_line(tmp_path, capsys):
    """oneDNN has a bf16 LSTM only on CPUs with bf16 instructions (this machine's has none)."""
    data = tmp_path / "in.txt"
    data.write_text(make_text(50))
    code, _, err = run_cli(capsys, "train", "--data", data, "--size", "8", "--batch-size", "2", "--seq-len", "10",
                           "--max-steps", "2", "--bf16", "--device", "cpu", "--quiet", "--out", tmp_path / "r")
    if code == 2:
        assert "--bf16 does not run on this CPU" in err and "drop --bf16" in err and "Traceback" not in err
    else:
        assert code == 0 and (tmp_path / "r" / LAST).exists()
