"""Checkpoints against the oracle: load_state_dict(strict=True) into the book's modules."""

import json

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from ptm_func import get_model
from ptm_func.data.dataset import Dataset, Split
from ptm_func.errors import CheckpointError
from ptm_func.files.checkpoint import load_checkpoint, save_checkpoint
from ptm_func.files.convert import pt_to_safetensors, safetensors_to_pt
from ptm_func.files.resume import load_run, save_run, training_state_path
from ptm_func.training.config import TrainConfig
from ptm_func.training.loop import fit
from tests.test_models import CONFIGS, IDS


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def trained_like(model, images):
    """Weights and non-trivial BN stats, as after some training."""
    params, state = model.init(seed=4)
    _, state = model.apply(params, state, images * 3, train=True, key=0)
    return params, state


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_saved_file_loads_strictly_into_the_twin(name, config, images, tmp_path):
    model = get_model(name, **config)
    params, state = trained_like(model, images)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params, state, {"epochs": 7})

    twin = model.module()
    twin.load_state_dict(safetensors.torch.load_file(path), strict=True)
    reference = twin.state_dict()
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(reference)
        for key in f.keys():
            t = f.get_tensor(key)
            assert t.shape == reference[key].shape and t.dtype == reference[key].dtype, key
        meta = f.metadata()
    assert meta["model"] == name and json.loads(meta["config"]) == model.config
    assert json.loads(meta["training"]) == {"epochs": 7}

    logits, _ = model.apply(params, state, images, train=False)
    torch.testing.assert_close(twin.eval()(images), logits, rtol=0, atol=0)

    ckpt = load_checkpoint(path)  # the file alone rebuilds the model
    assert ckpt.model == model
    reloaded, _ = ckpt.model.apply(ckpt.params, ckpt.state, images, train=False)
    assert torch.equal(reloaded, logits)


def test_tied_resdeep_round_trip_stays_tied(images, tmp_path):
    model = get_model("resdeep", n_blocks=6, tied=True)
    path = save_checkpoint(tmp_path / "t.safetensors", model, *trained_like(model, images))
    twin = model.module()
    twin.load_state_dict(safetensors.torch.load_file(path), strict=True)
    assert twin.resblocks[0] is twin.resblocks[5]
    assert len(list(twin.parameters())) == 9
    ckpt = load_checkpoint(path)
    assert ckpt.params["resblocks.5.conv.weight"] is ckpt.params["resblocks.0.conv.weight"]
    safetensors_to_pt(path, tmp_path / "t.pt")
    book = torch.load(tmp_path / "t.pt", weights_only=True)
    assert book["resblocks.5.conv.weight"].data_ptr() == book["resblocks.0.conv.weight"].data_ptr()


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_book_pt_file_converts_and_evaluates_identically(name, config, images, tmp_path):
    model = get_model(name, **config)
    torch.manual_seed(8)
    book = model.module().eval()
    torch.save(book.state_dict(), tmp_path / "book.pt")  # what the book's code writes

    inferable = name in ("batchnorm", "resdeep")
    converted = pt_to_safetensors(
        tmp_path / "book.pt", tmp_path / "ours.safetensors", None if inferable else name
    )
    assert converted == model
    ckpt = load_checkpoint(tmp_path / "ours.safetensors")
    logits, _ = ckpt.model.apply(ckpt.params, ckpt.state, images, train=False)
    assert torch.equal(logits, book(images))

    safetensors_to_pt(tmp_path / "ours.safetensors", tmp_path / "back.pt")
    again = model.module()
    again.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    assert torch.equal(again.eval()(images), logits)


def _write(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "mangle,needle",
    [
        (lambda sd: {k: v for k, v in sd.items() if k != "fc2.bias"}, "missing keys [fc2.bias]"),
        (lambda sd: {**sd, "fc3.weight": torch.zeros(1)}, "unexpected keys [fc3.weight]"),
        (lambda sd: {**sd, "conv1.weight": torch.zeros(16, 3, 3, 3)}, "conv1.weight has shape (16, 3, 3, 3)"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_mismatched_files_name_the_problem(mangle, needle, tmp_path):
    model = get_model("width")
    params, state = model.init(seed=0)
    good = save_checkpoint(tmp_path / "good.safetensors", model, params, state)
    with safe_open(str(good), "pt") as f:
        metadata = f.metadata()
    bad = _write(tmp_path, "bad.safetensors", mangle({**params}), metadata)
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(bad)
    assert needle in str(excinfo.value)


def test_other_model_truncated_missing_and_foreign_files(tmp_path):
    model = get_model("net")
    path = save_checkpoint(tmp_path / "net.safetensors", model, *model.init(seed=0))
    with pytest.raises(CheckpointError, match="holds a 'net' model, not 'res'"):
        load_checkpoint(path, expect_model="res")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.safetensors")
    plain = _write(tmp_path, "plain.safetensors", {k: v for k, v in model.init(seed=0)[0].items()})
    with pytest.raises(CheckpointError, match="ptm convert"):
        load_checkpoint(plain)


def test_a_crash_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = get_model("net")
    params, state = model.init(seed=0)
    path = save_checkpoint(tmp_path / "net.safetensors", model, params, state)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("ptm_func.files.checkpoint.save_file", crash)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(path, model, model.init(seed=1)[0], state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]


def _random_data(n=96):
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))
    return Dataset(split, split, ("a", "b"), "random")


@pytest.mark.parametrize("stop_after_steps", [6, 9], ids=["epoch-boundary", "mid-epoch"])
def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(stop_after_steps, tmp_path):
    model = get_model("dropout")  # dropout keys must also line up after resuming
    config = TrainConfig(epochs=3, batch_size=16, momentum=0.9, compile=False, seed=5)
    data = _random_data()  # 6 steps per epoch
    full = fit(model, data, config)

    calls = []
    stopped = fit(
        model, data, config, stop_requested=lambda: calls.append(1) or len(calls) >= stop_after_steps
    )
    assert stopped.interrupted
    path = save_run(tmp_path / "run.safetensors", model, stopped.train_state, config, {"variant": "dropout"})
    assert training_state_path(path).exists()

    ckpt, ts, saved_config = load_run(path)
    assert saved_config == config and (ts.epoch, ts.step_in_epoch) == divmod(stop_after_steps, 6)
    resumed = fit(ckpt.model, data, saved_config, start=ts)
    assert not resumed.interrupted
    for key in full.params:
        assert torch.equal(full.params[key], resumed.params[key]), key
    for key in full.opt_state.momentum:
        assert torch.equal(full.opt_state.momentum[key], resumed.opt_state.momentum[key]), key
    assert resumed.history[-1].loss == full.history[-1].loss


def test_weights_and_training_state_from_different_saves_are_refused(tmp_path):
    model = get_model("net")
    config = TrainConfig(epochs=1, batch_size=32, compile=False)
    result = fit(model, _random_data(), config)
    path = save_run(tmp_path / "a.safetensors", model, result.train_state, config, {})
    save_checkpoint(path, model, result.params, result.state, {"progress": {"epoch": 99}})
    with pytest.raises(CheckpointError, match="different saves"):
        load_run(path)
    training_state_path(path).unlink()
    with pytest.raises(CheckpointError, match="evaluated, not resumed"):
        load_run(path)
