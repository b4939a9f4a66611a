"""The chapter-8 networks as pure functions.

Each model is an `init_*(gen, ...) -> (params, state)` and an
`apply_*(params, state, x, *, train, key=None) -> (logits, new_state)`. Keys are the book
module's state_dict keys, so `{**params, **state}` is a state_dict of its nn.Module twin.
Inputs are NCHW float batches of 3x32x32 images; logits are (N, n_classes): the book's 2
(airplane, bird) by default, any count >= 2 for more classes (only fc2 changes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ptm_func.nets import rng
from ptm_func.nets.layers import (
    Params,
    State,
    batch_norm,
    conv,
    dropout2d,
    flatten,
    init_batch_norm,
    init_conv,
    init_linear,
    linear,
    max_pool2,
)

DROPOUT_P = 0.4


def _head(params: Params, features: Tensor, act) -> Tensor:
    """fc1 -> act -> fc2 over flattened NCHW features (the end of every chapter-8 net)."""
    return linear(params, "fc2", act(linear(params, "fc1", flatten(features))))


def _init_two_conv(gen: torch.Generator, n_chans1: int, n_classes: int) -> Params:
    """conv1, conv2, fc1, fc2 of the Net / NetWidth family, in constructor order."""
    return {
        **init_conv(gen, "conv1", 3, n_chans1),
        **init_conv(gen, "conv2", n_chans1, n_chans1 // 2),
        **init_linear(gen, "fc1", 8 * 8 * (n_chans1 // 2), 32),
        **init_linear(gen, "fc2", 32, n_classes),
    }


# --- Net (n_chans1=16, conv2 8 channels) and NetWidth ------------------------------------


def init_width(gen: torch.Generator, n_chans1: int = 32, n_classes: int = 2) -> tuple[Params, State]:
    """Init NetWidth (Net is NetWidth with n_chans1=16)."""
    return _init_two_conv(gen, n_chans1, n_classes), {}


def apply_width(params: Params, state: State, x: Tensor, *, train: bool, key=None):
    """conv-tanh-pool twice, then fc1-tanh-fc2 (Net and NetWidth)."""
    out = max_pool2(torch.tanh(conv(params, "conv1", x)))
    out = max_pool2(torch.tanh(conv(params, "conv2", out)))
    return _head(params, out, torch.tanh), state


# --- NetDropout -----------------------------------------------------------------------------


def apply_dropout(params: Params, state: State, x: Tensor, *, train: bool, key=None):
    """NetWidth with Dropout2d(p=0.4) after each pool; layer i's mask uses fold_in(key, i)."""
    if train and key is None:
        raise ValueError("NetDropout in training mode needs an explicit `key` (or seed)")
    k1 = rng.fold_in(key, 0) if train and key is not None else None
    k2 = rng.fold_in(key, 1) if train and key is not None else None
    out = max_pool2(torch.tanh(conv(params, "conv1", x)))
    out = dropout2d(out, DROPOUT_P, train=train, key=k1)
    out = max_pool2(torch.tanh(conv(params, "conv2", out)))
    out = dropout2d(out, DROPOUT_P, train=train, key=k2)
    return _head(params, out, torch.tanh), state


# --- NetBatchNorm ---------------------------------------------------------------------------


