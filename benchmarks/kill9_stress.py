"""kill -9 at random moments, with a second process contending for the output.

Each trial starts `ptm train` (checkpoint every epoch), starts a second `ptm train --resume` of
the same output while the first runs (it must be refused: "being written by pid ..."), kills
the first with SIGKILL at a random moment, then resumes (or restarts, if nothing was saved)
until the run finishes. A trial passes when no stale lock ever blocked a run, the contender was
refused, and the final checkpoint and training state are bitwise equal to an uninterrupted
run's, with every epoch recorded once.

    .venv/bin/python benchmarks/kill9_stress.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import write_image_folder  # noqa: E402

PTM = [sys.executable, "-c", "from cli.main import app; app()"]
EPOCHS = 10


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "train", "dropout", "--data", str(data), "--classes", "airplane,bird", "--device", "cpu",
        "--epochs", str(EPOCHS), "--batch-size", "8", "--momentum", "0.9", "--no-compile",
        "--checkpoint-every", "1", "--out", str(out),
    ]  # fmt: skip


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same(a: Path, b: Path) -> bool:
    x, y = tensors(a), tensors(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def epochs_recorded(out: Path) -> list[int]:
    record = out.with_name(out.stem + ".metrics.jsonl")
    return [json.loads(line)["epoch"] for line in record.read_text().splitlines() if line.strip()]


def trial(data: Path, folder: Path, reference: Path, rng: random.Random) -> tuple[bool, str]:
    out = folder / "run.safetensors"
    first = subprocess.Popen(PTM + train_args(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = out.with_name("run.lock")
    while not lock.exists() and first.poll() is None:  # start-up: wait until it holds the output
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 2.0))
    contender = subprocess.run(
        PTM + ["train", "dropout", "--resume", str(out)], capture_output=True, text=True, timeout=120
    )
    finished_first = "already" in contender.stderr  # the first run had finished and let go
    refused = finished_first or (
        contender.returncode == 1 and f"being written by pid {first.pid}" in contender.stderr
    )
    time.sleep(rng.uniform(0.0, 6.0))
    first.send_signal(signal.SIGKILL)
    first.wait()
    for _ in range(5):  # resume (or start again) until it finishes
        resume = ["--resume", str(out)] if out.exists() else []
        args = PTM + (["train", "dropout", *resume] if resume else train_args(data, out))
        done = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if done.returncode == 0:
            break
        if "being written by" in done.stderr:
            return False, f"a stale lock blocked the run: {done.stderr.strip()}"
        if "already" in done.stderr:  # it had finished before the kill
            break
    else:
        return False, f"did not finish: {done.stderr.strip()[-300:]}"
    if not refused:
        return False, f"the contender was not refused: {contender.stderr.strip()[-200:]}"
    equal = same(out, reference) and same(
        out.with_name("run.train.safetensors"), reference.with_name("ref.train.safetensors")
    )
    epochs = epochs_recorded(out)
    if not equal or epochs != list(range(1, EPOCHS + 1)):
        return False, f"equal={equal} epochs={epochs}"
    return True, "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_image_folder(root / "data", {"train": 40, "test": 12})
        reference = root / "ref" / "ref.safetensors"
        subprocess.run(PTM + train_args(data, reference), check=True, capture_output=True)
        passed = 0
        for number in range(1, args.trials + 1):
            folder = root / f"trial{number}"
            folder.mkdir()
            ok, why = trial(data, folder, reference, rng)
            passed += ok
            print(f"trial {number}: {'pass' if ok else 'FAIL'} ({why})", flush=True)
        print(f"{passed} of {args.trials} trials passed")
        return 0 if passed == args.trials else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
