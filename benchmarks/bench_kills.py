"""Kill a real training run with SIGKILL at random moments, resume it each time, and check the result.

    python benchmarks/bench_kills.py --data ../shared/data/warpeace_input.txt --chars 300000   # issue #17's command
    python benchmarks/bench_kills.py --kills 3 --steps 60                                      # generated text, ~2 min

What it does (issue #17):
1. A reference run: `rnnlens train` uninterrupted, with a weight snapshot at every checkpoint step.
2. The same command, sent SIGKILL at a random moment, then `rnnlens train --resume` on its folder, again
   and again until --kills kills have landed; then one last resume runs to the end. Each kill picks a
   random step of what is left (seeded), waits until the run logs it (the runs log every step) and
   then a random part of a step more: kills land by the run's progress, whatever the machine's speed,
   anywhere in a step, a validation or a checkpoint write. A kill before the first checkpoint leaves
   nothing to resume, so the command starts again from scratch, as a user would.
3. After every kill: is last.safetensors loadable, and are its weights bit-equal to the reference's
   snapshot at the same step (when it is a --checkpoint-every checkpoint; epoch-end and
   post-validation checkpoints have no snapshot to compare with)? At the end: are all tensors of
   last.safetensors (weights, optimizer moments, step counters) bit-equal to the reference's?

It prints kills done, restarts, runs left unloadable, checkpoints that are not bit-exact, and the
seconds lost per kill: the killed run's wall time minus the steps it kept (at its own step time),
i.e. start-up plus the steps done again after the resume.
Every process uses torch's default thread count: one thread would hide what this checks.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
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


def _train(args: list[str], log: Path | None = None, kill_at: int | None = None,
           rng: random.Random | None = None) -> dict:
    """Run `rnnlens train ARGS`. With `kill_at`, watch the run's metrics.jsonl (`log`, one line a step) and
    SIGKILL the run a random part of a step after it logs step `kill_at`: a moment anywhere in that step,
    in a validation or in a checkpoint write. Returns seconds, killed, stderr and the median step seconds."""
    t0 = time.perf_counter()
    offset = _size(log) if log is not None else 0
    proc = subprocess.Popen([sys.executable, "-m", "rnnlens", "train", *args], env=bu.user_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[int, float]] = []  # (step, seconds since the start) as the log shows them
    if kill_at is not None:
        while proc.poll() is None:
            for step in _logged_steps(log, offset):
                if not seen or step > seen[-1][0]:
                    seen.append((step, time.perf_counter() - t0))
            if seen and seen[-1][0] >= kill_at:
                times = [b[1] - a[1] for a, b in zip(seen, seen[1:])]
                time.sleep(rng.uniform(0, statistics.median(times) if times else 0.5))  # within about a step
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    _, err = proc.communicate()
    killed = proc.returncode == -signal.SIGKILL
    if not killed and proc.returncode != 0:
        raise SystemExit(f"rnnlens train {' '.join(args)} failed (exit {proc.returncode}):\n{err}")
    steps = [b[1] - a[1] for a, b in zip(seen, seen[1:])]
    return {"seconds": time.perf_counter() - t0, "killed": killed, "stderr": err,
            "step_seconds": statistics.median(steps) if steps else None}


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

        reference = _train([*common, "--snapshot-every", str(args.checkpoint_every), "--out", str(ref)])
        ref_seconds, ref_err = reference["seconds"], reference["stderr"]
        mode = next((line for line in ref_err.splitlines() if line.startswith("mode:")), "mode: (not printed)")
        print(f"reference: {args.steps} steps in {ref_seconds:.1f} s; {mode}", flush=True)
        reference_final = read_checkpoint(ref / "last.safetensors").tensors

        kills = unloadable = inexact = checked = restarts = 0
        spent, lost = 0.0, []  # lost: per kill, the killed run's seconds minus the progress it kept
        step_seconds = ref_seconds / args.steps
        log = cut / "metrics.jsonl"
        while kills < args.kills:
            started = (cut / "last.safetensors").exists()
            cmd = ["--resume", str(cut), "--quiet"] if started else [*common, "--out", str(cut)]
            if not started and cut.exists():
                shutil.rmtree(cut)  # killed before its first checkpoint: nothing to resume, start again
                restarts += 1
            resumed_at = _checkpoint_step(cut / "last.safetensors") if started else 0
            if resumed_at >= args.steps - 1:
                break
            # a step anywhere in what is left: kills land by the run's progress, whatever the machine's speed
            target = rng.randint(resumed_at + 1, args.steps - 1)
            run = _train(cmd, log, kill_at=target, rng=rng)
            spent += run["seconds"]
            if not run["killed"]:
                print(f"  run ended before its kill after step {target}", flush=True)
                break
            kills += 1
            where = f"kill {kills} after step {target} ({run['seconds']:.1f} s into the run)"
            if not (cut / "last.safetensors").exists():
                print(f"  {where}: before the first checkpoint", flush=True)
                lost.append(run["seconds"])
                continue
            try:
                saved = read_checkpoint(cut / "last.safetensors")
            except RnnlensError as e:
                unloadable += 1
                print(f"  {where}: UNLOADABLE: {e}", flush=True)
                continue
            step = saved.meta["state"]["step"]
            kept = (step - resumed_at) * (run["step_seconds"] or step_seconds)
            lost.append(max(0.0, run["seconds"] - kept))
            snapshot = ref / "snapshots" / f"step-{step:06d}.safetensors"
            if snapshot.exists():
                same, total = _equal(saved.tensors, read_checkpoint(snapshot).tensors)
                checked += 1
                inexact += same != total
                verdict = f"weights {same} of {total} equal to the reference's"
            else:  # an epoch-end or post-validation checkpoint: the reference kept no snapshot there
                verdict = "no reference snapshot at that step: checked by the final comparison"
            print(f"  {where}: last checkpoint at step {step}; {verdict}; lost {lost[-1]:.1f} s", flush=True)

        run = _train(["--resume", str(cut), "--quiet"] if (cut / "last.safetensors").exists()
                     else [*common, "--out", str(cut)])
        spent, err = spent + run["seconds"], run["stderr"]
        final = read_checkpoint(cut / "last.safetensors").tensors
        same, total = _equal(final, reference_final)
        exact_note = [line for line in err.splitlines() if "not bit-exact" in line]
        print()
        print(bu.markdown_table(
            ["kills done", "restarts from scratch", "runs left unloadable", "checkpoints not bit-exact (checked)",
             "final tensors equal", "seconds lost per kill (median, max)"],
            [[kills, restarts, unloadable, f"{inexact} ({checked})", f"{same} of {total}",
              f"{statistics.median(lost):.1f}, {max(lost):.1f}" if lost else "-"]]))
        print(f"\nreference {ref_seconds:.1f} s uninterrupted ({step_seconds:.2f} s per step); killed and resumed "
              f"{spent:.1f} s in all; checkpoint every {args.checkpoint_every} steps. Lost per kill: the killed "
              "run's seconds minus the steps it kept (at its own median step time): start-up plus the steps redone")
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


def _logged_steps(path: Path, offset: int) -> list[int]:
    """The steps logged in metrics.jsonl after byte `offset`."""
    steps = []
    if path.exists():
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    steps.append(int(json.loads(line)["step"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by the kill, or not a step's line
    return steps


if __name__ == "__main__":
    sys.exit(main())
