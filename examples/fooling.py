"""Chapter 8, exercise 2: fool the airplane-vs-bird net.

1. Confidence: the CIFAR-2 Net looks at the other eight CIFAR-10 classes (cats, ships, ...):
   how many does it call airplane or bird with more than 95% confidence? A picture of the
   most confident ones.
2. Edits: the smallest L-infinity edit found (input gradients of the pure model, ptm_func's
   research.edits) that turns an airplane into "bird" and an image of neither into "airplane",
   both above 95%, shown before and after.
3. Capacity: the edit size needed over many images for a smaller net of our own (a user
   module, below), the book's Net and NetWidth.

Each model is trained first with ptm's run API (or taken from OUT when there: run it again and
nothing retrains).

    python examples/fooling.py --data bundled --others ../shared/data/cifar10-mini --epochs 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from ptm_func import Silent, load_dataset, register_model, run_training
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.nets.user import model_from_module
from ptm_func.reports.plot import pyplot, save_figure
from ptm_func.research.edits import smallest_edits, to_pixels
from ptm_func.research.evaluation import probabilities
from ptm_func.research.script import ArgumentParser, run_main

CIFAR2 = ("airplane", "bird")
CONFIDENT = 0.95


class SmallNet(nn.Module):
    """The book's Net with a quarter of its channels (4 and 2) and 16 hidden units."""

    def __init__(self, n_classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(4, 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(2 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x):
        out = torch.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = torch.max_pool2d(torch.tanh(self.conv2(out)), 2)
        return self.fc2(torch.tanh(self.fc1(out.flatten(1))))


@register_model("net-small")
def net_small(n_classes: int = 2):
    return model_from_module(SmallNet, n_classes=n_classes)


MODELS = ("net-small", "net", "width")  # by capacity


def trained(model: str, args) -> object:
    """The model's checkpoint in OUT, trained (or resumed to --epochs) if need be."""
    path = args.out / f"{model}.safetensors"
    settings = {"data": args.data, "device": "cpu", "reporter": Silent() if args.quiet else None,
                "epochs": args.epochs, "stop_on_signals": True}  # fmt: skip
    outcome = None
    if not path.exists():
        outcome = run_training(model, out=path, force=True, **settings)
    elif load_checkpoint(path).training.get("epochs_done", 0) < args.epochs:
        outcome = run_training(model, resume=path, **settings)
    if outcome is not None and outcome.result.interrupted:  # saved: run this again to go on
        raise KeyboardInterrupt
    return load_checkpoint(path)


def confidence(ckpt, others) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Per other class, how many images the net calls airplane or bird above CONFIDENT."""
    images = torch.cat([others.train.images, others.val.images])
    labels = torch.cat([others.train.labels, others.val.labels])
    probs = probabilities(ckpt.model, ckpt.params, ckpt.state, images)
    top, said = probs.max(1)
    table = {}
    for c, name in enumerate(others.classes):
        mine = labels == c
        table[name] = {
            "images": int(mine.sum()),
            **{cls: int(((said == i) & (top > CONFIDENT) & mine).sum()) for i, cls in enumerate(CIFAR2)},
        }
    return table, images, probs


def edits_of(ckpt, airplanes: torch.Tensor, neither: torch.Tensor, args) -> dict:
    """The smallest edits found: airplane -> bird, and neither -> airplane."""
    search = {"confidence": CONFIDENT, "max_size": args.max_edit / 255, "steps": args.steps,
              "bisections": args.bisections}  # fmt: skip
    return {
        name: smallest_edits(ckpt.model, ckpt.params, ckpt.state, images, target, **search)
        for name, images, target in (("airplane->bird", airplanes, 1), ("neither->airplane", neither, 0))
    }


def spread(edits) -> str:
    """`median [quartiles] (found/all)` of the edit sizes, in 8-bit levels."""
    sizes = edits.size[edits.found] * 255
    if len(sizes) == 0:
        return f"none (0/{len(edits.size)})"
    q1, q2, q3 = (float(sizes.quantile(q)) for q in (0.25, 0.5, 0.75))
    return f"{q2:.2f} [{q1:.2f}, {q3:.2f}] ({len(sizes)}/{len(edits.size)})"


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bundled", help="CIFAR-2 to train on (as ptm train's --data)")
    parser.add_argument("--others", required=True, help="an ImageFolder with CIFAR-10's other classes")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--images", type=int, default=64, help="images per edit direction (table)")
    parser.add_argument("--out", type=Path, default=Path("runs/fooling"))
    parser.add_argument(
        "--max-edit", type=float, default=64, help="the largest edit searched, in 8-bit levels"
    )
    parser.add_argument("--steps", type=int, default=30, help="gradient steps per search")
    parser.add_argument("--bisections", type=int, default=10, help="searches to narrow each edit down")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if min(args.images, args.epochs, args.steps) < 1 or args.bisections < 0:
        parser.error("--images, --epochs and --steps must be >= 1, --bisections >= 0")
    if not 0 < args.max_edit <= 255:
        parser.error("--max-edit must be in (0, 255]")
    models = {m: trained(m, args) for m in MODELS}
    net = models["net"]
    cifar2 = load_dataset(args.data, list(CIFAR2))
    folders = sorted(p.name for p in (Path(args.others) / "train").iterdir() if p.is_dir())
    others = load_dataset(args.others, [c for c in folders if c not in CIFAR2])
    table, images, probs = confidence(net, others)
    _print_confidence(table)
    _confident_picture(images, probs, others, args.out / "confident.png")

    airplanes = cifar2.val.images[cifar2.val.labels == 0][: args.images]
    neither = _neither(others, args.images, net)
    result = {"confidence": table, "edits": {}}
    print(
        f"\n{'model':<10} {'params':>7} {'val acc':>8} {'airplane -> bird':>27} {'neither -> airplane':>27}"
    )
    for name, ckpt in models.items():
        edits = edits_of(ckpt, airplanes, neither, args)
        params = sum(p.numel() for p in ckpt.params.values())
        val = ckpt.training.get("val_accuracy", float("nan"))
        result["edits"][name] = {"params": params, "val_accuracy": val,
                                 **{k: (e.size * 255).tolist() for k, e in edits.items()}}  # fmt: skip
        columns = (f"{spread(e):>27}" for e in edits.values())
        print(f"{name:<10} {params:>7,} {val:>8.4f} {' '.join(columns)}")
        if name == "net":
            shown = edits
    print(
        f"(L-infinity edit to p > {CONFIDENT} in 8-bit levels: median [quartiles] (found within "
        f"{args.max_edit:g}/all), over {len(airplanes)} val airplanes and {len(neither)} images of neither)"
    )
    _edits_picture(net, airplanes, neither, shown, args.out / "edits.png")
    return result


def _neither(others, count: int, net) -> torch.Tensor:
    """`count` test images of the other classes, as many of each, none the net already calls
    airplane above CONFIDENT."""
    images, labels = others.val.images, others.val.labels
    p_airplane = probabilities(net.model, net.params, net.state, images)[:, 0]
    per_class = -(-count // len(others.classes))
    picked = [
        torch.nonzero((labels == c) & (p_airplane <= CONFIDENT))[:per_class, 0]
        for c in range(len(others.classes))
    ]
    return images[torch.cat(picked)[:count]]


def _print_confidence(table: dict) -> None:
    print(f"{'class':<11} {'images':>6} {'airplane >95%':>14} {'bird >95%':>10}")
    for name, row in table.items():
        print(f"{name:<11} {row['images']:>6} {row['airplane']:>14} {row['bird']:>10}")


def _confident_picture(images, probs, others, path: Path, count: int = 12) -> None:
    plt = pyplot()
    top, said = probs.max(1)
    labels = torch.cat([others.train.labels, others.val.labels])
    order = top.argsort(descending=True)[:count]
    fig, axes = plt.subplots(2, count // 2, figsize=(count, 4.6))
    for ax, i in zip(axes.flat, order.tolist(), strict=True):
        ax.imshow(to_pixels(images[i : i + 1])[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"a {others.classes[labels[i]]}\n{CIFAR2[said[i]]} {top[i]:.4f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Neither airplane nor bird: the CIFAR-2 Net's most confident calls")
    save_figure(fig, plt, path)
    print(f"picture: {path}")


def _edits_picture(ckpt, airplanes, neither, edits: dict, path: Path) -> None:
    """For each direction, the image whose edit is the median one: before, after, the edit."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(7.5, 5.6))
    rows = zip((airplanes, neither), edits.items(), (1, 0), strict=True)
    for row, (images, (name, found), target) in enumerate(rows):
        sizes = torch.where(found.found, found.size, torch.full_like(found.size, float("inf")))
        i = int(sizes.argsort()[int(found.found.sum()) // 2]) if bool(found.found.any()) else 0
        image, edited = images[i : i + 1], found.images[i : i + 1]
        before = probabilities(ckpt.model, ckpt.params, ckpt.state, image)[0]
        difference = to_pixels(edited) - to_pixels(image)
        scale = max(float(difference.abs().max()), 1e-8)
        shown = (to_pixels(image)[0], to_pixels(edited)[0], 0.5 + difference[0] / (2 * scale))
        titles = (
            f"before: {CIFAR2[1 - target]} {before[1 - target]:.4f}",
            f"after: {CIFAR2[target]} {float(found.probability[i]):.4f}",
            f"the edit: at most {float(found.size[i]) * 255:.2f}/255\n(scaled up to show)",
        )
        for ax, picture, title in zip(axes[row], shown, titles, strict=True):
            ax.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        axes[row][0].set_ylabel(name)
    fig.suptitle("The median edits found (Net): airplane -> bird, neither -> airplane")
    save_figure(fig, plt, path)
    print(f"picture: {path}")


if __name__ == "__main__":
    sys.exit(run_main(main))
