"""Run records: per-epoch JSON lines written as the run goes, and val accuracy that changes nothing."""

import json

import pytest
import torch

from ptm_func.data.dataset import Dataset, Split
from ptm_func.errors import RecordError
from ptm_func.files.records import RunRecord, find_metrics, metrics_path, read_metrics, run_path
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit, fit_ensemble
from ptm_func.training.state import EpochStats


def random_data(n=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, Split(split.images[:32], split.labels[:32]), ("a", "b"), "random")


def stats(epoch, val=None):
    return EpochStats(epoch, 5, 1.0 / epoch, 0.5, 0.1, 640.0, val_accuracy=val)


@pytest.mark.parametrize(
    "name,options",
    [("net", {}), ("dropout", {}), ("batchnorm", {"momentum": 0.9}), ("dropout", {"book_quirks": True})],
    ids=["net", "dropout", "batchnorm", "dropout-book-quirks"],
)
def test_validating_every_epoch_leaves_the_weights_bitwise_unchanged(name, options):
    """Validation reads params and state only; train-mode validation (book quirks) too."""
    quirks = {"shuffle": False, "eval_train_mode": True} if options.pop("book_quirks", False) else {}
    runs = {}
    for every in (0, 1):
        model, config = book_setup(
            name, epochs=3, batch_size=16, seed=5, compile=False, eval_every=every, **quirks, **options
        )
        runs[every] = fit(model, random_data(), config)
    assert [s.val_accuracy is not None for s in runs[1].history] == [True, True, True]
    assert [s.val_accuracy is not None for s in runs[0].history] == [False, False, True]
    for key, value in runs[0].params.items():
        assert torch.equal(runs[1].params[key], value), key
    for key, value in runs[0].state.items():
        assert torch.equal(runs[1].state[key], value), key
    assert runs[0].history[-1].val_accuracy == runs[1].history[-1].val_accuracy


def test_eval_every_n_validates_every_nth_and_the_last_epoch():
    model, config = book_setup("net", epochs=5, batch_size=32, compile=False, eval_every=2)
    history = fit(model, random_data(), config).history
    assert [s.epoch for s in history if s.val_accuracy is not None] == [2, 4, 5]
    with pytest.raises(ValueError, match="eval_every must be >= 0"):
        book_setup("net", eval_every=-1)


def test_ensemble_epochs_carry_every_members_values():
    model, config = book_setup("net", epochs=2, batch_size=32, compile=False)
    result = fit_ensemble(model, random_data(), config, replicas=3)
    last = result.history[-1]
    assert set(last.members) == {"loss", "train_accuracy_running", "val_accuracy"}
    assert all(len(values) == 3 for values in last.members.values())
    assert last.members["val_accuracy"] == result.val_accuracy  # the final eval, member by member
    assert last.val_accuracy == pytest.approx(sum(result.val_accuracy) / 3)


def test_record_appends_lines_and_keeps_the_run_info(tmp_path):
    ckpt = tmp_path / "runs" / "net.safetensors"
    record = RunRecord(ckpt)
    record.start({"model": "net", "config": {"epochs": 5}})
    record.log_epoch(stats(1))
    record.log_epoch(stats(2, val=0.75))
    record.finish({"val_accuracy": 0.75})
    assert metrics_path(ckpt) == tmp_path / "runs" / "net.metrics.jsonl"
    lines = read_metrics(metrics_path(ckpt))
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[1]["val_accuracy"] == 0.75 and lines[0]["val_accuracy"] is None
    assert {"loss", "train_accuracy_running", "seconds", "samples_per_second", "time"} <= set(lines[0])
    info = json.loads(run_path(ckpt).read_text())
    assert info["config"] == {"epochs": 5} and info["result"] == {"val_accuracy": 0.75} and "started" in info


def test_resumed_record_keeps_epochs_up_to_the_checkpoint_only(tmp_path):
    """kill -9 after epoch 3 with a checkpoint at 2: epoch 3 runs again, so its old line goes."""
    ckpt = tmp_path / "net.safetensors"
    record = RunRecord(ckpt)
    record.start({"model": "net"})
    for epoch in (1, 2, 3):
        record.log_epoch(stats(epoch))
    with open(metrics_path(ckpt), "a") as f:
        f.write('{"epoch": 4, "loss"')  # torn by the kill
    resumed = RunRecord(ckpt)
    resumed.start({"model": "net"}, resumed_from=ckpt, at_epoch=2)
    resumed.log_epoch(stats(3))
    assert [line["epoch"] for line in read_metrics(metrics_path(ckpt))] == [1, 2, 3]
    info = json.loads(run_path(ckpt).read_text())
    assert len(info["resumed"]) == 1


def test_resume_into_another_path_copies_the_history(tmp_path):
    old, new = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    RunRecord(old).start({})
    RunRecord(old).log_epoch(stats(1))
    RunRecord(new).start({}, resumed_from=old, at_epoch=1)
    assert [line["epoch"] for line in read_metrics(metrics_path(new))] == [1]


def test_unreadable_records_are_clear_errors(tmp_path):
    with pytest.raises(RecordError, match="no run record"):
        read_metrics(tmp_path / "none.metrics.jsonl")
    bad = tmp_path / "bad.metrics.jsonl"
    bad.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(RecordError, match="bad.metrics.jsonl:2 is not a metrics line"):
        read_metrics(bad)
    bad.write_text('{"epoch": 1}\n{"epoch": 2}')  # a last line without newline that parses is kept
    assert len(read_metrics(bad)) == 2
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(RecordError, match="cannot write run record"):
        RunRecord(blocked / "net.safetensors").start({})


def test_find_metrics_accepts_checkpoint_record_or_run_info(tmp_path):
    ckpt = tmp_path / "net.safetensors"
    expected = tmp_path / "net.metrics.jsonl"
    assert find_metrics(ckpt) == expected
    assert find_metrics(expected) == expected
    assert find_metrics(tmp_path / "net.run.json") == expected
