"""GPU paths (skipped without CUDA): the compiled, CUDA-graphed step against eager."""

from dataclasses import replace

import pytest
import torch

from ptm_func.data import Dataset, Split
from ptm_func.train import book_setup, fit

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
    cpu = fit(model, random_data("cpu"), config)
    for key in eager.params:
        torch.testing.assert_close(compiled.params[key], eager.params[key], rtol=1e-3, atol=1e-4, msg=key)
        torch.testing.assert_close(eager.params[key].cpu(), cpu.params[key], rtol=1e-3, atol=1e-4, msg=key)
