"""Training with torch.func: a pure train step, its compiled form, and the epoch loop."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value

from . import rng, tuning
from .data import Dataset, Split
from .distributed import World, data_parallel_step, shard
from .fallback import FallbackStep, fallback_events
from .layers import Params, State
from .losses import accuracy_count, cross_entropy, l1_penalty, l2_penalty
from .members import stack, unstack
from .models import retie
from .optim import SGD, SGDState, active
from .registry import Model, UnknownModelError, get_model

# Training variants that are not separate networks: name -> (model name, TrainConfig overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"l2": ("net", {"l2_lambda": 1e-3})}
# The book's per-model learning rates (everything else trains at 1e-2).
BOOK_LR = {"resdeep": 3e-3}
TRAINABLE_NAMES = ("net", "width", "l2", "dropout", "batchnorm", "depth", "res", "resdeep")
# On a 2-core CPU the compiled Net step ran ~1.4x faster than the eager torch.func step
# (1.7 vs 2.4 s/epoch) after 10-40 s of compilation: it pays from about 20 epochs.
CPU_COMPILE_EPOCHS = 20
# ...but not for these, whose compiled step is no faster than their eager one on a 2-core CPU
# (benchmarks/train_speed.py): batchnorm (13-18 vs 15-16 ms a step, the order flipping between
# runs) and resdeep, whose time is its convolutions (100 blocks: 1.21x vs 1.16x the book's loop,
# after 85 s of compiling).
CPU_EAGER_MODELS = frozenset({"batchnorm", "resdeep"})
SEED_LIMIT = 2**63  # torch.Generator.manual_seed's range


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs; defaults are the book's (SGD lr 1e-2, batch 64, 100 epochs, seed 123)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-2
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    l2_lambda: float = 0.0  # the book's penalty on the loss; grad-equivalent to decay 2*l2
    l1_lambda: float = 0.0
    seed: int = 123  # init, shuffling and dropout keys all derive from it
    shuffle: bool = True  # the book's later variants trained with shuffle=False
    eval_train_mode: bool = False  # the book validated without model.eval()
    compile: bool | None = None  # None: CUDA always; CPU from CPU_COMPILE_EPOCHS (see will_compile)
    compile_mode: str | None = None  # None: "reduce-overhead" (CUDA graphs) on CUDA
    # K members: one vmapped step (True) or the single step member after member (False).
    # None: vmap on CUDA, where a step is launch-bound; a loop on CPU, where vmap's batched
    # conv and the layout copies around it cost ~2x per member (benchmarks/sweep_speed.py).
    members_vmap: bool | None = None
    # Images in channels-last memory order (tuning.py). None: on CPU, where it is ~1.2x faster.
    channels_last: bool | None = None
    # Validate every N epochs (0: after the last only). Read-only: the weights do not depend on it.
    eval_every: int = 1

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("lr", "momentum", "dampening", "weight_decay", "l2_lambda", "l1_lambda"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.l2_lambda < 0 or self.l1_lambda < 0:
            raise ValueError("l2 and l1 penalties must be >= 0")
        if not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be in 0..2**63-1, got {self.seed}")
        self.optimizer()  # momentum, weight decay, nesterov
        if self.eval_every < 0:
            raise ValueError(
                f"eval_every must be >= 0 (0: validate after the last epoch only), got {self.eval_every}"
            )

    def validates_after(self, epoch: int) -> bool:
        """Is the val accuracy measured after `epoch` (1-based)? Every eval_every, and the last."""
        return epoch == self.epochs or (self.eval_every > 0 and epoch % self.eval_every == 0)

    def optimizer(self) -> SGD:
        return SGD(self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov)


def book_setup(name: str, **overrides: Any) -> tuple[Model, TrainConfig]:
    """Model and TrainConfig for a CLI name (l2 included) with the book's defaults."""
    if name not in TRAINABLE_NAMES:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {', '.join(TRAINABLE_NAMES)}")
    model_name, variant = VARIANTS.get(name, (name, {}))
    model_options = {k: overrides.pop(k) for k in ("n_chans1", "n_blocks", "tied") if k in overrides}
    model = get_model(model_name, **model_options)
    defaults = {"lr": BOOK_LR.get(model_name, 1e-2), **variant}
    return model, TrainConfig(**{**defaults, **overrides})


