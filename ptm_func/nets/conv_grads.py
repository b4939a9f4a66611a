"""A compiled CPU step's 3x3 convolution, whose backward sums the bias gradient apart.

Asked for the weight and bias gradients of Net's conv1, oneDNN's convolution backward takes
1.1-1.3 ms with AVX2 kernels; for the weight alone 0.41-0.52 ms, and ATen sums the bias
gradient in 0.1 ms (docs/measurements.md, "conv1's bias gradient"). So in a compiled CPU step
`layers.conv` runs through `ConvSplitBias`: the same forward (F.conv2d with its bias), and a
backward that asks oneDNN for no bias gradient.

The bias gradient is a custom op, opaque to inductor: left to inductor, the sum fused into the
pool's backward kernel as a slow two-pass reduction. The input and weight gradients are
F.conv2d's; the bias gradient sums in another order (float rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

_CONV3X3 = ((1, 1), (1, 1), (1, 1), False, (0, 0), 1)  # stride, padding, dilation, transposed, ...
# On only while ptm's own compiled CPU steps run (training.compiling): a step traced meanwhile
# takes the split backward, and dynamo guards on this flag. Off, e.g. for a user's own
# torch.compile around a vmap of a model, which dynamo cannot take through the Function.
_split_bias = False


@contextlib.contextmanager
def splitting_bias() -> Iterator[None]:
    """Within: a 3x3 convolution with a bias, traced for a CPU, sums its bias gradient apart."""
    global _split_bias
    before, _split_bias = _split_bias, True
    try:
        yield
    finally:
        _split_bias = before


def split_bias_on() -> bool:
    return _split_bias


@torch.library.custom_op("ptm_func::channel_sums", mutates_args=())
def channel_sums(g: Tensor) -> Tensor:
    """A convolution's bias gradient: g summed over all but the channels of (N, C, H, W)."""
    return g.sum((0, 2, 3))


@channel_sums.register_fake
def _(g: Tensor) -> Tensor:
    return g.new_empty(g.shape[1])


@channel_sums.register_vmap
def _(info, in_dims, g: Tensor):
    return g.movedim(in_dims[0], 0).sum((1, 3, 4)), 0


def _in_layout_of(g: Tensor, x: Tensor) -> Tensor:
    """g stored as x is: channels-last or contiguous (as a permuted contiguous copy, which vmap
    takes; `contiguous(memory_format=...)` it does not)."""
    if x.is_contiguous(memory_format=torch.channels_last):
        return g.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return g.contiguous()


class ConvSplitBias(torch.autograd.Function):
    """F.conv2d(x, w, b, padding=1); its backward asks oneDNN for the input's (where needed)
    and the weight's gradients, and channel_sums for the bias's."""

    generate_vmap_rule = True

    @staticmethod
    def forward(w: Tensor, b: Tensor, x: Tensor) -> Tensor:
        return F.conv2d(x, w, b, padding=1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        w, _, x = inputs
        ctx.save_for_backward(w, x)

    @staticmethod
    def backward(ctx, g: Tensor):  # pyright: ignore[reportIncompatibleMethodOverride]
        w, x = ctx.saved_tensors
        input_grad = bool(ctx.needs_input_grad[2])
        # the gradient in the input's layout, as oneDNN wants it: stored so by the kernel that
        # makes it (else oneDNN converts it, 0.6 ms for conv1's, and the pool's backward slows)
        g = _in_layout_of(g, x)
        gx, gw, _ = torch.ops.aten.convolution_backward(g, x, w, None, *_CONV3X3, (input_grad, True, False))
        return gw, channel_sums(g), gx


def conv3x3_split_bias(w: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """ConvSplitBias.apply, for a step being compiled. Dynamo sees a tensor that torch.func.grad
    differentiates by (a parameter, or x when it is an argument) as needing no gradient, and would
    then skip the Function's backward or give x none; a view of it it sees right."""
    return ConvSplitBias.apply(w.view(w.shape), b.view(b.shape), x.view(x.shape))  # pyright: ignore[reportReturnType]
