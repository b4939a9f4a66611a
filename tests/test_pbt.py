"""Population-based training in one run: the exploit step against its rules, determinism from
--seed, weights copied with their optimizer and BatchNorm state, and a stopped run that resumes
bit for bit (SIGTERM, then --resume)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ptm_func.runs.pbt import Rules, exploit_step, run_pbt, schedules
from ptm_func.runs.search_space import Space
from ptm_func.training.config import book_setup
from ptm_func.training.state import init_members, member_state, select_members
from tests.cli_helpers import invoke, one_error_line

SPACE = Space.parse({"lr": "1e-3:1e-1:log", "momentum": "0:0.9"})


def test_the_bottom_quantile_copies_the_top_and_perturbs():
    values = [{"lr": 0.01 * (r + 1), "momentum": 0.1 * r} for r in range(8)]
    vals = [0.5, 0.9, 0.6, 0.95, 0.7, 0.55, 0.8, 0.85]  # worst: 0 and 5; best: 3 and 1
    sources, new, events = exploit_step(4, vals, values, SPACE, Rules(resample=0.0), seed=1)
    assert [e["member"] for e in events] == [0, 5]
    for event in events:
        member, donor = event["member"], event["copied"]
        assert donor in (1, 3) and sources[member] == donor
        for name in ("lr", "momentum"):  # the donor's value x0.8 or x1.2, kept inside the range
            scaled = [
                min(
                    max(values[donor][name] * f, SPACE.dimensions[0 if name == "lr" else 1].low),
                    SPACE.dimensions[0 if name == "lr" else 1].high,
                )
                for f in (0.8, 1.2)
            ]
            assert new[member][name] in scaled
    assert all(sources[r] == r and new[r] == values[r] for r in range(8) if r not in (0, 5))
    assert exploit_step(4, vals, values, SPACE, Rules(resample=0.0), seed=1)[1] == new  # deterministic
    assert exploit_step(8, vals, values, SPACE, Rules(resample=0.0), seed=1)[1] != new  # per epoch


def test_resampling_draws_inside_the_space():
    values = [{"lr": 0.01, "momentum": 0.5}] * 4
    _, new, events = exploit_step(2, [0.1, 0.2, 0.3, 0.4], values, SPACE, Rules(resample=1.0), seed=0)
    (event,) = events
    assert event["how"] == {"lr": "resampled", "momentum": "resampled"}
    assert 1e-3 <= new[0]["lr"] <= 1e-1 and 0 <= new[0]["momentum"] <= 0.9


def test_a_copied_member_takes_weights_optimizer_and_batchnorm_state():
    model, base = book_setup("batchnorm", momentum=0.9)
    configs = [base.__class__(**{**base.__dict__, "seed": s}) for s in (1, 2, 3)]
    ts = init_members(model, configs, "cpu")
    ts.opt_state.momentum["conv1.weight"].normal_()
    ts.state["conv1_batchnorm.running_mean"].normal_()
    copied = select_members(ts, [0, 0, 2])
    for tree in ("params", "state"):
        for key, value in getattr(copied, tree).items():
            assert torch.equal(value[1], getattr(ts, tree)[key][0]) and torch.equal(
                value[2], getattr(ts, tree)[key][2]
            )
    one = member_state(copied, 1, configs[1])
    assert torch.equal(one.opt_state.momentum["conv1.weight"], ts.opt_state.momentum["conv1.weight"][0])


def test_schedules_follow_the_lineage():
    events = [
        {"epoch": 4, "member": 1, "after": {"lr": 0.2}},
        {"epoch": 8, "member": 1, "after": {"lr": 0.3}},
    ]
    assert schedules([{"lr": 0.1}, {"lr": 0.5}], events, 12) == [
        [(0, {"lr": 0.1})],
        [(0, {"lr": 0.5}), (4, {"lr": 0.2}), (8, {"lr": 0.3})],
    ]


def pbt_args(image_folder, out):
    return ["tune", "net", "--pbt", "--population", "4", "--interval", "2", "--epochs", "6", "--lr",
            "1e-3:1e-1:log", "--momentum", "0:0.9", "--batch-size", "8", "--data", str(image_folder),
            "--device", "cpu", "--no-compile", "--seed", "5", "--out", str(out)]  # fmt: skip


def same_files(a, b):
    for r in range(4):
        ours, theirs = (
            load_file(a / f"member-{r:02d}.safetensors"),
            load_file(b / f"member-{r:02d}.safetensors"),
        )
        assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours), r
    spec = lambda folder: json.loads((folder / "pbt.json").read_text())  # noqa: E731
    results = lambda folder: [{**r, "checkpoint": None} for r in spec(folder)["results"]]  # noqa: E731
    assert spec(a)["events"] == spec(b)["events"] and results(a) == results(b)


@pytest.fixture(scope="module")
def straight(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pbt") / "straight"
    done = invoke(*pbt_args(image_folder, out))
    assert done.exit_code == 0, done.output
    return out


def test_two_runs_with_one_seed_are_bitwise_equal(straight, image_folder, tmp_path):
    done = invoke(*pbt_args(image_folder, tmp_path / "again"))
    assert done.exit_code == 0, done.output
    spec = json.loads((straight / "pbt.json").read_text())
    assert spec["events"], "the run exploited at least once"
    for event in spec["events"]:
        assert event["epoch"] in (2, 4) and event["copied"] != event["member"]
    results = {r["member"]: r for r in spec["results"]}
    assert all(results[r]["copies"] == sum(e["member"] == r for e in spec["events"]) for r in results)
    assert (straight / "pbt.png").exists()
    same_files(straight, tmp_path / "again")


def test_a_stopped_run_resumes_bit_for_bit(straight, image_folder, tmp_path):
    out = tmp_path / "stopped"
    command = [sys.executable, "-c", "from cli.main import app; app()", *pbt_args(image_folder, out)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    deadline = time.time() + 120
    for line in proc.stderr:  # after the first exploit step, mid-epoch
        if "epoch   3/6" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"Resume with: ptm tune --pbt --resume {out}" in err
    done = invoke("tune", "--pbt", "--resume", out)
    assert done.exit_code == 0, done.output
    same_files(straight, out)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--population", "1"], "--population must be >= 2"),
        (["--interval", "6"], "leaves no exploit step in 6 epochs"),
        (["--perturb", "0.8"], "--perturb takes two factors"),
        (["--quantile", "0.7"], "--quantile must be in (0, 0.5]"),
        (["--n-chans1", "16,32"], "--pbt perturbs lr"),
    ],
)
def test_bad_pbt_options_are_one_line(image_folder, tmp_path, args, says):
    base = pbt_args(image_folder, tmp_path / "bad")
    done = invoke(*base, *args)
    assert done.exit_code == 2, done.output
    assert says in one_error_line(done.output.strip().splitlines()[-1])


def test_run_pbt_is_the_api(image_folder, tmp_path):
    report = run_pbt(
        "net", space={"lr": "1e-2:1e-1:log"}, population=2, rules=Rules(interval=1), epochs=2, batch_size=16,
        data=str(image_folder), device="cpu", out=tmp_path / "api", compile=False,
    )  # fmt: skip
    assert len(report.members) == 2 and len(report.events) == 1
