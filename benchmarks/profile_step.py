"""Profile one training process: where a step's time goes, and how its threads were placed.

    python benchmarks/profile_step.py --impl compiled --data bundled --out /tmp/fast.json
    perf stat -e task-clock,context-switches,cpu-migrations,page-faults \\
        python benchmarks/profile_step.py --impl book --data bundled

Trains Net (or --model) for --epochs epochs as `ptm train` would (compiled, eager) or in the
book's loop, runs torch.profiler over --steps steps of the last epoch, and prints the steady
seconds per epoch, the ops and kernels that took the most time per step, and each thread's
CPUs, the CPU it last ran on and its context switches. Run it a few times to set a fast and a
slow process side by side. TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1 names inductor's kernels
in the table; with torch 2.14.1 such a process may abort at exit (a heap check), after printing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from ptm_func.data.sources import load_dataset
from ptm_func.reports.baseline import book_training_loop
from ptm_func.training import tuning
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit

# environment variables that change how the step runs: OpenMP, MKL, oneDNN, ATen, inductor
SETTINGS = ("OMP", "MKL", "KMP", "GOMP", "ONEDNN", "DNNL", "ATEN", "TORCH")


def thread_placement() -> list[dict]:
    """Each thread of this process: name, allowed CPUs, last CPU, context switches."""
    threads = []
    for task in sorted(Path("/proc/self/task").iterdir()):
        try:
            stat = (task / "stat").read_text()
            status = dict(
                line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        threads.append(
            {
                "tid": int(task.name),
                "name": status.get("Name", "").strip(),
                "cpus_allowed": status.get("Cpus_allowed_list", "").strip(),
                "last_cpu": int(fields[36]),
                "user_ticks": int(fields[11]),
                "voluntary_switches": int(status.get("voluntary_ctxt_switches", "0")),
                "involuntary_switches": int(status.get("nonvoluntary_ctxt_switches", "0")),
            }
        )
    return threads


def profiled_run(args) -> tuple[list[float], profile]:
    """Train, profiling `args.steps` steps of the last epoch; per-epoch seconds and the profile."""
    data = load_dataset(args.data, device="cpu")
    model, config = book_setup(args.model, epochs=args.epochs)
    n_batches = -(-len(data.train) // config.batch_size)
    wait = n_batches * (args.epochs - 1) + 5
    prof = profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=wait, warmup=5, active=args.steps, repeat=1),
    )
    seconds: list[float] = []
    tuning.tune_allocator()
    with prof:
        if args.impl == "book":
            module = model.module()
            module.register_forward_pre_hook(lambda *_: prof.step())
            torch.manual_seed(config.seed)
            book_training_loop(module, data.train, config, on_epoch=lambda e, loss, s: seconds.append(s))
        else:
            config = replace(config, eval_every=0, compile=args.impl == "compiled")
            fit(
                model,
                data,
                config,
                on_epoch=lambda stats, ts: seconds.append(stats.seconds),
                on_step=lambda i, n: prof.step(),
            )
    return seconds, prof


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impl", choices=("compiled", "eager", "book"), default="compiled")
    parser.add_argument("--model", default="net")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps profiled in the last epoch")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default=None, help="also write the numbers here (JSON)")
    args = parser.parse_args()
    seconds, prof = profiled_run(args)
    steady = statistics.median(seconds[1:])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    per_step = {e.key: e.self_cpu_time_total / args.steps / 1000 for e in events}  # ms
    total = sum(per_step.values())
    print(f"{args.impl}: {', '.join(f'{s:.3f}' for s in seconds)} s per epoch; steady {steady:.4f}")
    print(f"profiled: {total:.2f} ms self CPU per step, top {args.top}:")
    for key, ms in list(per_step.items())[: args.top]:
        print(f"  {ms:8.3f} ms  {key[:90]}")
    threads = thread_placement()
    print("threads (name, allowed CPUs, last CPU, user ticks, voluntary/involuntary switches):")
    for t in threads:
        if t["user_ticks"] > 10:
            print(
                f"  {t['name']:<16} cpus {t['cpus_allowed']:<5} last {t['last_cpu']} "
                f"ticks {t['user_ticks']:>6} switches {t['voluntary_switches']}/{t['involuntary_switches']}"
            )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "impl": args.impl,
                    "epochs": seconds,
                    "steady": steady,
                    "ms_per_step": per_step,
                    "threads": threads,
                    "env": {k: v for k, v in os.environ.items() if k.startswith(SETTINGS)},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
