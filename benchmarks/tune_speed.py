"""Trials per hour: `ptm tune` (K trials as members of one run) against K separate `ptm train`
runs of the same settings, in one process.

    python benchmarks/tune_speed.py --model net --trials 4 --epochs 2 --data bundled --device cpu
    python benchmarks/tune_speed.py --trials 16 --against-one --device cuda   (gpu_run.sh's row)

Both sides go through the run API and leave their files (checkpoints, records; the study's
journal): what a user would run. A study validates after every epoch (its pruner reads it), so
the separate runs do too. After a warm-up round (compilation, caches) the modes take turns for
--rounds rounds, so a noisy machine slows them alike; it prints each mode's trials per hour and
the median ratio within a round. --against-one compares K trials at once with one trial alone
(on a GPU the vmapped step makes K cost little more than one). On CPU the members loop, so the
ratio against separate runs should be about 1.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ptm_func.runs.reporter import Reporter
from ptm_func.runs.study_report import show_study
from ptm_func.runs.training import run_training
from ptm_func.runs.tune import run_tune

SPACE = {"lr": "3e-3:3e-2:log", "momentum": "0:0.9"}


def study(args, folder: Path, trials: int) -> tuple[float, list[dict]]:
    """Seconds of a fresh study of `trials` trials trained at once; its trials' settings."""
    t0 = time.perf_counter()
    run_tune(args.model, space=SPACE, trials=trials, batch=trials, epochs=args.epochs, pruner="none",
             storage=str(folder / "studies.journal"), out=folder / "trials", data=args.data,
             device=args.device, reporter=Reporter(), seed=args.seed)  # fmt: skip
    seconds = time.perf_counter() - t0
    rows = show_study(args.model, str(folder / "studies.journal")).rows
    return seconds, [{k: r[k] for k in SPACE} for r in rows]


def separate(args, folder: Path, settings: list[dict]) -> float:
    """Seconds of one `ptm train` run per trial, one after the other."""
    t0 = time.perf_counter()
    for i, values in enumerate(settings):
        run_training(args.model, epochs=args.epochs, eval_every=1, data=args.data, device=args.device,
                     out=folder / f"run{i}.safetensors", reporter=Reporter(), **values)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="net")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against-one", action="store_true", help="K trials at once against one trial alone")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    k = args.trials
    ratios, per_hour = [], {"together": [], "baseline": []}
    for rnd in range(args.rounds + 1):  # round 0 warms up
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            together, settings = study(args, folder / "together", k)
            if args.against_one:
                alone, _ = study(args, folder / "one", 1)
                baseline = alone * k  # one trial at a time, K times
            else:
                baseline = separate(args, folder / "separate", settings)
        if rnd == 0:
            print(f"warm-up: {k} trials at once {together:.1f}s, baseline {baseline:.1f}s")
            continue
        per_hour["together"].append(3600 * k / together)
        per_hour["baseline"].append(3600 * k / baseline)
        ratios.append(baseline / together)
        line = f"{k} trials at once {together:.1f}s, baseline {baseline:.1f}s, ratio {ratios[-1]:.2f}"
        print(f"round {rnd}: {line}")
    base = "one trial at a time" if args.against_one else f"{k} separate ptm train runs"
    result = {
        "model": args.model, "trials": k, "epochs": args.epochs, "device": args.device, "baseline": base,
        "trials_per_hour_together": statistics.median(per_hour["together"]),
        "trials_per_hour_baseline": statistics.median(per_hour["baseline"]),
        "ratio": statistics.median(ratios),
    }  # fmt: skip
    print(f"{args.model}, {k} trials x {args.epochs} epochs: {result['trials_per_hour_together']:.0f} "
          f"trials/hour at once, {result['trials_per_hour_baseline']:.0f} as {base}: "
          f"{result['ratio']:.2f}x (median of {args.rounds} rounds)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
