"""benchmarks/restarts.py: the vCPU round-trip probe it builds, and how it sorts processes by it."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import restarts  # noqa: E402


def run(row, seconds, trips):
    return {"row": row, "steady_s_per_epoch": seconds, "roundtrip_ns": trips}


def test_near_processes_are_those_under_twice_the_lowest_round_trip_before_and_after():
    runs = [
        run("book", 1.7, [50.0, 55.0]),
        run("compiled", 0.8, [52.0, 60.0]),
        run("compiled", 1.1, [50.0, 350.0]),  # moved to two core complexes during the process
        run("book", 1.9, [340.0, 360.0]),
        run("compiled", 0.75, [99.0, 51.0]),
    ]
    assert restarts.near_times(runs, ["book", "compiled"]) == {"book": [1.7], "compiled": [0.8, 0.75]}
    assert restarts.near_times([run("book", 1.0, [None, None])], ["book"]) == {}


def test_spread_is_range_over_median_and_speedup_is_on_the_first_row():
    table = restarts.spread_table({"book": [2.0, 1.0, 3.0], "compiled": [1.0, 0.5, 1.5]})
    assert table["book"]["spread"] == pytest.approx(1.0) and table["book"]["speedup"] == 1.0
    assert table["compiled"]["median"] == 1.0 and table["compiled"]["speedup"] == pytest.approx(2.0)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_round_trip_probe_builds_and_measures(tmp_path, monkeypatch):
    program = restarts.build_roundtrip(tmp_path)
    if program is None:
        pytest.skip("CPUs 0 and 1 are not both available to this process")
    ns = restarts.roundtrip_ns(program)
    assert ns is not None and 1 < ns < 1e6
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert restarts.build_roundtrip(tmp_path / "x") is None and restarts.roundtrip_ns(None) is None


def test_a_process_s_own_ptm_lines_come_back_with_its_time(tmp_path, monkeypatch):
    """A compiled step that fell back to eager says so on stderr: the row must not hide it."""
    fallback = "ptm: the compiled (default) step failed (RuntimeError: x); using the eager step"
    result = {"compiled": [9.0, 1.0, 3.0, 2.0], "environment": {"load_1min": 0.5}}
    child = (
        f"import json, sys; json.dump({result!r}, open(sys.argv[1], 'w')); "
        f"print({fallback!r}, file=sys.stderr); print('a warning', file=sys.stderr)"
    )
    monkeypatch.setattr(restarts, "child_argv", lambda row, out: [sys.executable, "-c", child, str(out)])
    steady, env = restarts.run_one("compiled", tmp_path, 0, None)
    assert steady == 2.0  # the median after the first epoch
    assert env["notes"] == [fallback]
    assert env["roundtrip_ns"] == [None, None] and env["load_1min"] == 0.5
