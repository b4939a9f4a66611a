"""Sizes checked against what the machine has, before any work: memory for a step's batch and
for data, disk for a sweep's checkpoints, CPUs or GPUs for ranks.

Estimates are measured, not guessed: a model's activation memory per image is what autograd
saves in one training forward of one image (`activation_bytes`).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

from ptm_func.errors import SettingsError
from ptm_func.nets.registry import Model
from ptm_func.nets.rng import key as make_key

IMAGE_BYTES = 3 * 32 * 32 * 4  # one normalised float32 CIFAR image
MAX_MEMBERS = 100_000  # a sweep's members; each is a checkpoint, a record and a line of sweep.json
PLAN_BYTES_PER_MEMBER = 4 << 10  # its entry in memory and in sweep.json, about


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on `device` (MemAvailable for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(folder: Path) -> int:
    """Bytes free on the disk `folder` is (or will be) on."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


@functools.lru_cache(maxsize=32)
def _builtin_activation_bytes(name: str, config: tuple) -> int:
    return _measure_activation_bytes(Model(name, dict(config)))


def _measure_activation_bytes(model: Model) -> int:
    params, state = model.init(0)
    params = {k: v.requires_grad_() for k, v in params.items()}
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.apply(params, state, torch.zeros(1, 3, 32, 32), train=True, key=make_key(0))
    return saved


def activation_bytes(model: Model) -> int:
    """Bytes autograd keeps per image for one training step of `model` (measured on one image)."""
    if model.builtin:  # cached by name and config; a user's model is measured each time
        return _builtin_activation_bytes(model.name, tuple(sorted(model.config.items())))
    return _measure_activation_bytes(model)


def parameter_bytes(model: Model) -> int:
    params, state = model.init(0)
    return sum(t.numel() * t.element_size() for t in [*params.values(), *state.values()])


def check_step_fits(
    model: Model, batch_size: int, members: int, device: torch.device, what: str, *, together: bool = True
) -> None:
    """A step of `members` members on batches of `batch_size` must fit in `device`'s free memory:
    params, gradients and momentum (x4) per member, and activations per image, for every member
    when they step `together` (vmapped), else for one at a time."""
    batch = batch_size * (activation_bytes(model) + IMAGE_BYTES)
    need = members * 4 * parameter_bytes(model) + (members if together else 1) * batch
    check_fits(need, device, what)


def check_fits(need: int, device: torch.device, what: str) -> None:
    have = free_memory(device)
    if need > have:
        raise SettingsError(f"{what} needs about {gib(need)} of memory, but {device} has {gib(have)} free")


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def batch_for(batch_size: int, n_images: int) -> tuple[int, str | None]:
    """The batch a step really takes (at most the data: an epoch is then one batch of all of it,
    as the book's DataLoader would give) and the note that says so when it is smaller."""
    if batch_size <= n_images:
        return batch_size, None
    return n_images, (
        f"batch size {batch_size:,} is larger than the {n_images:,} training images: "
        "each epoch is one batch of all of them"
    )
