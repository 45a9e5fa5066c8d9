"""Kill a real training run with SIGKILL at random moments, resume it each time, and check the result.

    python benchmarks/bench_kills.py --data ../shared/data/warpeace_input.txt --chars 300000   # issue #17's command
    python benchmarks/bench_kills.py --kills 3 --steps 60                                      # generated text, ~2 min

What it does (issue #17):
1. A reference run: `rnnlens train` uninterrupted, with a weight snapshot at every checkpoint step.
2. The same command, sent SIGKILL after a random delay (seeded), then `rnnlens train --resume` on its
   folder, again and again until --kills kills have landed; then one last resume runs to the end.
   The kills are by wall clock, not by step, so they land anywhere: in a step, in validation, while a
   checkpoint is being written. A kill before the first checkpoint leaves nothing to resume, so the
   command starts again from scratch, as a user would.
3. After every kill: is last.safetensors loadable, and are its weights bit-equal to the reference's
   snapshot at the same step (when the checkpoint is a --checkpoint-every one; epoch-end and
   post-validation checkpoints have no snapshot to compare with)? At the end: are all tensors of last.safetensors (weights, optimizer
   moments, step counters) bit-equal to the reference's?

It prints kills done, runs left unloadable, resumed checkpoints that are not bit-exact, steps redone
and seconds lost per kill (the killed run's wall time plus all restarts, minus the reference's).
Every process uses torch's default thread count: one thread would hide what this checks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from rnnlens.checkpoint import read_checkpoint  # noqa: E402
from rnnlens.errors import RnnlensError  # noqa: E402


def _env() -> dict:
    """The environment a user's run gets: rnnlens's own defaults, torch's default thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _train(args: list[str], kill_after: float | None = None) -> tuple[float, bool, str]:
    """Run `rnnlens train ARGS`; SIGKILL it after `kill_after` seconds. Returns (seconds, killed, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rnnlens", "train", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    killed = proc.returncode == -signal.SIGKILL
    if not killed and proc.returncode != 0:
        raise SystemExit(f"rnnlens train {' '.join(args)} failed (exit {proc.returncode}):\n{err}")
    return time.perf_counter() - t0, killed, err


def _equal(a: dict, b: dict) -> tuple[int, int]:
    """(tensors bit-equal, tensors compared) over the names both hold."""
    names = sorted(a.keys() & b.keys())
    return sum(torch.equal(a[k], b[k]) for k in names), len(names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a text file (default: generated text)")
    p.add_argument("--chars", type=int, default=300_000, help="use the first CHARS characters of --data "
                   "(or generate that many)")
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs to land (default 5)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--train-args", default="--model lstm --layers 2 --size 128 --batch-size 32 --seq-len 100 --seed 11",
                   help="the rest of the training command (default: issue #17's)")
    p.add_argument("--keep", help="keep the two run folders under this folder")
    args = p.parse_args(argv)

    bu.print_header("bench_kills: random SIGKILLs over a real training run, resumed each time")
    rng = random.Random(args.seed)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rnnlens-kills-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        data = tmp / "input.txt"
        if args.data:
            data.write_text(Path(args.data).read_text(encoding="utf-8")[:args.chars], encoding="utf-8")
        else:
            bu.write_generated_text(data, args.chars)
        common = ["--data", str(data), *args.train_args.split(), "--max-steps", str(args.steps),
                  "--checkpoint-every", str(args.checkpoint_every), "--log-every", "1", "--quiet"]
        ref, cut = tmp / "reference", tmp / "killed"
        for folder in (ref, cut):
            shutil.rmtree(folder, ignore_errors=True)

        ref_seconds, _, ref_err = _train([*common, "--snapshot-every", str(args.checkpoint_every), "--out", str(ref)])
        mode = next((line for line in ref_err.splitlines() if line.startswith("mode:")), "mode: (not printed)")
        print(f"reference: {args.steps} steps in {ref_seconds:.1f} s; {mode}", flush=True)
        reference_final = read_checkpoint(ref / "last.safetensors").tensors

        kills = unloadable = inexact = checked = restarts = steps_redone = 0
        spent = 0.0
        step_seconds = ref_seconds / args.steps
        while kills < args.kills:
            started = (cut / "last.safetensors").exists()
            cmd = ["--resume", str(cut), "--quiet"] if started else [*common, "--out", str(cut)]
            if not started and cut.exists():
                shutil.rmtree(cut)  # killed before its first checkpoint: nothing to resume, start again
                restarts += 1
            # a delay anywhere in the next two checkpoint intervals (plus start-up), so kills land in steps,
            # validations and checkpoint writes alike, but short of the end, so that all --kills land
            resumed_at = _checkpoint_step(cut / "last.safetensors") if started else 0
            left = (args.steps - resumed_at) * step_seconds
            delay = rng.uniform(1.0, min(3.0 + 2 * args.checkpoint_every * step_seconds, 2.0 + 0.8 * left))
            logged = _size(cut / "metrics.jsonl")
            seconds, killed, err = _train(cmd, kill_after=delay)
            spent += seconds
            if not killed:
                print(f"  run ended before its kill at {delay:.1f} s", flush=True)
                break
            kills += 1
            if not (cut / "last.safetensors").exists():
                print(f"  kill {kills} at {delay:.1f} s: before the first checkpoint", flush=True)
                continue
            try:
                saved = read_checkpoint(cut / "last.safetensors")
            except RnnlensError as e:
                unloadable += 1
                print(f"  kill {kills} at {delay:.1f} s: UNLOADABLE: {e}", flush=True)
                continue
            step = saved.meta["state"]["step"]
            snapshot = ref / "snapshots" / f"step-{step:06d}.safetensors"
            if snapshot.exists():
                same, total = _equal(saved.tensors, read_checkpoint(snapshot).tensors)
                checked += 1
                inexact += same != total
                verdict = f"weights {same} of {total} equal to the reference's"
            else:  # an epoch-end or post-validation checkpoint: the reference kept no snapshot there
                verdict = "(no reference snapshot at that step: checked by the final comparison)"
            # steps the killed process did after that checkpoint, from the lines it added to the run's log
            steps_redone += max(0, _last_logged_step(cut / "metrics.jsonl", logged) - step)
            print(f"  kill {kills} at {delay:.1f} s: last checkpoint at step {step}; {verdict}", flush=True)

        seconds, killed, err = _train(["--resume", str(cut), "--quiet"] if (cut / "last.safetensors").exists()
                                      else [*common, "--out", str(cut)])
        spent += seconds
        final = read_checkpoint(cut / "last.safetensors").tensors
        same, total = _equal(final, reference_final)
        exact_note = [line for line in err.splitlines() if "not bit-exact" in line]
        print()
        print(bu.markdown_table(
            ["kills done", "restarts from scratch", "runs left unloadable", "checkpoints not bit-exact (checked)",
             "final tensors equal", "steps redone per kill", "seconds lost per kill"],
            [[kills, restarts, unloadable, f"{inexact} ({checked})", f"{same} of {total}",
              f"{steps_redone / max(kills, 1):.1f}", f"{(spent - ref_seconds) / max(kills, 1):.1f}"]]))
        print(f"\nreference {ref_seconds:.1f} s uninterrupted; killed and resumed {spent:.1f} s in all; "
              f"checkpoint every {args.checkpoint_every} steps, {step_seconds:.2f} s per step")
        if exact_note:
            print("the last resume said: " + exact_note[0])
        return 0 if (unloadable == 0 and inexact == 0 and same == total) else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _checkpoint_step(path: Path) -> int:
    try:
        return int(read_checkpoint(path).meta["state"]["step"])
    except RnnlensError:
        return 0  # counted as unloadable when the kill left it; the resume will say more


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _last_logged_step(path: Path, offset: int) -> int:
    """The last step logged in metrics.jsonl after byte `offset` (every --log-every steps), 0 if none."""
    last = 0
    if path.exists():
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    last = max(last, int(json.loads(line).get("step", 0)))
                except (ValueError, AttributeError):
                    continue  # a line cut short by the kill
    return last


if __name__ == "__main__":
    sys.exit(main())
