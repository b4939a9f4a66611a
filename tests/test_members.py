"""K members in one run: per-member hyperparameters, each member == its separate run, ensembles."""

import math
from dataclasses import replace

import pytest
import torch

from ptm_func import get_model
from ptm_func.data.dataset import Dataset, Split
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.loop import fit
from ptm_func.training.members import check_members, stack, unstack
from ptm_func.training.optim import SGD
from ptm_func.training.state import member_state, stack_members


def random_data(n=96, seed=1):
    gen = torch.Generator().manual_seed(seed)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, Split(split.images[:48], split.labels[:48]), ("a", "b"), "random")


def member_configs(base: TrainConfig) -> list[TrainConfig]:
    """Three members that differ in every hyperparameter a sweep can vary, and in seed."""
    return [
        replace(base, lr=0.01, seed=1),
        replace(base, lr=0.03, momentum=0.9, weight_decay=5e-4, seed=2),
        replace(base, lr=0.003, momentum=0.5, dampening=0.1, l2_lambda=1e-3, l1_lambda=1e-4, seed=3),
    ]


@pytest.mark.parametrize("name", ["net", "dropout", "batchnorm"])
def test_each_member_is_bitwise_its_separate_run_when_looped(name):
    """On CPU members run through the single step in turn: the same computation, bit for bit."""
    model, base = book_setup(name, epochs=2, batch_size=16, compile=False, members_vmap=False)
    configs, data = member_configs(base), random_data()
    together = fit(model, data, configs)
    for r, config in enumerate(configs):
        alone = fit(model, data, config)
        ours = together.member(r)
        for tree in ("params", "state"):
            for key, value in getattr(alone.train_state, tree).items():
                assert torch.equal(getattr(ours, tree)[key], value), (r, key)
        assert set(ours.opt_state.momentum) == set(alone.opt_state.momentum)
        for key, value in alone.opt_state.momentum.items():
            assert torch.equal(ours.opt_state.momentum[key], value), (r, key)
        assert [s.member(r).loss for s in together.history] == [s.loss for s in alone.history]
        assert together.val_accuracy[r] == alone.val_accuracy


@pytest.mark.parametrize("name", ["net", "dropout", "batchnorm"])
def test_each_vmapped_member_matches_its_separate_run(name):
    """vmap batches conv and linear differently (grouped conv, bmm): within 1e-5 after 12 steps."""
    model, base = book_setup(name, epochs=2, batch_size=16, compile=False, members_vmap=True)
    # the kernels differ by ~1e-8 per step; lr 0.03 with momentum 0.9 amplifies that to 1e-4
    # in 12 steps, so these members step more gently
    configs = [replace(c, lr=min(c.lr, 0.02), momentum=min(c.momentum, 0.5)) for c in member_configs(base)]
    data = random_data()
    together = fit(model, data, configs)
    for r, config in enumerate(configs):
        alone = fit(model, data, config)
        for key, value in alone.params.items():
            torch.testing.assert_close(together.member(r).params[key], value, rtol=1e-3, atol=1e-5)
        for key, value in alone.state.items():
            torch.testing.assert_close(together.member(r).state[key], value, rtol=1e-3, atol=1e-5)
        assert together.val_accuracy[r] == pytest.approx(alone.val_accuracy, abs=1 / 48 + 1e-9)


def test_sgd_takes_per_member_tensors_under_vmap_as_torch_optim_sgd_does():
    """vmap over SGD.update with 0-d tensor hyperparameters == torch.optim.SGD per member."""
    hyper = [
        dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0),
        dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.01),
        dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.0),
    ]
    gen = torch.Generator().manual_seed(0)
    init = [{"w": torch.randn(5, 4, generator=gen)} for _ in hyper]
    references = [torch.nn.Parameter(p["w"].clone()) for p in init]
    optimizers = [torch.optim.SGD([p], **h) for p, h in zip(references, hyper, strict=True)]
    tensors = {k: torch.tensor([h[k] for h in hyper]) for k in hyper[0]}

    def update(grads, state, params, lr, momentum, dampening, weight_decay):
        return SGD(lr, momentum, dampening, weight_decay).update(grads, state, params)

    params = stack(init)
    state = stack([SGD(0.1, momentum=1.0).init(p) for p in init])
    for _ in range(10):
        grads = {"w": params["w"] * 0.3 + torch.randn(params["w"].shape, generator=gen)}
        for r, (p, opt) in enumerate(zip(references, optimizers, strict=True)):
            p.grad = grads["w"][r].clone()
            opt.step()
        params, state = torch.func.vmap(update)(grads, state, params, *tensors.values())
        for r, p in enumerate(references):
            torch.testing.assert_close(params["w"][r], p.detach(), rtol=1e-6, atol=1e-7)
    assert state.step.tolist() == [10, 10, 10]


def test_a_diverging_member_does_not_stop_the_others():
    model, base = book_setup("res", epochs=2, batch_size=16, compile=False, momentum=0.9)
    configs = [replace(base, lr=0.01, seed=1), replace(base, lr=10.0, seed=2)]
    loud = random_data()  # pixels x100: lr 10 with momentum blows up in epoch 1
    data = Dataset(Split(loud.train.images * 100, loud.train.labels), loud.val, loud.classes, "loud")
    result = fit(model, data, configs)
    assert result.diverged_members == [1] and result.diverged_in == 1
    assert not result.interrupted and len(result.history) == 2
    healthy = fit(model, data, configs[0])
    assert torch.equal(result.member(0).params["fc2.weight"], healthy.params["fc2.weight"])
    assert all(torch.isfinite(v).all() for v in result.member(1).params.values())
    assert result.member(1).epoch == 0  # its last finite state: the start
    assert math.isfinite(result.history[-1].loss)  # the mean over the members still training


