"""Section 8.2's convolution experiments on one image, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ptm_func.nets.layers import init_conv


def conv_experiments(image: Tensor, seed: int = 0) -> list[tuple[str, Tensor, str, Tensor]]:
    """Return (input title, input, output title, output) grey panels for a (3, H, W) image.

    A random 3x3 conv (3 -> 1 channel) without and with padding, the 1/9 blur kernel, the
    vertical-edge kernel [[-1, 0, 1]] x 3, and 2x2 max-pooling, as in the book. Every panel
    shares one input (its channels' mean): `plot.image_grid` draws it once.
    """
    x = image.unsqueeze(0)  # (3, H, W) -> (1, 3, H, W)
    grey = image.mean(0)
    h, w = grey.shape
    params = init_conv(torch.Generator().manual_seed(seed), "conv", 3, 1)
    weight, bias = params["conv.weight"], params["conv.bias"]
    no_pad = F.conv2d(x, weight, bias)[0, 0]
    padded = F.conv2d(x, weight, bias, padding=1)[0, 0]
    blur = F.conv2d(x, torch.full((1, 3, 3, 3), 1.0 / 9.0), torch.zeros(1), padding=1)[0, 0]
    edge_kernel = torch.tensor([[-1.0, 0.0, 1.0]] * 3).expand(1, 3, 3, 3)
    edge = F.conv2d(x, edge_kernel, torch.zeros(1), padding=1)[0, 0]
    pooled = F.max_pool2d(x, 2)[0].mean(0)
    shown = f"input: {h}x{w} (mean of RGB)"
    return [
        (shown, grey, f"random 3x3 conv, no padding: {no_pad.shape[0]}x{no_pad.shape[1]}", no_pad),
        (shown, grey, f"same conv, padding=1: {padded.shape[0]}x{padded.shape[1]}", padded),
        (shown, grey, "blur: every weight 1/9", blur),
        (shown, grey, "vertical edges: [[-1, 0, 1]] x 3", edge),
        (shown, grey, f"max-pool 2x2: {pooled.shape[0]}x{pooled.shape[1]}", pooled),
    ]


def conv_title(which: str) -> str:
    """The demo's title, naming the image it ran on (`training image 3 (bird) of bundled`)."""
    return f"section 8.2's convolutions on {which}"
