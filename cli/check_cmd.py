"""`ptm check`: a self-test of the compiled and vmapped steps on this machine."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import typer

from ptm_func.catalog import DEFAULT_TOLERANCE, NOISE_FACTOR, TRAINABLE_NAMES
from ptm_func.text import printable

if TYPE_CHECKING:
    from ptm_func.reports.selfcheck import CheckReport

from .errors import UsageError, friendly_errors
from .options import YOUR_MODEL, Device, ModelArgs, NBlocks, Tied, model_args


def check_command(
    model: str = typer.Argument("net", help=f"One of: {', '.join(TRAINABLE_NAMES)}, or all; {YOUR_MODEL}."),
    device: str = Device,
    steps: int = typer.Option(3, help="Train steps per variant."),
    batch_size: int = typer.Option(16, help="Images per step (random data)."),
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE,
        help="Largest difference from the eager step, relative to how far the steps moved the weights "
        f"(at least {NOISE_FACTOR}x that of two correct eager runs: deep nets amplify rounding).",
    ),
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    model_arg: list[str] | None = ModelArgs,
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON on stdout."),
):
    """Check that compiled and vmapped steps agree with eager, here.

    A few steps of MODEL on random data through the training loop, every way it runs on the
    device: compiled (on CUDA also with CUDA graphs), 2 members vmapped, and 2 members one after
    the other.

    For each way: its largest difference from eager, and how many compiles and CUDA-graph
    recordings it took (more than 1: it re-compiled).

    Exit 1 on a difference beyond --tolerance or a failed compile (ptm train would fall back).

    Compiling takes 5-30 s per variant on a CPU.

    Example: ptm check net --device cpu

    Example: ptm check all --device cuda --json

    Example: ptm check examples/kernels.py:KernelNet --model-arg kernel=(5,5)   (your own model)
    """
    from ptm_func.files import jsonio
    from ptm_func.nets.references import is_reference, use_model
    from ptm_func.nets.registry import is_known_model
    from ptm_func.reports.selfcheck import check
    from ptm_func.training.devices import resolve_device

    with friendly_errors():
        if is_reference(model) or model not in (*TRAINABLE_NAMES, "all"):
            model = use_model(model)  # FILE.py:ATTR, module:ATTR, an installed name
            if not is_known_model(model):
                raise UsageError(
                    f"unknown model {model!r}; choose one of: {', '.join(TRAINABLE_NAMES)}, all, or your "
                    "own (FILE.py:ATTR, module:ATTR)"
                )
        if steps < 1 or batch_size < 1:
            raise UsageError("--steps and --batch-size must be >= 1")
        if not 0 < tolerance < 1:  # inf or nan would make a check that cannot fail
            raise UsageError(f"--tolerance must be a number between 0 and 1, got {tolerance}")
        dev = resolve_device(device)
        options = {k: v for k, v in {"n_blocks": n_blocks, "tied": tied}.items() if v is not None}
        if options and model != "resdeep":
            raise UsageError("--n-blocks and --tied/--untied are for resdeep")
        if model_arg and model in (*TRAINABLE_NAMES, "all"):
            raise UsageError("--model-arg is for your own model (FILE.py:ATTR); the book's take none")
        options.update(model_args(model_arg))
        reports = []
        for name in TRAINABLE_NAMES if model == "all" else [model]:
            if not as_json:
                typer.echo(f"checking {name} on {dev} ...", err=True)
            report = check(name, dev, steps=steps, batch_size=batch_size, tolerance=tolerance, **options)
            reports.append(report)
            if not as_json:
                show(report)
    if as_json:
        typer.echo(jsonio.dumps([as_dict(r) for r in reports], indent=2))
    failed = [f"{r.model}: {v.name}" for r in reports for v in r.variants if not v.ok]
    if failed:
        typer.echo(f"ptm: check failed: {'; '.join(failed)}", err=True)
        raise typer.Exit(1)
    if not as_json:
        worst = max(r.tolerance for r in reports)
        typer.echo(f"ok: every variant agrees with the eager step (tolerance {worst:.1e})")


def show(report: CheckReport) -> None:
    from rich.console import Console
    from rich.table import Table

    from ptm_func.reports.selfcheck import NOISE_FACTOR

    table = Table(
        title=f"{report.model} on {report.device} (torch {report.torch_version}): "
        f"{report.steps} steps of {report.batch_size} random images against eager"
    )
    noise = f"{report.noise:.1e}"
    for column in ("variant", "rel diff", "abs diff", "compiles", "graphs", "seconds", "result"):
        table.add_column(column, justify="left" if column in ("variant", "result") else "right")
    for v in report.variants:
        result = "ok" if v.ok else ("FELL BACK" if v.fallbacks else "MISMATCH")
        if v.ok and v.recompiled:
            result = "ok (re-compiled: slow)"
        table.add_row(
            v.name,
            f"{v.relative_diff:.1e}",
            f"{v.max_abs_diff:.1e}",
            _count(v.compiles),
            _count(v.cudagraph_recordings),
            f"{v.seconds:.1f}",
            result,
        )
    console = Console()
    console.print(table)
    measured = (
        f"--tolerance, or {NOISE_FACTOR} x {noise}, the rel diff of two correct eager runs: NCHW and "
        "channels-last images"
        if report.noise_measured
        else "--tolerance; the model runs on NCHW images only, so no layout noise was measured"
    )
    console.print(
        "rel diff: largest difference from eager / how far the steps moved the weights; "
        f"tolerance {report.tolerance:.1e} ({measured}); graphs: CUDA graphs recorded",
        soft_wrap=True,
    )
    for v in report.variants:
        for event in v.fallbacks:
            console.print(f"{v.name}: {printable(event)}", soft_wrap=True, markup=False)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def as_dict(report: CheckReport) -> dict:
    out = asdict(report)
    for entry, variant in zip(out["variants"], report.variants, strict=True):
        entry.update(ok=variant.ok, recompiled=variant.recompiled)
    return {**out, "ok": report.ok}