def test_members_must_share_the_settings_that_shape_the_step():
    base = TrainConfig(epochs=2)
    check_members([base, replace(base, lr=0.1, seed=5)])
    with pytest.raises(ValueError, match="must share epochs"):
        check_members([base, replace(base, epochs=3)])


def test_stack_and_member_state_round_trip():
    model, base = book_setup("batchnorm", epochs=1, batch_size=16, compile=False)
    configs = [replace(base, seed=1), replace(base, seed=2, momentum=0.9)]
    result = fit(model, random_data(), configs)
    members = [result.member(r) for r in range(2)]
    assert members[0].opt_state.momentum == {} and members[1].opt_state.momentum  # as their runs
    again = stack_members(members)
    for r, config in enumerate(configs):
        back = member_state(again, r, config)
        for key, value in members[r].params.items():
            assert torch.equal(back.params[key], value)
    assert torch.equal(unstack(again.params, 1)["conv1.weight"], members[1].params["conv1.weight"])


def constant_member(logits):
    """A Net whose output is `logits` whatever the image (fc2 weights 0, bias = logits)."""
    model = get_model("net")
    params, state = model.init(0)
    params = {**params, "fc2.weight": torch.zeros(2, 32), "fc2.bias": torch.tensor(logits)}
    return model, params, state


def test_ensemble_accuracy_is_the_mean_of_probabilities_not_a_vote():
    """Two members say class 0 (p = 0.731), one says class 1 (p = 0.982): the mean of
    probabilities is 0.493 for class 0, so the ensemble says 1, where a majority vote says 0."""
    members = [constant_member([1.0, 0.0]), constant_member([1.0, 0.0]), constant_member([0.0, 4.0])]
    split = Split(torch.zeros(4, 3, 32, 32), torch.tensor([0, 1, 1, 1]))
    p0 = (2 * math.exp(1) / (math.exp(1) + 1) + 1 / (1 + math.exp(4))) / 3
    assert p0 == pytest.approx(0.4933, abs=1e-4) and p0 < 0.5
    result = ensemble_accuracy(members, split)
    assert result["members"] == [0.25, 0.25, 0.75]
    assert result["ensemble"] == 0.75


def _same_weights(a, b) -> bool:
    return all(torch.equal(a.params[k], v) for k, v in b.params.items()) and all(
        torch.equal(a.state[k], v) for k, v in b.state.items()
    )


@pytest.mark.parametrize("vmap", [False, True])
def test_stopped_members_leave_the_stack_and_the_others_train_on_unchanged(vmap):
    """fit(stop_members=...): a pruned trial keeps its state where it stopped and costs no more
    steps; every other member ends as it would have without the stop."""
    model, base = book_setup("batchnorm", epochs=3, batch_size=16, compile=False, members_vmap=vmap)
    configs, data = member_configs(base), random_data()
    if vmap:
        configs = [replace(c, lr=min(c.lr, 0.02), momentum=min(c.momentum, 0.5)) for c in configs]
    seen = []

    def stop(stats, ts):
        seen.append(
            (stats.epoch, [v is not None for v in stats.members["loss"]], ts.params["conv1.weight"].shape[0])
        )
        return {1} if stats.epoch == 1 else ()

    pruned = fit(model, data, configs, stop_members=stop)
    full = fit(model, data, configs)
    assert seen == [(1, [True] * 3, 3), (2, [True, False, True], 2)]  # 3 epochs: no call after the last
    assert pruned.active == [0, 2] and set(pruned.stopped) == {1}
    epoch, at_stop = pruned.stopped[1]
    assert epoch == 1 and at_stop.epoch == 1
    one_epoch = fit(model, data, replace(configs[1], epochs=1))
    tolerance = {"rtol": 1e-4, "atol": 1e-5}
    for key, value in one_epoch.params.items():  # the member as its own 1-epoch run left it
        assert (
            torch.allclose(at_stop.params[key], value, **tolerance)
            if vmap
            else torch.equal(at_stop.params[key], value)
        )
    for r in (0, 2):
        ours, theirs = pruned.member(r), full.member(r)
        if vmap:
            for key, value in theirs.params.items():
                assert torch.allclose(ours.params[key], value, **tolerance), (r, key)
        else:
            assert _same_weights(ours, theirs), r
            assert pruned.val_accuracy[r] == full.val_accuracy[r]
    assert pruned.val_accuracy[1] is None and pruned.train_accuracy[1] is None
    assert pruned.history[-1].members["loss"][1] is None


def test_when_every_member_stops_the_run_ends_there():
    model, base = book_setup("net", epochs=4, batch_size=32, compile=False, members_vmap=False)
    configs = member_configs(base)[:2]
    result = fit(model, random_data(), configs, stop_members=lambda stats, ts: {0, 1})
    assert len(result.history) == 1 and result.active == []
    assert result.val_accuracy == [None, None]
    assert [result.member(r).epoch for r in (0, 1)] == [1, 1]
