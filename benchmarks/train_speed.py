"""Time the book's eager loop and the functional step side by side, in one process.

    python benchmarks/train_speed.py --models net --data bundled --device cpu
    python benchmarks/train_speed.py --models all --data bundled --device cpu --epochs 4
    python benchmarks/train_speed.py --models resdeep --n-blocks 100 --subset 640 --epochs 3
    python benchmarks/train_speed.py --models net --data bundled --restarts 10 --epochs 5

For each model: the book's loop (eager nn.Module + torch.optim.SGD, NCHW, as the book runs
it), then the functional step in each `--modes` entry, all on the same batches. Prints the
first epoch (compilation included) and the steady seconds per epoch (median of the others),
and each row's speed-up over the book's loop measured in this process.

`--restarts N` runs each row in a fresh process instead, N times, taking turns (book,
compiled, eager, then the next round in reverse order), and prints each row's spread across
processes (min, median, max) and the ratio of medians: a swing that only shows between
processes (thread placement, a kernel chosen at start) shows there (restarts.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

import restarts
import torch

from ptm_func.catalog import TRAINABLE_NAMES
from ptm_func.data.dataset import Dataset
from ptm_func.data.sources import load_dataset
from ptm_func.reports.baseline import book_training_loop
from ptm_func.training import tuning
from ptm_func.training.config import book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit, fit_ensemble


def time_book_loop(model, data, config) -> list[float]:
    seconds = []
    torch.manual_seed(config.seed)
    book_training_loop(
        model.module().to(data.train.images.device),
        data.train,
        config,
        on_epoch=lambda epoch, loss, s: seconds.append(s),
    )
    return seconds


def time_functional(model, data, config) -> list[float]:
    seconds = []
    fit(model, data, config, on_epoch=lambda stats, ts: seconds.append(stats.seconds))
    return seconds


def time_ensemble(model, data, config, replicas) -> tuple[list[float], int]:
    seconds = []
    result = fit_ensemble(
        model, data, config, replicas, on_epoch=lambda stats, ts: seconds.append(stats.seconds)
    )
    return seconds, result.peak_memory_bytes


def subset(data: Dataset, n: int | None) -> Dataset:
    """The first `n` training images (all when None); validation is not timed."""
    if n is None:
        return data
    train = replace(data.train, images=data.train.images[:n], labels=data.train.labels[:n])
    return replace(data, train=train)


def mode_config(config, mode: str, channels_last: bool | None):
    """`mode`: eager, default, or another torch.compile mode; eval only at the end."""
    config = replace(config, eval_every=0, channels_last=channels_last)
    if mode == "eager":
        return replace(config, compile=False)
    return replace(config, compile=True, compile_mode=mode)  # "default" is not CUDA's default


BOOK_ROW = "book eager loop"


def row_names(modes: list[str]) -> list[str]:
    """The rows one process times, in order: the book's loop, then each functional mode."""
    return [BOOK_ROW, *(f"functional, {mode}" for mode in modes)]


def time_model(name: str, data: Dataset, args) -> dict[str, list[float] | int]:
    options = {"n_blocks": args.n_blocks} if args.n_blocks and name == "resdeep" else {}
    if args.tied and name == "resdeep":
        options["tied"] = True
    model, config = book_setup(name, epochs=args.epochs, **options)
    # the book's loop has no validation to skip and never compiles
    rows: dict[str, list[float] | int] = {}

    def record(row: str, seconds: list[float]) -> None:
        rows[row] = seconds  # and a line now, so a run cut short by a time limit still says it
        print(f"  [{name}] {row}: {', '.join(f'{s:.4f}' for s in seconds)} s per epoch", flush=True)

    modes = args.modes.split(",")
    wanted = row_names(modes) if args.only is None else [args.only]
    if BOOK_ROW in wanted:
        record(BOOK_ROW, time_book_loop(model, data, config))
    for mode in modes:
        if f"functional, {mode}" in wanted:
            seconds = time_functional(model, data, mode_config(config, mode, args.layout))
            record(f"functional, {mode}", seconds)
    if args.replicas > 1 and args.only is None:  # same compile mode as the first functional row
        seconds, peak = time_ensemble(model, data, mode_config(config, modes[0], args.layout), args.replicas)
        record(f"functional ensemble x{args.replicas}, {modes[0]}", seconds)
        rows["peak_memory_bytes"] = peak
    return rows


