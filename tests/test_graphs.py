"""CarriedBuffersStep's bookkeeping, on the CPU with the plain step standing in for the compiled
one (tests/test_cuda.py runs it with CUDA graphs)."""

import pytest
import torch

from ptm_func.nets import rng
from ptm_func.training.config import book_setup, step_hyperparameters
from ptm_func.training.graphs import CarriedBuffersStep
from ptm_func.training.state import init_train_state, snapshot
from ptm_func.training.step import make_step


def setup(name="batchnorm", momentum=0.9):
    model, config = book_setup(name, epochs=1, batch_size=8, momentum=momentum, compile=False)
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 2, (8,), generator=gen)
    hyper = step_hyperparameters([config], torch.device("cpu"))
    keys = rng.fold_in(rng.key(0, "cpu"), torch.arange(8))
    ts = init_train_state(model, config, "cpu")
    return make_step(model), ts, (hyper, images, labels, keys)


def assert_trees_equal(a, b):
    flat_a, flat_b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        assert torch.equal(x, y)


def test_three_steps_match_the_pure_step_and_return_its_own_buffers():
    step, ts, rest = setup()
    wrapped = CarriedBuffersStep(step)
    pure = (ts.params, ts.state, ts.opt_state)
    carried = pure
    start = snapshot(ts)
    for _ in range(3):
        *pure, _ = step(*pure, *rest)
        *carried, _ = wrapped(*carried, *rest)
        assert_trees_equal(carried, pure)
        returned = torch.utils._pytree.tree_leaves(carried)
        assert all(a is b for a, b in zip(returned, wrapped._leaves, strict=True))
    assert_trees_equal((ts.params, ts.state, ts.opt_state), (start.params, start.state, start.opt_state))
    first = wrapped._leaves[0]
    wrapped(*(snapshot(ts).params, snapshot(ts).state, snapshot(ts).opt_state), *rest)  # copied in
    assert wrapped._leaves[0] is first  # same addresses: the graph replays, nothing re-records


def test_a_failing_call_changes_nothing_and_other_structures_are_refused():
    step, ts, rest = setup()
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("capture failed")
        return step(*args)

    wrapped = CarriedBuffersStep(flaky)
    *carried, _ = wrapped(ts.params, ts.state, ts.opt_state, *rest)
    before = [t.clone() for t in wrapped._leaves]
    with pytest.raises(RuntimeError, match="capture failed"):
        wrapped(*carried, *rest)
    assert all(torch.equal(a, b) for a, b in zip(before, wrapped._leaves, strict=True))

    def reordered(params, state, opt_state, *args):
        new_params, *others = step(params, state, opt_state, *args)
        return (dict(reversed(new_params.items())), *others)

    with pytest.raises(RuntimeError, match="not the"):
        CarriedBuffersStep(reordered)(ts.params, ts.state, ts.opt_state, *rest)


def test_compile_once_wraps_reduce_overhead_on_cuda_only():
    from ptm_func.training import compiling

    assert isinstance(
        compiling.compile_once(lambda *a: a, torch.device("cuda"), "reduce-overhead"), CarriedBuffersStep
    )
    assert not isinstance(
        compiling.compile_once(lambda *a: a, torch.device("cpu"), "reduce-overhead"), CarriedBuffersStep
    )


def test_tied_keys_stay_one_tensor_in_the_buffers():
    model, config = book_setup("resdeep", epochs=1, batch_size=8, n_blocks=3, tied=True, compile=False)
    ts = init_train_state(model, config, "cpu")
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 2, (8,), generator=gen)
    rest = (
        step_hyperparameters([config], torch.device("cpu")),
        images,
        labels,
        rng.fold_in(rng.key(0, "cpu"), torch.arange(8)),
    )
    params, *_ = CarriedBuffersStep(make_step(model))(ts.params, ts.state, ts.opt_state, *rest)
    assert params["resblocks.2.conv.weight"] is params["resblocks.0.conv.weight"]
