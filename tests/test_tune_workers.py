"""Several `ptm tune` workers on one study: a journal file on this machine, and a real PostgreSQL
server on loopback (tests/postgres.py). Each study ends with exactly its budget of finished
trials, also when a worker is killed with SIGKILL mid-trial (its trial is retried, once)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ptm_func.files.checkpoint import load_checkpoint
from tests.postgres import Server

optuna = pytest.importorskip("optuna")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    server = Server()
    yield server
    server.stop()


def worker(storage, image_folder, folder, trials, epochs=2, study="net", log=None):
    """A `ptm tune` process on `study` (its output in `log`)."""
    args = [
        "tune", "net", "--lr", "1e-3:1e-1:log", "--momentum", "0:0.9", "--trials", str(trials),
        "--batch", "2", "--epochs", str(epochs), "--batch-size", "16", "--data", str(image_folder),
        "--device", "cpu", "--no-compile", "--storage", storage, "--study", study,
        "--out", str(folder / "trials"), "--pruner", "none",
    ]  # fmt: skip
    out = open(log or os.devnull, "w")  # noqa: SIM115 (closed with the process)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PTM_TUNE_GRACE": "3"}
    command = [sys.executable, "-c", "from cli.main import app; app()", *args]
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)


def load(storage, study="net"):
    from ptm_func.runs import studies

    return optuna.load_study(study_name=study, storage=studies.open_storage(storage, None))


def finished(study):
    states = optuna.trial.TrialState
    return [t for t in study.get_trials() if t.state in (states.COMPLETE, states.PRUNED)]


def check_study(storage, trials):
    """Exactly `trials` finished trials, each with its own checkpoint, as its ptm train's."""
    study = load(storage)
    done = finished(study)
    assert len(done) == trials, [(t.number, t.state.name, t.user_attrs) for t in study.get_trials()]
    paths = [t.user_attrs["checkpoint"] for t in done]
    assert len(set(paths)) == trials
    for trial in done:
        assert load_checkpoint(trial.user_attrs["checkpoint"]).training["sweep"]["lr"] == trial.params["lr"]
    return study


def wait(*procs, timeout=300):
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "studies.journal")
    server = request.getfixturevalue("postgres")
    return server.create_database(f"db{abs(hash(str(tmp_path))) % 10**8}")  # studies do not mix


def test_two_workers_share_one_study(storage, image_folder, tmp_path):
    first = worker(storage, image_folder, tmp_path, trials=7, log=tmp_path / "a.log")
    second = worker(storage, image_folder, tmp_path, trials=7, log=tmp_path / "b.log")
    wait(first, second)
    study = check_study(storage, 7)
    pids = {t.user_attrs["pid"] for t in finished(study)}
    assert pids == {first.pid, second.pid}, "both workers trained trials"


def test_a_worker_killed_mid_trial_loses_nothing(storage, image_folder, tmp_path):
    victim = worker(storage, image_folder, tmp_path, trials=5, epochs=150, log=tmp_path / "victim.log")
    running = _running_trials_of(storage, victim)
    other = worker(storage, image_folder, tmp_path, trials=5, epochs=150, log=tmp_path / "other.log")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    wait(other, timeout=600)
    study = check_study(storage, 5)
    retries = {t.user_attrs.get("retry_of"): t for t in finished(study) if "retry_of" in t.user_attrs}
    for trial in running:  # each killed trial failed once, and its settings trained again, once
        assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL
        assert retries[trial.number].params == trial.params
    assert "its settings are tried again" in (tmp_path / "other.log").read_text()  # by pid or heartbeat


def _running_trials_of(storage, proc, timeout=120):
    """Wait until `proc` is training trials (past its first epoch); return them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the worker ended before it was killed"
        try:
            study = load(storage)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        mine = [t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("pid") == proc.pid and t.intermediate_values]  # fmt: skip
        if mine:
            return mine
        time.sleep(0.2)
    raise AssertionError("the worker never started a trial")


def test_a_silent_worker_elsewhere_is_failed_by_its_heartbeat(postgres, monkeypatch):
    """A trial claimed by a worker on another machine (not checkable by pid) fails once its
    heartbeat is older than the grace period, and its settings are enqueued again, once."""
    from ptm_func.runs import studies

    monkeypatch.setenv("PTM_TUNE_GRACE", "2")
    url = postgres.create_database("remote")
    study = optuna.create_study(study_name="remote", storage=studies.open_storage(url, None))
    (trial,) = studies.claim(study, 1, budget=3)  # as a worker claims: its first heartbeat recorded
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    trial.set_user_attr("host", "a-machine-elsewhere")  # a worker this one cannot see by pid
    studies.reap_dead(study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # its heartbeat is fresh
    time.sleep(3)
    studies.reap_dead(study)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    (retry,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert (
        retry.user_attrs == {"retry_of": 0} and retry.system_attrs["fixed_params"] == study.trials[0].params
    )
    studies.reap_dead(study)  # once only
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_a_database_that_refuses_the_login_is_one_line(postgres, image_folder, tmp_path):
    url = postgres.url(password="wrong")
    proc = worker(url, image_folder, tmp_path, trials=1, log=tmp_path / "log")
    assert proc.wait(timeout=120) == 1
    (line,) = (tmp_path / "log").read_text().strip().splitlines()
    assert line.startswith("ptm: error: cannot open the study storage postgresql://ptm:***@127.0.0.1:")
    assert "password authentication failed" in line and "wrong" not in line
    assert not list(tmp_path.glob("trials/trial-*")), "nothing trained"
