"""layers.max_pool2 as a compiled CPU step traces it, against F.max_pool2d (the oracle): the
same values and the same gradients, bit for bit, ties and NaN included; and a module of one's
own, whose plain 2x2 pools a compiled CPU step routes to it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptm_func.nets.layers import is_plain_2x2_pool, max_pool2
from ptm_func.nets.user import model_from_module
from ptm_func.training import tuning


def pool_and_gradient(pool, x, grad_out):
    """pool(x) and the gradient that `grad_out` sends back to x."""
    x = x.detach().requires_grad_(True)
    out = pool(x)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return out, grad


def hard_inputs(layout):
    """Windows with ties (relu's zeros, tanh saturated at exactly 1.0), NaN and -inf."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 8, 12, 10, generator=gen)
    x[0] = torch.relu(x[0])  # many windows of zeros, and zero ties with a positive
    x[1] = torch.tanh(x[1] * 50)  # +-1.0 ties
    x[2, :, :4, :4] = 0.25  # whole windows equal
    x[3, 0, 0, 1] = float("nan")
    x[3, 1, 1, 1] = float("nan")
    x[3, 1, 1, 0] = float("nan")  # two NaN in one window: the kernel keeps the last
    x[3, 2, 2:4, 2:4] = float("-inf")
    return x.contiguous(memory_format=layout)


@pytest.mark.parametrize("size", [(12, 10), (11, 9), (3, 2)], ids=["even", "odd", "small"])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_compiled_max_pool2_is_max_pool2d_bitwise(layout, size):
    x = hard_inputs(layout)[..., : size[0], : size[1]]  # odd: max_pool2d drops the last row, column
    grad_out = torch.randn(4, 8, size[0] // 2, size[1] // 2, generator=torch.Generator().manual_seed(6))
    want_out, want_grad = pool_and_gradient(lambda t: F.max_pool2d(t, 2), x, grad_out)
    # inductor as ptm's compiled CPU steps run it (tuning.compile_options: 256-bit kernels on
    # AVX-512 CPUs, where 512-bit ones overflow a buffer in torch 2.14.1)
    options = tuning.compile_options(torch.device("cpu"), "default")
    compiled = torch.compile(lambda t, g: pool_and_gradient(max_pool2, t, g), dynamic=False, options=options)
    out, grad = compiled(x, grad_out)
    torch.testing.assert_close(out, want_out, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=0, equal_nan=True)
    assert out.isnan().sum() == want_out.isnan().sum() and (grad != 0).sum() == want_grad.ne(0).sum()
    if size == (12, 10):
        assert out.isnan().sum() == 2  # the NaN windows are in the test


def test_eager_runs_max_pool2d_and_below_2x2_its_error():
    x = torch.randn(2, 3, 7, 9)
    torch.testing.assert_close(max_pool2(x), F.max_pool2d(x, 2), rtol=0, atol=0)
    compiled = torch.compile(max_pool2, dynamic=False)
    with pytest.raises(Exception, match="too small"):
        compiled(torch.randn(2, 3, 1, 4))


class PoolNet(nn.Module):
    """Every way a module of one's own pools: F.max_pool2d, nn.MaxPool2d, tuples, torch.max_pool2d,
    and a 3x3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.conv(x)), 2)  # 32 -> 16
        x = self.pool(x)  # 16 -> 8
        x = F.max_pool2d(x, 3, stride=1, padding=1)  # not a plain 2x2: max_pool2d itself
        x = F.max_pool2d(x, kernel_size=(2, 2), stride=[2, 2])  # 8 -> 4
        x = torch.max_pool2d(x.repeat(1, 1, 2, 2), 2)  # 8 -> 4, as the book's own code writes it
        return self.fc(x.flatten(1))


def graph_calls(gm: torch.fx.GraphModule) -> list:
    """The functions a dynamo graph calls, its nested graphs (torch.func.grad's body) included."""
    return [n.target for m in gm.modules() if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes]


def test_a_user_module_s_2x2_pools_take_the_selects_when_a_cpu_step_compiles():
    model = model_from_module(PoolNet, name="PoolNet")
    params, state = model.init(torch.Generator().manual_seed(0))
    x = hard_inputs(torch.channels_last).repeat(1, 1, 3, 4)[:, :3, :32, :32].nan_to_num(0.0, 0.0, -9.0)
    x = x.contiguous(memory_format=torch.channels_last)  # NaN would make every gradient NaN

    def loss(p, x):
        return model.apply(p, state, x, train=True)[0].square().sum()

    calls = []

    def capture(gm, example_inputs):  # dynamo's graph, run as it is (no inductor rounding)
        calls.extend(graph_calls(gm))
        return gm.forward

    got = torch.compile(torch.func.grad(loss), backend=capture, dynamic=False)(params, x)
    want = torch.func.grad(loss)(params, x)  # eager: max_pool2d's own kernel every time
    assert calls.count(F.max_pool2d) == 1  # the 3x3 one; the four 2x2 pools are selects
    assert calls.count(torch.max_pool2d) == 0 and calls.count(torch.where) == 12
    for name in want:
        assert want[name].isfinite().all() and want[name].abs().sum() > 0
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


@pytest.mark.parametrize(
    "args, kwargs, plain",
    [
        ((2,), {}, True),
        ((), {"kernel_size": 2, "stride": None}, True),
        (((2, 2), [2, 2], 0, 1, False, False), {}, True),
        ((torch.Size([2, 2]), []), {}, True),
        ((2, 1), {}, False),
        ((2,), {"padding": 1}, False),
        ((2,), {"ceil_mode": True}, False),
        ((2,), {"return_indices": True}, False),
        ((2,), {"dilation": 2}, False),
        ((3,), {}, False),
        # eager refuses these: max_pool2d must run and say so
        ((2,), {"stride": 0}, False),
        ((2.0,), {}, False),
        (((2.0, 2.0),), {}, False),
        ((2,), {"stride": 2.0}, False),
        ((2,), {"padding": False}, False),
        ((2,), {"dilation": True}, False),
        ((2,), {"ceil_mode": None}, False),
        ((2,), {"ceil_mode": 0}, False),
        ((2,), {"foo": 1}, False),
        ((torch.tensor(2),), {}, False),
        ((2, 2, 0, 1, False, False, None), {}, False),  # one argument too many
    ],
)
def test_only_plain_2x2_pools_are_rerouted(args, kwargs, plain):
    assert is_plain_2x2_pool((torch.zeros(1, 2, 4, 4), *args), kwargs) is plain
    assert not is_plain_2x2_pool((torch.zeros(4, 4), *args), kwargs)  # 2-D: max_pool2d's error


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(1, 2, 4, 4, dtype=torch.bool),  # max_pool2d: not implemented for Bool
        torch.zeros(1, 2, 4, 4, dtype=torch.int64),
        torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16),  # its kernel rewrites NaN's bits
        torch.zeros(1, 0, 4, 4),  # no channels: max_pool2d's error
        torch.zeros(1, 2, 4, 6).transpose(-1, -2),  # eager returns it contiguous, selects would not
    ],
    ids=["bool", "int", "bfloat16", "no-channels", "transposed"],
)
def test_inputs_whose_pool_is_not_the_selects_keep_max_pool2d(x):
    assert not is_plain_2x2_pool((x, 2), {})
    assert is_plain_2x2_pool((torch.zeros(2, 4, 4), 2), {})  # unbatched is fine
    assert is_plain_2x2_pool((torch.zeros(1, 2, 4, 4).contiguous(memory_format=torch.channels_last), 2), {})


def test_torch_max_pool2d_takes_no_return_indices():
    x = torch.zeros(1, 2, 4, 4)
    assert is_plain_2x2_pool((x, 2), {"return_indices": False}, names=7)
    assert not is_plain_2x2_pool((x, 2), {"return_indices": False}, names=6)  # torch's TypeError
