"""ptm compare --tuned: the statistics against known values, and a small comparison end to end."""

import json
import math

import pytest

from ptm_func.errors import SettingsError
from ptm_func.runs.tuned_compare import interval, run_tuned_comparison, t975, welch
from tests.cli_helpers import invoke, one_error_line


def test_the_interval_is_students_t():
    mean, std, (low, high) = interval([0.88, 0.89, 0.90])
    assert mean == pytest.approx(0.89) and std == pytest.approx(0.01)
    assert high - mean == pytest.approx(4.303 * 0.01 / math.sqrt(3))  # t(0.975, 2 df)
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(200) == 1.96 and t975(2.7) == 4.303


def test_welch_difference_and_interval():
    diff, low, high = welch([0.90, 0.91, 0.92], [0.85, 0.86, 0.87])
    assert diff == pytest.approx(0.05)
    half = 2.776 * math.sqrt(0.0001 / 3 + 0.0001 / 3)  # 4 Welch df for equal variances and sizes
    assert (low, high) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    _, low, high = welch([0.90, 0.80, 0.85], [0.86, 0.84, 0.85])
    assert low < 0 < high  # within the seed noise


def test_a_tuned_comparison_end_to_end(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = run_tuned_comparison(["net", "width"], trials=2, tune_epochs=2, seeds=2, epochs=2,
                                data=str(image_folder), device="cpu", out=tmp_path / "ct")  # fmt: skip
    net, width = rows
    assert net.trials.get("complete", 0) + net.trials.get("pruned", 0) == 2
    assert len(net.vals) == len(width.vals) == 2 and net.vs_net is None and width.vs_net is not None
    saved = json.loads((tmp_path / "ct" / "compare-tuned.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == ["net", "width"]
    saved_at = {p: p.stat().st_mtime_ns for p in (tmp_path / "ct").glob("*/*.safetensors")}
    again = run_tuned_comparison(["net", "width"], trials=2, tune_epochs=2, seeds=2, epochs=2,
                                 data=str(image_folder), device="cpu", out=tmp_path / "ct")  # fmt: skip
    assert [r.vals for r in again] == [r.vals for r in rows]  # read back, not trained again:
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ct").glob("*/*.safetensors")} == saved_at
    done = invoke("compare", "net", "--tuned", "--seeds", "1", "--data", image_folder, "--device", "cpu")
    assert done.exit_code == 2 and "--seeds must be >= 2" in one_error_line(done.output)
    with pytest.raises(SettingsError):
        run_tuned_comparison([], device="cpu")
