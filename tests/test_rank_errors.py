"""Under --nproc an error is said once, by rank 0 or (if rank 0 had none) for the rank that
had it; the launcher's own logs stay out of the terminal."""

import os
import subprocess
import sys

from cli.launch import _say_errors_once


def test_an_error_every_rank_hits_is_one_line(tmp_path):
    env = {**os.environ, "PTM_DIST_TIMEOUT": "30"}
    args = [
        "train",
        "net",
        "--nproc",
        "2",
        "--device",
        "cpu",
        "--data",
        str(tmp_path / "none"),
        "--no-compile",
    ]
    done = subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ptm: error:")]
    assert errors == [f"ptm: error: data folder '{tmp_path / 'none'}' does not exist; --data takes auto, "
                      "bundled, cifar10 or a folder"]  # fmt: skip
    assert "Terminating process" not in done.stderr and "Traceback" not in done.stderr
    assert [
        line for line in done.stderr.splitlines() if not line.startswith(("ptm: error:", "loading data"))
    ] == []


def test_the_launcher_says_another_ranks_error_only_when_rank_0_had_none(tmp_path, capsys):
    (tmp_path / "rank1.txt").write_text("ptm: error: out of memory\n")
    _say_errors_once(tmp_path)
    assert capsys.readouterr().err == "ptm: error: (rank 1) out of memory\n"
    (tmp_path / "rank0.txt").write_text("ptm: error: out of memory\n")
    _say_errors_once(tmp_path)
    assert capsys.readouterr().err == ""
