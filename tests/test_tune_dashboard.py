"""optuna-dashboard opens a ptm tune study: started on loopback, its HTTP API lists the study and
its trials as the storage holds them (the `dashboard` extra)."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ptm_func.runs.study_report import show_study
from ptm_func.runs.tune import run_tune
from tests.postgres import free_port

pytest.importorskip("optuna_dashboard")


def get(url: str):
    """The real urlopen: the offline fixture only stops downloads, loopback is ours."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return json.loads(response.read())


def test_optuna_dashboard_reads_the_study(image_folder, tmp_path):
    journal = tmp_path / "studies.journal"
    run_tune(
        "net", space={"lr": "1e-3:1e-1:log"}, trials=3, batch=3, epochs=2, batch_size=16,
        data=str(image_folder), device="cpu", storage=str(journal), out=tmp_path / "trials", pruner="none",
    )  # fmt: skip
    port = free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")  # the extra's console script
    command = [str(dashboard), str(journal), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline and server.poll() is None, "the dashboard did not start"
                time.sleep(0.3)
        (summary,) = studies
        assert summary["study_name"] == "net"
        detail = get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0")
        ours = show_study("net", str(journal))
        values = sorted(t["values"][0] for t in detail["trials"] if t["state"] == "Complete")
        assert values == sorted(r["val_accuracy"] for r in ours.rows) and len(values) == 3
    finally:
        server.terminate()
        server.wait(timeout=30)
