"""Which training images does a trained net find hardest, and why?

Per-example gradients, `vmap(grad(loss))` over the pure model, for every training image; the
images of each class with the largest gradient norm (or loss) are drawn in a grid with their
label, the predicted class and probabilities. Odd and mislabeled-looking images surface.

    ptm train net --epochs 20 --data bundled
    python examples/hard_examples.py runs/net-seed123.safetensors --out runs/hard_examples.png
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ptm_func.data.dataset import BOOK_MEAN, BOOK_STD
from ptm_func.data.sources import load_trained_on
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.reports.plot import pyplot, save_figure
from ptm_func.research.members import require_finite
from ptm_func.research.per_example import score_examples
from ptm_func.research.script import ArgumentParser, run_main

BY = {"gradient_norms": "per-example gradient norm", "losses": "loss"}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .safetensors checkpoint written by ptm train")
    parser.add_argument("--data", default=None, help="default: the data it was trained on")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--by", choices=("gradient_norms", "losses"), default="gradient_norms")
    parser.add_argument("--top", type=int, default=8, help="images per class in the grid")
    parser.add_argument("--out", default="runs/hard_examples.png")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")

    ckpt = load_checkpoint(args.checkpoint)
    require_finite(ckpt, args.checkpoint)
    data = load_trained_on(ckpt.training, args.data)
    split = getattr(data, args.split)
    t0 = time.perf_counter()
    scores = score_examples(ckpt.model, ckpt.params, ckpt.state, split)
    seconds = time.perf_counter() - t0
    # the hardest of each class: one class's confusions would otherwise fill the grid
    hardest = torch.cat(
        [scores.hardest(args.top, by=args.by, among=split.labels == c) for c in range(len(data.classes))]
    )

    print(f"{len(split)} {args.split} images scored in {seconds:.1f} s (per-example gradients, eval mode)")
    print(f"{'index':>6} {'label':>9} {'predicted':>9} {'p(label)':>8} {'loss':>7} {'|grad|':>7}")
    rows = []
    for i in hardest.tolist():
        label = int(split.labels[i])
        probs = scores.probabilities[i]
        row = {
            "index": i,
            "label": data.classes[label],
            "predicted": data.classes[int(probs.argmax())],
            "p_label": float(probs[label]),
            "loss": float(scores.losses[i]),
            "gradient_norm": float(scores.gradient_norms[i]),
        }
        rows.append(row)
        print(
            f"{i:>6} {row['label']:>9} {row['predicted']:>9} {row['p_label']:>8.3f} "
            f"{row['loss']:>7.2f} {row['gradient_norm']:>7.2f}"
        )
    wrong = sum(r["label"] != r["predicted"] for r in rows)
    correlation = torch.corrcoef(torch.stack([scores.losses, scores.gradient_norms]))[0, 1].item()
    print(
        f"{wrong} of the {len(rows)} are misclassified; loss vs gradient norm correlation {correlation:.2f}"
    )
    draw(
        split,
        hardest.tolist(),
        rows,
        args.out,
        title=f"{ckpt.model.name}: the hardest {args.split} images of each class, by {BY[args.by]}",
    )
    print(f"grid: {args.out}")
    return {"rows": rows, "scores": scores, "out": args.out}


def draw(split, indices, rows, path, title):
    plt = pyplot()
    cols = 8
    n_rows = max(1, -(-len(indices) // cols))
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(1.9 * cols, 2.3 * n_rows + 0.4), squeeze=False, layout="constrained"
    )
    mean, std = torch.tensor(BOOK_MEAN).view(3, 1, 1), torch.tensor(BOOK_STD).view(3, 1, 1)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, row in zip(axes.flat, indices, rows, strict=False):
        image = (split.images[i].cpu() * std + mean).clamp(0, 1)  # undo the normalisation
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")  # (3, H, W) -> (H, W, 3)
        colour = "tab:red" if row["label"] != row["predicted"] else "black"
        ax.set_title(
            f"#{i} {row['label']} -> {row['predicted']}\n"
            f"p(label) {row['p_label']:.2f}  |g| {row['gradient_norm']:.1f}",
            fontsize=7,
            color=colour,
        )
    fig.suptitle(title, fontsize=10)
    save_figure(fig, plt, path, dpi=110)


if __name__ == "__main__":
    sys.exit(run_main(main))
