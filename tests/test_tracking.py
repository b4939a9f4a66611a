"""--track tensorboard,mlflow: the record mirrored into TensorBoard event files and MLflow runs.

Read back with TensorBoard's EventAccumulator and MlflowClient, on a sqlite store in a temp
folder (MLFLOW_TRACKING_URI), one experiment per test; a few epochs of the tiny image folder.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ptm_func.errors import SettingsError, TrackerUnavailable
from ptm_func.files.records import read_metrics
from ptm_func.files.trackers import MLFLOW_HTTP
from ptm_func.files.tracking import check_trackers, run_status
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.sweep_run import run_sweep
from ptm_func.runs.training import run_training

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

runner = CliRunner()
LOOP = ("loss", "train_accuracy_running", "val_accuracy", "seconds", "lr")


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> str:
    """One sqlite store for the session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def tracked_here(tmp_path, monkeypatch, mlflow_db, request):
    """Work in tmp_path, track into the session's store, in an experiment of this test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)


@pytest.fixture
def small(image_folder):
    return {"data": image_folder, "classes": ["airplane", "bird"], "device": "cpu", "batch_size": 16}


class Heard(Reporter):
    """Keeps every line a run says."""

    def __init__(self, stop_after_epoch: int = 0):
        self.lines: list[str] = []
        self.stop_after_epoch = stop_after_epoch

    def message(self, text: str) -> None:
        self.lines.append(text)

    def epoch(self, stats) -> None:
        super().epoch(stats)
        if stats.epoch == self.stop_after_epoch:  # Ctrl-C, as a user presses it mid-run
            os.kill(os.getpid(), signal.SIGINT)

    def notes(self, about: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"ptm: note: --track {about}")]


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in acc.Scalars(tag)]


def hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value for k, v in start.hparams.items()}


def mlflow_runs(client: MlflowClient | None = None) -> dict:
    """This test's runs by name (a name run twice: a list, oldest first)."""
    client = client or MlflowClient()
    experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    if experiment is None:
        return {}
    found: dict = {}
    for run in sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time):
        found.setdefault(run.info.run_name, []).append(run)
    return {name: runs if len(runs) > 1 else runs[0] for name, runs in found.items()}


def history(run, key: str = "loss") -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run.info.run_id, key)]


def artifacts(run) -> list[str]:
    return sorted(a.path for a in MlflowClient().list_artifacts(run.info.run_id))


