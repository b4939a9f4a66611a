"""`ptm check`: does every way `fit` can run a step agree with the eager step on this machine?

A few steps of one model on random data through `fit` itself: eager (the reference), compiled
in each mode that applies to the device, and two members (vmapped and one after the other).
Each variant reports its largest difference from the eager run, how often dynamo compiled and
CUDA graphs were recorded (more than once: re-compiled or re-recorded, i.e. slow), and any
fallback (fallback.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from ptm_func.catalog import DEFAULT_TOLERANCE, NOISE_FACTOR
from ptm_func.data.dataset import Dataset, Split
from ptm_func.training.compiling import uses_channels_last
from ptm_func.training.config import book_setup
from ptm_func.training.limits import IMAGE_BYTES, check_fits, check_step_fits
from ptm_func.training.loop import fit
from ptm_func.training.state import TrainResult

NOISE_CAP = 0.05  # ...up to here: a broken layout path must not excuse everything else


@dataclass
class VariantReport:
    name: str
    # max over tensors of |p - p_eager|.max() / |p_eager - p_start|.max(): the error relative
    # to how far the steps moved each tensor (params and BN running stats; MOVEMENT_FLOOR)
    relative_diff: float
    max_abs_diff: float
    compiles: int | None  # dynamo compilations (None: not measurable with this torch)
    cudagraph_recordings: int | None
    fallbacks: list[str]
    seconds: float  # compiling included
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance and not self.fallbacks

    @property
    def recompiled(self) -> bool:
        """Compiled or recorded more than once for one step function: slow, not wrong."""
        return bool(self.compiles and self.compiles > 1) or bool(
            self.cudagraph_recordings and self.cudagraph_recordings > 1
        )


@dataclass
class CheckReport:
    model: str
    device: str
    torch_version: str
    steps: int
    batch_size: int
    noise: float  # relative difference of two correct eager runs (the other image layout)
    tolerance: float  # max(asked, min(NOISE_FACTOR * noise, NOISE_CAP))
    variants: list[VariantReport] = field(default_factory=list)
    noise_measured: bool = True  # False: the model runs on NCHW images only (no other layout)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.variants)


def variants(device: torch.device) -> list[tuple[str, dict]]:
    """(name, TrainConfig overrides) of each way `fit` runs steps on `device`; the names of
    member variants start with "2 " (two members trained at once)."""
    if device.type == "cuda":
        single = [
            ("compiled + CUDA graphs", {"compile_mode": "reduce-overhead"}),
            ("compiled (default mode)", {"compile_mode": "default"}),
        ]
    else:
        single = [("compiled", {})]
    members = [
        ("2 vmapped (eager)", {"members_vmap": True, "compile": False}),
        ("2 vmapped (compiled)", {"members_vmap": True}),
        ("2 in a loop (compiled)", {"members_vmap": False}),
    ]
    return [(name, {"compile": True, **overrides}) for name, overrides in single + members]


def random_data(n: int, device: torch.device, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    train = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    val = Split(train.images[:16].clone(), train.labels[:16].clone())
    return Dataset(train, val, ("a", "b"), "random").to(device)


def check(
    name: str,
    device: torch.device,
    *,
    steps: int = 3,
    batch_size: int = 16,
    tolerance: float = DEFAULT_TOLERANCE,
    only: list[str] | None = None,
    **model_options,
) -> CheckReport:
    """Run `steps` steps of model `name` every way (`only`: these variant names) and compare.

    Resets dynamo (torch._dynamo.reset) before each variant, to count its compilations alone.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch size must be >= 1")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    model, config = book_setup(
        name, epochs=1, batch_size=batch_size, momentum=0.9, eval_every=0, compile=False, **model_options
    )
    # two members that differ in seed and learning rate
    members = [config, replace(config, seed=config.seed + 1, lr=2 * config.lr)]
    data_bytes = 2 * steps * batch_size * IMAGE_BYTES  # made on the CPU, then copied
    check_fits(data_bytes, device, f"{steps:,} steps of {batch_size:,} random images")
    check_step_fits(model, batch_size, 2, device, f"a step of two members on {batch_size:,} images")
    data = random_data(steps * batch_size, device)
    start = [model.init(c.seed, device=device) for c in members]
    eager = [fit(model, data, c) for c in members]
    noise = 0.0  # a model that needs its layout (a `view`): the asked tolerance alone
    if model.takes_channels_last:
        layout = replace(members[0], channels_last=not uses_channels_last(members[0], device, model))
        noise = difference(member_tensors(fit(model, data, layout), 0), eager[0], start[0])[0]
    tolerance = max(tolerance, min(NOISE_FACTOR * noise, NOISE_CAP))
    report = CheckReport(name, str(device), torch.__version__, steps, batch_size, noise, tolerance)
    report.noise_measured = model.takes_channels_last
    for variant, overrides in variants(device):
        if only is not None and variant not in only:
            continue
        configs = [replace(c, **overrides) for c in members]
        torch._dynamo.reset()  # count this variant's compilations alone
        with count_compilations() as counts:
            t0 = time.perf_counter()
            result = fit(model, data, configs if variant.startswith("2 ") else configs[0])
            seconds = time.perf_counter() - t0
        n_runs = len(configs) if result.members else 1
        diffs = [difference(member_tensors(result, r), eager[r], start[r]) for r in range(n_runs)]
        rel, diff = (max(values) for values in zip(*diffs, strict=True))
        report.variants.append(
            VariantReport(
                variant,
                rel,
                diff,
                counts.get("dynamo"),
                counts.get("cudagraph") if device.type == "cuda" else None,
                result.fallbacks,
                seconds,
                tolerance,
            )
        )
    return report


