"""Functional SGD against torch.optim.SGD (params and momentum buffers)."""

import pytest
import torch

from ptm_func.training.optim import SGD

CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "dampening": dict(lr=0.05, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "decay": dict(lr=0.1, weight_decay=0.01),
    "decay+momentum": dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    "maximize": dict(lr=0.05, momentum=0.5, maximize=True),
    "everything": dict(lr=0.02, momentum=0.8, weight_decay=0.05, nesterov=True, maximize=True),
}


def grads_at(params, t):
    """A deterministic, param-dependent gradient (so mistakes in p compound)."""
    gen = torch.Generator().manual_seed(t)
    return {k: p * 0.3 + torch.randn(p.shape, generator=gen) for k, p in params.items()}


@pytest.mark.parametrize("hp", CASES.values(), ids=CASES.keys())
def test_matches_torch_optim_sgd_for_25_steps(hp):
    gen = torch.Generator().manual_seed(0)
    init = {"w": torch.randn(5, 4, generator=gen), "b": torch.randn(4, generator=gen)}

    torch_params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    reference = torch.optim.SGD(list(torch_params.values()), **hp)
    opt = SGD(**hp)
    params, state = dict(init), opt.init(init)

    for t in range(25):
        grads = grads_at(params, t)
        for k, p in torch_params.items():
            p.grad = grads[k].clone()
        reference.step()
        params, state = opt.update(grads, state, params)
        for k, p in torch_params.items():
            torch.testing.assert_close(params[k], p.detach(), rtol=1e-5, atol=1e-6)
            if hp.get("momentum"):
                buf = reference.state[p]["momentum_buffer"]
                torch.testing.assert_close(state.momentum[k], buf, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 25


def test_update_is_pure():
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.1)
    params = {"w": torch.ones(3)}
    state = opt.init(params)
    grads = {"w": torch.full((3,), 2.0)}
    new_params, new_state = opt.update(grads, state, params)
    assert torch.equal(params["w"], torch.ones(3)) and torch.equal(grads["w"], torch.full((3,), 2.0))
    assert torch.equal(state.momentum["w"], torch.zeros(3)) and int(state.step) == 0
    # closed form of the first step: b = g + wd * p = 2.1, p = 1 - 0.1 * 2.1
    torch.testing.assert_close(new_params["w"], torch.full((3,), 0.79))
    torch.testing.assert_close(new_state.momentum["w"], torch.full((3,), 2.1))


@pytest.mark.parametrize("hp", [dict(lr=0.0), dict(lr=0.1, momentum=-1), dict(lr=0.1, nesterov=True)])
def test_rejects_invalid_hyperparameters(hp):
    with pytest.raises(ValueError):
        SGD(**hp)
