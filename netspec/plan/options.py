"""How a plan runs: the choices that change speed (and for some, rounding), never the function a
network computes. They are made once, when the plan is built, and shown by `netspec train` and
`netspec bench`:

    options = PlanOptions(workers="auto", conv="auto", fuse=True)
    plan = compile(spec, options=options)
    plan.options.workers, plan.options.blas_threads, plan.algorithms()

`resolve` turns requests ('auto', None) into numbers for this machine and network, with the
reason for each, so that nothing later reads a module flag or asks BLAS how it runs.

- workers: processes sharing each training batch (netspec/train/pool.py). 'auto' takes one per
  core when the network reuses its weights enough for processes to pay (convolutions), on
  Linux; an explicit N may not exceed the cores (more workers than cores only take turns).
- blas_threads: BLAS threads of each process; default the cores divided among the workers.
- conv: each conv2d's training algorithm (netspec/kernels/conv.py). 'auto' chooses per layer
  by the rules of `kernels.conv.choose`. Winograd among them runs where each process has one
  BLAS thread (its many small GEMMs gain nothing from more), which 'auto' workers give: one
  process per core. One process on a machine of several cores keeps the GEMM algorithms.
- eval_conv: inference's conv algorithm: 'im2col' (the cache-blocked im2col) or 'auto', where
  3x3 convs take Winograd if `kernels.conv.eval_winograd` and, per forward, the batch says it
  pays (one BLAS thread; enough channels and tiles). Not the default: eval results (a training
  run's test loss) then differ from im2col's by rounding.
- fuse: run the layer chains of netspec/plan/fuse.py as one.
- worker_timeout: seconds a worker may stay silent before the run stops and names it.
- worker_spin: seconds a worker waiting for its peers mid-step (batchnorm's exchange) spins
  before it blocks: a peer about to arrive costs no sleep and wake-up; 0 blocks at once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, replace

from netspec.nn.layers.conv2d import ALGORITHMS

MAX_AUTO_WORKERS = 8  # what `workers: auto` may pick
# 'auto' splits batches only for networks that use each weight at least this many times per
# sample (convolutions: LeNet ~6.8). Each worker reads and writes every weight and gradient once
# per step whatever its share of the batch, so fully connected nets (1 use per sample) gain
# nothing from more processes (docs/performance.md).
MIN_AUTO_WEIGHT_REUSE = 3.0
MIN_AUTO_SLICE = 8  # 'auto' gives every worker at least this many samples of a batch
WORKER_TIMEOUT = 300.0
WORKER_SPIN = 0.002  # seconds


@dataclass(frozen=True)
class PlanOptions:
    """What a caller asks for; `resolve` gives the concrete choices (see the module docstring)."""

    workers: int | str = 1  # N or 'auto'
    blas_threads: int | None = None  # per process; None: the cores shared among the workers
    conv: str = "auto"  # 'auto' or one of nn.layers.conv2d.ALGORITHMS, for every conv2d
    eval_conv: str = "im2col"  # 'im2col' or 'auto'
    fuse: bool = True
    worker_timeout: float = WORKER_TIMEOUT
    worker_spin: float = WORKER_SPIN

    def __post_init__(self):
        w = self.workers
        if w != "auto" and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"workers must be a positive integer or 'auto', got {w!r}")
        t = self.blas_threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ValueError(f"blas_threads must be a positive integer, got {t!r}")
        if self.conv != "auto" and self.conv not in ALGORITHMS:
            raise ValueError(f"conv must be 'auto' or one of {', '.join(ALGORITHMS)}, "
                             f"got {self.conv!r}")
        if self.eval_conv not in ("im2col", "auto"):
            raise ValueError(f"eval_conv must be 'im2col' or 'auto', got {self.eval_conv!r}")
        if not self.worker_timeout > 0:
            raise ValueError(f"worker_timeout must be positive, got {self.worker_timeout!r}")
        if not self.worker_spin >= 0:
            raise ValueError(f"worker_spin must be 0 or more, got {self.worker_spin!r}")


@dataclass(frozen=True)
class Resolved(PlanOptions):
    """PlanOptions with numbers in place of requests, and why each was chosen."""

    workers: int = 1
    blas_threads: int = 1
    workers_why: str = ""
    threads_why: str = ""
    limit_blas: bool = False  # the trainer limits BLAS to blas_threads (workers, or asked)

    def describe(self) -> str:
        """'2 worker processes (one per core) x 1 BLAS thread; conv auto; fusion on'"""
        threads = f"{self.blas_threads} BLAS thread{'s' * (self.blas_threads != 1)}"
        evals = "; eval conv auto" if self.eval_conv == "auto" else ""
        return (f"{self.workers_why}, {threads} each ({self.threads_why}); conv {self.conv}"
                f"{evals}; fusion {'on' if self.fuse else 'off'}")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def coupled_layers(infos) -> list:
    """The layers whose samples interact within a batch (they exchange sums across workers)."""
    return [info for info in infos if info.layer.couples_batch]


def weight_reuse(infos) -> float:
    """Multiply-accumulates per parameter per sample: ~1 for linear layers, more for convs."""
    params = sum(math.prod(s) for info in infos for s in info.param_shapes.values())
    return sum(info.macs for info in infos) / max(params, 1)


def resolve_workers(requested: int | str, infos, batch_size: int | None = None,
                    cores: int | None = None) -> tuple[int, str]:
    """(number of worker processes, why) for a request of N or 'auto'.

    'auto' takes one worker per core, up to MAX_AUTO_WORKERS and at least MIN_AUTO_SLICE
    samples of a batch each, when the network reuses its weights enough (MIN_AUTO_WEIGHT_REUSE)
    and the platform can fork; otherwise 1. An explicit N that cannot run (no fork, more
    workers than cores) is a ValueError that says why and what to do instead.
    """
    cores = available_cores() if cores is None else cores
    if requested == "auto":
        if not can_fork():
            return 1, "one process: worker processes need Linux (the 'fork' start method)"
        reuse = weight_reuse(infos)
        if reuse < MIN_AUTO_WEIGHT_REUSE:
            return 1, (f"one process: each weight is used {reuse:.1f}x per sample, too few for "
                       "worker processes to pay off")
        n = min(cores, MAX_AUTO_WORKERS)
        if batch_size:
            n = max(1, min(n, batch_size // MIN_AUTO_SLICE))
        why = f"{n} worker processes (one per core)" if n > 1 else "one process (one core)"
        if n > 1 and coupled_layers(infos):
            why += ", exchanging batchnorm statistics"
        return n, why
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"workers must be a positive integer or 'auto', got {requested!r}")
    if requested > 1 and not can_fork():
        raise ValueError("worker processes need Linux (the 'fork' start method); use 1 worker")
    if requested > cores:
        raise ValueError(
            f"{requested} workers but netspec may use {cores} core{'s' * (cores != 1)} here: "
            "more workers than cores only take turns, which makes the run several times "
            f"slower; use {cores} workers or 'auto'")
    return requested, ("one process" if requested == 1 else f"{requested} worker processes")


def resolve(options: PlanOptions | None, infos, batch_size: int | None = None,
            cores: int | None = None) -> Resolved:
    """Concrete options for this network on this machine (see the module docstring)."""
    options = options or PlanOptions()
    if isinstance(options, Resolved):
        return options
    cores = available_cores() if cores is None else cores
    workers, workers_why = resolve_workers(options.workers, infos, batch_size, cores)
    if options.blas_threads is not None:
        threads, threads_why = options.blas_threads, "as asked"
    else:
        threads = max(1, cores // workers)
        threads_why = ("the cores shared among the workers" if workers > 1
                       else "one per core")
    fields = {k: getattr(options, k) for k in ("conv", "eval_conv", "fuse", "worker_timeout",
                                                "worker_spin")}
    return Resolved(workers=workers, blas_threads=threads, workers_why=workers_why,
                    threads_why=threads_why, **fields,
                    limit_blas=workers > 1 or options.blas_threads is not None)


def with_workers(options: PlanOptions | None, workers: int | str) -> PlanOptions:
    """options (default PlanOptions()) with another worker request."""
    return replace(options or PlanOptions(), workers=workers)
