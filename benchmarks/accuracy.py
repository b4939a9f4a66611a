"""Train a model both ways - the book's eager loop and ptm_func's functional step - and compare.

    python benchmarks/accuracy.py --model net --data bundled --epochs 100

Same data, seed, initial weights and batch order; prints each one's train/val accuracy
(eval mode) and the difference, and writes them as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from ptm_func.data.sources import load_dataset
from ptm_func.reports.baseline import book_training_loop, module_accuracy
from ptm_func.training.config import book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="net")
    parser.add_argument("--data", "--data-dir", default="auto", help="auto, bundled, cifar10 or a folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--n-blocks", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.data, device=device)
    options = {"n_blocks": args.n_blocks} if args.n_blocks else {}
    model, config = book_setup(
        args.model, epochs=args.epochs, seed=args.seed, compile=args.compile, **options
    )

    t0 = time.perf_counter()
    ours = fit(model, data, config)
    ours_s = time.perf_counter() - t0
    print(
        f"{args.model:<10} functional train/val "
        f"{ours.train_accuracy:.4f}/{ours.val_accuracy:.4f} ({ours_s:.0f}s)",
        flush=True,
    )

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    twin = book_training_loop(model.module().to(device), data.train, replace(config, compile=False))
    book = {
        "train_accuracy": module_accuracy(twin, data.train),
        "val_accuracy": module_accuracy(twin, data.val),
    }
    book_s = time.perf_counter() - t0

    row = {
        "model": args.model,
        "epochs": args.epochs,
        "device": str(device),
        "functional": {**ours.summary(), "seconds": ours_s},
        "book_eager": {**book, "seconds": book_s},
        "val_difference": ours.val_accuracy - book["val_accuracy"],
    }
    print(
        f"{args.model:<10} book eager "
        f"{book['train_accuracy']:.4f}/{book['val_accuracy']:.4f} ({book_s:.0f}s)   "
        f"val diff {row['val_difference']:+.4f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
