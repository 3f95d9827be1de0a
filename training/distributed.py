"""Multi-process pretraining with ``torch.distributed`` (gloo on CPU, NCCL when CUDA is there), launched by torchrun.

What is sharded: the training window graphs (empty ones dropped) are cut into ``R`` **contiguous runs** balanced
by edge count (:func:`shard_bounds`), one per rank. Each rank's GRU node memory and temporal-loss partner see its
run in time order, from an empty memory at the run's start (as one process does at the start of the list).

The step (data-parallel): an epoch has ``S`` global steps, ``S`` = the shortest run's window count, and each run
is cut again into ``S`` contiguous chunks balanced by edge count, so every rank does about the same work per step
(one window per rank per step would pair a rank's many small windows with another's few large ones and wait). Step
``i`` computes the loss of every window of chunk ``i`` of every run, in time order, at the same parameters; the
gradients are summed over the windows and ranks (one all-reduce, float64) and divided by the number of windows that
had a loss, then every rank applies the same Adam step, so all ranks keep identical parameters. GradNorm's weight
update is averaged the same way (each window proposes one), its cadence follows the global step count, and each
shard keeps its own view/anchor generator (shard 0: ``Pretrainer.gen``; shard ``s``: seeded from
``(seed, s, epoch)``) and its own initial-loss reference. Uneven step counts: every rank has ``S`` steps by
construction; :class:`torch.distributed.algorithms.Join` stays as the guard -- a rank that has run out of steps
shadows the others' all-reduce with zeros and applies the same optimizer step (:class:`_ShadowStep`), so parameters
stay identical; a checksum all-reduce at each epoch's end checks it.

Equivalence: :func:`train_sharded` runs the same algorithm in one process (``R`` shards, each shard's memory,
generator and loss reference swapped in turn, gradients accumulated and averaged locally). With the same seed and
shard count, ``torchrun --nproc-per-node R`` gives the same model as it; tests/training/test_distributed.py checks
2 ranks against 1 process (measured: parameters equal bit for bit on CPU with 1 torch thread per rank; asserted
with ``atol=1e-6``, the tolerance claimed). Sharded training is **not** the same algorithm as the plain
single-process loop (one shard, which it reproduces bit for bit): it takes fewer optimizer steps per epoch (the
shortest run's window count), each on several windows, and the memory restarts at each run's start.

Roles: rank 0 runs ``graphsentry train`` itself (reads the inputs, prepares the windows, sends each follower its
shard, pretrains with the others, fits detectors, calibrates, writes the model directory, checkpoints); the other
ranks follow its commands (:func:`follow`) and exit 0 when it is done. An error in any rank ends the job: torchrun
stops the other workers and exits non-zero; the failing rank prints ``graphsentry train: rank R/W failed: ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms import Join, Joinable, JoinHook

from training.pretrain import EPOCH_RUNNER, VIEWS, Pretrainer, _plain, seed_everything, train_bundle

log = logging.getLogger(__name__)
LOSS_NAMES = (*VIEWS, "dgi")
INIT_TIMEOUT_S = float(os.environ.get("GRAPHSENTRY_DIST_INIT_TIMEOUT", "300"))  # rendezvous + each step's all-reduce
COMMAND_TIMEOUT_S = float(os.environ.get("GRAPHSENTRY_DIST_TIMEOUT", str(6 * 3600)))  # followers wait for rank 0
FAIL_RANK_ENV = "GRAPHSENTRY_DIST_FAIL_RANK"  # tests: this rank raises at its first step


def shard_bounds(edges, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous, non-empty runs ``[a, b)`` of windows with (close to) equal edge totals.

    The boundary ``r`` is the window index whose cumulative edge count is nearest ``r/n`` of the total, kept
    strictly increasing so that no run is empty. ValueError when there are fewer windows than runs.
    """
    e = np.asarray(edges, dtype=np.float64)
    if n < 1:
        raise ValueError(f"the number of shards must be >= 1, got {n!r}")
    if len(e) < n:
        raise ValueError(f"{len(e)} non-empty training windows cannot be split into {n} shards: use fewer "
                         f"processes (--nproc) or a smaller --window")
    cum = np.concatenate([[0.0], np.cumsum(e)])  # cum[b] = edges of windows [0, b)
    bounds = [0]
    for r in range(1, n):
        lo, hi = bounds[-1] + 1, len(e) - (n - r)
        target = cum[-1] * r / n
        b = int(np.clip(np.searchsorted(cum, target), lo, hi))
        if b > lo and abs(cum[b - 1] - target) <= abs(cum[b] - target):
            b -= 1
        bounds.append(b)
    bounds.append(len(e))
    return list(zip(bounds[:-1], bounds[1:]))


