"""K members in one run against K separate runs, in one process (ptm sweep / --replicas).

    python benchmarks/sweep_speed.py --model net --members 8 --data bundled --device cpu

Times one epoch of K separate runs (one `fit` each, one after another) and of the same K
members trained together, through one vmapped step and through the single step member after
member. The modes take turns, --rounds times after a warm-up round (compilation), so a noisy
machine slows them alike; it prints the median seconds per epoch and the median ratio to the
separate runs of the same round, and the peak memory of each mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ptm_func.data.sources import load_dataset
from ptm_func.training.config import book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit


def member_configs(base, k: int):
    """K members of a realistic sweep: lr values x seeds."""
    lrs = [0.003, 0.01, 0.03, 0.1]
    return [replace(base, lr=lrs[i % len(lrs)], seed=base.seed + i // len(lrs)) for i in range(k)]


def epoch_seconds(model, data, runs: list) -> float:
    """Seconds of one training epoch (validation not included) of each run, summed."""
    seconds: list[float] = []
    for run in runs:
        fit(model, data, run, on_epoch=lambda stats, ts: seconds.append(stats.seconds))
    return sum(seconds)


def child_peak_rss(args, mode: str) -> int:
    """Peak resident memory of a fresh process that trains `mode` for one epoch, eager (CPU)."""
    argv = [
        "--model",
        args.model,
        "--members",
        str(args.members),
        "--data",
        args.data,
        "--device",
        args.device,
    ]
    argv += ["--measure", mode, "--no-compile"]  # compiling itself would dominate the peak
    result = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("peak ")]
    return int(lines[-1].split()[1]) if lines else -1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="net")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up round")
    parser.add_argument("--data", "--data-dir", default="auto", help="auto, bundled, cifar10 or a folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="eager steps (default: compiled)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child: one mode's memory
    args = parser.parse_args()
    # one compiled graph per distinct float hyperparameter of the separate runs, one for each
    # kind of member step: keep them all (the default keeps 8 per function)
    torch._dynamo.config.cache_size_limit = 64
    device = resolve_device(args.device)
    data = load_dataset(args.data, device=device)
    model, base = book_setup(args.model, epochs=1, compile=not args.no_compile)
    configs = member_configs(base, args.members)
    modes = {  # each mode: the runs it makes (a TrainConfig, or a list of members)
        "separate": configs,
        "loop": [[replace(c, members_vmap=False) for c in configs]],
        "vmap": [[replace(c, members_vmap=True) for c in configs]],
    }
    if args.measure:
        fit(model, data, modes[args.measure][0])
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
        status = Path("/proc/self/status").read_text()
        print("peak", int(status.split("VmHWM:")[1].split()[0]) * 1024)
        return

    k = len(configs)
    timings = {mode: [] for mode in modes}
    for round_ in range(args.rounds + 1):  # round 0 compiles
        for mode, members in modes.items():
            seconds = epoch_seconds(model, data, members)
            if round_:
                timings[mode].append(seconds)
    seconds = {mode: statistics.median(t) for mode, t in timings.items()}
    ratios = {
        mode: statistics.median(a / b for a, b in zip(t, timings["separate"], strict=True))
        for mode, t in timings.items()
    }
    memory = {}
    for mode, members in modes.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            fit(model, data, members[0])
            memory[mode] = torch.cuda.max_memory_allocated(device)
        else:
            memory[mode] = child_peak_rss(args, mode)
    steps = "eager" if args.no_compile else "compiled"
    print(
        f"{args.model}, {k} members, {device}, torch {torch.__version__}, {steps} steps; seconds per epoch:"
    )
    labels = {
        "separate": f"{k} separate runs",
        "loop": "members, step after step",
        "vmap": "members, vmapped",
    }
    for mode in modes:
        per_member = ratios[mode]
        extra = (memory[mode] - memory["separate"]) / (k - 1) / 2**20 if k > 1 else 0.0
        print(
            f"  {labels[mode]:<26} {seconds[mode]:8.2f} s   per member {per_member:.2f}x of a separate run   "
            f"peak memory {memory[mode] / 2**20:,.0f} MiB (+{extra:,.1f} MiB per extra member)"
        )
    if args.json:
        report = {"model": args.model, "members": k, "device": str(device), "torch": torch.__version__}
        report.update(seconds_per_epoch=timings, ratio_to_separate=ratios, peak_memory_bytes=memory)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
