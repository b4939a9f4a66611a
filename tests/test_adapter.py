"""The functional_call adapter against the modules it wraps."""

import pytest
import torch
from torch.func import grad

from ptm_func import functionalize, get_model, retie
from tests.test_models import CONFIGS, IDS


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(11))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}, module.training


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_adapter_matches_forward_and_leaves_module_unchanged(name, config, train, images):
    torch.manual_seed(0)
    module = get_model(name, **config).module().eval()
    before, _ = snapshot(module)
    fmod, params, state = functionalize(module)

    out, new_state = fmod.apply(params, state, images, train=train, key=3)
    assert module.training is False  # the adapter restored the module's mode
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expected = module.train(train)(images)
    after_forward = dict(module.named_buffers(remove_duplicate=False))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for key, value in retie(new_state, fmod.aliases).items():
        torch.testing.assert_close(value, after_forward[key], atol=1e-5, rtol=1e-5, msg=key)

    # The adapter itself changed nothing: reload the snapshot's twin state and compare.
    module.load_state_dict(before)
    fmod.apply(params, state, images, train=train, key=3)
    assert module.training == train  # we set it above; the adapter restored it
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_functionalized_tensors_are_copies_not_views(images):
    module = get_model("batchnorm").module()
    _, params, state = functionalize(module)
    kept = {k: v.clone() for k, v in {**params, **state}.items()}
    module.train()(images)  # updates the module's BN buffers in place
    with torch.no_grad():
        module.fc2.weight.add_(1.0)
    for key, value in {**params, **state}.items():
        assert torch.equal(value, kept[key]), key


def test_adapter_on_tied_resdeep_keeps_parameters_trainable(images):
    torch.manual_seed(0)
    module = get_model("resdeep", n_blocks=10, tied=True).module()
    fmod, params, state = functionalize(module)
    assert len(params) == 9  # de-duplicated: the tied block is passed once
    assert "resblocks.9.conv.weight" in fmod.aliases

    def loss(p):
        out, _ = fmod.apply(p, state, images, train=True)
        return out.square().mean()

    grads = grad(loss)(params)
    assert grads["resblocks.0.conv.weight"].abs().sum() > 0

    # The module still holds real, shared Parameters that take gradients.
    conv_weights = {id(module.resblocks[i].conv.weight) for i in range(10)}
    assert len(conv_weights) == 1
    assert all(isinstance(p, torch.nn.Parameter) for p in module.parameters())
    module(images).square().mean().backward()
    assert module.resblocks[0].conv.weight.grad is not None
    assert module.resblocks[0].conv.weight.grad.abs().sum() > 0


def test_adapter_refuses_dropout_training_without_key(images):
    fmod, params, state = functionalize(get_model("dropout").module())
    with pytest.raises(ValueError, match="key"):
        fmod.apply(params, state, images, train=True)
