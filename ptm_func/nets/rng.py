"""Explicit, counter-based randomness: JAX-style keys as plain int64 tensors.

A key is a 0-d int64 tensor holding a 32-bit value. Random bits are a pure hash of
(key, element index), so the same key gives the same numbers in eager, compiled and
vmapped code, on any device. Derive per-step / per-layer keys with `fold_in`.
"""

from __future__ import annotations

import torch
from torch import Tensor

KeyLike = int | Tensor

_MASK32 = 0xFFFFFFFF
# Multiplier of a well-known 32-bit integer hash; < 2**31 so products of 32-bit values
# stay inside int64 without overflow.
_MIX = 0x45D9F3B
_GOLDEN = 0x9E3779B9


def _mix32(x: Tensor) -> Tensor:
    """Hash int64 values in [0, 2**32) to int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    return x ^ (x >> 16)


def key(seed: KeyLike, device: torch.device | str | None = None) -> Tensor:
    """Make a key from an int seed (or pass a key through, moved to `device`)."""
    if isinstance(seed, Tensor):
        if seed.dtype != torch.int64:
            raise TypeError(f"a key must be an int64 tensor, got {seed.dtype}")
        return seed if device is None else seed.to(device)
    return _mix32(torch.tensor(int(seed) & _MASK32, dtype=torch.int64, device=device))


def fold_in(k: KeyLike, data: int | Tensor) -> Tensor:
    """Derive a new key from `k` and an integer (a step, a layer index, a replica)."""
    k = key(k)
    if not isinstance(data, Tensor):
        data = torch.tensor(int(data) & _MASK32, dtype=torch.int64, device=k.device)
    return _mix32(k ^ _mix32((data.to(torch.int64) + _GOLDEN) & _MASK32))


def split(k: KeyLike, n: int) -> Tensor:
    """Return `n` independent keys derived from `k`, stacked as an int64 tensor of shape (n,)."""
    k = key(k)
    return fold_in(k, torch.arange(n, dtype=torch.int64, device=k.device))


def random_bits(k: KeyLike, shape: tuple[int, ...]) -> Tensor:
    """Return int64 values uniform in [0, 2**32) of the given shape, a pure function of `k`.

    A batch of keys (shape S) gives one independent draw per key: shape S + `shape`.
    """
    k = key(k)
    numel = 1
    for size in shape:
        numel *= size
    counter = torch.arange(numel, dtype=torch.int64, device=k.device)
    return _mix32(_mix32(counter) ^ k.unsqueeze(-1)).reshape(*k.shape, *shape)


def uniform(k: KeyLike, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Return floats uniform in [0, 1) of the given shape (24 random bits each); per key if batched."""
    return (random_bits(k, shape) >> 8).to(dtype) * (1.0 / (1 << 24))
