"""How many CPU threads a run trains on, and why: torch's one per core, fewer when other processes hold cores.

Why: with OMP_DYNAMIC=FALSE (rnnlens.reproducibility: the thread count must not change under a seeded run) every
parallel region waits at a barrier for all of its threads. When another process keeps a core busy, the thread on
that core runs only in the scheduler's time slices, and every update waits for it: the default 1x512 LSTM at batch
32 took 0.38 updates per second on 2 threads with one of this machine's 2 cores busy, against 3.4 on 1 thread and
6.5 on 2 threads of the quiet machine (docs/benchmarks.md, "Busy cores").

So a run on the CPU that was given no thread count looks, once at its start, at how busy the cores are. A timed run
(--time-budget) takes one thread per core the other processes leave free: its length in updates already follows the
machine's speed. A run counted in updates or epochs keeps torch's threads, so the same command gives the same
weights on a busy machine as on a quiet one (the thread count changes how sums are split), and says in one line
that it will be slow and how to make it fast.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

# seconds the start of a run sleeps while it reads how busy the cores are: ~10 of the kernel's 100 Hz ticks per
# core, enough to tell a busy core (~10) from a free one (0-1)
SAMPLE_SECONDS = 0.1
# a core counts as free when other processes used at most this share of it over the sample: a thread sharing a
# core with a busier process waits at every barrier
FREE_CORE_BUSY = 0.25

_TORCH_THREADS = None  # torch's own thread count, as it was before a run first chose one


def torch_default_threads() -> int:
    """torch's thread count as this process started with it (OMP_NUM_THREADS, else one per physical core)."""
    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        import torch
        _TORCH_THREADS = torch.get_num_threads()
    return _TORCH_THREADS


def cpu_times(text: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """Per CPU in `cpus`: (busy ticks, all ticks) from the text of /proc/stat. Busy is everything but idle and
    iowait (steal counts as busy: the hypervisor gave that time to someone else)."""
    times = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times


def busy_cores(sample_s: float = SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> list[float] | None:
    """Per core this process may run on: the share of it that was busy over `sample_s` seconds while this process
    slept (so: other processes' share). None where the kernel's counters cannot be read (not Linux)."""
    try:
        cpus = set(os.sched_getaffinity(0))
        with open(stat_path) as f:
            before = cpu_times(f.read(), cpus)
        time.sleep(sample_s)
        with open(stat_path) as f:
            after = cpu_times(f.read(), cpus)
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    shares = []
    for cpu, (busy, total) in after.items():
        if cpu in before and total > before[cpu][1]:
            shares.append(min(1.0, max(0.0, (busy - before[cpu][0]) / (total - before[cpu][1]))))
    return shares or None


def free_cores(shares: list[float]) -> int:
    """How many cores other processes leave free, from their busy shares: a core they used at most FREE_CORE_BUSY of
    counts as free, and so does the room left on the busy ones, counted in whole cores."""
    return math.floor(sum(1.0 - s for s in shares) + FREE_CORE_BUSY + 1e-9)


@dataclass
class ThreadChoice:
    threads: int
    note: str | None = None  # one line for the run's log: why it took fewer threads, or why it will be slow


def choose_threads(given: int | None, timed: bool, device_type: str, busy=None) -> ThreadChoice:
    """The thread count of a run on `device_type`: `given` (--threads) as it is; else torch's own, or, when the run
    is `timed` and other processes hold cores, one thread per free core. `busy`: busy_cores (None), or a stand-in."""
    default = torch_default_threads()
    if given is not None:
        return ThreadChoice(given)
    if device_type != "cpu" or default <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(default)
    shares = (busy or busy_cores)()
    if shares is None:
        return ThreadChoice(default)
    free = min(default, max(1, free_cores(shares)))
    if free >= default:
        return ThreadChoice(default)
    held = f"other processes keep {sum(shares):.1f} of the {len(shares)} cores busy"
    if timed:
        return ThreadChoice(free, f"threads: {free} of torch's {default}, because {held}, and a thread on a busy "
                                  f"core stalls every update; --threads {default} to take them all")
    return ThreadChoice(default, f"warning: {held}: on {default} threads every update waits for a busy core and runs "
                                 f"many times slower; --threads {free} is faster here (and gives other weights than "
                                 f"{default} threads), or free the cores")


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's thread count of this process to the choice's."""
    import torch
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
