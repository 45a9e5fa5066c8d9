"""Data-parallel training on PyTorch's own engine: torch.distributed + DistributedDataParallel.

How a run is split (global batch B over N ranks, B % N == 0, b = B / N):

* The B contiguous streams of `StreamBatches` keep their global layout (stream length
  L = (n-1) // B, W windows an epoch); rank r owns streams r*b .. r*b+b-1 and carries their
  recurrent state [layers, b, H] from window to window, exactly as one process would.
* Each rank's loss is the mean over its b*T characters; DDP averages the gradients over ranks,
  which is the gradient of the mean over all B*T characters (every rank has the same count).
  Clipping runs after that average, so it sees the global gradient norm. Every rank then holds
  the same gradient and takes the same optimizer step: the weights stay identical.
* The per-step loss, the step time and "a stop signal arrived" are averaged / or-ed over ranks
  in one small all_reduce, so every rank takes the same decision (roll back, stop, validate).
* Validation: rank r scores its share of the eval streams; loss sums and counts are
  all_reduced, so the number is the one a single process computes (to float rounding).
* Checkpoints: the carried state and every rank's RNG state are gathered; rank 0 alone writes
  (atomically) and the others wait at a barrier. A checkpoint holds the state of all B streams,
  so a run can resume on any N that divides B (see docs/distributed.md).

Launch: `rnnlens train --nproc N ...` (this module's `launch`, which runs torch.distributed.run,
the engine behind `torchrun`), or `torchrun ... -m rnnlens train ...` for several machines.
Backends: NCCL when the ranks train on CUDA GPUs (one GPU per rank, cuda:LOCAL_RANK), gloo on CPUs.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rnnlens.errors import RnnlensError

# Ranks >= 1 draw their own dropout masks: their RNG is seeded with seed + rank * RANK_SEED_STRIDE
# (rank 0 keeps the single-process stream, so one rank reproduces a plain run exactly).
RANK_SEED_STRIDE = 1_000_003



def stream_dim(state: torch.Tensor) -> int:
    """The batch (stream) axis of a carried-state tensor: 1 for RNN/LSTM/GRU [layers, B, H], 0 for the
    n-NN's [B, n-1] window of previous ids."""
    return 1 if state.dim() == 3 else 0

