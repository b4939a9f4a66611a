"""The Python run API checks every argument's type before it reads or writes anything (issue 28, 6)."""

import json
import threading

import numpy as np
import pytest
import torch

import ptm_func
from ptm_func.errors import SettingsError
from ptm_func.files.records import read_metrics

TINY = {"classes": ["airplane", "bird"], "device": "cpu", "epochs": 1, "batch_size": 16, "compile": False}


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"epochs": "2"}, "epochs must be a whole number, got '2' (str)"),
        ({"epochs": 2.5}, "epochs must be a whole number, got 2.5 (float)"),
        ({"seed": True}, "seed must be a whole number, got True (bool)"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"lr": "0.1"}, "lr must be a number, got '0.1' (str)"),
        ({"momentum": False}, "momentum must be a number, got False (bool)"),
        ({"shuffle": 1}, "shuffle must be True or False, got 1 (int)"),
        ({"compile": "yes"}, "compile must be True, False or None"),
        ({"replicas": "2"}, "replicas must be a whole number, got '2' (str)"),
        ({"replicas": 2.0}, "replicas must be a whole number, got 2.0 (float)"),
        ({"out": 123}, "out must be a path (str or pathlib.Path), got 123 (int)"),
        ({"out": ""}, "out must be a path, got an empty string"),
        ({"classes": "airplane"}, "classes must be a list of names, got 'airplane' (str)"),
        ({"device": 0}, "device must be 'auto', 'cpu', 'cuda' or a torch.device, got 0 (int)"),
        ({"checkpoint_every": 1.0}, "checkpoint_every must be a whole number"),
        ({"force": "no"}, "force must be True or False"),
        ({"stop_on_signals": 1}, "stop_on_signals must be True or False"),
        ({"reporter": print}, "reporter must be a ptm_func.Reporter"),
    ],
)
def test_run_training_refuses_a_wrong_type_naming_it_before_writing(override, needle, image_folder, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    settings = {**TINY, "data": image_folder, **override}
    with pytest.raises(SettingsError) as caught:
        ptm_func.run_training("net", **settings)
    assert needle in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no runs/, no record, no lock


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"seeds": "2"}, "seeds must be a whole number"),
        ({"seed": True}, "seed must be a whole number, got True (bool)"),
        ({"chunk": 1.5}, "chunk must be a whole number"),
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"out": 3.0}, "out must be a path"),
    ],
)
def test_run_sweep_refuses_a_wrong_type_naming_it_before_writing(override, needle, image_folder, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    settings = {**TINY, "data": image_folder, "grid": {"lr": [0.1, 0.2]}, **override}
    with pytest.raises(SettingsError) as caught:
        ptm_func.run_sweep("net", **settings)
    assert needle in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_stop_on_signals_off_the_main_thread_is_refused_before_writing(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caught = []

    def run():
        try:
            ptm_func.run_training("net", data=image_folder, stop_on_signals=True, **TINY)
        except SettingsError as err:
            caught.append(str(err))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert caught == ["stop_on_signals needs the main thread: Python delivers signals only there"]
    assert list(tmp_path.iterdir()) == []


def test_numpy_numbers_are_taken_and_recorded_as_python_numbers(image_folder, tmp_path):
    out = tmp_path / "n.safetensors"
    settings = {**TINY, "epochs": np.int64(1), "lr": np.float32(0.05), "seed": np.int64(7)}
    outcome = ptm_func.run_training("net", data=image_folder, out=out, reporter=ptm_func.Silent(), **settings)
    config = outcome.result.configs[0]
    assert config.seed == 7 and type(config.seed) is int and type(config.lr) is float
    assert len(read_metrics(out.with_name("n.metrics.jsonl"))) == 1
    assert json.loads(out.with_name("n.run.json").read_text())["config"]["seed"] == 7


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda d: ptm_func.run_training("net", data=d, lr=10**400, **TINY), "lr must be a finite number"),
        (lambda d: ptm_func.run_training("net", data=d, world="x", **TINY), "world must be a ptm_func World"),
        (lambda d: ptm_func.run_training(["net"], data=d, **TINY), "the model must be a name, got ['net']"),
        (lambda d: ptm_func.run_sweep("net", data=d, grid="lr=0.1", **TINY), "grid must be a dict"),
        (
            lambda d: ptm_func.run_training("net", data=d, compile_mode="bogus", **TINY),
            "compile_mode must be",
        ),
        (
            lambda d: ptm_func.run_training("net", data=d, **{**TINY, "device": torch.device("meta")}),
            "unsupported device 'meta'",
        ),  # fmt: skip
    ],
)
def test_more_wrong_arguments_are_one_settings_error_before_writing(call, needle, image_folder, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    """Issue 28's second attack: huge ints, world, a list as the model, a grid that is no dict,
    an unknown compile mode, a torch.device ptm cannot use."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:  # SettingsError, or DeviceError: both one line
        call(image_folder)
    assert needle in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_path_that_does_not_exist_makes_no_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "x.safetensors"
    with pytest.raises(ptm_func.CheckpointError, match="no checkpoint at"):
        ptm_func.run_training("net", resume=missing, device="cpu")
    assert list(tmp_path.iterdir()) == []
