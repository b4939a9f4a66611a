"""Time the book's eager loop and the functional step side by side, in one process.

    python benchmarks/train_speed.py --model net --data bundled --device cpu

Prints steady-state seconds per epoch (median over the timed epochs, the first epoch -
compilation - reported apart) and the speed-up of each functional variant over eager.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

import torch

from ptm_func.baseline import book_training_loop
from ptm_func.data import load_dataset
from ptm_func.devices import resolve_device
from ptm_func.train import book_setup, fit, fit_ensemble


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="net")
    parser.add_argument("--data", "--data-dir", default="auto", help="auto, bundled, cifar10 or a folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is warm-up)")
    parser.add_argument(
        "--modes",
        default="default",
        help="comma-separated compile modes for the functional step "
        "(default, reduce-overhead, max-autotune-no-cudagraphs, eager)",
    )
    parser.add_argument("--n-blocks", type=int, default=None)
    parser.add_argument("--tied", action="store_true")
    parser.add_argument(
        "--replicas", type=int, default=0, help="also time K vmapped replicas (ensemble) against one"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.data, device=device)
    options = {"n_blocks": args.n_blocks} if args.n_blocks else {}
    if args.tied:
        options["tied"] = True
    model, config = book_setup(args.model, epochs=args.epochs, **options)

    def mode_config(mode: str):
        if mode == "eager":
            return replace(config, compile=False)
        return replace(config, compile=True, compile_mode=None if mode == "default" else mode)

    modes = args.modes.split(",")
    rows = {"book eager loop": time_book_loop(model, data, replace(config, compile=False))}
    for mode in modes:
        rows[f"functional, {mode}"] = time_functional(model, data, mode_config(mode))
    peak = None
    if args.replicas > 1:  # same compile mode as the first functional row
        ensemble_row = f"functional ensemble x{args.replicas}, {modes[0]}"
        rows[ensemble_row], peak = time_ensemble(model, data, mode_config(modes[0]), args.replicas)

    base = statistics.median(rows["book eager loop"][1:])
    print(
        f"\n{args.model} on {device} ({torch.__version__}), batch {config.batch_size}, "
        f"{len(data.train)} images, {args.epochs} epochs per run"
    )
    print(f"{'implementation':<44} {'first epoch s':>13} {'steady s/epoch':>15} {'speed-up':>9}")
    results = {}
    for name, seconds in rows.items():
        steady = statistics.median(seconds[1:])
        results[name] = {"first_epoch_s": seconds[0], "steady_s_per_epoch": steady, "speedup": base / steady}
        print(f"{name:<44} {seconds[0]:>13.3f} {steady:>15.4f} {base / steady:>8.2f}x")
    if peak is not None:
        single = results[f"functional, {modes[0]}"]["steady_s_per_epoch"]
        ensemble = results[ensemble_row]["steady_s_per_epoch"]
        print(
            f"{args.replicas} replicas take {ensemble / single:.2f}x the time of one "
            f"(peak memory {peak / 2**20:,.0f} MiB)"
        )
        results["ensemble"] = {
            "replicas": args.replicas,
            "time_vs_one": ensemble / single,
            "peak_memory_bytes": peak,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"model": args.model, "device": str(device), "torch": torch.__version__, "results": results},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
