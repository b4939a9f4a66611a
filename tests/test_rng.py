"""Counter-based keys: pure, reproducible, independent."""

import torch
from torch.func import vmap

from ptm_func.nets import rng


def test_same_key_same_bits_different_keys_differ():
    a = rng.random_bits(rng.key(0), (1000,))
    assert torch.equal(a, rng.random_bits(rng.key(0), (1000,)))
    assert (a != rng.random_bits(rng.key(1), (1000,))).float().mean() > 0.99
    assert a.min() >= 0 and a.max() < 2**32


def test_uniform_moments():
    u = rng.uniform(rng.key(123), (100_000,))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert abs(u.var().item() - 1 / 12) < 0.002


def test_fold_in_and_split_give_distinct_keys():
    keys = rng.split(rng.key(5), 64)
    assert keys.shape == (64,) and len(set(keys.tolist())) == 64
    assert torch.equal(keys[3], rng.fold_in(rng.key(5), 3))
    assert int(rng.fold_in(0, 1)) != int(rng.fold_in(1, 0))


def test_vmap_over_keys_matches_a_loop():
    keys = rng.split(rng.key(9), 4)
    batched = vmap(lambda k: rng.uniform(k, (3, 5)))(keys)
    looped = torch.stack([rng.uniform(k, (3, 5)) for k in keys])
    assert torch.equal(batched, looped)