def shard_graphs(graphs: list, n: int) -> list[list]:
    """The non-empty ``graphs`` cut into ``n`` contiguous runs balanced by edge count (:func:`shard_bounds`)."""
    g = [d for d in graphs if d.edge_index.size(1) > 0]
    return [g[a:b] for a, b in shard_bounds([d.edge_index.size(1) for d in g], n)]


def compact(d):
    """``d`` with every tensor copied to storage of its own: the window graphs of a batched build are views
    into one large buffer, and pickling a view (to send a rank its shard) would send the whole buffer each time."""
    return type(d)(**{k: (v.clone() if torch.is_tensor(v) else v) for k, v in d.items()})


def shard_seed(seed: int, shard: int, epoch: int) -> int:
    """Seed of shard ``shard``'s view/anchor generator in ``epoch`` (shard 0 uses ``Pretrainer.gen``)."""
    return int(np.random.SeedSequence([int(seed), int(shard), int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


class GradAverager(Joinable):
    """Sums the shards' gradients (and GradNorm weight proposals) over the ranks, averages, steps the optimizer.

    One flat float64 buffer per step: ``[grad sums | has-grad flag per parameter | windows with a loss |
    weight proposal sums | weights-changed flag]``, one all-reduce (none without a process group). Parameters no
    window gave a gradient get ``grad=None`` (Adam leaves them alone, as in the single-process loop).
    """

    def __init__(self, trainer: Pretrainer, group=None, device: torch.device | None = None) -> None:
        super().__init__()
        self.trainer, self.group = trainer, group
        self.device = device or torch.device("cpu")
        self.params = [p for g in trainer.opt.param_groups for p in g["params"]]
        self.sizes = [p.numel() for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.n_grad = int(self.offsets[-1])
        self.n_w = trainer.weighter.w.numel()
        self.global_steps = trainer.steps
        self.new_step()

    def new_step(self) -> None:
        self.buf = torch.zeros(self.n_grad + len(self.params) + 1 + self.n_w + 1, dtype=torch.float64)
        self.w0 = self.trainer.weighter.w.detach().clone()

    def accumulate(self, total) -> None:
        """``Pretrainer.update`` hook: backward of one shard's window into the step's sums (no optimizer step)."""
        t = self.trainer
        t.opt.zero_grad(set_to_none=True)
        if total is None:
            return
        total.backward()
        b, n = self.buf, self.n_grad
        for j, p in enumerate(self.params):
            if p.grad is not None:
                b[self.offsets[j]:self.offsets[j + 1]] += p.grad.detach().reshape(-1).to(torch.float64)
                b[n + j] = 1.0
        b[n + len(self.params)] += 1.0
        w = t.weighter.w.detach()
        k = n + len(self.params) + 1
        b[k:k + self.n_w] += w.to(torch.float64)
        if not torch.equal(w, self.w0):
            b[-1] = 1.0
        with torch.no_grad():  # the next shard's window starts from this step's weights
            t.weighter.w.copy_(self.w0)

    def reduce_and_step(self) -> None:
        """All-reduce the step's sums, then the averaged optimizer step (every rank, joined ones included)."""
        t, b, n, P = self.trainer, self.buf, self.n_grad, len(self.params)
        if self.group is not None:
            red = b.to(self.device)
            dist.all_reduce(red, group=self.group)
            b = red.cpu()
        count = float(b[n + P])
        if count > 0:
            for j, p in enumerate(self.params):
                p.grad = ((b[self.offsets[j]:self.offsets[j + 1]] / count).to(p.dtype).view_as(p)
                          if b[n + j] > 0 else None)
            t.opt.step()
            t.opt.zero_grad(set_to_none=True)
            if b[-1] > 0:
                k = n + P + 1
                with torch.no_grad():
                    t.weighter.w.copy_((b[k:k + self.n_w] / count).to(t.weighter.w.dtype))
            self.global_steps += 1
        t.steps = self.global_steps
        self.new_step()

    def step(self) -> None:
        """A rank that still has windows: tell the Join context, then reduce and step."""
        if self.group is not None:
            Join.notify_join_context(self)
        self.reduce_and_step()

    def join_hook(self, **kwargs) -> JoinHook:
        return _ShadowStep(self)

    @property
    def join_device(self) -> torch.device:
        return self.device

    @property
    def join_process_group(self):
        return self.group


class _ShadowStep(JoinHook):
    """A rank out of windows: contribute zeros to the others' all-reduce and take the same optimizer step."""

    def __init__(self, averager: GradAverager) -> None:
        self.averager = averager

    def main_hook(self) -> None:
        self.averager.reduce_and_step()


class ShardedEpochs:
    """``Pretrainer.epoch_runner``: one epoch over ``n_shards`` contiguous runs of windows, data-parallel.

    Args:
        n_shards (int): runs the windows are cut into (= ranks x shards per rank).
        group: the process group (None: one process owns every shard; no communication).
        rank (int), world (int): this process and the group's size (default: 0, 1).
        device: where the all-reduce buffers go (CUDA for NCCL). (default: CPU)
    """

    def __init__(self, n_shards: int, group=None, rank: int = 0, world: int = 1,
                 device: torch.device | None = None, backend: str = "none") -> None:
        if n_shards < 1 or n_shards % world:
            raise ValueError(f"n_shards must be a positive multiple of the world size {world}, got {n_shards!r}")
        self.n_shards, self.group, self.rank, self.world = n_shards, group, rank, world
        self.device, self.backend = device or torch.device("cpu"), backend
        k = n_shards // world
        self.owned = list(range(rank * k, (rank + 1) * k))
        self.layout: dict = {}

    def __call__(self, trainer: Pretrainer, graphs: list, progress: bool = True) -> dict:
        shards = shard_graphs(graphs, self.n_shards)
        self.layout = layout(shards)
        # shards other than 0 as a rank receives them (compact copies: same values, the memory layout of a rank's)
        own = {s: shards[s] if s == 0 else [compact(d) for d in shards[s]] for s in self.owned}
        return self.run(trainer, own, progress, steps_per_epoch(shards))

    def run(self, trainer: Pretrainer, shards: dict[int, list], progress: bool = False,
            n_steps: int | None = None) -> dict:
        """One epoch of this rank's shards (``{shard id: graphs}``) in ``n_steps`` global steps (the same on every
        rank: :func:`steps_per_epoch` of all shards); collective with the other ranks."""
        fail = os.environ.get(FAIL_RANK_ENV)
        if fail is not None and int(fail) == self.rank:
            raise RuntimeError(f"injected failure ({FAIL_RANK_ENV}={fail})")
        t, m = trainer, trainer.model
        m.train()
        m.reset_state()
        mem = m.memory
        own_gen, own_initial = t.gen, t.weighter.initial
        own_mem = (mem.state, mem.owner, mem.last_seen) if mem is not None else None
        shard_initial = t.__dict__.setdefault("shard_initial", {})
        state = {}
        for i, s in enumerate(shards):
            gen = own_gen if s == 0 else torch.Generator().manual_seed(shard_seed(t.cfg.seed, s, t.epoch))
            bufs = own_mem if (mem is None or i == 0) else tuple(x.clone() for x in own_mem)
            initial = own_initial if s == 0 else shard_initial.setdefault(s, {})
            state[s] = {"gen": gen, "mem": bufs, "initial": initial, "prev": None}
        avg = GradAverager(t, self.group, self.device)
        sums = torch.zeros(2 * len(LOSS_NAMES), dtype=torch.float64)
        if n_steps is None:
            n_steps = steps_per_epoch(list(shards.values()))
        # step i takes chunk i of every run: n_steps contiguous chunks of a run, balanced by edge count
        chunks = {s: shard_bounds([d.edge_index.size(1) for d in gs], min(n_steps, len(gs)))
                  for s, gs in shards.items()}
        steps = range(max((len(c) for c in chunks.values()), default=0))
        bar = None
        if progress:
            from tqdm import tqdm

            steps = bar = tqdm(steps, desc=f"epoch {t.epoch + 1} (rank {self.rank}/{self.world})", unit="step",
                               leave=False, mininterval=2.0)
        t.update = avg.accumulate
        join = Join([avg]) if self.group is not None else contextlib.nullcontext()
        try:
            with join:
                for i in steps:
                    for s, gs in shards.items():
                        if i >= len(chunks[s]):
                            continue  # (runs shorter than n_steps cannot happen; Join covers them if they do)
                        st = state[s]
                        t.gen, t.weighter.initial = st["gen"], st["initial"]
                        if mem is not None:
                            mem.state, mem.owner, mem.last_seen = st["mem"]
                        a, b = chunks[s][i]
                        for d in gs[a:b]:  # in time order; the gradients add up in avg, no optimizer step yet
                            t.steps = avg.global_steps
                            vals, st["prev"] = t.step(d, st["prev"])
                            for k, v in vals.items():
                                j = LOSS_NAMES.index(k)
                                sums[2 * j] += v
                                sums[2 * j + 1] += 1
                    avg.step()
        finally:
            t.update = None
            t.gen, t.weighter.initial = own_gen, own_initial
            if mem is not None:
                mem.state, mem.owner, mem.last_seen = own_mem
            if bar is not None:
                bar.close()
        t.steps = avg.global_steps
        if self.group is not None:
            red = sums.to(self.device)
            dist.all_reduce(red, group=self.group)
            sums = red.cpu()
            self._check_identical(t)
        t.epoch += 1
        rec = {k: float(sums[2 * j] / sums[2 * j + 1]) for j, k in enumerate(LOSS_NAMES) if sums[2 * j + 1] > 0}
        rec["epoch"] = t.epoch
        if t.cfg.objective == "contrastive":
            rec["weights"] = t.weighter.weights()
        rec["distributed"] = {"world_size": self.world, "shards": self.n_shards, "backend": self.backend,
                              "steps_per_epoch": n_steps, "optimizer_steps": t.steps, **self.layout}
        t.history.append(rec)
        return rec

    def _check_identical(self, t: Pretrainer) -> None:
        """All ranks hold the same parameters (max and min over ranks of a checksum agree), else RuntimeError."""
        with torch.no_grad():
            c = sum(float(p.detach().double().square().sum() + p.detach().double().sum())
                    for p in [*t.opt.param_groups[0]["params"], t.weighter.w])
        x = torch.tensor([c, -c], dtype=torch.float64, device=self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=self.group)
        if float(x[0]) != -float(x[1]):
            raise RuntimeError(f"ranks diverged: parameter checksums range over [{-float(x[1])!r}, {float(x[0])!r}]")


def steps_per_epoch(shards: list[list]) -> int:
    """Global steps of an epoch: the shortest run's window count, so that every run gives every step >= 1 window."""
    return min((len(g) for g in shards), default=0)


def layout(shards: list[list]) -> dict:
    """Windows and edges per shard, and the first window's start of each (recorded in the epoch history)."""
    return {"shard_windows": [len(g) for g in shards],
            "shard_edges": [int(sum(d.edge_index.size(1) for d in g)) for g in shards],
            "shard_starts": [float(g[0].window_start) if g else None for g in shards]}


def train_sharded(tables, cfg, out_dir=None, shards: int = 2, progress: bool = False, **kw):
    """:func:`training.pretrain.train_bundle` with sharded pretraining in this one process: the reference that
    ``torchrun --nproc-per-node shards`` reproduces (same seed, same shards, same global batch)."""
    token = EPOCH_RUNNER.set(ShardedEpochs(shards))
    try:
        return train_bundle(tables, cfg, out_dir, progress=progress, **kw)
    finally:
        EPOCH_RUNNER.reset(token)


# --- rank 0 leads, the others follow ---------------------------------------------------------------------------

def _bcast(obj, group):
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


class Leader(ShardedEpochs):
    """Rank 0's epoch runner: at a new pretraining run, tell the followers (config, model config, their shards,
    the trainer's state), then run each epoch with them."""

    def __init__(self, world: int, group, commands, device, backend: str) -> None:
        super().__init__(world, group, 0, world, device, backend)
        self.commands = commands
        self.in_epoch = False
        self._trainer = self._graphs = None

    def __call__(self, trainer: Pretrainer, graphs: list, progress: bool = True) -> dict:
        self.in_epoch = True
        if trainer is not self._trainer:
            resend = graphs is not self._graphs
            _bcast(("start", trainer.cfg, trainer.model.config, resend), self.commands)
            if resend:
                shards = shard_graphs(graphs, self.n_shards)
                self.layout, self._own, self._n_steps = layout(shards), {0: shards[0]}, steps_per_epoch(shards)
                out = [None]
                dist.scatter_object_list(out, [(self._n_steps, {r: [compact(d) for d in shards[r]] if r else []})
                                               for r in range(self.world)], src=0, group=self.commands)
            _bcast(_plain(trainer.state_dict()), self.commands)
            self._trainer, self._graphs = trainer, graphs
        _bcast(("epoch",), self.commands)
        rec = self.run(trainer, self._own, progress, self._n_steps)
        self.in_epoch = False
        return rec

    def finish(self, ok: bool, message: str = "") -> None:
        """Release the followers: done, or abort (when rank 0 failed outside a collective step)."""
        if not self.in_epoch:
            _bcast(("done",) if ok else ("abort", message), self.commands)


def follow(group, commands, rank: int, world: int, device, backend: str) -> int:
    """A follower rank: pretrain with rank 0 until it says done (0) or abort (1)."""
    from detector.models import STGNN

    runner = ShardedEpochs(world, group, rank, world, device, backend)
    trainer = shards = n_steps = None
    while True:
        cmd = _bcast(None, commands)
        if cmd[0] == "start":
            _, cfg, mcfg, resend = cmd
            if resend:
                out = [None]
                dist.scatter_object_list(out, None, src=0, group=commands)
                n_steps, shards = out[0]
            seed_everything(cfg.seed)
            trainer = Pretrainer(STGNN(mcfg), cfg)
            trainer.load_state_dict(_bcast(None, commands))
        elif cmd[0] == "epoch":
            runner.run(trainer, shards, False, n_steps)
        elif cmd[0] == "done":
            return 0
        else:
            print(f"graphsentry train: rank {rank}/{world}: rank 0 aborted: {cmd[1]}", file=sys.stderr, flush=True)
            return 1


# --- worker entry point (torchrun) and launcher ------------------------------------------------------------------

def _train_namespace(args_json: Path | None, train_argv: list[str]) -> argparse.Namespace:
    """The `graphsentry train` options: from the launcher's JSON file, or parsed from ``train INPUT... --out ...``."""
    from training.commands import input_paths, run_train, train_arguments

    if args_json is not None:
        ns = argparse.Namespace(**json.loads(args_json.read_text()))
    else:
        if not train_argv or train_argv[0] != "train":
            raise ValueError("give the training command after the module: python -m training.distributed train "
                             "INPUT... --out DIR [options]")
        parser = argparse.ArgumentParser(prog="graphsentry train")
        train_arguments(parser)  # the options of `graphsentry train` (training.cli imports this module: no circle)
        parser.set_defaults(command="train")
        ns = parser.parse_args(train_argv[1:])
        ns.data = input_paths(ns)
    ns.nproc, ns.func = 0, run_train
    return ns


def lead(leader: Leader, job: Callable[[], int], what: str = "train") -> int:
    """Rank 0: run ``job`` (a whole ``graphsentry train`` or ``retrain``) with ``leader`` as the epoch runner of its
    pretraining, then release the followers; its exit code (2: a user error, reported in one line)."""
    from training.commands import one_line as _one_line

    token = EPOCH_RUNNER.set(leader)
    msg = "exited non-zero"
    try:
        rc = int(job() or 0)
    except (ValueError, OSError) as exc:
        rc, msg = 2, f"error: {_one_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - reported in one line; torchrun's summary has the traceback
        if leader.in_epoch:
            raise  # mid-step: the followers are inside a collective; let torchrun stop them
        rc, msg = 1, f"internal error: {type(exc).__name__}: {_one_line(exc)}"
    finally:
        EPOCH_RUNNER.reset(token)
    if rc:
        print(f"graphsentry {what}: rank 0/{leader.world}: {msg}", file=sys.stderr, flush=True)
    leader.finish(rc == 0, "" if rc == 0 else msg)
    return rc


def _rank0(leader: Leader, args_json: Path | None, train_argv: list[str]) -> int:
    from training.commands import run_train

    return lead(leader, lambda: run_train(_train_namespace(args_json, train_argv)))


def worker(argv: list[str] | None = None, rank0: Callable[[Leader, Path | None, list[str]], int] | None = None,
           prog: str = "python -m training.distributed") -> int:
    """One rank under torchrun (env:// rendezvous: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK). Rank 0
    runs ``rank0(leader, args_json, argv)`` (default: ``graphsentry train``), the others follow it."""
    from detector.runtime import torch_threads
    from training.pretrain import deterministic_torch

    rank0 = rank0 or _rank0
    ap = argparse.ArgumentParser(prog=prog,
                                 usage="torchrun [torchrun options] -m training.distributed train INPUT... --out DIR "
                                       "[graphsentry train options]")
    ap.add_argument("--args-json", type=Path, help="the `graphsentry train` options as JSON (written by --nproc)")
    args, train_argv = ap.parse_known_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = os.environ.get("GRAPHSENTRY_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    rc = 1
    try:
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=INIT_TIMEOUT_S))
        commands = dist.new_group(backend="gloo", timeout=timedelta(seconds=COMMAND_TIMEOUT_S))
        with torch_threads(), deterministic_torch():
            if rank == 0:
                rc = rank0(Leader(world, dist.group.WORLD, commands, device, backend), args.args_json, train_argv)
            else:
                rc = follow(dist.group.WORLD, commands, rank, world, device, backend)
    except Exception as exc:
        print(f"graphsentry train: rank {rank}/{world} failed: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
        raise
    if dist.is_initialized():
        dist.destroy_process_group()
    return rc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def torchrun_command(nproc: int, args_json: Path, port: int | None = None,
                     module: str = "training.distributed") -> list[str]:
    """torchrun on this host only: static rendezvous on 127.0.0.1 (``--standalone`` would advertise the host
    name, which can resolve to a public interface), no restarts; each rank runs ``python -m module``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node-rank", "0",
            "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()),
            "--max-restarts", "0", "--monitor-interval", "0.5", "-m", module,
            "--args-json", str(args_json)]


def local_env(env: dict | None = None) -> dict:
    """Environment of the local workers: one torch/OpenMP thread per rank, gloo on the loopback interface."""
    env = dict(os.environ if env is None else env)
    env.setdefault("GRAPHSENTRY_TORCH_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["MASTER_ADDR"] = "127.0.0.1"
    return env


def launch(args: argparse.Namespace, timeout: float | None = None, module: str = "training.distributed",
           what: str = "train") -> int:
    """``graphsentry train --nproc N`` (or ``retrain``, with ``module="training.retrain_worker"``): run this command
    as N ranks under torchrun, rank 0 running it (``module``'s worker); torchrun's exit code."""
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc!r}")
    opts = {k: v for k, v in vars(args).items() if k != "func" and not callable(v)}
    opts["nproc"] = 0
    with tempfile.TemporaryDirectory(prefix="graphsentry-ddp-") as tmp:
        f = Path(tmp) / "train-args.json"
        f.write_text(json.dumps(opts))
        t0 = time.perf_counter()
        r = subprocess.run(torchrun_command(args.nproc, f, module=module), env=local_env(), timeout=timeout)
        log.info("torchrun with %d ranks exited %d after %.1f s", args.nproc, r.returncode, time.perf_counter() - t0)
    if r.returncode:
        print(f"graphsentry {what}: the {args.nproc}-process job failed (torchrun exit {r.returncode}); the failing "
              f"rank's message is above", file=sys.stderr)
    return r.returncode


def main(rank0=None, prog: str = "python -m training.distributed") -> None:
    """A rank's process: run :func:`worker`, then leave without the interpreter's teardown, where a C++ thread of the
    torch/gloo runtime was seen to abort the finished rank 0 ("terminate called without an active exception")."""
    from torch.distributed.elastic.multiprocessing.errors import record

    code = record(lambda: worker(None, rank0, prog))()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
