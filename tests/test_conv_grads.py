"""The compiled CPU step's convolution with its bias gradient summed apart (nets/conv_grads.py)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from ptm_func.data.dataset import Dataset, Split
from ptm_func.nets import conv_grads, layers
from ptm_func.training import tuning
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit


def loss(w, b, x):
    return (layers.conv({"c.weight": w, "c.bias": b}, "c", x) ** 2).sum()


def traced(fn, *args):
    """fn compiled with AOT autograd's graph run eagerly; (its result, the graph's code)."""
    codes: list[str] = []

    def keep(gm, example_inputs):
        codes.append(gm.code)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    out = torch.compile(fn, backend=aot_autograd(fw_compiler=keep), fullgraph=True)(*args)
    return out, "\n".join(codes)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_split_bias_gives_conv2d_gradients_with_the_bias_summed_apart(layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, 12, 12, generator=gen).to(memory_format=layout)
    w, b = torch.randn(8, 16, 3, 3, generator=gen), torch.randn(8, generator=gen)
    grads = torch.func.grad(loss, argnums=(0, 1, 2))
    expected = grads(w, b, x)  # eager: F.conv2d's own backward
    with conv_grads.splitting_bias():
        got, code = traced(grads, w, b, x)
    assert "ptm_func.channel_sums" in code
    # oneDNN is asked for no bias gradient: every convolution_backward's output mask ends in False
    masks = re.findall(r"convolution_backward\.default\(.*\[(\w+), (\w+), (\w+)\]\)", code)
    assert masks == [("True", "True", "False")], masks  # x needs its gradient here (an argument)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


def test_outside_ptms_steps_a_traced_convolution_is_plain():
    """Off by default: a user's own torch.compile (say around a vmap) traces F.conv2d as it is."""
    w, b, x = torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(2, 3, 8, 8)
    got, code = traced(torch.func.grad(loss, argnums=(0, 1)), w, b, x)
    assert "channel_sums" not in code
    expected = torch.func.grad(loss, argnums=(0, 1))(w, b, x)
    assert all(torch.equal(o, t) for o, t in zip(got, expected, strict=True))


def test_channel_sums_batches_under_vmap():
    g = torch.randn(3, 5, 4, 6, 6)  # 3 members
    torch.testing.assert_close(torch.func.vmap(conv_grads.channel_sums)(g), g.sum((1, 3, 4)))
    torch.testing.assert_close(torch.func.vmap(conv_grads.channel_sums, in_dims=1)(g), g.sum((0, 3, 4)))


def random_data(n: int = 24) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, split, ("a", "b"), "random")


def test_a_compiled_cpu_step_splits_where_it_pays_and_vmapped_members_do_not(monkeypatch):
    """Forced on (it is on with AVX2 kernels): a single run's compiled step takes the split
    backward and agrees with the eager step; vmapped members, which dynamo cannot take through
    the autograd.Function, compile with F.conv2d's backward instead of falling back to eager."""
    monkeypatch.setattr(tuning, "splits_conv_bias", lambda device: device.type == "cpu")
    model, config = book_setup("net", epochs=1, batch_size=8, momentum=0.9)
    data = random_data()
    eager = fit(model, data, replace(config, compile=False))
    compiled, ops = profiled(fit, model, data, replace(config, compile=True))
    assert compiled.fallbacks == [] and "ptm_func::channel_sums" in ops
    for key in eager.params:
        torch.testing.assert_close(compiled.params[key], eager.params[key], rtol=1e-4, atol=1e-5, msg=key)
    configs = [replace(config, compile=True, members_vmap=True, seed=s) for s in (1, 2)]
    members, ops = profiled(fit, model, data, configs)
    assert members.fallbacks == [] and "ptm_func::channel_sums" not in ops


def profiled(fn, *args):
    """fn(*args) and the names of the ops it ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn(*args)
    return out, [event.name for event in prof.events()]
