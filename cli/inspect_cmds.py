"""`ptm info` and `ptm predict`: look at models, checkpoints and images."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from ptm_func.catalog import MODEL_NAMES, VARIANTS
from ptm_func.text import names, printable

from .errors import UsageError, friendly_errors
from .options import (
    MODEL_HELP,
    YOUR_MODEL,
    Device,
    ModelArgs,
    ModelRef,
    NBlocks,
    NChans1,
    NClasses,
    Tied,
    build_model,
    model_args,
    note,
    optional,
    use_model_ref,
)


def _folder_hint(folder: Path) -> str:
    """What to pass instead of a folder: one of the checkpoints it holds, when it holds some."""
    found = sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(".train.safetensors"))
    if not found:
        return f"{printable(folder)} is a folder: give a model name or a .safetensors checkpoint"
    kind = "a sweep's folder" if (folder / "sweep.json").exists() else "a folder"
    return (
        f"{printable(folder)} is {kind} of {len(found)} checkpoints: give one, e.g. "
        f"ptm info {printable(found[0])} (ptm plot {printable(folder)}/*.safetensors draws them all)"
    )


def info(
    target: str | None = typer.Argument(
        None, help=f"{MODEL_HELP[:-1]}; {YOUR_MODEL}. Or a .safetensors checkpoint. None: list the models."
    ),
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    n_classes: int | None = NClasses,
    model_arg: list[str] | None = ModelArgs,
    model: str | None = ModelRef,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
):
    """Show a model's parameter tensors, shapes, counts and total; with no model, list them all.

    A checkpoint also shows how it was trained (epochs, accuracies, data).

    Example: ptm info resdeep --n-blocks 10 --tied

    Example: ptm info net --n-classes 10

    Example: ptm info runs/net-seed123.safetensors

    Example: ptm info examples/kernels.py:KernelNet --model-arg kernel=(1,3)
    """
    from rich.console import Console
    from rich.table import Table

    from ptm_func.files import jsonio
    from ptm_func.files.checkpoint import load_checkpoint
    from ptm_func.nets.references import use_model
    from ptm_func.reports.summary import parameter_summary
    from ptm_func.research.members import nonfinite_problem

    if target is None:
        _list_models(as_json)
        return
    with friendly_errors():
        training = None
        is_name = target in VARIANTS or target in MODEL_NAMES
        if Path(target).is_dir() and not is_name:
            raise UsageError(_folder_hint(Path(target)))
        if target.endswith(".safetensors") or (Path(target).is_file() and not is_name):
            use_model_ref(model)
            ckpt = load_checkpoint(target)
            net, training = ckpt.model, ckpt.training
            given = optional(n_chans1=n_chans1, n_blocks=n_blocks, tied=tied, n_classes=n_classes)
            if given:
                options = ", ".join("--" + k.replace("_", "-") for k in given)
                note(f"a checkpoint's model is the one it holds; ignoring {options}")
            problem = nonfinite_problem(ckpt, target)
            if problem:
                note(f"{problem}: ptm eval and ptm predict refuse it")
        else:
            name = VARIANTS.get(target, (target, {}))[0]  # l2 -> net
            net = build_model(use_model(name), n_chans1, n_blocks, tied, n_classes, **model_args(model_arg))
        summary = parameter_summary(net)
    if training is not None:
        summary["training"] = training
    if as_json:
        typer.echo(jsonio.dumps(summary, indent=2))
        return
    table = Table(title=f"{summary['model']} ({summary['book_class']}, {summary['config']})")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("numel", justify="right")
    for t in summary["tensors"]:
        table.add_row(t["key"], "x".join(map(str, t["shape"])), f"{t['numel']:,}")
    console = Console()
    console.print(table)
    console.print(f"total parameters: {summary['total']:,}")
    console.print(f"numel_list: {summary['numel_list']}", soft_wrap=True)
    if summary["tied_keys"]:
        console.print(f"{summary['tied_keys']} more state_dict keys alias the shared block (tied)")
    if training:
        console.print(_training_line(training), soft_wrap=True, highlight=False, markup=False)


def _list_models(as_json: bool) -> None:
    """The book's models and those installed packages add (named, not imported)."""
    from ptm_func.files import jsonio
    from ptm_func.nets.references import ENTRY_POINT_GROUP, installed
    from ptm_func.nets.registry import get_model

    added = {name: ep.value for name, ep in installed().items()}
    if as_json:
        typer.echo(jsonio.dumps({"book": list(MODEL_NAMES), "installed": added}, indent=2))
        return
    for name in MODEL_NAMES:
        typer.echo(f"{name:<10} {get_model(name).summary}")
    for name, value in added.items():
        typer.echo(f"{printable(name):<10} installed: {printable(value)} (entry point {ENTRY_POINT_GROUP})")
    typer.echo(f"your own: ptm info FILE.py:ATTR (or package.module:ATTR); {len(added)} installed")