def drop_aliases(tensors: dict[str, Tensor], aliases: dict[str, str]) -> dict[str, Tensor]:
    """Keep each distinct tensor once (the keys a tied model really trains)."""
    return {k: v for k, v in tensors.items() if k not in aliases}


HYPER_KEYS = ("lr", "momentum", "dampening", "weight_decay", "l2_lambda", "l1_lambda")


def hyperparameters(config: TrainConfig) -> dict[str, float]:
    """The numbers a step takes as input, in which the members of a sweep may differ.

    Dampening is 0 without momentum: torch.optim.SGD ignores it then, and a member whose
    momentum is a (vmapped) tensor 0 must step as its separate run would.
    """
    return {
        "lr": config.lr,
        "momentum": config.momentum,
        "dampening": config.dampening if config.momentum else 0.0,
        "weight_decay": config.weight_decay,
        "l2_lambda": config.l2_lambda,
        "l1_lambda": config.l1_lambda,
    }


def step_hyperparameters(configs: Sequence[TrainConfig], device) -> dict[str, float | Tensor]:
    """The `hyper` input of K members' step: a float where all agree, else a (K,) tensor.

    Shared values stay Python floats, so a term every member skips (0) is not computed and a
    member steps exactly as its separate run; only what differs is batched by vmap.
    """
    values = [hyperparameters(c) for c in configs]
    return {
        key: values[0][key]
        if len({v[key] for v in values}) == 1
        else torch.tensor([v[key] for v in values], dtype=torch.float32, device=device)
        for key in HYPER_KEYS
    }


def make_gradients(model: Model):
    """Build `gradients(params, state, hyper, images, labels, key, shard=None)` -> `(grads,
    new_state, metrics)`: `torch.func.grad_and_value` of the loss over the trained params.

    `shard=(global_batch, world_size)` says these images are one process's part of a larger
    batch: the loss is then its share of the batch's mean (sum / global_batch) and of the
    penalties (/ world_size), so the processes' gradients and losses sum to the whole batch's.
    `metrics` are device tensors (loss, correct count) - no host sync.
    """
    aliases = model.aliases

    def loss_fn(trainable: Params, state: State, hyper, images: Tensor, labels: Tensor, key: Tensor, shard):
        logits, new_state = model.apply(retie(trainable, aliases), state, images, train=True, key=key)
        penalties = []
        if active(hyper["l2_lambda"]):
            penalties.append(l2_penalty(trainable, hyper["l2_lambda"]))
        if active(hyper["l1_lambda"]):
            penalties.append(l1_penalty(trainable, hyper["l1_lambda"]))
        if shard is None:
            loss = cross_entropy(logits, labels)
        else:
            global_batch, world_size = shard
            loss = F.cross_entropy(logits, labels, reduction="sum") / global_batch
            penalties = [penalty / world_size for penalty in penalties]
        for penalty in penalties:
            loss = loss + penalty
        return loss, (new_state, accuracy_count(logits, labels))

    def gradients(params, state, hyper, images, labels, key, shard=None):
        grads, (loss, (new_state, correct)) = grad_and_value(loss_fn, has_aux=True)(
            drop_aliases(params, aliases), state, hyper, images, labels, key, shard
        )
        return grads, new_state, {"loss": loss.detach(), "correct": correct}

    return gradients


