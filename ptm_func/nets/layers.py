"""Pure layers over explicit tensors: initialisers, batch norm with returned stats, keyed dropout.

Initialisers reproduce torch.nn's default schemes and draw from an explicit generator in
the same order as the nn.Module constructors, so `init(seed)` equals the module built after
`torch.manual_seed(seed)`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ptm_func.nets import rng
from ptm_func.nets.conv_grads import conv3x3_split_bias, split_bias_on

Params = dict[str, Tensor]
State = dict[str, Tensor]

BN_MOMENTUM = 0.1
BN_EPS = 1e-5
# state_dict entries that are carried state (BN buffers), not differentiated params
STATE_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def init_conv(
    gen: torch.Generator, prefix: str, c_in: int, c_out: int, k: int = 3, *, bias: bool = True
) -> Params:
    """Init a Conv2d's weight (and bias) as torch.nn.Conv2d.reset_parameters does."""
    weight = torch.empty(c_out, c_in, k, k)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    params = {f"{prefix}.weight": weight}
    if bias:
        bound = 1.0 / math.sqrt(c_in * k * k)
        params[f"{prefix}.bias"] = torch.empty(c_out).uniform_(-bound, bound, generator=gen)
    return params


def init_linear(gen: torch.Generator, prefix: str, d_in: int, d_out: int) -> Params:
    """Init a Linear layer as torch.nn.Linear.reset_parameters does."""
    weight = torch.empty(d_out, d_in)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    bound = 1.0 / math.sqrt(d_in)
    bias = torch.empty(d_out).uniform_(-bound, bound, generator=gen)
    return {f"{prefix}.weight": weight, f"{prefix}.bias": bias}


def init_batch_norm(prefix: str, channels: int, *, weight: float = 1.0) -> tuple[Params, State]:
    """Init BatchNorm2d affine params and running stats (torch's defaults)."""
    params = {
        f"{prefix}.weight": torch.full((channels,), weight),
        f"{prefix}.bias": torch.zeros(channels),
    }
    state = {
        f"{prefix}.running_mean": torch.zeros(channels),
        f"{prefix}.running_var": torch.ones(channels),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.int64),
    }
    return params, state


def conv(params: Params, prefix: str, x: Tensor) -> Tensor:
    """Apply a 3x3, padding-1 convolution (the only kind chapter 8 uses).

    In ptm's compiled CPU steps one with a bias runs through conv_grads.ConvSplitBias: the same
    forward, a backward that sums the bias gradient apart from oneDNN's (faster; the bias
    gradient then rounds differently)."""
    weight, bias = params[f"{prefix}.weight"], params.get(f"{prefix}.bias")
    if bias is not None and x.device.type == "cpu" and torch.compiler.is_compiling() and split_bias_on():
        return conv3x3_split_bias(weight, bias, x)
    return F.conv2d(x, weight, bias, padding=1)


def max_pool2(x: Tensor) -> Tensor:
    """F.max_pool2d(x, 2), bitwise; traced for a compiled CPU step, as four strided slices
    taken in turn the way PyTorch's CPU kernel scans each window.

    Same values and gradients: the CPU kernel keeps a window's first maximum, row by row
    (`val > best or isnan(val)`), and each `where` below passes the gradient to the element it
    kept, as the kernel's saved index does. Inductor fuses the selects with the activation
    and its backward, where max_pool2d's backward there is a scatter through int64 indices
    (zero-filled, then added to): 1.5 of 6.2 ms of Net's step on an AVX2 CPU. An odd last row
    or column is dropped, as max_pool2d's floor does, so every size takes the selects (torch
    2.14.1's compiled max_pool2d backward fails in Net's step with AVX2 kernels).
    """
    if not (torch.compiler.is_compiling() and x.device.type == "cpu") or min(x.shape[-2:]) < 2:
        return F.max_pool2d(x, 2)  # and below 2x2, max_pool2d's own error
    # an odd last row or column is dropped by each strided slice (bounded): cropping first, then
    # slicing, made inductor leave the dropped row's gradient unwritten with AVX2 kernels
    rows = x.shape[-2] // 2 * 2 if x.shape[-2] % 2 else None  # None: an even size's graph as before
    cols = x.shape[-1] // 2 * 2 if x.shape[-1] % 2 else None
    best = x[..., 0:rows:2, 0:cols:2]
    for row, col in ((0, 1), (1, 0), (1, 1)):
        val = x[..., row:rows:2, col:cols:2]
        best = torch.where((val > best) | (val != val), val, best)  # val != val: NaN, vectorised
    return best


_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
# dtypes whose selects keep every bit max_pool2d gives (bfloat16's kernel rewrites NaN's bits)
_SELECT_DTYPES = (torch.float32, torch.float64, torch.float16)


def _is_ints(value: Any, want: int) -> bool:
    """Is `value` the int `want`, or a pair of them (no floats, bools or tensors: eager's errors)?"""
    if isinstance(value, (tuple, list)):
        items = list(cast(Iterable[Any], value))
        return len(items) == 2 and all(type(v) is int and v == want for v in items)
    return type(value) is int and value == want


