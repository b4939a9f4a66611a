"""What --augment flip,crop costs per epoch, against the same run without it, in one process.

    python benchmarks/augment_speed.py --models net,res --data bundled --device cpu --rounds 3

For each model, one epoch without and one with augmentation take turns, --rounds times after
a warm-up round (compilation), so a noisy machine slows both alike; it prints the median
seconds per epoch (training only, no validation) and the median ratio augmented / plain of the
same round. Compiled as `ptm train` compiles for many epochs (CPU_COMPILE_EPOCHS), unless
--no-compile.
"""

from __future__ import annotations

import argparse
import statistics

from ptm_func.data.sources import load_dataset
from ptm_func.training.config import book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit


def epoch_seconds(model, data, config) -> float:
    seconds: list[float] = []
    fit(model, data, config, on_epoch=lambda stats, ts: seconds.append(stats.seconds))
    return seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="net,res")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--classes", default=None, help="e.g. all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.data, args.classes, device)
    print(f"{len(data.train)} train images, {len(data.classes)} classes, {device}")
    for name in args.models.split(","):
        model, plain = book_setup(
            name, epochs=1, eval_every=0, n_classes=len(data.classes), compile=not args.no_compile
        )
        augmented = book_setup(
            name, epochs=1, eval_every=0, n_classes=len(data.classes), compile=not args.no_compile,
            augment=("flip", "crop"),
        )[1]  # fmt: skip
        epoch_seconds(model, data, plain), epoch_seconds(model, data, augmented)  # warm-up: compile
        times = {"plain": [], "augmented": []}
        for _ in range(args.rounds):
            times["plain"].append(epoch_seconds(model, data, plain))
            times["augmented"].append(epoch_seconds(model, data, augmented))
        ratios = [a / p for a, p in zip(times["augmented"], times["plain"], strict=True)]
        print(
            f"{name}: plain {statistics.median(times['plain']):.4f} s/epoch, augmented "
            f"{statistics.median(times['augmented']):.4f} s/epoch, ratio {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