def make_update(model: Model, *, nesterov: bool = False):
    """Build `update(params, opt_state, grads, hyper)` -> `(params, opt_state)`: the functional SGD."""
    aliases = model.aliases

    def update(params, opt_state, grads, hyper):
        optimizer = SGD(hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"], nesterov)
        trainable, opt_state = optimizer.update(grads, opt_state, drop_aliases(params, aliases))
        new = retie(trainable, aliases)
        # the keys in their incoming order: a compiled step guards on it, and retie appends
        # a tied model's aliases at the end (a recompile at step 2)
        return {k: new[k] for k in params}, opt_state

    return update


def make_step(model: Model, *, nesterov: bool = False):
    """Build the step `(params, state, opt_state, hyper, images, labels, key)` -> `(params, state,
    opt_state, metrics)`: make_gradients, then make_update.

    `hyper` maps HYPER_KEYS to floats (a float 0 skips its term) or 0-d tensors, which
    `torch.func.vmap` batches: one step then trains K members with K learning rates.
    """
    gradients, update = make_gradients(model), make_update(model, nesterov=nesterov)

    def train_step(params, state, opt_state, hyper, images, labels, key):
        grads, new_state, metrics = gradients(params, state, hyper, images, labels, key)
        params, opt_state = update(params, opt_state, grads, hyper)
        return params, new_state, opt_state, metrics

    return train_step


def make_train_step(model: Model, optimizer: SGD, *, l2_lambda: float = 0.0, l1_lambda: float = 0.0):
    """`step(params, state, opt_state, images, labels, key)`: make_step with fixed hyperparameters."""
    step = make_step(model, nesterov=optimizer.nesterov)
    hyper = {
        "lr": optimizer.lr,
        "momentum": optimizer.momentum,
        "dampening": optimizer.dampening,
        "weight_decay": optimizer.weight_decay,
        "l2_lambda": l2_lambda,
        "l1_lambda": l1_lambda,
    }

    def train_step(params, state, opt_state, images, labels, key):
        return step(params, state, opt_state, hyper, images, labels, key)

    return train_step


def compile_step(step: Callable, device: torch.device, mode: str | None = None) -> FallbackStep:
    """torch.compile the whole step (outside the torch.func transforms), static shapes.

    Should compiling or capturing fail, the step falls back - reduce-overhead, the default
    mode, eager - with one line on stderr (fallback.py); its results stay the eager step's.
    """
    if mode is None and device.type == "cuda":
        mode = "reduce-overhead"
    modes = [mode or "default"] + ([] if mode in (None, "default") else ["default"])
    compiled = [(f"compiled ({m})", compile_once(step, device, m)) for m in modes]
    return FallbackStep([*compiled, ("eager", step)])


def compile_once(step: Callable, device: torch.device, mode: str) -> Callable:
    """torch.compile `step` in one mode; reduce-overhead marks each call as a new CUDA-graph step."""
    # Every model compiles its own graph of this one function: ptm compare (8 models) or a
    # benchmark would pass dynamo's default limit of 8 and silently run the rest eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    options = tuning.compile_options(device, mode)
    if options is None:
        compiled = torch.compile(step, mode=mode, dynamic=False)
    else:  # torch.compile takes a mode or options; these options are the default mode's
        compiled = torch.compile(step, dynamic=False, options=options)
    if mode != "reduce-overhead":
        return compiled

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
    step = make_step(model, nesterov=config.nesterov)
    compiling = will_compile(config, device, model.name)
    if members_hyper is None:
        return compile_step(step, device, config.compile_mode) if compiling else step
    if uses_vmap(config, device):
        hyper_dims = {k: 0 if isinstance(v, Tensor) else None for k, v in members_hyper.items()}
        step = torch.func.vmap(step, in_dims=(0, 0, 0, hyper_dims, 0, 0, 0), randomness="different")
        return compile_step(step, device, config.compile_mode) if compiling else step
    # CUDA graphs would overwrite one member's outputs with the next one's: plain compile
    mode = "default" if config.compile_mode in (None, "reduce-overhead") else config.compile_mode
    return member_loop(compile_step(step, device, mode) if compiling else step)


def uses_vmap(config: TrainConfig, device: torch.device) -> bool:
    """Are K members trained by one vmapped step? As asked, else on CUDA."""
    return config.members_vmap if config.members_vmap is not None else device.type == "cuda"


def member_loop(step: Callable) -> Callable:
    """A K-member step that runs the single-member `step` on each member in turn.

    Each member gets exactly the computation of its separate run (bitwise where the step is
    the same), and one compiled graph serves every member (differing hyperparameters are 0-d
    tensor inputs).
    """

    def members_step(params, state, opt_state, hyper, images, labels, keys):
        outs = []
        for r in range(images.shape[0]):
            member_hyper = {k: v[r] if isinstance(v, Tensor) else v for k, v in hyper.items()}
            member = (unstack(params, r), unstack(state, r), unstack(opt_state, r))
            outs.append(step(*member, member_hyper, images[r], labels[r], keys[r]))
        return tuple(stack([out[i] for out in outs]) for i in range(4))

    members_step.fallbacks = (step,)  # where fallback_events finds what fell back
    return members_step


def build_data_parallel_step(
    model: Model, config: TrainConfig, device: torch.device, world: World
) -> Callable:
    """One rank's step: its gradients, one all-reduce, the update (see distributed.py).

    The all-reduce sits between two compiled parts (the gradients, the update), compiled in the
    default mode: no CUDA graphs around a collective.
    """
    gradients, update = make_gradients(model), make_update(model, nesterov=config.nesterov)
    if will_compile(config, device, model.name):
        mode = "default" if config.compile_mode in (None, "reduce-overhead") else config.compile_mode
        gradients, update = compile_step(gradients, device, mode), compile_step(update, device, mode)
    step = data_parallel_step(gradients, update, world)
    step.fallbacks = (gradients, update)  # where fallback_events finds what fell back
    return step


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Does `fit` train on channels-last images? As asked, else on CPU (tuning.py)."""
    if config.channels_last is not None:
        return config.channels_last
    return tuning.channels_last_default(device)


def will_compile(config: TrainConfig, device: torch.device, model_name: str) -> bool:
    """Does `fit` compile `model_name`'s step? As asked; else on CUDA always, and on CPU from
    CPU_COMPILE_EPOCHS epochs for the models where it pays (not CPU_EAGER_MODELS)."""
    if config.compile is not None:
        return config.compile
    if device.type == "cuda":
        return True
    return config.epochs >= CPU_COMPILE_EPOCHS and model_name not in CPU_EAGER_MODELS


def validation_key(base_key: Tensor, epoch: int) -> Tensor:
    """Dropout key of the train-mode validation after `epoch`; train steps use fold_in(base, step >= 0)."""
    return rng.fold_in(rng.fold_in(base_key, -2), epoch)


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool, device) -> Tensor:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n, device=device)
    gen = torch.Generator().manual_seed(int(rng.fold_in(seed, epoch)))
    return torch.randperm(n, generator=gen).to(device)


@torch.no_grad()
def evaluate(model: Model, params: Params, state: State, split: Split, *, batch_size: int = 256) -> float:
    """Accuracy in eval mode (running BN stats, no dropout).

    Batches of 256: on a 2-core CPU 1.5-2x faster than 1000 (activations stay in cache).
    """
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for start in range(0, len(split), batch_size):
        logits, _ = model.apply(params, state, split.images[start : start + batch_size], train=False)
        correct += accuracy_count(logits, split.labels[start : start + batch_size])
    return correct.item() / len(split)


@torch.no_grad()
def evaluate_book_style(
    model: Model, params: Params, state: State, split: Split, *, batch_size: int, key: Tensor
) -> tuple[float, State]:
    """The book's validate(): train mode, its batches, BN stats updated as it goes."""
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for i, start in enumerate(range(0, len(split), batch_size)):
        images = split.images[start : start + batch_size]
        logits, state = model.apply(params, state, images, train=True, key=rng.fold_in(key, i))
        correct += accuracy_count(logits, split.labels[start : start + batch_size])
    return correct.item() / len(split), state


@torch.no_grad()
def validation_accuracy(
    model: Model, params: Params, state: State, split: Split, config: TrainConfig, *, key: Tensor
) -> float:
    """Val accuracy during training, changing nothing the training sees.

    Eval mode; with `eval_train_mode` the book's train-mode validate(), its BN updates
    discarded. `key` (dropout, train mode only) is not one the training steps use.
    """
    if config.eval_train_mode:
        return evaluate_book_style(model, params, state, split, batch_size=config.batch_size, key=key)[0]
    return evaluate(model, params, state, split)


@dataclass
class EpochStats:
    epoch: int  # 1-based
    epochs: int
    loss: float  # mean batch loss (penalty included), as the book logs it
    train_accuracy_running: float  # accuracy on the fly while training
    seconds: float  # training only; validation is not timed in
    samples_per_second: float
    val_accuracy: float | None = None  # measured after this epoch (see TrainConfig.eval_every)
    # K members trained at once: each one's loss, train_accuracy_running and val_accuracy
    # (the fields above are their means)
    members: dict[str, list[float | None]] | None = None

    def member(self, index: int) -> EpochStats:
        """Member `index`'s epoch, as its separate run would report it (time shared)."""
        if self.members is None:
            return self
        values = {key: self.members[key][index] for key in ("loss", "train_accuracy_running", "val_accuracy")}
        per_member = self.samples_per_second / len(self.members["loss"])
        return replace(self, **values, samples_per_second=per_member, members=None)


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Shuffling derives from (seed, epoch) and dropout keys from (seed, global step), so
    weights, optimizer state and the position in the run are all there is to save. For K
    members the tensors are stacked along dim 0 and the sums are lists.
    """

    params: Params
    state: State
    opt_state: SGDState
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # completed steps of the current epoch
    loss_sum: float | list[float] = 0.0  # the current epoch's running sums, for its log line
    correct: int | list[int] = 0


def init_train_state(
    model: Model, config: TrainConfig, device, *, momentum_buffers: bool = False
) -> TrainState:
    """Fresh weights from `config.seed` and a fresh optimizer state (buffers if asked or needed)."""
    params, state = model.init(config.seed, device=device)
    optimizer = replace(config.optimizer(), momentum=1.0) if momentum_buffers else config.optimizer()
    return TrainState(params, state, optimizer.init(drop_aliases(params, model.aliases)))


def init_members(model: Model, configs: Sequence[TrainConfig], device) -> TrainState:
    """K fresh members, stacked (momentum buffers for all when any member has momentum)."""
    buffers = any(c.momentum for c in configs)
    starts = [init_train_state(model, c, device, momentum_buffers=buffers) for c in configs]
    return stack_members(starts)


def stack_members(states: Sequence[TrainState]) -> TrainState:
    """K members' TrainStates (at the same position) as one stacked TrainState."""
    first = states[0]
    if any((s.epoch, s.step_in_epoch) != (first.epoch, first.step_in_epoch) for s in states):
        raise ValueError("members must stand at the same epoch and step to train together")
    needs_buffers = any(s.opt_state.momentum for s in states)
    opt_states = [
        s.opt_state
        if s.opt_state.momentum or not needs_buffers
        else SGDState(
            {k: torch.zeros_like(v) for k, v in states[0].opt_state.momentum.items()}, s.opt_state.step
        )
        for s in states
    ]
    return TrainState(
        stack([s.params for s in states]),
        stack([s.state for s in states]),
        stack(opt_states),
        first.epoch,
        first.step_in_epoch,
        [float(s.loss_sum) for s in states],
        [int(s.correct) for s in states],
    )


def member_state(ts: TrainState, index: int, config: TrainConfig) -> TrainState:
    """Member `index` of a stacked TrainState, as its separate run would hold it."""
    opt_state = unstack(ts.opt_state, index)
    if not config.momentum:  # buffers only the others needed: the separate run has none
        opt_state = SGDState({}, opt_state.step)
    return TrainState(
        unstack(ts.params, index),
        unstack(ts.state, index),
        opt_state,
        ts.epoch,
        ts.step_in_epoch,
        ts.loss_sum[index],
        ts.correct[index],
    )


# Settings every member of one vmapped run shares (they shape the step or the loop).
SHARED_SETTINGS = (
    "members_vmap",
    "channels_last",
    "epochs",
    "batch_size",
    "nesterov",
    "shuffle",
    "eval_train_mode",
    "compile",
    "compile_mode",
    "eval_every",
)


def check_members(configs: Sequence[TrainConfig]) -> None:
    """Members may differ in hyperparameters and seed only."""
    if not configs:
        raise ValueError("no members to train")
    for name in SHARED_SETTINGS:
        values = {getattr(c, name) for c in configs}
        if len(values) > 1:
            raise ValueError(f"members of one run must share {name}, got {sorted(map(str, values))}")


@dataclass
class TrainResult:
    train_state: TrainState  # K members: stacked (see member())
    configs: list[TrainConfig]
    members: bool = False  # trained as K vmapped members (lists below), or one run (floats)
    history: list[EpochStats] = field(default_factory=list)
    interrupted: bool = False  # stopped on request before the last epoch
    # member -> (the epoch its loss turned NaN or infinite, its last finite TrainState).
    # Other members train on; a single run stops there.
    diverged: dict[int, tuple[int, TrainState]] = field(default_factory=dict)
    train_accuracy: float | list[float] | None = None
    val_accuracy: float | list[float] | None = None
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    fallbacks: list[str] = field(default_factory=list)  # compiled steps that failed (fallback.py)

    @property
    def params(self) -> Params:
        return self.train_state.params

    @property
    def state(self) -> State:
        return self.train_state.state

    @property
    def opt_state(self) -> SGDState:
        return self.train_state.opt_state

    @property
    def diverged_in(self) -> int | None:
        """The first epoch in which a member's loss turned NaN or infinite (None: never)."""
        return min((epoch for epoch, _ in self.diverged.values()), default=None)

    @property
    def diverged_members(self) -> list[int]:
        return sorted(self.diverged)

    def member(self, index: int) -> TrainState:
        """Member `index`'s TrainState (its last finite one if it diverged)."""
        if index in self.diverged:
            return self.diverged[index][1]
        if not self.members:
            return self.train_state
        return member_state(self.train_state, index, self.configs[index])

    def summary(self) -> dict[str, Any]:
        out = {
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "final_loss": self.history[-1].loss if self.history else None,
            "epochs_done": self.train_state.epoch,
            "seconds": round(self.seconds, 3),
        }
        if self.fallbacks:
            out["fallbacks"] = self.fallbacks
        if self.members:
            out.update(
                members=len(self.configs),
                seeds=[c.seed for c in self.configs],
                final_loss=self.history[-1].members["loss"] if self.history else None,
                train_accuracy_mean_std=_spread(self.train_accuracy),
                val_accuracy_mean_std=_spread(self.val_accuracy),
                peak_memory_bytes=self.peak_memory_bytes,
            )
        return out


def _spread(values: list[float] | None) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def fit(
    model: Model,
    data: Dataset,
    config: TrainConfig | Sequence[TrainConfig],
    *,
    start: TrainState | None = None,
    on_epoch: Callable[[EpochStats, TrainState], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train one model (a TrainConfig), or K members at once (a sequence of K TrainConfigs).

    K members train in lockstep on stacked tensors (one vmapped step, or the single step member
    after member: TrainConfig.members_vmap); member r is the run its config alone would make:
    its own seed (init, data order, dropout keys) and hyperparameters, and a member whose loss
    turns NaN stops alone. `start` resumes a saved TrainState (stacked for members);
    `on_step(step, n_steps)` sees each step (host-side only, no sync); `stop_requested` is
    polled after every step and ends the run early (result.interrupted, no evaluation) with
    the state to save. A loss that turns NaN or infinite ends a run at its last finite state.
    In a `world` of several ranks (one run) each rank trains its slice of every global batch
    (see distributed.py); every rank returns the same result, and they stop at the same step.
    """
    members = not isinstance(config, TrainConfig)
    configs = list(config) if members else [config]
    check_members(configs)
    lead = configs[0]
    device = data.train.images.device
    # the steps' images; evaluation reads `data` as given, as `ptm eval` will
    train_images = tuning.in_layout(data.train.images, uses_channels_last(lead, device))
    if device.type == "cpu":
        tuning.tune_allocator()
    if start is None:
        start = init_members(model, configs, device) if members else init_train_state(model, lead, device)
    hyper = step_hyperparameters(configs, device)
    if world is not None and (members or lead.eval_train_mode):
        raise ValueError("several ranks train one run in eval-mode validation (no members, no book quirks)")

    def make(config: TrainConfig) -> Callable:
        if world is not None:
            return build_data_parallel_step(model, config, device, world)
        return build_step(model, config, device, members_hyper=hyper if members else None)

    step = make(lead)
    # The epoch's last, smaller batch (10,000 = 156 x 64 + 16) runs eagerly: compiling a second
    # graph for it doubled the compile time, for one step in 157.
    partial_step = make(replace(lead, compile=False)) if will_compile(lead, device, model.name) else step
    seeds = [c.seed for c in configs]
    base_keys = torch.stack([rng.key(s, device) for s in seeds]) if members else rng.key(lead.seed, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    n = len(data.train)
    n_batches = math.ceil(n / lead.batch_size)
    ts = start
    result = TrainResult(ts, configs, members)
    started = time.perf_counter()
    params, state, opt_state = ts.params, ts.state, ts.opt_state
    last_good = snapshot(ts)  # where a diverged run goes back to
    while ts.epoch < lead.epochs:
        t0 = time.perf_counter()
        # (n,) or (K, n): each member's own sample order, as its separate run draws it
        orders = [epoch_order(s, ts.epoch, n, lead.shuffle, device) for s in seeds]
        order = torch.stack(orders) if members else orders[0]
        # one key per sample, from (seed, global step, position in the batch): resumable,
        # reproducible, and a sample's dropout mask does not depend on how the batch is split
        steps = torch.arange(n_batches, device=device) + ts.epoch * n_batches
        step_keys = rng.fold_in(base_keys.unsqueeze(-1), steps)  # (n_batches,) or (K, n_batches)
        positions = torch.arange(lead.batch_size, device=device)
        keys = rng.fold_in(step_keys.unsqueeze(-1), positions)  # (n_batches, B) or (K, n_batches, B)
        loss_sum = torch.tensor(ts.loss_sum, dtype=torch.float32, device=device)
        correct = torch.tensor(ts.correct, dtype=torch.int64, device=device)
        stop = False
        for i in range(ts.step_in_epoch, n_batches):
            idx = order[..., i * lead.batch_size : (i + 1) * lead.batch_size]  # (B,) or (K, B)
            step_keys_i = keys[..., i, : idx.shape[-1]]
            run = step if idx.shape[-1] == lead.batch_size else partial_step
            if world is None:
                params, state, opt_state, metrics = run(
                    params,
                    state,
                    opt_state,
                    hyper,
                    train_images[idx],
                    data.train.labels[idx],
                    step_keys_i,
                )
                stop = i + 1 < n_batches and stop_requested is not None and stop_requested()
            else:  # this rank's slice of the global batch; the ranks vote on stopping
                mine = shard(idx.shape[0], world)
                params, state, opt_state, metrics = run(
                    params,
                    state,
                    opt_state,
                    hyper,
                    train_images[idx[mine]],
                    data.train.labels[idx[mine]],
                    step_keys_i[mine],
                    idx.shape[0],
                    stop_requested is not None and stop_requested(),
                )
                stop = metrics["stop"]
            loss_sum += metrics["loss"]
            correct += metrics["correct"]
            if on_step is not None:
                on_step(i + 1, n_batches)
            if i + 1 < n_batches and stop:
                ts = TrainState(
                    params, state, opt_state, ts.epoch, i + 1, loss_sum.tolist(), correct.tolist()
                )
                result.train_state, result.interrupted = ts, True
                _note_divergence(result, loss_sum, ts.epoch + 1, last_good)
                return _finish(result, started, step, device)
        if _note_divergence(result, loss_sum, ts.epoch + 1, last_good):
            return _finish(result, started, step, device)
        # the epoch's one host sync
        losses = (loss_sum.double() / n_batches).tolist()
        running = (correct.double() / n).tolist()
        seconds = time.perf_counter() - t0
        steps_run = n_batches - ts.step_in_epoch
        ts = result.train_state = TrainState(
            params,
            state,
            opt_state,
            ts.epoch + 1,
            0,
            _zeros(members, len(configs)),
            _zeros(members, len(configs), int),
        )
        last_good = snapshot(ts)
        stats = EpochStats(
            ts.epoch,
            lead.epochs,
            losses,
            running,
            seconds,
            len(configs) * steps_run * lead.batch_size / seconds,
        )
        if lead.validates_after(ts.epoch):
            stats.val_accuracy = _validation(model, ts, data, configs, members, base_keys)
        if members:
            stats.members = {
                "loss": losses,
                "train_accuracy_running": running,
                "val_accuracy": stats.val_accuracy or [None] * len(configs),
            }
            finite = [r for r in range(len(configs)) if r not in result.diverged]
            stats.loss = statistics.fmean(losses[r] for r in finite)
            stats.train_accuracy_running = statistics.fmean(running[r] for r in finite)
            vals = stats.val_accuracy
            stats.val_accuracy = None if vals is None else statistics.fmean(vals[r] for r in finite)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats, ts)
        if world is None and stop_requested is not None:  # a signal during validation
            stop = stop_requested()
        if stop and ts.epoch < lead.epochs:
            result.interrupted = True
            return _finish(result, started, step, device)
    _final_evaluation(model, result, data, base_keys)
    result.peak_memory_bytes = peak_memory(device)
    return _finish(result, started, step, device)


def _finish(result: TrainResult, started: float, step: Callable, device: torch.device) -> TrainResult:
    if device.type == "cuda":
        # CUDA-graph outputs live in a pool the next replay of any graph may overwrite (another
        # model's, in ptm compare): the result must own its tensors
        result.train_state = snapshot(result.train_state)
    result.seconds = time.perf_counter() - started
    result.fallbacks = fallback_events(step)
    return result


def _zeros(members: bool, k: int, kind=float):
    return [kind(0)] * k if members else kind(0)


def _note_divergence(result: TrainResult, loss_sum: Tensor, epoch: int, last_good: TrainState) -> bool:
    """Record members whose loss turned NaN or infinite (with their last finite state).

    Members are independent under vmap, so the others train on; True once every member has
    diverged, with the run rolled back to `last_good`.
    """
    finite = torch.isfinite(loss_sum).reshape(-1).tolist()
    for r, ok in enumerate(finite):
        if not ok and r not in result.diverged:
            member = member_state(last_good, r, result.configs[r]) if result.members else last_good
            result.diverged[r] = (epoch, member)
    if len(result.diverged) < len(finite):
        return False
    result.train_state = last_good
    return True


def _member_views(ts: TrainState, members: bool, k: int):
    """(params, state) of each member (views into the stacked tensors)."""
    if not members:
        return [(ts.params, ts.state)]
    return [(unstack(ts.params, r), unstack(ts.state, r)) for r in range(k)]


def _validation(model, ts, data, configs, members, base_keys) -> float | list[float]:
    views = _member_views(ts, members, len(configs))
    keys = base_keys if members else base_keys.unsqueeze(0)
    accuracies = [
        validation_accuracy(model, params, state, data.val, c, key=validation_key(key, ts.epoch))
        for (params, state), c, key in zip(views, configs, keys, strict=True)
    ]
    return accuracies if members else accuracies[0]


def _final_evaluation(model: Model, result: TrainResult, data: Dataset, base_keys: Tensor) -> None:
    """Train and val accuracy of every member (the book's train-mode validate() with quirks)."""
    configs, members = result.configs, result.members
    views = _member_views(result.train_state, members, len(configs))
    for r, (_, last_finite) in result.diverged.items():  # judged by the weights they keep
        views[r] = (last_finite.params, last_finite.state)
    keys = base_keys if members else base_keys.unsqueeze(0)
    train, val, states = [], [], []
    for (params, state), config, key in zip(views, configs, keys, strict=True):
        if config.eval_train_mode:
            eval_key = rng.fold_in(key, -1)
            acc, state = evaluate_book_style(
                model, params, state, data.train, batch_size=config.batch_size, key=eval_key
            )
            train.append(acc)
            acc, state = evaluate_book_style(
                model, params, state, data.val, batch_size=config.batch_size, key=rng.fold_in(eval_key, 1)
            )
            val.append(acc)
        else:
            train.append(evaluate(model, params, state, data.train))
            val.append(evaluate(model, params, state, data.val))
        states.append(state)
    if configs[0].eval_train_mode:  # validate() updated the BN running stats
        result.train_state.state = stack(states) if members else states[0]
    result.train_accuracy = train if members else train[0]
    result.val_accuracy = val if members else val[0]


def fit_ensemble(
    model: Model, data: Dataset, config: TrainConfig, replicas: int, **kwargs: Any
) -> TrainResult:
    """`replicas` copies of one config, member r with seed config.seed + r, trained at once."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    return fit(model, data, [replace(config, seed=config.seed + r) for r in range(replicas)], **kwargs)


def peak_memory(device: torch.device) -> int:
    """Peak device memory on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def snapshot(ts: TrainState) -> TrainState:
    """A copy of `ts` that later steps cannot change (shared tensors stay shared)."""
    copies: dict[int, Tensor] = {}

    def copy(tree):
        if isinstance(tree, Tensor):
            return copies.setdefault(id(tree), tree.detach().clone())
        if isinstance(tree, dict):
            return {k: copy(v) for k, v in tree.items()}
        return type(tree)(*(copy(v) for v in tree))  # SGDState

    return replace(ts, params=copy(ts.params), state=copy(ts.state), opt_state=copy(ts.opt_state))


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
