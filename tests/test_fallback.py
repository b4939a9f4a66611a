"""A compiled step that fails falls back (reduce-overhead -> default -> eager), results intact.

Failures are injected on CPU: a torch.compile whose backend raises (a real dynamo failure),
or a stand-in torch.compile that raises in chosen modes.
"""

import logging
from dataclasses import replace

import pytest
import torch

from ptm_func.data.dataset import Dataset, Split
from ptm_func.training.config import book_setup
from ptm_func.training.fallback import FallbackStep, describe, fallback_events
from ptm_func.training.loop import fit

REAL_COMPILE = torch.compile


def random_data(n: int = 40) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, split, ("a", "b"), "random")


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("injected: no C++ compiler\nsecond line of the message")


def compile_failing_in(*modes):
    """A torch.compile stand-in: the step fails at its first call in `modes`, else runs eagerly."""
    calls = []

    def fake_compile(step, mode=None, dynamic=None, options=None):
        # a mode comes as itself, or as its options merged with ptm's (compiling.compile_once)
        mode = mode or ("reduce-overhead" if (options or {}).get("triton.cudagraphs") else "default")

        def compiled(*args):
            calls.append(mode)
            if mode in modes:
                raise RuntimeError(f"injected failure in {mode}")
            return step(*args)

        return compiled

    return fake_compile, calls


def assert_same(a, b):
    for key in a.params:
        assert torch.equal(a.params[key], b.params[key]), key
    for key in a.state:
        assert torch.equal(a.state[key], b.state[key]), key


def test_a_failing_backend_falls_back_to_eager_with_one_line(monkeypatch, caplog):
    model, config = book_setup("net", epochs=1, batch_size=8, momentum=0.9)
    eager = fit(model, random_data(), replace(config, compile=False))
    monkeypatch.setattr(torch, "compile", lambda step, **kw: REAL_COMPILE(step, backend=failing_backend))
    with caplog.at_level(logging.WARNING, logger="ptm_func"):
        compiled = fit(model, random_data(), replace(config, compile=True))
    assert_same(compiled, eager)
    assert compiled.history[0].loss == eager.history[0].loss
    assert len(compiled.fallbacks) == 1, compiled.fallbacks
    assert "compiled (default) step failed" in compiled.fallbacks[0]
    assert "injected: no C++ compiler" in compiled.fallbacks[0]
    assert compiled.fallbacks[0].endswith("using the eager step")
    lines = [r.getMessage() for r in caplog.records if r.name == "ptm_func"]
    assert lines == [f"ptm: {compiled.fallbacks[0]}"]
    assert "\n" not in lines[0] and "second line" not in lines[0]


@pytest.mark.parametrize(
    "failing,expected_calls,expected_events",
    [
        (("reduce-overhead",), ["reduce-overhead", "default", "default"], 1),
        (("reduce-overhead", "default"), ["reduce-overhead", "default"], 2),
    ],
)
def test_reduce_overhead_falls_back_to_default_then_eager(
    monkeypatch, failing, expected_calls, expected_events
):
    model, config = book_setup("dropout", epochs=1, batch_size=20, compile=False)
    eager = fit(model, random_data(), config)
    fake, calls = compile_failing_in(*failing)
    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    result = fit(model, random_data(), replace(config, compile=True, compile_mode="reduce-overhead"))
    assert calls == expected_calls  # 2 steps; a failed call is repeated by the next candidate
    assert len(result.fallbacks) == expected_events
    assert result.fallbacks[0].startswith("the compiled (reduce-overhead) step failed")
    assert_same(result, eager)


@pytest.mark.parametrize("vmap", [True, False])
def test_members_fall_back_together(monkeypatch, vmap):
    model, config = book_setup("net", epochs=1, batch_size=10, compile=False, members_vmap=vmap)
    configs = [config, replace(config, seed=7, lr=0.05)]
    eager = fit(model, random_data(), configs)
    fake, _ = compile_failing_in("default")
    monkeypatch.setattr(torch, "compile", fake)
    compiled = fit(model, random_data(), [replace(c, compile=True) for c in configs])
    assert len(compiled.fallbacks) == 1
    assert_same(compiled, eager)


def test_the_last_candidates_error_and_interrupts_propagate():
    def broken(*args):
        raise ValueError("bad input")

    def interrupted(*args):
        raise KeyboardInterrupt

    step = FallbackStep([("compiled (default)", broken), ("eager", broken)])
    with pytest.raises(ValueError, match="bad input"):
        step(1)
    assert step.label == "eager" and len(step.events) == 1
    with pytest.raises(KeyboardInterrupt):
        FallbackStep([("compiled (default)", interrupted), ("eager", lambda *a: 0)])(1)


def test_fallback_events_are_found_through_wrappers():
    inner = FallbackStep([("compiled (default)", lambda: 1 / 0), ("eager", lambda: 1)])
    assert inner() == 1

    def wrapper():
        return inner()

    wrapper.fallbacks = (inner,)
    assert fallback_events(wrapper) == inner.events
    assert fallback_events(lambda: 0) == []
    assert describe(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"
    assert len(describe(RuntimeError("x" * 500))) == 200
