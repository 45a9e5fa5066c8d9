"""The CPU threads a run takes: torch's, fewer for a timed run when other processes hold cores, --threads."""

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli

from rnnlens import plan, threads
from rnnlens.checkpoint import read_checkpoint
from rnnlens.errors import RnnlensError
from rnnlens.trainer import TrainConfig

STAT = """cpu  500 0 100 900 10 0 0 0 0 0
cpu0 200 0 50 450 5 0 0 0 0 0
cpu1 300 0 50 450 5 0 0 0 0 0
intr 1 2 3
"""


def test_cpu_times_counts_idle_and_iowait_as_free_and_reads_only_the_given_cpus():
    assert threads.cpu_times(STAT, {0, 1}) == {0: (250, 705), 1: (350, 805)}
    assert threads.cpu_times(STAT, {1}) == {1: (350, 805)}


def test_busy_cores_reads_the_share_each_core_was_busy_while_the_run_slept(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    lines = {0: "cpu0 200 0 50 450 5 0 0 0 0 0", 1: "cpu1 300 0 50 450 5 0 0 0 0 0"}
    stat.write_text("\n".join(f"cpu{c} " + lines[i].split(" ", 1)[1] for i, c in enumerate(cpus)) + "\n")
    # over the sleep: the first core 10 busy ticks of 10, the second 1 of 10 (steal counts as busy)
    after = [f"cpu{cpus[0]} 210 0 50 450 5 0 0 0 0 0"] + ([f"cpu{cpus[1]} 300 0 50 459 5 0 0 1 0 0"]
                                                         if len(cpus) > 1 else [])
    monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write_text("\n".join(after) + "\n"))
    assert threads.busy_cores(stat_path=str(stat)) == ([1.0, 0.1] if len(cpus) > 1 else [1.0])
    assert threads.busy_cores(stat_path=str(tmp_path / "missing")) is None


def test_a_core_counts_as_free_when_others_use_at_most_a_quarter_of_it():
    assert threads.free_cores([0.0, 0.0]) == 2
    assert threads.free_cores([0.2, 0.05]) == 2
    assert threads.free_cores([1.0, 0.0]) == 1
    assert threads.free_cores([0.4, 0.0]) == 1
    assert threads.free_cores([0.5, 0.5, 0.0, 0.0]) == 3
    assert threads.free_cores([1.0, 1.0]) == 0


@pytest.fixture
def two_torch_threads(monkeypatch):
    """torch's own count as on a 2-core machine, and no OMP_NUM_THREADS, whatever machine runs the tests."""
    monkeypatch.setattr(threads, "_TORCH_THREADS", 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_timed_run_takes_the_free_cores_and_an_untimed_one_keeps_torchs_threads_and_warns(two_torch_threads):
    one_busy = lambda: [1.0, 0.0]  # noqa: E731
    timed = threads.choose_threads(None, timed=True, device_type="cpu", busy=one_busy)
    assert timed.threads == 1
    assert timed.note == ("threads: 1 of torch's 2, because other processes keep 1.0 of the 2 cores busy, and a "
                          "thread on a busy core stalls every update; --threads 2 to take them all")
    counted = threads.choose_threads(None, timed=False, device_type="cpu", busy=one_busy)
    assert counted.threads == 2
    assert counted.note.startswith("warning: other processes keep 1.0 of the 2 cores busy: on 2 threads")
    assert "--threads 1 is faster here" in counted.note
    # every core busy: still one thread
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=lambda: [1.0, 1.0]).threads == 1
    # quiet: torch's, without a word
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=lambda: [0.1, 0.0]) == \
        threads.ThreadChoice(2, None)


def test_a_given_count_a_gpu_or_omp_num_threads_skip_the_look_at_the_cores(two_torch_threads, monkeypatch):
    def never():
        raise AssertionError("the cores were sampled")
    assert threads.choose_threads(3, timed=True, device_type="cpu", busy=never) == threads.ThreadChoice(3, None)
    assert threads.choose_threads(None, timed=True, device_type="cuda", busy=never) == threads.ThreadChoice(2, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=never) == threads.ThreadChoice(2, None)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a core to keep busy and one to run on")
def test_a_process_spinning_on_one_core_reads_as_that_core_busy():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    burner = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.3)  # the interpreter started and spins
        shares = threads.busy_cores(sample_s=0.3)
    finally:
        burner.kill()
        burner.wait()
    assert shares is not None and len(shares) == len(os.sched_getaffinity(0))
    assert max(shares) >= 0.8, shares
    assert threads.free_cores(shares) <= len(shares) - 1


def test_a_timed_run_on_a_busy_machine_trains_on_the_free_core_then_an_untimed_one_is_back_on_torchs(
        tmp_path, text_file, two_torch_threads, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: [1.0, 0.0])
    logs = []
    small = dict(data=str(text_file), layers=1, size=16, embedding_size=8, batch_size=4, seq_len=20, eval_every=0,
                 progress=False, log=logs.append)
    plan.start_run(tmp_path / "timed", time_budget=2, **small).run()
    assert "threads: 1 of torch's 2, because other processes keep 1.0 of the 2 cores busy" in "\n".join(logs)
    assert any(line.startswith("mode: deterministic on 1 thread:") for line in logs)
    assert read_checkpoint(tmp_path / "timed" / "last.safetensors").meta["reproducibility"]["threads"] == 1
    logs.clear()
    plan.start_run(tmp_path / "steps", max_steps=3, **small).run()
    assert any(line.startswith("warning: other processes keep 1.0 of the 2 cores busy") for line in logs)
    assert any(line.startswith("mode: deterministic on 2 threads:") for line in logs)
    assert read_checkpoint(tmp_path / "steps" / "last.safetensors").meta["reproducibility"]["threads"] == 2


def test_threads_from_the_command_line_and_on_resume(tmp_path, text_file, capsys, two_torch_threads):
    args = ["train", "--data", text_file, "--layers", "1", "--size", "16", "--batch-size", "4", "--seq-len", "20",
            "--quiet", "--out", tmp_path / "run"]
    code, _, err = run_cli(capsys, *args, "--max-steps", "3", "--threads", "1")
    assert code == 0 and "mode: deterministic on 1 thread:" in err
    assert read_checkpoint(tmp_path / "run" / "last.safetensors").meta["reproducibility"]["threads"] == 1
    # the run keeps its --threads on resume, and a resume may give another
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--max-steps", "5", "--quiet")
    assert code == 0 and "mode: deterministic on 1 thread:" in err
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--max-steps", "7", "--threads", "2",
                           "--quiet")
    assert code == 0 and "mode: deterministic on 2 threads:" in err and "trained on 1 threads and now runs on 2" in err
    with pytest.raises(RnnlensError, match="--threads must be"):
        TrainConfig(threads=0)
