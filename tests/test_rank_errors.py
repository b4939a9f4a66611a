"""Under --nproc an error is said once, by rank 0 or (if rank 0 had none) for the rank that
had it; the launcher's own logs stay out of the terminal."""

import os
import signal
import subprocess
import sys

import pytest

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


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_ctrl_c_reaching_every_process_of_nproc_2_saves_and_says_how_to_resume(
    command, image_folder, tmp_path
):
    """A terminal's Ctrl-C reaches the launcher and every rank, and the launcher then sends SIGTERM
    too: the ranks used to die on that second signal with nothing saved."""
    out = tmp_path / ("run.safetensors" if command == "train" else "sweep")
    args = [command, "net", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu"]
    args += ["--batch-size", "16", "--no-compile", "--epochs", "300", "--nproc", "2", "--out", str(out)]
    args += ["--lr", "0.01,0.02"] if command == "sweep" else []
    env = {**os.environ, "PTM_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import app; app()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch   3/"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=180)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "Resume with: ptm" in err and "death signal" not in err and "Traceback" not in err
    saved = [out] if command == "train" else sorted(out.glob("*-seed123.safetensors"))
    assert len(saved) == (1 if command == "train" else 2) and all(p.exists() for p in saved), err