def _training_line(training: dict) -> str:
    """`training: net, 2 epochs, train 0.7887, val 0.7985; data bundled:cifar2 (airplane, bird)`"""
    parts = [printable(training.get("variant", "?")), f"{printable(training.get('epochs_done', '?'))} epochs"]
    for key in ("train_accuracy", "val_accuracy"):
        if isinstance(training.get(key), float):
            parts.append(f"{key.removesuffix('_accuracy')} accuracy {training[key]:.4f}")
    line = "training: " + ", ".join(parts)
    if training.get("data"):
        line += f"; data {printable(training['data'])} ({names(training.get('classes', []))})"
    config = training.get("config")
    if isinstance(config, dict) and config.get("augment"):
        line += f"; augmented: {names(config['augment'])}"
    return line


def predict(
    inputs: list[Path] = typer.Argument(
        ...,
        help="Checkpoints (.safetensors; several: their ensemble, the mean of their probabilities), "
        "then image files (any size: the centre square, scaled to 32x32).",
    ),
    ensemble: bool = typer.Option(
        False,
        "--ensemble",
        help="Use every finished seed of the checkpoint's grid point in its sweep (or --replicas) folder.",
    ),
    device: str = Device,
    model: str | None = ModelRef,
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON on stdout."),
):
    """Classify images: the class name and its probability per image (with more than two classes,
    the next two likeliest as well).

    With several checkpoints (or --ensemble) the probabilities are the mean of the members'.
    An image that cannot be read is reported on stderr; the others are still classified (exit 1).

    Example: ptm predict runs/net-seed123.safetensors plane.jpg bird.png

    Example: ptm predict runs/sweep-dropout/dropout-seed123.safetensors --ensemble plane.jpg
    """
    from ptm_func.files import jsonio
    from ptm_func.files.checkpoint import ensemble_paths, load_ensemble
    from ptm_func.reports.predict import class_names
    from ptm_func.reports.predict import predict as predict_images
    from ptm_func.research.members import require_finite
    from ptm_func.training.devices import resolve_device

    with friendly_errors():
        checkpoints = [p for p in inputs if p.suffix == ".safetensors"]
        images = inputs[len(checkpoints) :]
        if not checkpoints or not images or any(p.suffix == ".safetensors" for p in images):
            raise UsageError("give CHECKPOINT... IMAGE...: checkpoints (.safetensors) first, then images")
        if ensemble:
            checkpoints = [member for path in checkpoints for member in ensemble_paths(path)]
        use_model_ref(model)
        loaded = load_ensemble(checkpoints, resolve_device(device))
        for path, ckpt in zip(checkpoints, loaded, strict=True):
            require_finite(ckpt, path)
        classes = class_names(loaded[0].training, loaded[0].model.n_classes)
        results = predict_images([(c.model, c.params, c.state) for c in loaded], images, classes)
    if as_json:
        typer.echo(jsonio.dumps([asdict(r) for r in results], indent=2))
    if len(loaded) > 1 and not as_json:
        typer.echo(f"ensemble of {len(loaded)} checkpoints (mean of their probabilities)", err=True)
    for r in results:
        if r.error is not None:
            typer.echo(f"ptm: error: {printable(r.error)}", err=True)
        elif not as_json:
            note = f"  ({r.note})" if r.note else ""
            runners_up = ", ".join(f"{printable(c)} {p:.3f}" for c, p in r.top[1:])
            others = f"  (then {runners_up})" if len(r.top) > 2 else ""
            typer.echo(f"{printable(r.path)}: {printable(r.label)} {r.probability:.3f}{others}{note}")
    if any(r.error is not None for r in results):
        raise typer.Exit(1)
