"""Data parallelism on torch.distributed: every rank takes its slice of each global batch.

The functional recipe (not DistributedDataParallel, whose hooks read `.grad`, which
`torch.func.grad` never fills): each rank computes the gradients of its slice, scaled so that
they sum to the global batch's; one flattened all-reduce sums them (with the metrics, the BN
running statistics and a "stop" vote); every rank applies the same SGD update, so the params
stay bitwise equal across ranks. The number of ranks does not change the result:

- the global batch stays `batch_size`; rank r takes a contiguous slice of it;
- dropout masks come from per-sample keys (seed, step, position in the global batch);
- BatchNorm normalises each rank's slice with that slice's statistics (as DDP without
  SyncBatchNorm does), and the running statistics are averaged across ranks every step, so
  every rank holds the same state. With one rank this is the ordinary run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# A rank that waits longer than this for the others gives up with an error (not a hang).
TIMEOUT_ENV = "PTM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 120


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> World | None:
    """The world torchrun (or `ptm ... --nproc N`) started this process in, or None when alone.

    Reads RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a world of one is None (the
    ordinary single-process path).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def join(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); the device this rank uses."""
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:  # share the cores: N ranks x 2 threads thrash 2 cores
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_ranks))
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timeout)
    return device


def barrier() -> None:
    """Wait until every rank is here."""
    dist.barrier()


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, world: World) -> slice:
    """This rank's contiguous part of `n` items (sizes differ by at most one)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


class RankLost(RuntimeError):
    """Another rank died or stopped answering: the run cannot go on."""


def all_reduce_sum(tensors: list[Tensor]) -> list[Tensor]:
    """Sum each tensor over the ranks with one all-reduce of their concatenation."""
    flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
    try:
        dist.all_reduce(flat)
    except (RuntimeError, dist.DistError) as err:
        reason = str(err).split("]", 1)[-1].split(". ")[0].strip()
        raise RankLost(f"another rank died or stopped answering ({reason}); the run stops here") from None
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].reshape(t.shape).to(t.dtype))
        offset += t.numel()
    return out


def data_parallel_step(gradients: Callable, update: Callable, world: World) -> Callable:
    """The train step of one rank: `step(params, state, opt_state, hyper, images, labels, keys,
    global_batch, stop)` -> `(params, state, opt_state, metrics)`, metrics summed over ranks and
    `metrics["stop"]` true when any rank asked to stop (all stop after the same step).

    `gradients` and `update` are train.make_gradients / make_update (compiled or not);
    `images`, `labels` and `keys` are this rank's slice of the global batch.
    """

    def step(params, state, opt_state, hyper, images, labels, keys, global_batch: int, stop: bool):
        grads, new_state, metrics = gradients(
            params, state, hyper, images, labels, keys, (global_batch, world.size)
        )
        averaged = [k for k, v in new_state.items() if v.is_floating_point()]  # BN running stats
        parts = [*grads.values(), *(new_state[k] / world.size for k in averaged)]
        parts += [
            metrics["loss"],
            metrics["correct"],
            torch.tensor(float(stop), device=metrics["loss"].device),
        ]
        summed = all_reduce_sum(parts)
        n_grads = len(grads)
        grads = dict(zip(grads, summed[:n_grads], strict=True))
        new_state = {
            **new_state,
            **dict(zip(averaged, summed[n_grads : n_grads + len(averaged)], strict=True)),
        }
        loss, correct, votes = summed[n_grads + len(averaged) :]
        params, opt_state = update(params, opt_state, grads, hyper)
        return params, new_state, opt_state, {"loss": loss, "correct": correct, "stop": votes.item() > 0}

    return step


def all_reduce_count(count: Tensor) -> Tensor:
    """A count summed over the ranks."""
    count = count.clone()
    dist.all_reduce(count)
    return count


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's `value` on every rank."""
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
