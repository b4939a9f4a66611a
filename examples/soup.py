"""Does averaging runs help? A weight average (model soup) against the ensemble and the best member.

The soup is one network with the members' mean weights (one forward pass); the ensemble
averages the members' predicted probabilities (K forward passes). Averaging weights works
within one basin: members that share their initial weights and data order (a sweep with one
seed, differing in learning rate) soup well; independently initialised ones (`--replicas`, one
seed each) do not, as their hidden units are in different orders.

    ptm sweep net --lr 0.01,0.02,0.03 --epochs 10 --data bundled        # one seed: a shared init
    python examples/soup.py runs/sweep-net/*.safetensors --out runs/soup.png
    ptm train net --replicas 3 --epochs 10 --data bundled --out runs/seeds-net   # three seeds
    python examples/soup.py runs/seeds-net/*.safetensors
"""

from __future__ import annotations

import argparse
import sys

import torch

from ptm_func.data.sources import load_trained_on
from ptm_func.reports.plot import pyplot, save_figure
from ptm_func.research.ensemble import ensemble_probabilities
from ptm_func.research.evaluation import Evaluation, evaluate_split, has_running_stats
from ptm_func.research.members import load_members
from ptm_func.research.script import ArgumentParser, run_main
from ptm_func.research.soup import soup


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="the members (.safetensors of one model)")
    parser.add_argument("--data", default=None, help="default: the data the first one was trained on")
    parser.add_argument(
        "--stats-images",
        type=int,
        default=2000,
        help="training images (a random sample) for BatchNorm statistics",
    )
    parser.add_argument("--out", default="runs/soup.png")
    args = parser.parse_args(argv)
    if args.stats_images < 1:
        parser.error("--stats-images must be >= 1")
    # a shell glob (runs/sweep-net/*.safetensors) also matches the optimizer-state files beside them
    args.checkpoints = [p for p in args.checkpoints if not p.endswith(".train.safetensors")]
    if len(args.checkpoints) < 2:
        parser.error("give two or more checkpoints to average")

    # finite weights, one model with one config, trained on the same classes
    members = load_members(args.checkpoints)
    model = members[0].model
    data = load_trained_on(members[0].training, args.data)
    seeds = {m.training.get("config", {}).get("seed") for m in members}

    rows = []
    for path, m in zip(args.checkpoints, members, strict=True):
        rows.append((f"member {path}", evaluate_split(model, m.params, m.state, data.val)))
    best = max(rows, key=lambda row: row[1].accuracy)
    souped = soup(
        model,
        [(m.params, m.state) for m in members],
        stats_images=data.train.sample(args.stats_images).images,
    )
    rows.append(("uniform soup (mean weights)", evaluate_split(model, *souped, data.val)))
    _, mean = ensemble_probabilities([(model, m.params, m.state) for m in members], data.val.images)  # (N, C)
    ensemble_loss = torch.nn.functional.nll_loss(mean.clamp_min(1e-12).log(), data.val.labels).item()
    ensemble_accuracy = (mean.argmax(dim=1) == data.val.labels).double().mean().item()
    rows.append(
        ("ensemble (mean probabilities)", Evaluation(ensemble_loss, ensemble_accuracy, len(data.val)))
    )

    print(
        f"{model.name}, {len(members)} members (seeds {sorted(s for s in seeds if s is not None)}), val split"
    )
    if has_running_stats(members[0].state):
        print(f"BatchNorm running statistics of the soup: recomputed on {args.stats_images} training images")
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}} {'val loss':>9} {'val acc':>8}")
    for name, ev in rows:
        print(f"{name:<{width}} {ev.loss:>9.4f} {ev.accuracy:>8.4f}")
    soup_acc, ens_acc = rows[-2][1].accuracy, rows[-1][1].accuracy
    kind = "one seed: a shared init" if len(seeds) == 1 else "different seeds"
    print(
        f"soup - best member: {soup_acc - best[1].accuracy:+.4f}; ensemble - best member: "
        f"{ens_acc - best[1].accuracy:+.4f} ({kind})"
    )
    draw(rows, args.out, f"{model.name}: {len(members)} members ({kind}): members, soup, ensemble")
    print(f"chart: {args.out}")
    return {"rows": rows, "out": args.out}


def draw(rows, path, title):
    plt = pyplot()
    names = [name.replace("member ", "").rsplit("/", 1)[-1] for name, _ in rows]
    colours = ["tab:grey"] * (len(rows) - 2) + ["tab:green", "tab:purple"]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(rows)), 4))
    for ax, field, label in ((axes[0], "accuracy", "val accuracy"), (axes[1], "loss", "val loss")):
        values = [getattr(ev, field) for _, ev in rows]
        bars = ax.bar(range(len(rows)), values, color=colours)
        ax.bar_label(bars, labels=[f"{v:.4f}" for v in values], fontsize=7)
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=7)
        spread = max(values) - min(values)
        ax.set_ylim(max(0.0, min(values) - spread - 0.02), max(values) + 0.3 * spread + 0.01)
        ax.set_ylabel(label)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, plt, path, dpi=110)


if __name__ == "__main__":
    sys.exit(run_main(main))
