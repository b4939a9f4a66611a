"""Chapter 8, exercise 1: the book's Net with 5x5 kernels, and with (1, 3) kernels.

Each is the reader's own nn.Module (below), given to ptm through `register_model` and
`model_from_module`; the 3x3 Net is ptm's own `net`. Every model trains K seeds as
`ptm sweep MODEL --seeds K` would (a sweep folder each, under OUT; run it again and finished
seeds are kept), then the table: parameters, train and val accuracy (eval mode) and the gap
between them, mean +/- std over the seeds.

    python examples/kernels.py --seeds 3 --epochs 100 --data bundled --out runs/kernels
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from ptm_func import Silent, get_model, model_from_module, register_model, run_sweep
from ptm_func.research.script import ArgumentParser, run_main


class KernelNet(nn.Module):
    """The book's Net with `kernel` (height, width) kernels, padded to keep 32x32 and 16x16."""

    def __init__(self, kernel: tuple[int, int] = (3, 3), n_classes: int = 2):
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.conv1 = nn.Conv2d(3, 16, kernel_size=kernel, padding=padding)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=kernel, padding=padding)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, n_classes)

    def forward(self, x):
        out = torch.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = torch.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = out.reshape(-1, 8 * 8 * 8)  # reshape: images may come channels-last
        return self.fc2(torch.tanh(self.fc1(out)))


@register_model("net-5x5")
def net_5x5(n_classes: int = 2):
    return model_from_module(KernelNet, kernel=(5, 5), n_classes=n_classes)


@register_model("net-1x3")
def net_1x3(n_classes: int = 2):
    return model_from_module(KernelNet, kernel=(1, 3), n_classes=n_classes)


MODELS = ("net", "net-5x5", "net-1x3")


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} +/- {statistics.pstdev(values):.4f}"


def train(model: str, args) -> list[dict]:
    out = args.out / model
    resume = out if (out / "sweep.json").exists() else None
    report = run_sweep(
        None if resume else model,
        seeds=args.seeds,
        resume=resume,
        out=None if resume else out,
        epochs=args.epochs,
        data=args.data,
        device=args.device,
        reporter=Silent() if args.quiet else None,
        stop_on_signals=True,
    )
    if report.interrupted:
        raise KeyboardInterrupt
    return [r for r in report.outcome.results if r["diverged_in_epoch"] is None]


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--data", default=None, help="as ptm train's --data (default: auto)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/kernels"), help="one sweep folder per model")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    table = {}
    print(f"{'model':<8} {'params':>7} {'train':>17} {'val':>17} {'gap (train - val)':>19}")
    for model in MODELS:
        results = train(model, args)
        train_acc = [r["train_accuracy"] for r in results]
        val_acc = [r["val_accuracy"] for r in results]
        gaps = [t - v for t, v in zip(train_acc, val_acc, strict=True)]
        params, _ = get_model(model).init(0)
        count = sum(p.numel() for p in params.values())
        table[model] = {"params": count, "train": train_acc, "val": val_acc, "gap": gaps}
        print(
            f"{model:<8} {count:>7,} {mean_std(train_acc):>17} {mean_std(val_acc):>17} {mean_std(gaps):>19}"
        )
    return table


if __name__ == "__main__":
    sys.exit(run_main(main))