def test_train_tracks_every_epoch_params_and_artifacts_from_the_cli(image_folder, tmp_path):
    result = runner.invoke(
        app,
        ["train", "net", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu",
         "--batch-size", "16", "--epochs", "2", "--lr", "0.02", "--track", "tensorboard,mlflow"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tracking: tensorboard (NAME.tb beside each checkpoint" in result.stderr

    acc = events(tmp_path / "runs" / "net-seed123.tb")
    for tag in LOOP:
        assert steps(acc, tag) == [1, 2], tag
    record = read_metrics(tmp_path / "runs" / "net-seed123.metrics.jsonl")
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([line["loss"] for line in record])
    assert acc.Scalars("lr")[0].value == pytest.approx(0.02)
    final = json.loads((tmp_path / "runs" / "net-seed123.run.json").read_text())["result"]
    assert acc.Scalars("final/val_accuracy")[0].value == pytest.approx(final["val_accuracy"])
    assert hparams(acc)["lr"] == pytest.approx(0.02) and hparams(acc)["variant"] == "net"

    run = mlflow_runs()["net-seed123"]
    assert run.info.status == "FINISHED"
    assert history(run) == [1, 2] and history(run, "val_accuracy") == [1, 2]
    params = run.data.params
    assert (params["lr"], params["epochs"], params["variant"]) == ("0.02", "2", "net")
    assert params["classes"] == "airplane,bird" and params["data"].startswith("imagefolder:")
    assert run.data.metrics["final/train_accuracy"] == pytest.approx(final["train_accuracy"])
    names = ["net-seed123.metrics.jsonl", "net-seed123.run.json", "net-seed123.safetensors"]
    assert artifacts(run) == names


def test_ctrl_c_then_resume_continues_both_trackers(small):
    heard = Heard(stop_after_epoch=1)
    first = run_training(
        "net", epochs=3, track="tensorboard,mlflow", reporter=heard, stop_on_signals=True, **small
    )
    assert first.result.interrupted and first.signal == signal.SIGINT
    tb = first.checkpoint.with_name("net-seed123.tb")
    assert steps(events(tb), "loss") == [1]
    assert mlflow_runs()["net-seed123"].info.status == "KILLED"

    resumed = run_training("net", resume=first.checkpoint, track=("tensorboard", "mlflow"), reporter=Heard())
    assert resumed.result.val_accuracy is not None
    acc = events(tb)
    assert steps(acc, "loss") == [1, 2, 3] and steps(acc, "val_accuracy") == [1, 2, 3]
    killed, finished = mlflow_runs()["net-seed123"]
    assert killed.info.status == "KILLED" and finished.info.status == "FINISHED"
    assert history(finished) == [1, 2, 3]  # the record's first epoch too: one run holds the curve
    assert finished.data.tags["ptm.resumed_at_epoch"] == "1"
    assert "net-seed123.safetensors" in artifacts(finished)


def test_a_sweep_is_a_parent_run_with_its_members_nested(small, tmp_path):
    folder = tmp_path / "sweep"
    report = run_sweep(
        "net",
        grid={"lr": [0.01, 0.03]},
        epochs=2,
        out=folder,
        track=["tensorboard", "mlflow"],
        reporter=Heard(),
        **small,
    )
    names = ["net-lr0.01-seed123", "net-lr0.03-seed123"]
    assert sorted(r["name"] for r in report.outcome.results) == names
    for name in names:
        assert steps(events(folder / f"{name}.tb"), "loss") == [1, 2]
    runs = mlflow_runs()
    parent = runs["sweep"]
    assert parent.info.status == "FINISHED" and "sweep.json" in artifacts(parent)
    assert parent.data.params["swept"] == "lr" and parent.data.params["members"] == "2"
    for name in names:
        member = runs[name]
        assert member.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert history(member) == [1, 2] and member.info.status == "FINISHED"
        assert f"{name}.safetensors" in artifacts(member)
    assert runs[names[1]].data.params["lr"] == "0.03"


def test_members_trained_elsewhere_are_mirrored_from_their_records(small, tmp_path):
    """What rank 0 does for --nproc's other ranks, and a resumed sweep for members an earlier run
    finished: a sweep with nothing left to train still tracks every member, from its record."""
    folder = tmp_path / "replicas"
    run_training("net", replicas=2, epochs=1, out=folder, reporter=Heard(), **small)  # not tracked
    (folder / "net-seed124.tb").mkdir()  # a TensorBoard folder already there is left alone
    run_sweep(resume=folder, track="tensorboard,mlflow", reporter=Heard())
    assert steps(events(folder / "net-seed123.tb"), "loss") == [1]
    assert list((folder / "net-seed124.tb").iterdir()) == []
    runs = mlflow_runs()
    for name in ("net-seed123", "net-seed124"):
        assert runs[name].data.tags["mlflow.parentRunId"] == runs["replicas"].info.run_id
        assert history(runs[name]) == [1] and runs[name].info.status == "FINISHED"


def test_compare_tracks_one_run_per_model(image_folder, tmp_path):
    result = runner.invoke(
        app,
        ["compare", "net", "l2", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu",
         "--epochs", "1", "--json-out", str(tmp_path / "cmp.json"), "--chart", str(tmp_path / "cmp.png"),
         "--track", "tensorboard,mlflow"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("net", "l2"):
        assert steps(events(tmp_path / "cmp.tb" / name), "val_accuracy") == [1]
    runs = mlflow_runs()
    assert runs["compare"].info.status == "FINISHED"
    assert runs["l2"].data.tags["mlflow.parentRunId"] == runs["compare"].info.run_id
    assert runs["l2"].data.params["l2_lambda"] == "0.001" and history(runs["l2"]) == [1]


def test_a_failing_tensorboard_warns_once_and_training_goes_on(small, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    calls = []

    def disk_full(self, tag, value, step=None, *args, **kwargs):
        calls.append(step)
        if step == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", disk_full)
    heard = Heard()
    outcome = run_training("net", epochs=3, track="tensorboard,mlflow", reporter=heard, **small)
    assert outcome.result.val_accuracy is not None
    assert [line["epoch"] for line in read_metrics(outcome.record)] == [1, 2, 3]
    assert len(heard.notes("tensorboard")) == 1
    assert "No space left on device" in heard.notes("tensorboard")[0]
    assert max(calls) == 2  # quiet after it failed
    assert history(mlflow_runs()["net-seed123"]) == [1, 2, 3]  # the other tracker goes on


def test_a_failing_mlflow_warns_once_and_training_goes_on(small, monkeypatch):
    from mlflow.exceptions import MlflowException

    real = MlflowClient.log_batch

    def server_gone(self, run_id, metrics=(), *args, **kwargs):
        if any(m.step >= 2 for m in metrics):
            raise MlflowException("API request failed: 503 Service Unavailable\nmore lines")
        return real(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", server_gone)
    heard = Heard()
    outcome = run_training("net", epochs=3, track="mlflow,tensorboard", reporter=heard, **small)
    assert outcome.result.val_accuracy is not None
    assert heard.notes("mlflow") == [
        "ptm: note: --track mlflow: logging epoch 2 of net-seed123 failed (API request failed: 503 Service "
        "Unavailable); training goes on without mlflow (the .metrics.jsonl record keeps every epoch)"
    ]
    assert history(mlflow_runs()["net-seed123"]) == [1]
    assert steps(events(outcome.checkpoint.with_name("net-seed123.tb")), "loss") == [1, 2, 3]


def test_an_unreachable_mlflow_server_costs_seconds_not_minutes(small, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    for key in MLFLOW_HTTP:  # unset now, as they were before (restored so after the test)
        monkeypatch.setenv(key, "0")
        monkeypatch.delenv(key)
    heard = Heard()
    start = time.perf_counter()
    outcome = run_training("net", epochs=2, track="mlflow", reporter=heard, **small)
    assert time.perf_counter() - start < 30
    assert outcome.result.val_accuracy is not None
    [note] = heard.notes("mlflow")
    assert "reaching http://127.0.0.1:9 failed" in note
    # a server that goes away mid-run: one retry and 20 s, not MLflow's 7 retries
    assert {key: os.environ[key] for key in MLFLOW_HTTP} == MLFLOW_HTTP


@pytest.mark.parametrize(
    ("command", "hidden", "needle"),
    [
        (["train", "net"], "tensorboard", "--track tensorboard needs the tensorboard package: "
         "pip install 'ptm_func[tensorboard]'"),
        (["train", "net", "--replicas", "2"], "mlflow", "--track mlflow needs the mlflow package: "
         "pip install 'ptm_func[mlflow]'"),
        (["sweep", "net", "--lr", "0.1,0.2"], "mlflow", "--track mlflow needs the mlflow package"),
        (["compare", "net"], "tensorboard", "--track tensorboard needs the tensorboard package"),
        (["train", "net"], "sqlalchemy", "--track mlflow needs sqlalchemy for its store sqlite:///"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_before_any_data_is_read(command, hidden, needle, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed
    track = "tensorboard" if hidden == "tensorboard" else "mlflow"
    missing_data = str(tmp_path / "no-such-folder")  # read first, this would be the error
    result = runner.invoke(app, [*command, "--data", missing_data, "--device", "cpu", "--track", track])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ptm: error: ")
    assert needle in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["train", "net"], ["sweep", "net", "--lr", "0.1"], ["compare", "net"]])
def test_an_unknown_tracker_is_one_line(command, tmp_path):
    result = runner.invoke(app, [*command, "--device", "cpu", "--track", "tensorboard,wandb"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "ptm: error: --track: unknown tracker 'wandb'; choose from: tensorboard, mlflow\n"
    )
    with pytest.raises(SettingsError, match="unknown tracker 'neptune'"):
        run_training("net", track=["neptune"])


def test_names_are_checked_without_importing(monkeypatch):
    assert check_trackers(" mlflow , mlflow,tensorboard,") == ("mlflow", "tensorboard")
    assert check_trackers(None) == check_trackers("") == ()
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(TrackerUnavailable, match=r"pip install 'ptm_func\[mlflow\]'"):
        run_sweep("net", grid={"lr": [0.1]}, track=("mlflow",), data="no-such-folder")


def test_help_imports_no_tracker_library():
    probe = (
        "from typer.testing import CliRunner; from cli.main import app; import sys; "
        "CliRunner().invoke(app, ['train', '--help']); "
        "print([m for m in ('torch', 'tensorboard', 'mlflow') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_fresh_run_over_an_old_events_folder_hides_the_old_events(small, tmp_path):
    out = tmp_path / "runs" / "net.safetensors"
    run_training("net", epochs=2, out=out, track="tensorboard", reporter=Heard(), **small)
    run_training("net", epochs=1, out=out, force=True, track="tensorboard", reporter=Heard(), **small)
    acc = events(tmp_path / "runs" / "net.tb")
    assert steps(acc, "loss") == [1]  # as the record, which the second run rewrote
    assert [e.value for e in acc.Scalars("loss")] == [
        read_metrics(tmp_path / "runs" / "net.metrics.jsonl")[0]["loss"]
    ]


def test_under_nproc_rank_0_alone_tracks_and_mirrors_the_other_ranks_members(small, tmp_path, monkeypatch):
    """The two ranks of `ptm sweep --nproc 2`, one after the other in this process (a sweep's
    ranks train their own members and only meet at barriers, stubbed here)."""
    import ptm_func.runs.sweep_run as sweep_run
    from ptm_func.training.distributed import World

    monkeypatch.setattr(sweep_run, "join", lambda world, device: device)
    monkeypatch.setattr(sweep_run, "barrier", lambda: None)
    monkeypatch.setattr(sweep_run, "leave", lambda: None)
    folder, track = tmp_path / "two", "tensorboard,mlflow"
    sweep = {"grid": {"lr": [0.01, 0.03]}, "epochs": 1, "out": folder, "track": track, **small}
    run_sweep("net", world=World(1, 2, 1), reporter=Heard(), **sweep)  # trains net-lr0.03, untracked
    assert (folder / "net-lr0.03-seed123.safetensors").exists()
    assert not list(folder.glob("*.tb")) and mlflow_runs() == {}
    monkeypatch.setattr(sweep_run, "holds_files", lambda folder: False)  # --nproc chose it for both
    run_sweep("net", world=World(0, 2, 0), reporter=Heard(), **sweep)
    runs = mlflow_runs()
    assert sorted(runs) == ["net-lr0.01-seed123", "net-lr0.03-seed123", "two"]  # each once
    for name in ("net-lr0.01-seed123", "net-lr0.03-seed123"):
        assert runs[name].data.tags["mlflow.parentRunId"] == runs["two"].info.run_id
        assert history(runs[name]) == [1] and runs[name].info.status == "FINISHED"
        assert steps(events(folder / f"{name}.tb"), "loss") == [1]
        assert "ptm.resumed_at_epoch" not in runs[name].data.tags  # mirrored, never resumed (28, 7)


def test_how_a_run_ended_from_its_record():
    assert run_status({"val_accuracy": 0.8, "train_accuracy": 0.9}) == "FINISHED"
    assert run_status({"val_accuracy": None, "diverged_in_epoch": 3}) == "FAILED"  # NaN loss
    assert run_status({"interrupted_at": {"epoch": 2, "step": 5}, "val_accuracy": None}) == "KILLED"
    assert run_status({"epochs_done": 2}) == "KILLED"  # a sweep member stopped by Ctrl-C


@pytest.mark.parametrize("fail_from_write", [1, 4])  # at the folder's first event, or mid-run
def test_a_tensorboard_writer_thread_that_fails_prints_one_note_not_a_traceback(
    fail_from_write, image_folder, tmp_path
):
    """Issue 28 (2): TensorBoard's writer thread raised ENOSPC (a full disk) or EACCES (a folder
    it may not write) and Python printed its traceback before the one note."""
    script = f"""
import sys
from tensorboard.summary.writer.record_writer import RecordWriter
calls = []
def write(self, data):
    calls.append(1)
    if len(calls) >= {fail_from_write}:
        raise OSError(28, "No space left on device")
RecordWriter.write = write
from cli.entry import main
sys.argv = ["ptm", *sys.argv[1:]]
main()
"""
    args = ["train", "net", "--epochs", "3", "--track", "tensorboard", "--data", str(image_folder),
            "--classes", "airplane,bird", "--device", "cpu", "--batch-size", "16",
            "--out", "t.safetensors"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, done.stderr
    notes = [line for line in done.stderr.splitlines() if "--track tensorboard" in line and "failed" in line]
    assert len(notes) == 1 and "No space left on device" in notes[0], done.stderr
    assert [line["epoch"] for line in read_metrics(tmp_path / "t.metrics.jsonl")] == [1, 2, 3]


class StopAtOnce(Heard):
    def epoch(self, stats) -> None:
        super().epoch(stats)
        os.kill(os.getpid(), signal.SIGINT)


def kill_9_after_first_save(args: list[str], saved: Path, cwd: Path) -> None:
    """Run `ptm ARGS` and kill it with -9 once `saved` (a training-state file) exists."""
    child = subprocess.Popen([sys.executable, "-c", "from cli.entry import main; main()", *args], cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not saved.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "the run ended before it could be killed"
    finally:
        child.kill()
        child.wait(timeout=60)


@pytest.mark.parametrize("sweep", [False, True])
def test_after_kill_9_resuming_ends_the_killed_mlflow_runs_as_killed(sweep, small, tmp_path):
    """Issue 28 (3): the runs a kill -9 left RUNNING (a single run; a sweep's parent and nested
    runs) used to stay RUNNING forever; the resume ends them, found by the output they wrote."""
    data = ["--data", str(small["data"]), "--classes", "airplane,bird", "--device", "cpu"]
    common = [*data, "--batch-size", "16", "--epochs", "400", "--no-compile", "--checkpoint-every", "1",
              "--track", "mlflow"]  # fmt: skip
    if sweep:
        kill_9_after_first_save(["sweep", "net", "--lr", "0.1,0.2", "--out", "S", *common],
                                tmp_path / "S" / "net-lr0.2-seed123.train.safetensors", tmp_path)  # fmt: skip
        names = ["S", "net-lr0.1-seed123", "net-lr0.2-seed123"]
    else:
        kill_9_after_first_save(["train", "net", "--out", "k.safetensors", *common],
                                tmp_path / "k.train.safetensors", tmp_path)  # fmt: skip
        names = ["k"]
    orphans = mlflow_runs()
    assert [orphans[name].info.status for name in names] == ["RUNNING"] * len(names)
    if sweep:  # as planned: 400 epochs; stopped after its next one, as Ctrl-C would
        run_sweep(resume=tmp_path / "S", reporter=StopAtOnce(), stop_on_signals=True, track="mlflow")
    else:
        run_training("net", resume=tmp_path / "k.safetensors", epochs=3, track="mlflow", reporter=Heard())
    for name in names:
        killed, resumed = mlflow_runs()[name]
        assert killed.info.status == "KILLED", name
        assert resumed.info.status in ("FINISHED", "KILLED") and resumed.info.end_time, name


@pytest.mark.parametrize("where", ["missing/m.db", "a-file/m.db"])
def test_an_mlflow_store_that_cannot_be_opened_is_one_note_at_once(where, small, tmp_path, monkeypatch):
    """Issue 28 (4): a store in a folder that is missing (or read-only, or a file) used to cost
    36 lines of MLflow's retry warnings and ~100 s before the note."""
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / where}")
    heard, started = Heard(), time.monotonic()
    outcome = run_training(
        "net", epochs=2, out=tmp_path / "m.safetensors", track="mlflow", reporter=heard, **small
    )
    assert time.monotonic() - started < 60 and outcome.result.val_accuracy is not None
    assert len(heard.notes("mlflow")) == 1 and "unable to open database file" in heard.notes("mlflow")[0]
    assert not any(line.startswith("tracking:") for line in heard.lines)  # nothing is tracked


def test_an_orphan_whose_output_has_a_quote_is_ended_too(small, tmp_path):
    """The second attack: a `'` in the output path left the orphan RUNNING (MLflow's filter
    strings cannot hold one: LIKE with `_`, then an exact match)."""
    out = tmp_path / "q" / "it's.safetensors"
    client = MlflowClient()
    experiment = client.create_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    output = str((tmp_path / "q" / "it's.tb").resolve())
    orphan = client.create_run(experiment, run_name="it's", tags={"ptm.output": output}).info.run_id
    other = client.create_run(experiment, run_name="its", tags={"ptm.output": output.replace("'", "x")})
    run_training("net", epochs=1, out=out, track="mlflow", reporter=Heard(), **small)
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another output: untouched