@dataclass
class Context:
    """Where this process stands: rank of world ranks; `backend` is None when not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------ the batch layout
    def rows(self, batch_size: int) -> range:
        """The streams this rank owns of a global batch of `batch_size`."""
        if batch_size % self.world:
            fits = [n for n in range(1, batch_size + 1) if batch_size % n == 0 and n <= 4 * self.world][-3:]
            raise RnnlensError(f"--batch-size {batch_size} (the global batch) does not split evenly over {self.world} "
                               f"ranks; use a multiple of {self.world} (e.g. --batch-size "
                               f"{-(-batch_size // self.world) * self.world}) or a rank count that divides it "
                               f"({', '.join(map(str, fits))})")
        b = batch_size // self.world
        return range(self.rank * b, (self.rank + 1) * b)

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def agree(self, loss: float, seconds: float, stop: bool, reserve: float) -> tuple[float, float, bool, float]:
        """(mean loss over ranks, mean step time, whether any rank was asked to stop, mean seconds to keep free
        at the end of a time budget): one all_reduce. Every rank must take the same stopping and learning-rate
        decisions, so each is made from these agreed values, never from a rank's own clock."""
        if not self.active:
            return loss, seconds, stop, reserve
        t = torch.tensor([loss, seconds, float(stop), reserve], dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t)
        total_loss, total_seconds, stops, total_reserve = t.tolist()
        return total_loss / self.world, total_seconds / self.world, stops > 0, total_reserve / self.world

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of `t` (same shape on all ranks), on t's device, in rank order."""
        if not self.active:
            return [t]
        src = t.detach().to(self.comm_device).contiguous()
        out = [torch.empty_like(src) for _ in range(self.world)]
        torch.distributed.all_gather(out, src)
        return [o.to(t.device) for o in out]

    # ------------------------------------------------------------ carried state
    def gather_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each [layers, b, H] state tensor of this rank (an n-NN's: [b, n-1] ids) -> the tensor of all B streams."""
        return [torch.cat(self.gather(t), dim=stream_dim(t)) for t in tensors]

    def shard_state(self, tensors: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
        """[layers, B, H] state tensors of all streams (an n-NN's: [B, n-1] ids) -> this rank's rows."""
        rows = self.rows(batch_size)
        out = []
        for t in tensors:
            dim = stream_dim(t)
            if t.shape[dim] != batch_size:
                raise RnnlensError(f"the checkpoint carries state for {t.shape[dim]} streams but --batch-size is "
                                   f"{batch_size}; it is damaged or from another run")
            out.append(t.narrow(dim, rows.start, rows.stop - rows.start).contiguous())
        return out

    # ------------------------------------------------------------ RNG
    def seed_rank(self, seed: int) -> None:
        """Give ranks >= 1 their own random stream (dropout masks), after the shared model init."""
        if self.rank > 0:
            torch.manual_seed(seed + self.rank * RANK_SEED_STRIDE)

    def rng_tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """{'rng.cpu': rank 0's state, 'rng.cpu.R': rank R's, ...} (and 'rng.cuda...' on a GPU)."""
        out = {}
        states = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        for kind, state in states.items():
            for r, s in enumerate(self.gather(state)):
                out[f"rng.{kind}" if r == 0 else f"rng.{kind}.{r}"] = s.cpu()
        return out

    def restore_rng(self, rng: dict[str, torch.Tensor], device: torch.device, seed: int, step: int) -> bool:
        """Restore this rank's RNG from a checkpoint's 'rng.*' group; False when the checkpoint has
        no stream for this rank (it was saved by fewer ranks): then one is derived from seed and step."""
        suffix = "" if self.rank == 0 else f".{self.rank}"
        if "cpu" + suffix not in rng:
            torch.manual_seed(seed + self.rank * RANK_SEED_STRIDE + step)
            return False
        torch.set_rng_state(rng["cpu" + suffix])
        if "cuda" + suffix in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda" + suffix], device)
        return True

    # ------------------------------------------------------------ models
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: DDP around `model` when distributed."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [torch.cuda.current_device()] if self.backend == "nccl" else None
        # the constructor broadcasts rank 0's weights, so the ranks start identical whatever their RNG
        return DistributedDataParallel(model, device_ids=ids)

    @contextmanager
    def local_main_first(self):
        """Local rank 0 runs the block first (e.g. prepares the corpus into the node's cache),
        then the other ranks of the node run it (and find the cache ready)."""
        if not self.active:
            yield
            return
        if self.local_rank != 0:
            torch.distributed.barrier()
        try:
            yield
        finally:
            if self.local_rank == 0:
                torch.distributed.barrier()


_CONTEXT = Context()
_OWN_GROUP = False  # whether setup made the process group (then shutdown ends it)


def current() -> Context:
    return _CONTEXT


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> Context:
    """The process group of a run launched by torchrun (or `--nproc`); idempotent.

    Outside torchrun, or with WORLD_SIZE 1, it is a no-op returning the single-process context.
    NCCL when the run trains on CUDA (one GPU per rank: cuda:LOCAL_RANK), gloo otherwise.
    """
    global _CONTEXT, _OWN_GROUP
    if _CONTEXT.active or not launched_by_torchrun():
        return _CONTEXT
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if world <= 1:
        return _CONTEXT
    if not torch.distributed.is_available():
        raise RnnlensError("this torch build has no torch.distributed; install a standard torch build")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RnnlensError("--device cuda was asked for but torch sees no CUDA GPU on rank "
                               f"{rank}; use --device cpu (gloo) or install a CUDA build of torch")
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise RnnlensError(f"rank {rank} is local rank {local_rank} but its machine has {gpus} GPU(s); start at "
                               f"most {gpus} processes per machine (--nproc / --nproc-per-node) or use --device cpu")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not torch.distributed.is_initialized():
        # torch.distributed.nn.functional binds group.WORLD into ten default arguments when it is imported,
        # and DDP imports it: imported after the group exists, it would hold the group for good (see shutdown)
        importlib.import_module("torch.distributed.nn.functional")
        kw = {"device_id": torch.device("cuda", local_rank)} if backend == "nccl" else {}
        torch.distributed.init_process_group(backend=backend, **kw)
        _OWN_GROUP = True
    _CONTEXT = Context(rank=rank, world=world, local_rank=local_rank, backend=backend)
    return _CONTEXT


def shutdown() -> None:
    """Leave the process group (a run's end, or its error path).

    The group's C++ object, and gloo's worker threads with it, end only when nothing holds the group any
    more, and that has to happen here, while Python is alive: left to the interpreter's exit, a worker
    thread freed the last collective's tensors during finalization and the rank died of SIGABRT
    ("terminate called without an active exception") after a finished run, in 3 of 130 two-rank runs on a
    2-core machine. So the trainer drops its DDP wrapper first (`Trainer.leave_ranks`), and `setup`
    imports what would otherwise keep a reference for good. A group the caller made before `setup` stays."""
    global _CONTEXT, _OWN_GROUP
    if _OWN_GROUP and torch.distributed.is_available() and torch.distributed.is_initialized():
        _OWN_GROUP = False
        gc.collect()  # DDP's hooks make reference cycles: free the wrapper now, not at exit
        try:
            torch.distributed.destroy_process_group()
        except (RuntimeError, ValueError):  # a peer is gone: nothing left to tidy
            pass
    _CONTEXT = Context()


def is_comm_error(e: BaseException) -> bool:
    """Whether an exception came from the process group (a rank died, the network broke)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(e, dist_error):
        return True
    return isinstance(e, RuntimeError) and bool(re.search(r"gloo|nccl|NCCL|c10d|Connection (closed|reset)|"
                                                           r"[Bb]roken pipe|timed out", str(e)))


# ------------------------------------------------------------------------ validation

@torch.no_grad()
def evaluate_sharded(model, data: np.ndarray, batch_size: int, seq_len: int, ctx: Context) -> float:
    """Mean -log p over `data` with the stream layout of `evaluate(model, data, batch_size, seq_len)`;
    each rank scores its share of the B eval streams and the loss sums and counts are all_reduced,
    so the result is the single-process number."""
    from rnnlens.batches import EvalWindows
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    windows = EvalWindows(data, batch_size, seq_len)
    mine = np.array_split(np.arange(windows.batch_size), ctx.world)[ctx.rank]  # may be empty
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = None
    if len(mine):
        for k in range(len(windows)):
            x, y = windows.window(k)  # [B, T']: the few rows of other ranks cost nothing to read
            x, y = x[mine].to(device), y[mine].to(device)
            logits, state = model(x, state)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1,
                                  reduction="none")
            total += nll.sum(dtype=torch.float64)
            count += int((y >= 0).sum())
    model.train(was_training)
    loss_sum, n = ctx.all_sum([float(total), float(count)])
    return loss_sum / n


# ------------------------------------------------------------------------ the launcher

def launch(nproc: int, argv: list[str], run_dir: str) -> int:
    """Run `python -m rnnlens <argv>` as nproc ranks on this machine through torch.distributed.run
    (torchrun's engine: a standalone c10d rendezvous on a free local port). Returns the exit status;
    a failed rank becomes one RnnlensError naming it and the checkpoint to resume from."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from rnnlens import reproducibility
    reproducibility.apply_env()  # the ranks inherit the reproducible MKL / OpenMP settings
    if not os.environ.get("OMP_NUM_THREADS"):  # each rank gets its share of the cores, not all of them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "rnnlens", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        failures = e.failures
        if all(f.exitcode == 130 for f in failures.values()):  # every rank stopped on Ctrl-C and saved
            return 130
        rank, failure = e.get_first_failure()
        sig = failure.signal_name()
        how = (f"was killed by {sig}" if sig and sig != "<N/A>" else f"exited with status {failure.exitcode}")
        raise RnnlensError(f"rank {rank} of {nproc} {how} (its own error, if any, is printed above); "
                           f"{_checkpoint_note(run_dir)}continue with: rnnlens train --resume {run_dir} "
                           f"--nproc {nproc}") from None
    except Exception as e:  # the agent's own SignalException on Ctrl-C / SIGTERM
        if type(e).__name__ == "SignalException":
            print(f"interrupted; continue with: rnnlens train --resume {run_dir} --nproc {nproc}", file=sys.stderr)
            return 130
        raise
    return 0


def _checkpoint_note(run_dir: str) -> str:
    from rnnlens.checkpoint import LAST, read_checkpoint
    try:
        step = read_checkpoint(os.path.join(run_dir, LAST)).meta["state"]["step"]
    except (RnnlensError, KeyError, TypeError):
        return ""
    return f"the last checkpoint, {os.path.join(run_dir, LAST)}, is intact at step {step}; "