def member_tensors(result: TrainResult, index: int) -> tuple[dict, dict]:
    ts = result.member(index)
    return ts.params, ts.state


# A tensor's movement counts from this fraction of the largest movement in its group (params,
# or state) up: a conv bias before BatchNorm has a zero gradient in exact arithmetic, and moves
# only by rounding (1e-9), in which two correct steps differ completely.
MOVEMENT_FLOOR = 1e-2


def difference(run: tuple[dict, dict], eager: TrainResult, start: tuple[dict, dict]) -> tuple[float, float]:
    """(relative, absolute) largest difference of `run`'s (params, state) from the eager run's:
    relative to how far the steps moved each tensor (see MOVEMENT_FLOOR)."""
    relative, absolute = 0.0, 0.0
    for tensors, reference, initial in zip(run, (eager.params, eager.state), start, strict=True):
        diffs, moves = {}, {}
        for key, ref in reference.items():
            if not ref.is_floating_point():  # num_batches_tracked
                if not torch.equal(tensors[key], ref):
                    return float("inf"), float("inf")
                continue
            diffs[key] = (tensors[key] - ref).abs().max().item()
            moves[key] = (ref - initial[key]).abs().max().item()
        floor = MOVEMENT_FLOOR * max(moves.values(), default=0.0)
        for key, diff in diffs.items():
            absolute = max(absolute, diff)
            if diff:
                relative = max(relative, diff / max(moves[key], floor, 1e-30))
    return relative, absolute


@contextlib.contextmanager
def count_compilations() -> Iterator[dict[str, int]]:
    """Count dynamo compilations and CUDA-graph recordings while the block runs.

    Both start a compilation event in torch._dynamo.callback (torch >= 2.7); without it the
    dict stays empty.
    """
    counts: dict[str, int] = {}
    handler = getattr(torch._dynamo, "callback_handler", None)
    if handler is None:
        yield counts
        return
    counts.update(dynamo=0, cudagraph=0)

    def on_start(args=None):
        trigger = getattr(getattr(args, "callback_trigger", None), "name", "DYNAMO")
        if trigger == "DYNAMO":
            counts["dynamo"] += 1
        elif trigger == "CUDAGRAPH_RECORDING":
            counts["cudagraph"] += 1

    handler.register_start_callback(on_start)
    try:
        yield counts
    finally:
        handler.remove_start_callback(on_start)
