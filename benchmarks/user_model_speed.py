"""Is your own model as fast as ptm's? The book's Net as ptm's built-in `net` and as a user's
nn.Module (through model_from_module: functional_call), trained by the same loop, in one
process, on the same batches, at the same image layout, eager and compiled.

    python benchmarks/user_model_speed.py --data bundled --device cpu --epochs 4

Prints the steady seconds per epoch (median of epochs 2..N) and the user module's time over
the built-in's, row by row; `--rounds 2` alternates the two twice and keeps each one's best.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from torch import nn

from ptm_func.data.sources import load_dataset
from ptm_func.nets.registry import get_model
from ptm_func.nets.user import model_from_module
from ptm_func.training.config import TrainConfig
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit


class UserNet(nn.Module):
    """The book's Net as a reader writes it (reshape: it runs on channels-last images too)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        out = torch.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = torch.max_pool2d(torch.tanh(self.conv2(out)), 2)
        return self.fc2(torch.tanh(self.fc1(out.reshape(-1, 8 * 8 * 8))))


def steady(model, data, config) -> float:
    seconds: list[float] = []
    fit(model, data, config, on_epoch=lambda stats, ts: seconds.append(stats.seconds))
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.data, ["airplane", "bird"], device)
    models = {"net (built-in)": get_model("net"), "Net (your nn.Module)": model_from_module(UserNet)}
    base = TrainConfig(epochs=args.epochs, eval_every=0)
    layouts = {"channels-last": True, "NCHW": False} if device.type == "cpu" else {"NCHW": False}
    print(f"torch {torch.__version__} on {device}; {len(data.train)} images, steady s/epoch (median of 2..N)")
    print(f"{'mode':<9} {'layout':<14} {'net (built-in)':>15} {'Net (yours)':>12} {'yours / built-in':>17}")
    for compiled in (False, True):
        for layout, channels_last in layouts.items():
            config = replace(base, compile=compiled, channels_last=channels_last)
            best = {name: float("inf") for name in models}
            for _ in range(args.rounds):
                for name, model in models.items():
                    best[name] = min(best[name], steady(model, data, config))
            ours, yours = best.values()
            mode = "compiled" if compiled else "eager"
            print(f"{mode:<9} {layout:<14} {ours:>15.3f} {yours:>12.3f} {yours / ours:>16.2f}x", flush=True)


if __name__ == "__main__":
    main()
