"""The loss along a straight line in weight space, between two checkpoints or from init.

    (1 - alpha) * A + alpha * B,  alpha from -0.25 to 1.25

With one checkpoint, A is its initial weights (its seed re-run through `model.init`) and B the
trained ones: how directly training went. With two, a bump between them is a barrier between
two solutions. BatchNorm models get running statistics recomputed on training images at every
point (`--running-stats interpolate` takes the line through the checkpoints' own instead).

    ptm train net --epochs 20 --data bundled
    python examples/loss_line.py runs/net-seed123.safetensors --out runs/loss_line.png
    ptm train net --epochs 20 --data bundled --seed 7
    python examples/loss_line.py runs/net-seed123.safetensors runs/net-seed7.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ptm_func.data.sources import load_trained_on
from ptm_func.reports.plot import pyplot, save_figure
from ptm_func.research.evaluation import has_running_stats
from ptm_func.research.landscape import RUNNING_STATS, loss_line
from ptm_func.research.members import load_members
from ptm_func.research.script import ArgumentParser, finite_float, run_main


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="B, or A and B (.safetensors from ptm train)")
    parser.add_argument("--data", default=None, help="default: the data the (last) checkpoint was trained on")
    parser.add_argument("--points", type=int, default=31, help="alphas from --start to --stop")
    parser.add_argument("--start", type=finite_float, default=-0.25, help="first alpha (default -0.25)")
    parser.add_argument("--stop", type=finite_float, default=1.25, help="last alpha (default 1.25)")
    parser.add_argument(
        "--train-images", type=int, default=2000, help="training images evaluated (a random sample)"
    )
    parser.add_argument("--running-stats", choices=RUNNING_STATS, default="recompute")
    parser.add_argument("--out", default="runs/loss_line.png")
    args = parser.parse_args(argv)
    if args.points < 2 or args.train_images < 1:
        parser.error("--points must be >= 2 and --train-images >= 1")
    if args.start >= args.stop:
        parser.error(f"--start must be below --stop, got {args.start:g} and {args.stop:g}")
    if len(args.checkpoints) > 2:
        parser.error("give one checkpoint (line from its init) or two")

    # finite weights; two checkpoints: one model, one config, trained on the same classes
    *first, end = load_members(args.checkpoints)
    model = end.model
    if first:
        (begin,) = first
        start, start_name = (begin.params, begin.state), args.checkpoints[0]
    else:
        seed = end.training.get("config", {}).get("seed", 123)
        start, start_name = model.init(seed), f"init (seed {seed})"
    data = load_trained_on(end.training, args.data)
    train = data.train.sample(args.train_images)  # a random sample: the split is sorted by class
    alphas = sorted(
        {round(a, 6) for a in torch.linspace(args.start, args.stop, args.points).tolist()} | {0.0, 1.0}
    )

    t0 = time.perf_counter()
    points = loss_line(
        model,
        start,
        (end.params, end.state),
        {"train": train, "val": data.val},
        alphas,
        running_stats=args.running_stats,
        stats_images=train.images,
    )
    print(
        f"{model.name}: {len(points)} points from {start_name} (alpha 0) to {args.checkpoints[-1]} (alpha 1)"
    )
    print(
        f"in {time.perf_counter() - t0:.1f} s; {len(train)} train and {len(data.val)} val images, eval mode"
    )
    if has_running_stats(end.state):
        how = {
            "recompute": f"recomputed at each point on the {len(train)} training images",
            "interpolate": "interpolated between the two checkpoints' own",
        }[args.running_stats]
        print(f"BatchNorm running statistics: {how}")
    print(f"{'alpha':>6} {'train loss':>10} {'train acc':>9} {'val loss':>9} {'val acc':>8}")
    for p in points:
        tr, va = p.evaluations["train"], p.evaluations["val"]
        print(f"{p.alpha:>6.2f} {tr.loss:>10.4f} {tr.accuracy:>9.4f} {va.loss:>9.4f} {va.accuracy:>8.4f}")
    inside = [p for p in points if 0 <= p.alpha <= 1]
    ends = max(inside[0].evaluations["val"].loss, inside[-1].evaluations["val"].loss)
    barrier = max(p.evaluations["val"].loss for p in inside) - ends
    print(f"val-loss barrier between the ends (max on the line - the higher end): {barrier:.4f}")
    draw(points, args.out, f"{model.name}: {start_name} -> {args.checkpoints[-1]}")
    print(f"plot: {args.out}")
    return {"points": points, "barrier": barrier, "out": args.out}


def draw(points, path, title):
    plt = pyplot()
    alphas = [p.alpha for p in points]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
        loss_ax.plot(
            alphas, [p.evaluations[split].loss for p in points], "o-", ms=3, color=colour, label=split
        )
        acc_ax.plot(
            alphas, [p.evaluations[split].accuracy for p in points], "o-", ms=3, color=colour, label=split
        )
    for ax, name in ((loss_ax, "cross-entropy loss"), (acc_ax, "accuracy")):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("alpha  (0: start, 1: end)")
        ax.set_ylabel(name)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, plt, path, dpi=110)


if __name__ == "__main__":
    sys.exit(run_main(main))
