"""Which step `fit` runs: compiled where it pays (with fallbacks), for one model, K members or one rank."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ptm_func.errors import SettingsError
from ptm_func.nets import conv_grads
from ptm_func.nets.registry import Model
from ptm_func.training import tuning
from ptm_func.training.config import TrainConfig
from ptm_func.training.distributed import World, data_parallel_step
from ptm_func.training.fallback import ComposedStep, FallbackStep
from ptm_func.training.graphs import CarriedBuffersStep
from ptm_func.training.members import member_loop, uses_vmap
from ptm_func.training.step import make_gradients, make_step, make_update

# On a 2-core CPU the compiled Net step ran ~1.4x faster than the eager torch.func step
# (1.7 vs 2.4 s/epoch) after 10-40 s of compilation: it pays from about 20 epochs.
CPU_COMPILE_EPOCHS = 20
# ...but not for the models whose spec says so (ModelSpec.eager_on_cpu: batchnorm, resdeep).


def compile_step(
    step: Callable, device: torch.device, mode: str | None = None, *, split_bias: bool = True
) -> FallbackStep:
    """torch.compile the whole step (outside the torch.func transforms), static shapes.

    Should compiling or capturing fail, the step falls back - reduce-overhead, the default
    mode, eager - with one line on stderr (fallback.py); its results stay the eager step's.
    `split_bias`: where tuning.splits_conv_bias, convolutions sum their bias gradients apart
    (nets/conv_grads.py); not for vmapped members, whose vmap dynamo cannot take through that
    autograd.Function.
    """
    if mode is None and device.type == "cuda":
        mode = "reduce-overhead"
    if device.type == "cpu":  # a CUDA build of torch compiling for the CPU need not say it has no CUDA
        quiet = logging.getLogger("torch.utils.cpp_extension")
        quiet.setLevel(max(quiet.getEffectiveLevel(), logging.ERROR))
    modes = [mode or "default"] + ([] if mode in (None, "default") else ["default"])
    compiled = [(f"compiled ({m})", compile_once(step, device, m)) for m in modes]
    if split_bias and tuning.splits_conv_bias(device):
        compiled = [(name, splitting_bias(c)) for name, c in compiled]
    return FallbackStep([*compiled, ("eager", step)])


def splitting_bias(compiled: Callable) -> Callable:
    """`compiled`, traced and run with conv_grads' split bias gradient on (dynamo guards on it)."""

    def split_step(*args):
        with conv_grads.splitting_bias():
            return compiled(*args)

    return split_step


def compile_once(step: Callable, device: torch.device, mode: str) -> Callable:
    """torch.compile `step` in one mode. On CUDA, reduce-overhead replays CUDA graphs and a
    train step carries its params, state and optimizer state in buffers of its own (graphs.py);
    elsewhere it marks each call as a new step."""
    # Every model compiles its own graph of this one function: ptm compare (8 models) or a
    # benchmark would pass dynamo's default limit of 8 and silently run the rest eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    tuning.use_compile_cache()  # kernels outlive a reboot: a step compiles once per machine
    options = tuning.compile_options(device, mode)
    if options is None:
        compiled = torch.compile(step, mode=mode, dynamic=False)
    else:  # torch.compile takes a mode or options: the mode's own options, then ours
        options = {**torch._inductor.list_mode_options(mode), **options}
        compiled = torch.compile(step, dynamic=False, options=options)
    if mode != "reduce-overhead":
        return compiled
    if device.type == "cuda":
        return CarriedBuffersStep(compiled)

    def graphed_step(*args):
        # Each call is a new iteration: the previous outputs (now our inputs) are copied into
        # the graph's static inputs, so the CUDA-graph pool does not grow step after step.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return graphed_step


def build_step(
    model: Model, config: TrainConfig, device: torch.device, *, members_hyper: dict[str, Any] | None = None
) -> Callable:
    """The train step `fit` runs, compiled where it pays; for K members given their `hyper`,
    one step over all of them (their tensors stacked along dim 0).

    Members run vmapped (their differing hyperparameters batched, the shared floats passed
    through) or one after the other through the single step (see TrainConfig.members_vmap).
    `config.compile=None`: see will_compile.
    Compilation wraps the torch.func transforms, never the other way round.
    """
    step = make_step(model, nesterov=config.nesterov, augmentations=config.augment)
    compiling = will_compile(config, device, model)
    if members_hyper is None:
        return compile_step(step, device, config.compile_mode) if compiling else step
    if uses_vmap(config, device):
        hyper_dims = {k: 0 if isinstance(v, Tensor) else None for k, v in members_hyper.items()}
        step = torch.func.vmap(step, in_dims=(0, 0, 0, hyper_dims, 0, 0, 0), randomness="different")
        return compile_step(step, device, config.compile_mode, split_bias=False) if compiling else step
    # CUDA graphs would overwrite one member's outputs with the next one's: plain compile
    mode = "default" if config.compile_mode in (None, "reduce-overhead") else config.compile_mode
    return member_loop(compile_step(step, device, mode) if compiling else step)


def build_data_parallel_step(
    model: Model, config: TrainConfig, device: torch.device, world: World
) -> Callable:
    """One rank's step: its gradients, one all-reduce, the update (see distributed.py).

    The all-reduce sits between two compiled parts (the gradients, the update), compiled in the
    default mode: no CUDA graphs around a collective.
    """
    gradients = make_gradients(model, config.augment)
    update = make_update(model, nesterov=config.nesterov)
    if will_compile(config, device, model):
        mode = "default" if config.compile_mode in (None, "reduce-overhead") else config.compile_mode
        gradients, update = compile_step(gradients, device, mode), compile_step(update, device, mode)
    return ComposedStep(data_parallel_step(gradients, update, world), (gradients, update))


def uses_channels_last(config: TrainConfig, device: torch.device, model: Model | None = None) -> bool:
    """Does `fit` train on channels-last images? As asked; else on CPU (tuning.py), for every
    model whose apply runs on them (Model.takes_channels_last: a forward that `view`s the
    features, as the book's own Net does, needs NCHW)."""
    if config.channels_last is not None:
        return config.channels_last
    return tuning.channels_last_default(device) and (model is None or model.takes_channels_last)


def layout_note(config: TrainConfig, device: torch.device, model: Model) -> str | None:
    """A note when `model` trains on NCHW images where channels-last is the faster default.
    Raises SettingsError when channels-last is asked of a model that cannot take it."""
    if model.takes_channels_last:
        return None
    if config.channels_last:
        raise SettingsError(
            f"{model.name} fails or differs on channels-last images (does its forward `.view` the "
            "features? `.reshape` runs on both layouts): drop --channels-last"
        )
    if config.channels_last is None and tuning.channels_last_default(device):
        return (
            f"{model.name} fails or differs on channels-last images (a `.view` of the features?): "
            "training on NCHW images, which is slower on CPU; `.reshape` lets it run channels-last"
        )
    return None


def will_compile(config: TrainConfig, device: torch.device, model: Model) -> bool:
    """Does `fit` compile `model`'s step? As asked; else on CUDA always, and on CPU from
    CPU_COMPILE_EPOCHS epochs for the models where it pays (not those eager_on_cpu)."""
    if config.compile is not None:
        return config.compile
    if device.type == "cuda":
        return True
    return config.epochs >= CPU_COMPILE_EPOCHS and not model.eager_on_cpu
