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


def test_others_busy_is_the_machines_busy_time_less_this_process_own():
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    before = threads.CoreReading(busy_ticks=1000, all_ticks=5000, cores=2, own_seconds=3.0)
    # 1 s passes on each of 2 cores; the machine was busy 1.5 cores' worth, this process 0.5 s of it
    after = threads.CoreReading(busy_ticks=1000 + round(1.5 / tick), all_ticks=5000 + round(2 / tick), cores=2,
                                own_seconds=3.5)
    assert threads.others_busy(before, after) == pytest.approx(1.0)
    assert threads.others_busy(before, before) is None  # no tick passed


def test_busy_cores_reads_the_kernels_counters_over_the_sample(tmp_path, monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    stat = tmp_path / "stat"
    stat.write_text("".join(f"cpu{c} 200 0 50 450 5 0 0 0 0 0\n" for c in cpus))
    # over the sleep: the first core 10 busy ticks of 10 (steal counts as busy), the others 10 idle ticks
    after = [f"cpu{cpus[0]} 205 0 50 450 5 0 0 5 0 0"] + [f"cpu{c} 200 0 50 460 5 0 0 0 0 0" for c in cpus[1:]]
    monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write_text("\n".join(after) + "\n"))
    monkeypatch.setattr(threads.os, "times", lambda: os.times_result((1.0, 0.0, 0.0, 0.0, 0.0)))  # this process idle
    busy, cores = threads.busy_cores(stat_path=str(stat))
    assert cores == len(cpus) and busy == pytest.approx(1.0)
    assert threads.busy_cores(stat_path=str(tmp_path / "missing")) is None


def test_a_core_counts_as_free_when_others_use_at_most_a_quarter_of_it():
    assert threads.free_cores(0.0, 2) == 2
    assert threads.free_cores(0.25, 2) == 2
    assert threads.free_cores(0.3, 2) == 1
    assert threads.free_cores(1.0, 2) == 1
    assert threads.free_cores(1.0, 4) == 3
    assert threads.free_cores(2.0, 2) == 0


@pytest.fixture
def two_torch_threads(monkeypatch):
    """torch's own count as on a 2-core machine, and no OMP_NUM_THREADS, whatever machine runs the tests."""
    monkeypatch.setattr(threads, "_TORCH_THREADS", 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_timed_run_takes_the_free_cores_and_an_untimed_one_keeps_torchs_threads_and_warns(two_torch_threads):
    one_busy = lambda: (1.0, 2)  # noqa: E731
    timed = threads.choose_threads(None, timed=True, device_type="cpu", busy=one_busy)
    assert timed.threads == 1
    assert timed.note == ("threads: 1 of torch's 2, because other processes keep 1.0 of the 2 cores busy, and a "
                          "thread on a busy core stalls every update; --threads 2 to take them all")
    counted = threads.choose_threads(None, timed=False, device_type="cpu", busy=one_busy)
    assert counted.threads == 2
    assert counted.note.startswith("warning: other processes keep 1.0 of the 2 cores busy: on 2 threads")
    assert "--threads 1 is faster here" in counted.note
    # every core busy: still one thread
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=lambda: (2.0, 2)).threads == 1
    # quiet: torch's, without a word, and the run keeps looking
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=lambda: (0.1, 2)) == \
        threads.ThreadChoice(2, None, watched=True, timed=True)


def test_a_given_count_a_gpu_or_omp_num_threads_skip_the_look_at_the_cores(two_torch_threads, monkeypatch):
    def never():
        raise AssertionError("the cores were sampled")
    assert threads.choose_threads(3, timed=True, device_type="cpu", busy=never) == threads.ThreadChoice(3, None)
    assert threads.choose_threads(None, timed=True, device_type="cuda", busy=never) == threads.ThreadChoice(2, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(None, timed=True, device_type="cpu", busy=never) == threads.ThreadChoice(2, None)


class FakeCores:
    """Readings of a 2-core machine, one per second: (seconds of both cores busy, seconds this process used)."""

    def __init__(self, *busy_and_own):
        self.per_second, self.t, self.busy, self.own = list(busy_and_own), 0, 0.0, 0.0

    def __call__(self):
        if self.t:
            busy, own = self.per_second.pop(0)
            self.busy, self.own = self.busy + busy, self.own + own
        self.t += 1
        tick = 1.0 / os.sysconf("SC_CLK_TCK")
        return threads.CoreReading(round(self.busy / tick), round(2 * self.t / tick), 2, self.own)


def test_a_timed_run_moves_to_the_free_cores_as_others_take_and_free_them(two_torch_threads, monkeypatch):
    monkeypatch.setattr(threads, "WATCH_SECONDS", 0.0)
    # quiet; then another process takes a core (the run's 2 threads stall on it: 1 s of its own); then it ends
    watch = threads.ThreadWatch(threads.ThreadChoice(2, watched=True, timed=True),
                                read=FakeCores((1.9, 1.9), (2.0, 1.0), (1.0, 1.0), (1.0, 1.0)))
    assert watch.look(10) is None
    assert watch.look(20) == "threads: 1 from step 20, because other processes keep 1.0 of the 2 cores busy"
    assert torch.get_num_threads() == 1
    assert watch.look(30) == "threads: 2 from step 30, because the other processes freed the cores"
    assert torch.get_num_threads() == 2
    assert watch.look(40) is None


def test_a_counted_run_keeps_its_threads_and_warns_once_when_a_core_is_taken(two_torch_threads, monkeypatch):
    monkeypatch.setattr(threads, "WATCH_SECONDS", 0.0)
    torch.set_num_threads(2)
    watch = threads.ThreadWatch(threads.ThreadChoice(2, watched=True, timed=False),
                                read=FakeCores((2.0, 1.0), (2.0, 1.0)))
    line = watch.look(70)
    assert line.startswith("from step 70, warning: other processes keep 1.0 of the 2 cores busy: on 2 threads")
    assert watch.look(80) is None and torch.get_num_threads() == 2


def test_the_watch_reads_the_counters_only_every_watch_seconds(two_torch_threads):
    cores = FakeCores((2.0, 1.0))  # a core taken: a look would move the run to 1 thread
    watch = threads.ThreadWatch(threads.ThreadChoice(2, watched=True, timed=True), read=cores)
    assert watch.look(10) is None and cores.t == 1  # the reading at the start only: WATCH_SECONDS have not passed


def test_a_process_spinning_on_one_core_reads_as_that_core_busy():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    burner = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.3)  # the interpreter started and spins
        busy, cores = threads.busy_cores(sample_s=0.3)
    finally:
        burner.kill()
        burner.wait()
    assert cores == len(os.sched_getaffinity(0))
    assert busy >= 0.8, busy
    assert threads.free_cores(busy, cores) <= cores - 1


def test_a_timed_run_on_a_busy_machine_trains_on_the_free_core_then_an_untimed_one_is_back_on_torchs(
        tmp_path, text_file, two_torch_threads, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: (1.0, 2))
    monkeypatch.setattr(threads, "WATCH_SECONDS", 1e9)  # the start's choice only: this machine's real cores stay unread
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
