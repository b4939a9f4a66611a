"""train_speed.py --restarts N: each row timed in N fresh processes, taking turns.

One process per (round, row): the book's loop, the compiled step, the eager step, then the next
round in reverse order, so that a slow spell of the shared machine lands on every row alike.
Each process prints nothing but its per-epoch seconds (to a JSON file); this one prints a line
per process as it ends, then each row's spread across processes and the ratio of medians.

Around each process it also times a cache line's round trip between CPU 0 and CPU 1
(vcpu_roundtrip.c, built with the C compiler inductor uses). On a VM that shows where the host
put the two vCPUs, which it changes every few seconds to minutes: on one core complex (tens of
ns) or two (hundreds); the compiled step is often, not always, slower in the second (tuning.py).
Processes with a near round trip both before and after get a spread of their own. A process's
own `ptm:` lines (a compiled step that failed and ran eager) are printed under its line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_description() -> str:
    """'AMD EPYC (avx2, avx512f), torch kernels: AVX512' from /proc/cpuinfo and torch."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    vector = ", ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "none listed"
    return f"{model} ({vector}), torch kernels: {torch.backends.cpu.get_cpu_capability()}"


def environment() -> dict:
    """What a restart ran with: threads, CPUs it may use, the load when it ended."""
    return {
        "threads": torch.get_num_threads(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_1min": os.getloadavg()[0],
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def child_argv(row: str, out: Path) -> list[str]:
    """This command line without --restarts and --json, for one row."""
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--restarts", "--json"):
            skip = True
        elif not arg.startswith(("--restarts=", "--json=")):
            argv.append(arg)
    return [sys.executable, sys.argv[0], *argv, "--only", row, "--json", str(out)]


def build_roundtrip(folder: Path) -> Path | None:
    """vcpu_roundtrip.c compiled into `folder`; None without CPUs 0 and 1 or a C compiler."""
    if not {0, 1} <= set(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()):
        return None
    program = folder / "vcpu_roundtrip"
    source = Path(__file__).with_name("vcpu_roundtrip.c")
    compiler = os.environ.get("CC", "cc")
    try:
        command = [compiler, "-O2", "-pthread", str(source), "-o", str(program)]
        built = subprocess.run(command, capture_output=True)
    except OSError:
        return None
    return program if built.returncode == 0 else None


def roundtrip_ns(program: Path | None) -> float | None:
    """CPU 0 to CPU 1 and back, in ns (median of 9 runs of 20000 trips); None without the probe."""
    if program is None:
        return None
    try:  # two spinning threads on one CPU's worth of quota would take minutes: give up
        done = subprocess.run([str(program)], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout) if done.returncode == 0 else None


def run_one(row: str, folder: Path, index: int, probe: Path | None) -> tuple[float, dict]:
    """Time `row` in a fresh process: its steady seconds per epoch and its environment,
    with the vCPU round trip just before and just after."""
    out = folder / f"{index}.json"
    before = roundtrip_ns(probe)
    done = subprocess.run(child_argv(row, out), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{row} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(out.read_text())
    # ptm's own lines, e.g. a compiled step that failed and ran eager: a row is not what it says
    notes = [line for line in done.stderr.splitlines() if line.startswith("ptm:")]
    environment = result["environment"] | {"roundtrip_ns": [before, roundtrip_ns(probe)], "notes": notes}
    return statistics.median(result[row][1:]), environment


def spread_table(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per row: min, median, max, spread (max-min over median) and median speed-up on row 0."""
    base = statistics.median(next(iter(times.values())))
    table = {}
    for row, seconds in times.items():
        median = statistics.median(seconds)
        table[row] = {
            "min": min(seconds),
            "median": median,
            "max": max(seconds),
            "spread": (max(seconds) - min(seconds)) / median,
            "speedup": base / median,
        }
    return table


def paired_speedups(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per row, round by round: the first row's seconds over this row's, measured a minute
    apart (a slow spell of the machine that lasts a round would cancel out)."""
    base = next(iter(times.values()))
    return {
        row: [b / s for b, s in zip(base, seconds, strict=True)] for row, seconds in list(times.items())[1:]
    }


def near_times(runs: list[dict], rows: list[str]) -> dict[str, list[float]]:
    """Per row, the processes with a round trip under twice the run's lowest, before and after."""
    trips = [ns for run in runs for ns in run["roundtrip_ns"] if ns is not None]
    if not trips:
        return {}
    limit = 2 * min(trips)
    return {
        row: [
            run["steady_s_per_epoch"]
            for run in runs
            if run["row"] == row and all(ns is not None and ns < limit for ns in run["roundtrip_ns"])
        ]
        for row in rows
    }


def print_spreads(title: str, times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The spread table of `times` under `title`; the table."""
    table = spread_table(times)
    print(f"\n{title}:")
    heads = f"{'runs':>4} {'min':>7} {'median':>7} {'max':>7} {'spread':>7} {'vs book':>8}"
    print(f"  {'implementation':<24} {heads}")
    for row, r in table.items():
        print(
            f"  {row:<24} {len(times[row]):>4} {r['min']:>7.3f} {r['median']:>7.3f} {r['max']:>7.3f} "
            f"{r['spread']:>6.0%} {r['speedup']:>7.2f}x"
        )
    return table


def run_rounds(args, rows: list[str]) -> list[dict]:
    """`args.restarts` rounds of `rows` in fresh processes, a line printed per process."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        probe = build_roundtrip(Path(folder))
        for round_ in range(args.restarts):
            for row in rows if round_ % 2 == 0 else rows[::-1]:
                started = time.perf_counter()
                steady, env = run_one(row, Path(folder), len(runs), probe)
                runs.append({"row": row, "steady_s_per_epoch": steady, **env})
                trips = "/".join("-" if ns is None else f"{ns:.0f}" for ns in env["roundtrip_ns"])
                print(
                    f"  round {round_ + 1}: {row:<24} {steady:.4f} s/epoch "
                    f"(load {env['load_1min']:.2f}, vCPU round trip {trips} ns, "
                    f"{time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
                for note in env["notes"]:
                    print(f"    {note}", flush=True)
    return runs


def main(args, rows: list[str]) -> None:
    """Run `args.restarts` rounds of `rows`, print a line per process, then the spreads."""
    if "," in args.models or args.models == "all":
        raise SystemExit("--restarts times one model: give --models NAME")
    print(f"{cpu_description()}; {args.restarts} rounds of {', '.join(rows)}", flush=True)
    runs = run_rounds(args, rows)
    times = {row: [run["steady_s_per_epoch"] for run in runs if run["row"] == row] for row in rows}
    table = print_spreads(f"{args.models}, steady s/epoch across {args.restarts} processes each", times)
    paired = paired_speedups(times)
    print(f"  speed-up over the {rows[0]} within each round (min, median, max):")
    for row, ratios in paired.items():
        print(f"  {row:<24} {min(ratios):.2f}x {statistics.median(ratios):.2f}x {max(ratios):.2f}x")
    near = near_times(runs, rows)
    near_table = None
    if near and all(near.values()):
        near_table = print_spreads("only processes with a near vCPU round trip before and after", near)
    if args.json:
        with open(args.json, "w") as f:
            report = {"cpu": cpu_description(), "table": table, "paired": paired, "near": near_table}
            json.dump(report | {"runs": runs}, f, indent=2)