def init_batchnorm(gen: torch.Generator, n_chans1: int = 32, n_classes: int = 2) -> tuple[Params, State]:
    """Init NetBatchNorm: NetWidth plus BatchNorm2d after each conv."""
    p1, s1 = init_batch_norm("conv1_batchnorm", n_chans1)
    p2, s2 = init_batch_norm("conv2_batchnorm", n_chans1 // 2)
    params = {
        **init_conv(gen, "conv1", 3, n_chans1),
        **p1,
        **init_conv(gen, "conv2", n_chans1, n_chans1 // 2),
        **p2,
        **init_linear(gen, "fc1", 8 * 8 * (n_chans1 // 2), 32),
        **init_linear(gen, "fc2", 32, n_classes),
    }
    return params, {**s1, **s2}


def apply_batchnorm(params: Params, state: State, x: Tensor, *, train: bool, key=None):
    """conv-BN-tanh-pool twice, then the head; returns the updated BN running stats."""
    out, s1 = batch_norm(params, state, "conv1_batchnorm", conv(params, "conv1", x), train=train)
    out = max_pool2(torch.tanh(out))
    out, s2 = batch_norm(params, state, "conv2_batchnorm", conv(params, "conv2", out), train=train)
    out = max_pool2(torch.tanh(out))
    return _head(params, out, torch.tanh), {**s1, **s2}


# --- NetDepth and NetRes --------------------------------------------------------------------


def init_depth(gen: torch.Generator, n_chans1: int = 32, n_classes: int = 2) -> tuple[Params, State]:
    """Init NetDepth / NetRes: three convs, fc1 over 4x4 maps, fc2."""
    params = {
        **init_conv(gen, "conv1", 3, n_chans1),
        **init_conv(gen, "conv2", n_chans1, n_chans1 // 2),
        **init_conv(gen, "conv3", n_chans1 // 2, n_chans1 // 2),
        **init_linear(gen, "fc1", 4 * 4 * (n_chans1 // 2), 32),
        **init_linear(gen, "fc2", 32, n_classes),
    }
    return params, {}


def apply_depth(params: Params, state: State, x: Tensor, *, train: bool, key=None):
    """Three conv-relu-pool stages, then fc1-relu-fc2."""
    out = max_pool2(torch.relu(conv(params, "conv1", x)))
    out = max_pool2(torch.relu(conv(params, "conv2", out)))
    out = max_pool2(torch.relu(conv(params, "conv3", out)))
    return _head(params, out, torch.relu), state


def apply_res(params: Params, state: State, x: Tensor, *, train: bool, key=None):
    """NetDepth with a skip connection around conv3."""
    out = max_pool2(torch.relu(conv(params, "conv1", x)))
    out = max_pool2(torch.relu(conv(params, "conv2", out)))
    out = max_pool2(torch.relu(conv(params, "conv3", out)) + out)
    return _head(params, out, torch.relu), state


# --- NetResDeep -----------------------------------------------------------------------------


def init_res_block(gen: torch.Generator, prefix: str, n_chans: int) -> tuple[Params, State]:
    """Init a ResBlock as the book does: kaiming_normal_(relu) conv, BN weight 0.5, bias 0."""
    params = init_conv(gen, f"{prefix}.conv", n_chans, n_chans, bias=False)
    # The book's constructor re-initialises the default-initialised weight.
    torch.nn.init.kaiming_normal_(params[f"{prefix}.conv.weight"], nonlinearity="relu", generator=gen)
    bn_params, bn_state = init_batch_norm(f"{prefix}.batch_norm", n_chans, weight=0.5)
    return {**params, **bn_params}, bn_state


def apply_res_block(
    params: Params, state: State, prefix: str, x: Tensor, *, train: bool
) -> tuple[Tensor, State]:
    """relu(BN(conv(x))) + x, returning the block's updated BN state."""
    out, new_state = batch_norm(
        params, state, f"{prefix}.batch_norm", conv(params, f"{prefix}.conv", x), train=train
    )
    return torch.relu(out) + x, new_state


def resdeep_aliases(n_blocks: int, tied: bool) -> dict[str, str]:
    """Map each tied block's keys to block 0's (empty when blocks are independent)."""
    if not tied:
        return {}
    suffixes = (
        "conv.weight",
        "batch_norm.weight",
        "batch_norm.bias",
        "batch_norm.running_mean",
        "batch_norm.running_var",
        "batch_norm.num_batches_tracked",
    )
    return {f"resblocks.{i}.{s}": f"resblocks.0.{s}" for i in range(1, n_blocks) for s in suffixes}


def init_resdeep(
    gen: torch.Generator, n_chans1: int = 32, n_blocks: int = 100, tied: bool = False, n_classes: int = 2
) -> tuple[Params, State]:
    """Init NetResDeep; with tied=True every block's keys hold block 0's tensors."""
    params = init_conv(gen, "conv1", 3, n_chans1)
    state: State = {}
    blocks = [init_res_block(gen, f"resblocks.{i}", n_chans1) for i in range(1 if tied else n_blocks)]
    for block_params, block_state in blocks:
        params |= block_params
        state |= block_state
    if tied:  # the book's one shared block, listed under every index
        for i in range(1, n_blocks):
            params |= _rename_block(blocks[0][0], i)
            state |= _rename_block(blocks[0][1], i)
    params |= init_linear(gen, "fc1", 8 * 8 * n_chans1, 32)
    params |= init_linear(gen, "fc2", 32, n_classes)
    return params, state


def _rename_block(tensors: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    """Re-key `resblocks.0.*` entries as `resblocks.i.*` (same tensors)."""
    return {k.replace("resblocks.0.", f"resblocks.{i}.", 1): v for k, v in tensors.items()}


def apply_resdeep(
    params: Params,
    state: State,
    x: Tensor,
    *,
    train: bool,
    key=None,
    n_blocks: int = 100,
    tied: bool = False,
):
    """conv1-relu-pool, n_blocks ResBlocks, pool, fc1-relu-fc2.

    tied=False (default): block i uses `resblocks.i.*` (the fix from dlwpt-code #89).
    tied=True: the book exactly - block 0's weights and BN run n_blocks times per forward,
    so its running stats update n_blocks times; the returned state repeats them under
    every `resblocks.i.*` key.
    """
    out = max_pool2(torch.relu(conv(params, "conv1", x)))
    new_state: State = {}
    block_state = state
    for i in range(n_blocks):
        prefix = "resblocks.0" if tied else f"resblocks.{i}"
        out, block_new = apply_res_block(params, block_state, prefix, out, train=train)
        if tied:
            block_state = block_new
        new_state |= block_new
    out = max_pool2(out)
    return _head(params, out, torch.relu), retie(new_state, resdeep_aliases(n_blocks, tied))


def retie(tensors: dict[str, Tensor], aliases: dict[str, str]) -> dict[str, Tensor]:
    """Point every alias key at its canonical key's tensor (keys absent from `tensors` skipped)."""
    if not aliases:
        return tensors
    out = dict(tensors)
    for alias, canonical in aliases.items():
        if canonical in tensors:
            out[alias] = tensors[canonical]
    return out
