"""Issue #17: seeded training is bit-reproducible at the thread count a user gets, and a run killed
(SIGKILL) any number of times and resumed ends with the same checkpoint as one never stopped.

These run `rnnlens train` in subprocesses with torch's default thread count (OMP_NUM_THREADS is
removed from their environment): one thread would hide the problem. The models are wide enough
(128 units, batch 32) that MKL and oneDNN split their work over the threads.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_text

import rnnlens
from rnnlens import reproducibility
from rnnlens.checkpoint import read_checkpoint

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="this machine has one core: a run uses one "
                                "thread there, and the multi-thread reproducibility these tests check cannot arise")

KILL_SCRIPT = """
import os, signal, sys
from rnnlens.trainer import Trainer
original = Trainer.train_step
def dying_step(self, x, y):
    if self.state.step == int(os.environ.get("KILL_AT", "-1")):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, x, y)
Trainer.train_step = dying_step
from rnnlens.cli import main
sys.exit(main(sys.argv[1:]))
"""

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 120: pass\n"


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(rnnlens.__file__).parents[1])
    return env


def _run(tmp_path, args, kill_at=-1, busy=False):
    script = tmp_path / "kill.py"
    if not script.exists():
        script.write_text(KILL_SCRIPT)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        return subprocess.run([sys.executable, str(script), *map(str, args)], env={**_env(), "KILL_AT": str(kill_at)},
                              capture_output=True, text=True, timeout=300)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def _tensors(run: Path, name="last.safetensors"):
    return read_checkpoint(run / name).tensors


def _assert_same(a: Path, b: Path, name="last.safetensors"):
    ta, tb = _tensors(a, name), _tensors(b, name)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ: {differ[:5]}"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(make_text(900, seed=4))  # ~20K characters: a few windows of 32 x 50 per epoch
    return path


def _args(data, cell="lstm", dropout=0.2, steps=36, extra=()):
    return ["train", "--data", data, "--model", cell, "--layers", "2", "--size", "128", "--embedding-size", "32",
            "--dropout", dropout, "--batch-size", "32", "--seq-len", "50", "--max-steps", steps, "--seed", "11",
            "--eval-every", "10", "--checkpoint-every", "4", "--quiet", *extra]


def test_two_runs_of_the_same_command_give_identical_checkpoints(tmp_path, data):
    """Once on a quiet machine, once beside a process that keeps a core busy."""
    args = _args(data, steps=30)
    a = _run(tmp_path, [*args, "--out", tmp_path / "a"])
    assert a.returncode == 0, a.stderr
    b = _run(tmp_path, [*args, "--out", tmp_path / "b"], busy=True)
    assert b.returncode == 0, b.stderr
    _assert_same(tmp_path / "a", tmp_path / "b")
    _assert_same(tmp_path / "a", tmp_path / "b", "best.safetensors")
    assert f"mode: deterministic on {os.cpu_count()} threads" in a.stderr, a.stderr


@pytest.mark.parametrize("cell,dropout,kills,extra", [
    # killed four times: mid-epoch, just after a checkpoint, after a validation, near the end
    ("lstm", 0.2, [7, 13, 21, 33], ["--snapshot-every", "8", "--patience", "50"]),
    ("gru", 0.0, [11, 26], ["--lr-schedule", "step", "--lr-decay-after", "1", "--lr-decay", "0.8"]),
    ("rnn", 0.2, [18], []),
])
def test_resume_after_repeated_sigkills_is_bit_exact(tmp_path, data, cell, dropout, kills, extra):
    args = _args(data, cell, dropout, extra=extra)
    full = _run(tmp_path, [*args, "--out", tmp_path / "full"])
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    for i, step in enumerate(kills):
        cmd = [*args, "--out", cut] if i == 0 else ["train", "--resume", cut, "--quiet"]
        killed = _run(tmp_path, cmd, kill_at=step, busy=i % 2 == 1)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert read_checkpoint(cut / "last.safetensors").meta["state"]["step"] <= step
    resumed = _run(tmp_path, ["train", "--resume", cut, "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert "not bit-exact" not in resumed.stderr, resumed.stderr
    for name in ("last.safetensors", "best.safetensors"):
        _assert_same(tmp_path / "full", cut, name)
    if "--snapshot-every" in extra:
        snaps = sorted(p.name for p in (tmp_path / "full" / "snapshots").iterdir())
        assert snaps == sorted(p.name for p in (cut / "snapshots").iterdir())
        for name in snaps:
            _assert_same(tmp_path / "full" / "snapshots", cut / "snapshots", name)


def test_resume_note_names_what_breaks_exactness():
    saved = {"deterministic": True, "threads": 2, "device": "cpu", "torch": "2.13.0"}
    assert reproducibility.resume_note(saved, dict(saved), 1, 1) is None
    note = reproducibility.resume_note(saved, {**saved, "threads": 1}, 1, 1)
    assert "not bit-exact" in note and "2 threads" in note and "--threads 2 to match" in note
    note = reproducibility.resume_note(saved, saved, 2, 4)
    assert "2 rank(s) and resumes on 4" in note
    assert "--deterministic" in reproducibility.resume_note(saved, {**saved, "deterministic": False}, 1, 1)


def test_the_environment_defaults_are_set_and_overridable(monkeypatch):
    # rnnlens was imported by this test module: its defaults are in the environment
    for key in ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC"):
        assert key in os.environ
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    reproducibility.apply_env()
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"  # a user's own value wins


def test_mkl_takes_the_avx2_branch_on_an_intel_cpu_with_avx2(tmp_path):
    def cpuinfo(name, vendor, flags):
        path = tmp_path / name
        path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        return str(path)
    assert reproducibility._mkl_branch(cpuinfo("xeon", "GenuineIntel", "fpu sse4_2 avx avx2 fma avx512f")) == "AVX2"
    assert reproducibility._mkl_branch(cpuinfo("old", "GenuineIntel", "fpu sse4_2 avx avx512_vnni_like")) == "AUTO"
    # MKL runs a named branch on Intel CPUs only (an AMD EPYC with AVX2 ran AVX2,STRICT as AUTO,STRICT)
    assert reproducibility._mkl_branch(cpuinfo("epyc", "AuthenticAMD", "fpu sse4_2 avx avx2 fma avx512f")) == "AUTO"
    assert reproducibility._mkl_branch(str(tmp_path / "missing")) == "AUTO"  # no /proc: the CPU's own branch
    # MKL_CBWR's value as MKL's mode (mkl_service.h: AUTO 2, AVX2 10, STRICT 0x10000)
    assert reproducibility.cbwr_mode("AVX2,STRICT") == 0x1000A
    assert reproducibility.cbwr_mode("auto, strict") == 0x10002
    assert reproducibility.cbwr_mode("COMPATIBLE") == 3
    assert reproducibility.cbwr_mode("STRICT") == 0x10002  # no branch named: AUTO's
    # and the default is the mode MKL runs in, on this machine whatever its CPU
    assert reproducibility.ENV_DEFAULTS["MKL_CBWR"] == f"{reproducibility._mkl_branch()},STRICT"
    code = "import rnnlens, torch\nfrom rnnlens import reproducibility as r\nprint(r._mkl_cbwr_get())\n"
    env = {k: v for k, v in _env().items() if k not in reproducibility.ENV_DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if torch.backends.mkl.is_available() and out.stdout.strip() != "None":
        assert int(out.stdout) == reproducibility.cbwr_mode(reproducibility.ENV_DEFAULTS["MKL_CBWR"])


def test_torch_imported_first_is_reported_honestly(tmp_path):
    """`import torch; torch.mm(...)` before `import rnnlens`: MKL's mode can no longer change, and training says so."""
    code = ("import torch\ntorch.ones(64, 64) @ torch.ones(64, 64)\nimport rnnlens\n"
            "from rnnlens import reproducibility as r\nprint(r.start_line(True))\n")
    env = {k: v for k, v in _env().items() if k not in reproducibility.ENV_DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if torch.backends.mkl.is_available():
        assert "may not be bit-reproducible" in out.stdout and "import rnnlens first" in out.stdout, out.stdout
    code_ok = "import rnnlens\nfrom rnnlens import reproducibility as r\nimport torch\nprint(r.start_line(True))\n"
    out = subprocess.run([sys.executable, "-c", code_ok], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("mode: deterministic"), out.stdout
