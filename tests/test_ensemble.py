"""vmap ensembles: each replica equals the separate run with seed + r."""

import pytest
import torch

from ptm_func.data.dataset import Dataset, Split
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.loop import fit, fit_ensemble
from ptm_func.training.members import stack, unstack
from ptm_func.training.optim import SGDState


def random_data(n=64):
    gen = torch.Generator().manual_seed(1)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, split, ("a", "b"), "random")


@pytest.mark.parametrize("name", ["net", "dropout", "batchnorm"])
def test_two_replicas_match_two_separate_runs(name):
    model, config = book_setup(name, epochs=2, batch_size=16, momentum=0.9, compile=False, seed=11)
    data = random_data()
    ensemble = fit_ensemble(model, data, config, replicas=2)
    assert [c.seed for c in ensemble.configs] == [11, 12]
    for r, seed in enumerate([11, 12]):
        alone = fit(model, data, TrainConfig(**{**config.__dict__, "seed": seed}))
        ours = ensemble.member(r)
        for key in alone.params:
            torch.testing.assert_close(ours.params[key], alone.params[key], rtol=1e-4, atol=1e-5, msg=key)
        for key in alone.state:
            torch.testing.assert_close(ours.state[key], alone.state[key], rtol=1e-4, atol=1e-5, msg=key)
        assert ensemble.val_accuracy[r] == pytest.approx(alone.val_accuracy, abs=1 / 64 + 1e-9)
    assert not torch.equal(ensemble.member(0).params["fc2.weight"], ensemble.member(1).params["fc2.weight"])
    summary = ensemble.summary()
    assert summary["members"] == 2 and summary["peak_memory_bytes"] > 0


def test_compiled_ensemble_matches_eager_ensemble():
    model, config = book_setup("net", epochs=1, batch_size=16, compile=False)
    eager = fit_ensemble(model, random_data(), config, replicas=2)
    compiled = fit_ensemble(
        model, random_data(), TrainConfig(**{**config.__dict__, "compile": True}), replicas=2
    )
    for r in range(2):
        for key, value in eager.member(r).params.items():
            torch.testing.assert_close(compiled.member(r).params[key], value, rtol=1e-4, atol=1e-5)


def test_stack_and_unstack_round_trip():
    tree = [SGDState({"w": torch.full((2,), float(i))}, torch.tensor(i)) for i in range(3)]
    stacked = stack(tree)
    assert stacked.momentum["w"].shape == (3, 2) and stacked.step.tolist() == [0, 1, 2]
    assert torch.equal(unstack(stacked, 2).momentum["w"], tree[2].momentum["w"])


def test_replicas_must_be_positive():
    model, config = book_setup("net", epochs=1)
    with pytest.raises(ValueError, match="replicas"):
        fit_ensemble(model, random_data(), config, replicas=0)
