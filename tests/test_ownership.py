"""One process at a time per output: a held checkpoint or sweep folder refuses a second writer
with one line naming the holder; a lock left by a killed process blocks nothing."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ptm_func
from cli.main import app
from ptm_func.errors import CheckpointError, OutputInUse
from ptm_func.files.ownership import holder, lock_path, owned
from ptm_func.files.records import read_metrics

TINY = {"classes": ["airplane", "bird"], "device": "cpu", "epochs": 1, "batch_size": 16, "compile": False}


def train_args(image_folder, *more):
    return ["train", "net", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu"] + [
        "--batch-size", "16", "--no-compile", *more,
    ]  # fmt: skip


def test_a_held_output_refuses_a_second_run_with_one_line_naming_the_holder(image_folder, tmp_path):
    out = tmp_path / "net.safetensors"
    with owned(out):
        result = CliRunner().invoke(app, train_args(image_folder, "--epochs", "1", "--out", str(out)))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptm: error:")
    assert f"being written by pid {os.getpid()}" in lines[0]
    assert not out.exists() and not (tmp_path / "net.metrics.jsonl").exists()


def test_two_resumes_of_one_run_cannot_both_write(image_folder, tmp_path):
    first = ptm_func.run_training(
        "net", data=image_folder, out=tmp_path / "r.safetensors", reporter=ptm_func.Silent(), **TINY
    )
    with owned(first.checkpoint), pytest.raises(OutputInUse, match="being written by"):
        ptm_func.run_training("net", resume=first.checkpoint, epochs=2, reporter=ptm_func.Silent())
    assert [line["epoch"] for line in read_metrics(first.record)] == [1]


def test_resuming_a_run_that_is_still_writing_says_so_before_reading_it(tmp_path):
    """Not "nothing to resume" (it has not saved yet), and no finishing of its saves in flight."""
    out = tmp_path / "busy.safetensors"
    with owned(out), pytest.raises(OutputInUse, match="being written by"):
        ptm_func.run_training("net", resume=out, reporter=ptm_func.Silent())


def test_new_runs_on_the_default_name_skip_one_that_is_held(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "runs" / "net-seed123.safetensors"
    with owned(default):
        outcome = ptm_func.run_training("net", data=image_folder, reporter=ptm_func.Silent(), **TINY)
    assert outcome.checkpoint.name == "net-seed123-2.safetensors"
    assert not default.exists()


def test_a_sweep_folder_is_held_and_a_default_one_skips_a_held_folder(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = {k: v for k, v in TINY.items() if k != "classes"}
    held = tmp_path / "runs" / "sweep-net"
    with owned(held):
        with pytest.raises(OutputInUse, match="being written by"):
            ptm_func.run_sweep("net", out=held, data=image_folder, classes=["airplane", "bird"], **tiny)
        report = ptm_func.run_sweep(
            "net", data=image_folder, classes=["airplane", "bird"], reporter=ptm_func.Silent(), **tiny
        )
    assert report.folder.name == "sweep-net-2" and len(report.rows) == 1
    assert not any(held.iterdir())  # released: the lock file went with it
    assert not (report.folder / "sweep.lock").exists()


def test_sweep_out_on_an_existing_file_is_one_usage_line(tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    result = CliRunner().invoke(app, ["sweep", "net", "--lr", "0.01", "--out", str(file), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"ptm: error: {file} is a file: a sweep writes a folder (give another --out)"
    ]


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ptm_func.files.ownership import owned
    with owned(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_lock_left_by_a_process_killed_with_9_blocks_nothing(image_folder, tmp_path):
    out = tmp_path / "net.safetensors"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputInUse, match=f"pid {holder.pid}"):
        ptm_func.run_training("net", data=image_folder, out=out, reporter=ptm_func.Silent(), **TINY)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()  # the killed holder left its file; the kernel dropped its lock
    outcome = ptm_func.run_training("net", data=image_folder, out=out, reporter=ptm_func.Silent(), **TINY)
    assert outcome.checkpoint == out and out.exists() and not lock_path(out).exists()


def test_two_processes_started_on_one_output_one_trains_the_other_says_why(image_folder, tmp_path):
    """The reviewer's case: both used to exit 0 with the record interleaving both runs."""
    out = tmp_path / "same.safetensors"
    command = [sys.executable, "-c", "from cli.main import app; app()"]
    args = train_args(image_folder, "--epochs", "8", "--out", str(out))
    runs = [subprocess.Popen(command + args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
    assert [code for code, _ in codes] == [0, 1], codes
    assert "being written by pid" in codes[1][1] and codes[1][1].count("\n") == 1
    assert [line["epoch"] for line in read_metrics(out.with_name("same.metrics.jsonl"))] == list(range(1, 9))


def test_a_member_of_a_running_sweep_cannot_be_trained_over(image_folder, tmp_path):
    """The sweep holds its folder; a ptm train on one of its members used to cut its record."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text("{}")
    member = folder / "net-lr0.01-seed123.safetensors"
    with owned(folder), pytest.raises(OutputInUse, match=f"{folder} is being written by pid {os.getpid()}"):
        ptm_func.run_training("net", data=image_folder, out=member, reporter=ptm_func.Silent(), **TINY)
    assert not member.exists()


def test_outputs_that_cannot_be_written_say_why(tmp_path):
    (tmp_path / "a.safetensors").write_text("x")
    for out, why in [
        (
            tmp_path / "a.safetensors" / "b.safetensors",
            f"{tmp_path / 'a.safetensors'} is a file, not a folder",
        ),
        (Path("/proc/self/c.safetensors"), "/proc/self is not writable"),
    ]:
        with pytest.raises(CheckpointError, match=why), owned(out):
            pass


def test_resuming_a_path_that_never_existed_says_only_that(tmp_path):
    with pytest.raises(CheckpointError) as err:
        ptm_func.run_training("net", resume=tmp_path / "absent.safetensors", reporter=ptm_func.Silent())
    assert str(err.value) == f"no checkpoint at {tmp_path / 'absent.safetensors'}"


def test_a_run_started_while_a_sweep_loads_its_data_is_refused(image_folder, tmp_path, monkeypatch):
    """Issue 28 (1): the sweep holds its folder (sweep.lock) but has not described it (sweep.json)
    yet. Its loader waits here until the run has tried, so no timing is guessed."""
    import threading

    import ptm_func.runs.sweep_run as sweep_run

    loading, go_on = threading.Event(), threading.Event()
    real_load = sweep_run.load_dataset

    def waiting_load(*args, **kwargs):
        loading.set()
        assert go_on.wait(timeout=120)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(sweep_run, "load_dataset", waiting_load)
    folder, outcome = tmp_path / "S2", {}

    def sweep():
        outcome["report"] = ptm_func.run_sweep(
            "net",
            grid={"lr": [0.01, 0.02]},
            out=folder,
            data=image_folder,
            reporter=ptm_func.Silent(),
            **TINY,
        )

    thread = threading.Thread(target=sweep)
    thread.start()
    try:
        assert loading.wait(timeout=120)
        assert (folder / "sweep.lock").exists() and not (folder / "sweep.json").exists()
        member = folder / "net-lr0.01-seed123.safetensors"
        with pytest.raises(OutputInUse, match=f"{folder} is being written by pid {os.getpid()}"):
            ptm_func.run_training("net", data=image_folder, out=member, reporter=ptm_func.Silent(), **TINY)
        assert not member.with_name("net-lr0.01-seed123.metrics.jsonl").exists()
    finally:
        go_on.set()
        thread.join(timeout=300)
    assert "report" in outcome  # the sweep went on and trained its member
    lines = read_metrics(folder / "net-lr0.01-seed123.metrics.jsonl")
    assert [line["epoch"] for line in lines] == list(range(1, TINY["epochs"] + 1))


def test_a_member_locked_before_the_sweep_took_its_folder_takes_the_folder_too(tmp_path):
    """The other order: a run held the member, then a sweep began; the run's look after its lock
    sees the sweep and refuses (the sweep, for its part, refuses a folder holding files)."""
    folder = tmp_path / "S3"
    member = folder / "net-lr0.01-seed123.safetensors"
    folder.mkdir()
    (folder / "sweep.lock").write_text("")  # a sweep's lock file, not held: a stale one is taken over
    with owned(member):
        assert lock_path(folder).exists()  # the run holds the folder as well
    assert not lock_path(folder).exists() and not lock_path(member).exists()


def test_a_comparison_holds_its_table_and_a_second_one_says_who_writes_it(image_folder, tmp_path):
    """Issue 28 (7): two `ptm compare` in one folder both exited 0 and mixed compare.json and .tb."""
    table = tmp_path / "c.json"
    args = ["compare", "net", "--epochs", "1", "--data", image_folder, "--classes", "airplane,bird",
            "--device", "cpu", "--json-out", table, "--chart", tmp_path / "c.png"]  # fmt: skip
    with owned(table):
        result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert f"{table} is being written by pid {os.getpid()}" in result.output
    assert "give another --json-out" in result.output and "net ..." not in result.output
    assert not table.exists() and not lock_path(table).exists()
    done = CliRunner().invoke(app, [str(a) for a in args])
    assert done.exit_code == 0 and table.exists() and not lock_path(table).exists(), done.output


def test_out_naming_a_finished_run_replaces_it_with_a_note(image_folder, tmp_path):
    """Issue 28 (7): --out keeps its meaning (this file), and now says that a run was replaced."""
    out = tmp_path / "same.safetensors"
    args = train_args(image_folder, "--epochs", "1", "--out", out)
    first = CliRunner().invoke(app, [str(a) for a in args])
    assert first.exit_code == 0 and "holds a run already" not in first.output
    second = CliRunner().invoke(app, [str(a) for a in args])
    assert second.exit_code == 0
    assert f"ptm: note: {out} holds a run already: this run replaces it" in second.output


def test_lock_corner_cases_of_the_second_attack(image_folder, tmp_path, monkeypatch):
    """A checkpoint named sweep.safetensors trains; a default name in a held sweep folder is
    refused; a killed writer's hidden temps do not make a folder 'hold files'."""
    from ptm_func.runs.sweep import holds_files

    named = CliRunner().invoke(
        app, train_args(image_folder, "--epochs", "1", "--out", tmp_path / "x" / "sweep.safetensors")
    )
    assert named.exit_code == 0, named.output
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sweep.json").write_text("{}")
    with owned(tmp_path / "runs"), pytest.raises(OutputInUse, match="runs is being written by pid"):
        ptm_func.run_training("net", data=image_folder, reporter=ptm_func.Silent(), **TINY)
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / ".sweep.json.tmp4242").write_text("{")
    (folder / "sweep.lock").write_text("")
    assert not holds_files(folder)


def test_a_holder_that_has_not_written_its_note_yet_is_waited_for(tmp_path):
    """The loser of a race can read the lock file between the winner's lock and its note."""
    lock = tmp_path / "net.lock"
    lock.write_text("")
    note = '{"pid": 4242, "host": "box", "command": "ptm train net", "since": 0}\n'
    later = threading.Timer(0.2, lambda: lock.write_text(note))
    later.start()
    try:
        assert holder(lock).startswith("pid 4242 on box (ptm train net), since ")
    finally:
        later.join()
    lock.write_text("")
    assert holder(lock, wait=0.1) == "another process"  # a holder that could not write its note
