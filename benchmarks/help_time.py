"""Time `ptm --help` (and `ptm train --help`) as a user runs them: a fresh process each time.

Prints the median wall time of each, and, for scale, that of `python -c "import torch"` measured
in the same run (the time help cost when it imported torch). Whether torch is imported is checked
in each help process.

    python benchmarks/help_time.py --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ptm = shutil.which("ptm", path=str(Path(sys.executable).parent)) or "ptm"
    probe = "from typer.testing import CliRunner; from cli.main import app; import sys; "
    probe += "CliRunner().invoke(app, ['--help']); print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    rows = [
        ("ptm --help", [ptm, "--help"]),
        ("ptm train --help", [ptm, "train", "--help"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
    ]
    for name, command in rows:
        times = [timed(command) for _ in range(args.runs)]
        median = statistics.median(times)
        print(f"{name:<28} median {median:.3f} s  (min {min(times):.3f}, {args.runs} runs)")
    print(f"torch imported by the help: {imported}")


if __name__ == "__main__":
    main()
