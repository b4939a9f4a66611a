"""layers.max_pool2 as a compiled CPU step traces it, against F.max_pool2d (the oracle): the
same values and the same gradients, bit for bit, ties and NaN included."""

import pytest
import torch
import torch.nn.functional as F

from ptm_func.nets.layers import max_pool2


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
    compiled = torch.compile(lambda t, g: pool_and_gradient(max_pool2, t, g), dynamic=False)
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
