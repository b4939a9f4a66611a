"""How much does the seed move a result? One model, K seeds, through the run API.

Trains MODEL with seeds SEED, SEED+1, ... as `ptm sweep MODEL --seeds K` would (one checkpoint
and record per seed in OUT; run it again and finished seeds are kept, an interrupted chunk
resumes), then prints each seed's val accuracy, their mean +/- std, and the ensemble of all K
(the mean of their probabilities) - what one more seed is worth against what averaging buys.

    python examples/seeds.py net --seeds 4 --epochs 10 --data bundled --out runs/seeds-net
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from ptm_func import (
    TRAINABLE_NAMES,
    Silent,
    ensemble_accuracy,
    load_checkpoint,
    load_trained_on,
    run_sweep,
)
from ptm_func.research.script import ArgumentParser, run_main


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=TRAINABLE_NAMES)
    parser.add_argument("--seeds", type=int, default=4, help="how many seeds (default 4)")
    parser.add_argument("--seed", type=int, default=123, help="the first seed")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default=None, help="as ptm train's --data (default: auto)")
    parser.add_argument("--classes", default=None, help="two comma-separated class names")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="the folder (default runs/seeds-MODEL)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: one seed has no spread")
    out = args.out or Path("runs") / f"seeds-{args.model}"
    resume = out if (out / "sweep.json").exists() else None
    report = run_sweep(
        None if resume else args.model,
        seeds=args.seeds,
        seed=args.seed,
        resume=resume,
        out=None if resume else out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data=args.data,
        classes=args.classes.split(",") if args.classes else None,
        device=args.device,
        reporter=Silent() if args.quiet else None,
        stop_on_signals=True,
    )
    if report.interrupted:
        raise KeyboardInterrupt
    finished = [r for r in report.outcome.results if r["diverged_in_epoch"] is None]
    for result in report.outcome.results:
        if result["diverged_in_epoch"] is not None:
            print(f"seed {result['seed']}: diverged in epoch {result['diverged_in_epoch']} (left out)")
        else:
            print(f"seed {result['seed']}: val accuracy {result['val_accuracy']:.4f}  {result['checkpoint']}")
    if len(finished) < 2:
        raise ValueError(
            f"only {len(finished)} of {len(report.outcome.results)} seeds finished; try a lower lr"
        )
    members = [load_checkpoint(r["checkpoint"]) for r in finished]
    data = load_trained_on(members[0].training, args.data)  # on the CPU, as the checkpoints load
    together = ensemble_accuracy([(m.model, m.params, m.state) for m in members], data.val)
    vals = [r["val_accuracy"] for r in finished]
    mean, std = statistics.fmean(vals), statistics.pstdev(vals)
    print(f"{args.model} x{len(vals)} seeds: val {mean:.4f} +/- {std:.4f} (best {max(vals):.4f})")
    print(f"ensemble of all {len(vals)} (mean of probabilities): val {together['ensemble']:.4f}")
    return {"val": vals, "mean": mean, "std": std, "ensemble": together["ensemble"], "folder": str(out)}


if __name__ == "__main__":
    sys.exit(run_main(main))