def report(name: str, rows: dict, args) -> dict:
    base = statistics.median(rows[BOOK_ROW][1:])
    print(f"\n{name}:")
    print(f"  {'implementation':<42} {'first epoch s':>13} {'steady s/epoch':>15} {'vs book':>8}")
    results = {}
    for row, seconds in rows.items():
        if row == "peak_memory_bytes":
            continue
        steady = statistics.median(seconds[1:])
        results[row] = {"first_epoch_s": seconds[0], "steady_s_per_epoch": steady, "speedup": base / steady}
        print(f"  {row:<42} {seconds[0]:>13.3f} {steady:>15.4f} {base / steady:>7.2f}x")
    if "peak_memory_bytes" in rows:
        print(f"  peak memory of the ensemble run: {rows['peak_memory_bytes'] / 2**20:,.0f} MiB")
        ensemble = next(row for row in results if row.startswith("functional ensemble"))
        alone = results[f"functional, {ensemble.rsplit(', ', 1)[1]}"]["steady_s_per_epoch"]
        ratio = results[ensemble]["steady_s_per_epoch"] / alone
        print(f"  {ensemble.split(',')[0]} epoch / one run's epoch, same mode: {ratio:.2f}x")
        results["ensemble_vs_one_run"] = ratio
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", "--model", default="net", help=f"comma-separated, or all ({', '.join(TRAINABLE_NAMES)})"
    )
    parser.add_argument("--data", "--data-dir", default="auto", help="auto, bundled, cifar10 or a folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is warm-up)")
    parser.add_argument(
        "--modes",
        default="default,eager",
        help="comma-separated: eager, or torch.compile modes for the functional step "
        "(default, reduce-overhead, max-autotune-no-cudagraphs)",
    )
    parser.add_argument("--subset", type=int, default=None, help="time on the first N training images")
    parser.add_argument("--n-blocks", type=int, default=None, help="resdeep's blocks (the book: 100)")
    parser.add_argument("--tied", action="store_true", help="resdeep with the book's one shared block")
    parser.add_argument(
        "--layout",
        choices=("auto", "nchw", "channels-last"),
        default="auto",
        help="image memory order of the functional runs (auto: channels-last on CPU)",
    )
    parser.add_argument(
        "--replicas", type=int, default=0, help="also time K replicas (an ensemble) against one"
    )
    parser.add_argument(
        "--restarts", type=int, default=0, help="time each row in N fresh processes, taking turns"
    )
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one row (a restart)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.restarts:
        restarts.main(args, row_names(args.modes.split(",")))
        return
    args.layout = {"auto": None, "nchw": False, "channels-last": True}[args.layout]

    device = resolve_device(args.device)
    names = list(TRAINABLE_NAMES) if args.models == "all" else args.models.split(",")
    unknown = [name for name in names if name not in TRAINABLE_NAMES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(TRAINABLE_NAMES)}, all")
    data = subset(load_dataset(args.data, device=device), args.subset)
    # process-wide: the book's loop gets the same allocator as the functional runs
    tuned = device.type == "cpu" and tuning.tune_allocator()
    print(
        f"{device} ({torch.__version__}, {torch.get_num_threads()} threads, allocator tuned: {tuned}), "
        f"batch 64, {len(data.train)} images, {args.epochs} epochs per run"
    )
    if args.only is not None:  # one row of one model, for restarts.py: per-epoch seconds out
        rows = time_model(names[0], data, args)
        with open(args.json, "w") as f:
            json.dump(rows | {"environment": restarts.environment()}, f)
        return
    results = {name: report(name, time_model(name, data, args), args) for name in names}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
