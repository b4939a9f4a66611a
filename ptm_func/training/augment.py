"""Data augmentation inside the train step: random horizontal flips and 4-pixel-padded crops.

Whole batches on the batch's device, as tensor ops (no per-image Python), so the step compiles
and vmaps with it. Each image's flip and crop are a pure function of its own key - the
step's per-sample key of (seed, step, position in the global batch), the same key its dropout
masks come from - so a run resumes bit for bit, its images do not depend on how `--nproc`
splits the batch, and compiled, eager and vmapped runs see the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ptm_func.catalog import AUGMENTATIONS
from ptm_func.nets import rng

CROP_PADDING = 4  # reflect-padded 32x32 -> 40x40, cropped back to 32x32 at one of 9 x 9 offsets
# Streams of the per-sample key: dropout folds in its layer index (0, 1); these stay clear of it.
FLIP_STREAM = 0x666C6970  # "flip"
CROP_STREAM = 0x63726F70  # "crop"


def check_augmentations(names: Sequence[str]) -> tuple[str, ...]:
    """The augmentations in canonical order (flip, crop), or ValueError naming an unknown one."""
    names = tuple(names)
    if "none" in names:  # the CLI's word for no augmentation, alone
        raise ValueError("augmentation 'none' means no augmentation: give it alone")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # as for classes: a repeated name is a mistake, not a stronger augmentation
        raise ValueError(f"augmentation {twice[0]!r} given twice")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from: {', '.join(AUGMENTATIONS)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def augment(images: Tensor, keys: Tensor, names: Sequence[str]) -> Tensor:
    """Flip and/or crop each NCHW image by its own key (`keys`: (N,), or one key for the batch).

    flip: mirror left-right with probability 1/2. crop: reflect-pad by CROP_PADDING and cut a
    same-size window at a uniformly random offset. Nothing asked: `images` itself.
    """
    if not names:
        return images
    n, _, height, width = images.shape
    if keys.dim() == 0:  # one key for the batch: a key per image from it
        keys = rng.fold_in(keys, torch.arange(n, device=images.device))
    rows = torch.arange(height, device=images.device).expand(n, height)  # (N, H)
    cols = torch.arange(width, device=images.device).expand(n, width)  # (N, W)
    source = images
    if "crop" in names:
        offsets = rng.random_bits(rng.fold_in(keys, CROP_STREAM), (2,)) % (2 * CROP_PADDING + 1)  # (N, 2)
        rows = rows + offsets[:, :1]
        cols = cols + offsets[:, 1:]
        pad = (CROP_PADDING,) * 4
        source = F.pad(images, pad, mode="reflect")  # (N, C, H + 8, W + 8)
    if "flip" in names:
        flipped = (rng.random_bits(rng.fold_in(keys, FLIP_STREAM), ()) & 1).bool()  # (N,)
        cols = torch.where(flipped.unsqueeze(-1), cols.flip(-1), cols)
    channels, padded_width = source.shape[1], source.shape[3]
    # pick rows, then columns: (N, C, H+8, W+8) -> (N, C, H, W+8) -> (N, C, H, W)
    out = source.gather(2, rows[:, None, :, None].expand(n, channels, height, padded_width))
    return out.gather(3, cols[:, None, None, :].expand(n, channels, height, width))