def is_plain_2x2_pool(args: tuple[Any, ...], kwargs: dict[str, Any], *, names: int = 7) -> bool:
    """Are max_pool2d's arguments (its first `names` parameters) a 2x2, stride-2 pool, with no
    padding, dilation or ceil mode, of a contiguous or channels-last float tensor that eager
    pools without an error? Anything else keeps max_pool2d, and its errors."""
    known = _POOL_ARGS[:names]
    if len(args) > len(known) or any(name not in known for name in kwargs):
        return False
    given: dict[str, Any] = {**dict(zip(known, args, strict=False)), **kwargs}
    x, stride = given.get("input"), given.get("stride")
    return (
        isinstance(x, Tensor)
        and x.dim() in (3, 4)
        and x.dtype in _SELECT_DTYPES
        and x.shape[-3] > 0  # no channels: max_pool2d's error
        and (x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)))
        and _is_ints(given.get("kernel_size"), 2)
        and (stride is None or (isinstance(stride, (tuple, list)) and not stride) or _is_ints(stride, 2))
        and _is_ints(given.get("padding", 0), 0)
        and _is_ints(given.get("dilation", 1), 1)
        and given.get("ceil_mode", False) is False
        and given.get("return_indices", False) is False
    )


class PoolsAsSelects(TorchFunctionMode):
    """Route a module's plain 2x2 max-pools (F.max_pool2d, torch.max_pool2d, nn.MaxPool2d) to
    max_pool2.

    Entered inside a compiled CPU step (dynamo traces the mode), so a model of one's own gets
    the selects the book's models use: bitwise the same values and gradients, fused with the
    activation; and torch 2.14.1's compiled max_pool2d backward, which fails with AVX2 kernels
    on a Net-sized model, does not run for them. Other calls pass through unchanged
    (is_plain_2x2_pool), as do pools of inputs dynamo sees in another layout (under vmap).
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        names = 7 if func is F.max_pool2d else 6 if func is torch.max_pool2d else 0
        if names and is_plain_2x2_pool(args, kwargs, names=names):
            return max_pool2(args[0] if args else kwargs["input"])
        return func(*args, **kwargs)


def pools_as_selects(x: Tensor) -> contextlib.AbstractContextManager[Any]:
    """PoolsAsSelects while a CPU step is being compiled; else nothing (no cost in eager)."""
    if torch.compiler.is_compiling() and x.device.type == "cpu":
        return PoolsAsSelects()
    return contextlib.nullcontext()


def linear(params: Params, prefix: str, x: Tensor) -> Tensor:
    """Apply a fully connected layer."""
    return F.linear(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"])


def flatten(x: Tensor) -> Tensor:
    """Flatten NCHW features in the order of the book's `.view(-1, C*H*W)`."""
    return rearrange(x, "n c h w -> n (c h w)")


def batch_norm(params: Params, state: State, prefix: str, x: Tensor, *, train: bool) -> tuple[Tensor, State]:
    """Normalise NCHW `x`; in training, return updated running stats instead of mutating.

    Follows torch.nn.BatchNorm2d: batch statistics with the biased variance for the output,
    running_mean/var <- (1 - 0.1) * old + 0.1 * new with the *unbiased* batch variance,
    num_batches_tracked += 1, eps 1e-5. With train=False the running stats normalise.
    """
    weight, bias = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
    mean_key, var_key = f"{prefix}.running_mean", f"{prefix}.running_var"
    count_key = f"{prefix}.num_batches_tracked"
    if not train:
        y = F.batch_norm(x, state[mean_key], state[var_key], weight, bias, False, 0.0, BN_EPS)
        return y, {k: state[k] for k in (mean_key, var_key, count_key)}

    # The fused kernel, given no running stats, mutates nothing and returns the batch mean
    # and 1/sqrt(var + eps), from which the running stats follow without another reduction.
    y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, BN_EPS)
    n = x.numel() // x.shape[1]
    var = (invstd.detach().pow(-2) - BN_EPS) * (n / max(n - 1, 1))  # unbiased, as torch keeps it
    new_state = {
        mean_key: (1 - BN_MOMENTUM) * state[mean_key] + BN_MOMENTUM * mean.detach(),
        var_key: (1 - BN_MOMENTUM) * state[var_key] + BN_MOMENTUM * var,
        count_key: state[count_key] + 1,
    }
    return y, new_state


def dropout2d(x: Tensor, p: float, *, train: bool, key: rng.KeyLike | None) -> Tensor:
    """Zero whole NCHW channels with probability `p` (scaled by 1/(1-p)) when training.

    The mask is a pure function of `key`: one key for the batch, or one key per sample (N,),
    so that a sample's mask does not depend on the batch it is in (data-parallel shards);
    training without a key raises.
    """
    if not train or p == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training mode needs an explicit `key` (or seed)")
    key = rng.key(key, x.device)
    if key.dim() == 1 and key.shape[0] != x.shape[0]:
        raise ValueError(f"{key.shape[0]} per-sample keys for a batch of {x.shape[0]}")
    shape = (x.shape[1], 1, 1) if key.dim() == 1 else (x.shape[0], x.shape[1], 1, 1)
    keep = rng.uniform(key, shape, dtype=x.dtype) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


def tensor_sum(tensors: Iterable[Tensor]) -> Tensor:
    """Python's `sum` of tensors (0 + a + b + ..., the book's order of adds), typed as a tensor."""
    return cast(Tensor, sum(tensors))
