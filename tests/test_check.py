"""`ptm check`: agreement with the eager step, compile counts, and the failures it must report.

Dynamo traces for real here, with its "eager" backend instead of inductor (seconds instead of
a C++ build); .ci/run runs `ptm check net --device cpu` with inductor.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ptm_func.reports import selfcheck
from ptm_func.reports.selfcheck import check

REAL_COMPILE = torch.compile
runner = CliRunner()


@pytest.fixture
def dynamo_only(monkeypatch):
    monkeypatch.setattr(
        torch, "compile", lambda step, **kw: REAL_COMPILE(step, backend="eager", dynamic=False)
    )


@pytest.mark.parametrize(
    "name,options",
    [("dropout", {}), ("batchnorm", {}), ("resdeep", {"n_blocks": 2, "tied": True})],
)
def test_every_variant_agrees_and_compiles_once(dynamo_only, name, options):
    report = check(name, torch.device("cpu"), steps=3, batch_size=8, **options)
    names = [v.name for v in report.variants]
    assert names == ["compiled", "2 vmapped (eager)", "2 vmapped (compiled)", "2 in a loop (compiled)"]
    assert report.ok
    for v in report.variants:
        assert v.relative_diff < 5e-4, v  # rounding: 1e-5 (net) to 2e-4 (vmapped batchnorm)
        assert v.fallbacks == []
        assert v.cudagraph_recordings is None  # CPU
    # one graph per step function: the params' strides (optim.py), key order (train.py) and
    # tied aliases (members.stack) stay those of step 1
    assert [v.compiles for v in report.variants] == [1, 0, 1, 1]
    assert not any(v.recompiled for v in report.variants)


def test_a_wrong_compiled_step_is_a_mismatch_and_exit_1(monkeypatch):
    def wrong_compile(step, **kw):
        def compiled(params, state, opt_state, hyper, *rest):
            return step(params, state, opt_state, {**hyper, "lr": hyper["lr"] * 1.01}, *rest)

        return compiled

    monkeypatch.setattr(torch, "compile", wrong_compile)
    report = check("net", torch.device("cpu"), steps=2, batch_size=8, only=["compiled", "2 vmapped (eager)"])
    compiled, vmapped = report.variants
    assert not compiled.ok and compiled.relative_diff > 1e-3
    assert vmapped.ok  # eager: not touched by the wrong compile
    result = runner.invoke(app, ["check", "net", "--device", "cpu", "--steps", "2", "--batch-size", "8"])
    assert result.exit_code == 1
    assert "ptm: check failed: net: compiled" in result.output
    assert "MISMATCH" in result.output


def test_a_compiled_step_that_fails_is_reported_and_exit_1(monkeypatch):
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("injected: capture failed")

    monkeypatch.setattr(torch, "compile", lambda step, **kw: REAL_COMPILE(step, backend=failing_backend))
    result = runner.invoke(
        app, ["check", "net", "--device", "cpu", "--steps", "2", "--batch-size", "8", "--json"]
    )
    assert result.exit_code == 1
    (report,) = json.loads(result.stdout)
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["2 vmapped (eager)"]["ok"]
    assert not by_name["compiled"]["ok"]
    assert "injected: capture failed" in by_name["compiled"]["fallbacks"][0]
    assert by_name["compiled"]["relative_diff"] < 1e-4  # the fallback's results are still right


def test_cuda_variants_include_cuda_graphs():
    names = [name for name, _ in selfcheck.variants(torch.device("cuda"))]
    assert names[:2] == ["compiled + CUDA graphs", "compiled (default mode)"]
    overrides = dict(selfcheck.variants(torch.device("cuda")))
    assert overrides["compiled + CUDA graphs"]["compile_mode"] == "reduce-overhead"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check", "resnet"], "choose one of"),
        (["check", "net", "--steps", "0"], "--steps and --batch-size must be >= 1"),
        (["check", "net", "--tolerance", "-1"], "--tolerance must be a number between 0 and 1"),
        (["check", "net", "--n-blocks", "3"], "are for resdeep"),
        (["check", "net", "--device", "cuda:x"], "unknown device"),
    ],
)
def test_bad_options_are_usage_errors(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_the_noise_calibrated_tolerance_is_capped(monkeypatch):
    """Two eager runs that disagree (a broken layout path) must not excuse everything else."""
    from ptm_func.training import tuning

    real = tuning.in_layout
    monkeypatch.setattr(tuning, "in_layout", lambda images, cl: real(images * 1.5 if cl else images, cl))
    report = check("net", torch.device("cpu"), steps=2, batch_size=8, only=["2 vmapped (eager)"])
    assert report.noise > selfcheck.NOISE_CAP / selfcheck.NOISE_FACTOR
    assert report.tolerance == selfcheck.NOISE_CAP
