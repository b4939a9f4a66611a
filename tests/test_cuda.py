"""GPU paths (skipped without CUDA): the compiled, CUDA-graphed step against eager; ptm check."""

from dataclasses import replace

import pytest
import torch

from ptm_func.catalog import TRAINABLE_NAMES
from ptm_func.data.dataset import Dataset, Split
from ptm_func.reports.selfcheck import check
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_data(device) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(200, 3, 32, 32, generator=gen), torch.randint(0, 2, (200,), generator=gen))
    return Dataset(split, split, ("a", "b"), "random").to(device)


@pytest.mark.parametrize("name", ["net", "batchnorm", "dropout"])
def test_compiled_cuda_fit_matches_eager_cuda_and_cpu(name, mode="reduce-overhead"):
    model, config = book_setup(name, epochs=2, batch_size=32, compile=False)
    eager = fit(model, random_data("cuda"), config)
    compiled = fit(
        model,
        random_data("cuda"),
        replace(config, compile=True, compile_mode=None if mode == "default" else mode),
    )
    assert compiled.fallbacks == []  # CUDA graphs ran, not a fallback that would match anyway
    cpu = fit(model, random_data("cpu"), config)
    for key in eager.params:
        torch.testing.assert_close(compiled.params[key], eager.params[key], rtol=1e-3, atol=1e-4, msg=key)
        torch.testing.assert_close(eager.params[key].cpu(), cpu.params[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("name", TRAINABLE_NAMES)
def test_ptm_check_passes_on_cuda_without_recompiling(name):
    options = {"n_blocks": 3} if name == "resdeep" else {}
    report = check(name, torch.device("cuda"), **options)
    for v in report.variants:
        assert v.ok, v
        assert not v.recompiled, v  # one compile and (CUDA graphs) one recording per step function


def test_results_own_their_tensors_after_other_graphs_replay():
    """CUDA-graph outputs are overwritten by later replays: a TrainResult must not hold them."""
    model, config = book_setup("net", epochs=1, batch_size=32, compile=True)
    first = fit(model, random_data("cuda"), config)
    kept = {k: v.clone() for k, v in first.params.items()}
    other, other_config = book_setup("dropout", epochs=1, batch_size=32, compile=True)
    fit(other, random_data("cuda"), other_config)
    fit(model, random_data("cuda"), replace(config, seed=5))
    for key, value in kept.items():
        assert torch.equal(first.params[key], value), key


def test_vmapped_members_on_cuda_match_separate_runs():
    model, config = book_setup("net", epochs=2, batch_size=32, compile=True)
    configs = [config, replace(config, seed=7, lr=0.05)]
    together = fit(model, random_data("cuda"), configs)
    assert together.fallbacks == []
    for r, c in enumerate(configs):
        alone = fit(model, random_data("cuda"), replace(c, compile=False))
        member = together.member(r)
        for key in alone.params:
            torch.testing.assert_close(member.params[key], alone.params[key], rtol=1e-3, atol=1e-4, msg=key)
