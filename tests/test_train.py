"""The functional train step and fit loop against the book's eager loop."""

from dataclasses import replace

import pytest
import torch

from ptm_func import get_model
from ptm_func.data.dataset import Dataset, Split
from ptm_func.data.sources import load_dataset
from ptm_func.nets import rng
from ptm_func.reports.baseline import book_training_loop
from ptm_func.training import tuning
from ptm_func.training.compiling import compile_step
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.loop import fit
from ptm_func.training.optim import SGD
from ptm_func.training.step import make_train_step


def random_split(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))


@pytest.fixture(scope="module")
def tiny_data():
    # 20 batches of 16: one epoch is 20 steps
    return Dataset(random_split(320, 0), random_split(64, 1), ("a", "b"), "random")


@pytest.mark.parametrize(
    "name,hp",
    [
        ("net", {}),
        ("net", {"momentum": 0.9, "weight_decay": 1e-3}),
        ("batchnorm", {"momentum": 0.9}),
        ("res", {"l2_lambda": 1e-3}),
        ("resdeep", {"n_blocks": 4, "tied": True, "lr": 3e-3}),
        ("net", {"compile": True}),
        ("net", {"channels_last": False}),
    ],
    ids=["net", "net-momentum-decay", "batchnorm", "res-l2", "resdeep-tied", "net-compiled", "net-nchw"],
)
def test_fit_matches_book_eager_loop_after_20_steps(name, hp, tiny_data):
    """fit on CPU trains on channels-last images (compiled: with inductor's tanh); the book's
    loop on NCHW images: equal up to float rounding."""
    hp = {"compile": False, **hp}
    model, config = book_setup(name, epochs=1, batch_size=16, seed=9, **hp)
    result = fit(model, tiny_data, config)

    torch.manual_seed(config.seed)  # the twin starts from the same weights as model.init(seed)
    twin = book_training_loop(model.module(), tiny_data.train, config)
    reference = twin.state_dict()
    ours = {**result.params, **result.state}
    assert set(ours) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert int(result.opt_state.step) == 20


def test_l2_penalty_gradient_is_weight_decay_twice_lambda(tiny_data):
    model = get_model("net")
    params, state = model.init(seed=0)
    batch = tiny_data.train.images[:16], tiny_data.train.labels[:16]

    def run(opt, l2):
        step = make_train_step(model, opt, l2_lambda=l2)
        p, s, o = params, state, opt.init(params)
        for _ in range(5):
            p, s, o, _ = step(p, s, o, *batch, rng.key(0))
        return p

    with_penalty = run(SGD(0.1), 0.01)
    with_decay = run(SGD(0.1, weight_decay=0.02), 0.0)
    for key in params:
        torch.testing.assert_close(with_penalty[key], with_decay[key], rtol=1e-5, atol=1e-6)


def test_train_step_mutates_nothing(tiny_data):
    model = get_model("batchnorm")
    params, state = model.init(seed=0)
    opt = SGD(0.1, momentum=0.9)
    opt_state = opt.init(params)
    frozen = [{k: v.clone() for k, v in d.items()} for d in (params, state, opt_state.momentum)]
    make_train_step(model, opt)(
        params, state, opt_state, tiny_data.train.images[:8], tiny_data.train.labels[:8], rng.key(0)
    )
    for before, now in zip(frozen, (params, state, opt_state.momentum), strict=True):
        assert all(torch.equal(before[k], now[k]) for k in before)


@pytest.mark.parametrize("name", ["net", "width", "dropout", "batchnorm", "depth", "res", "resdeep"])
def test_compiled_step_agrees_with_eager(name, tiny_data):
    """Every model (resdeep with 3 untied blocks). Also guards the torch 2.14 CPU inductor bug
    that drops alpha in add(p, a @ b, alpha=)."""
    model = get_model(name, **({"n_blocks": 3} if name == "resdeep" else {}))
    opt = SGD(0.05, momentum=0.9)
    step = make_train_step(model, opt)
    compiled = compile_step(step, torch.device("cpu"))  # with the CPU options fit uses
    params, state = model.init(seed=1)
    eager_carry = compiled_carry = (params, state, opt.init(params))
    for i in range(3):
        batch = tiny_data.train.images[i * 16 : (i + 1) * 16], tiny_data.train.labels[i * 16 : (i + 1) * 16]
        key = rng.fold_in(rng.key(4), i)
        *eager_carry, eager_metrics = step(*eager_carry, *batch, key)
        *compiled_carry, compiled_metrics = compiled(*compiled_carry, *batch, key)
    for ours, theirs in zip(eager_carry[:2], compiled_carry[:2], strict=True):
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(eager_metrics["loss"], compiled_metrics["loss"], rtol=1e-4, atol=1e-5)


def test_same_seed_gives_bitwise_equal_params(tiny_data):
    config = TrainConfig(epochs=2, batch_size=32, seed=3, compile=False)
    model = get_model("dropout")
    first, second = fit(model, tiny_data, config), fit(model, tiny_data, config)
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    other = fit(model, tiny_data, replace(config, seed=4))
    assert not torch.equal(first.params["fc2.weight"], other.params["fc2.weight"])


def test_one_epoch_end_to_end_on_an_image_folder(image_folder):
    data = load_dataset(image_folder, classes=["airplane", "bird"])
    model, config = book_setup("net", epochs=3, batch_size=8, lr=5e-2, compile=False)
    seen = []
    result = fit(model, data, config, on_epoch=lambda stats, ts: seen.append(stats))
    assert [s.epoch for s in seen] == [1, 2, 3]
    assert seen[-1].loss < seen[0].loss
    assert result.val_accuracy > 0.9  # the generated classes differ by a dominant channel
    assert 0 <= result.train_accuracy <= 1


def test_book_quirks_validate_in_train_mode_and_update_bn_stats(tiny_data):
    model, config = book_setup(
        "batchnorm", epochs=1, batch_size=32, shuffle=False, eval_train_mode=True, compile=False
    )
    result = fit(model, tiny_data, config)
    # 10 training steps, then the book's validate() ran 10 + 2 more batches in train mode
    assert int(result.state["conv1_batchnorm.num_batches_tracked"]) == 22


def test_l2_variant_and_resdeep_learning_rate():
    model, config = book_setup("l2")
    assert model.name == "net" and config.l2_lambda == 1e-3 and config.lr == 1e-2
    model, config = book_setup("resdeep", n_blocks=10)
    assert config.lr == 3e-3 and model.config["n_blocks"] == 10


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(batch_size=0), dict(lr=0.0), dict(lr=float("nan"))])
def test_invalid_training_config(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_channels_last_layout_keeps_values(tiny_data):
    images = tiny_data.train.images
    converted = tuning.in_layout(images, channels_last=True)
    assert converted.is_contiguous(memory_format=torch.channels_last) and torch.equal(converted, images)
    batch = converted[torch.tensor([5, 1, 3])]  # a gathered batch keeps the order
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert tuning.in_layout(images, channels_last=False) is images


# Net's eager functional step, 30 steps in a fresh process; prints the page faults of steps 11-30
_FAULTS_SCRIPT = """
import resource, sys, torch
from ptm_func.nets import rng
from ptm_func.training import tuning
from ptm_func.training.config import book_setup, step_hyperparameters
from ptm_func.training.state import init_train_state
from ptm_func.training.step import make_step
if sys.argv[1] == "tuned":
    assert tuning.tune_allocator() and tuning.tune_allocator()  # once per process, then a no-op
torch.set_num_threads(1)
model, config = book_setup("net", epochs=1)
ts, cpu = init_train_state(model, config, torch.device("cpu")), torch.device("cpu")
step, hyper = make_step(model), step_hyperparameters([config], cpu, False)
images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 2, (64,))
key = rng.fold_in(rng.key(0, cpu), torch.arange(64))
p, s, o, faults = ts.params, ts.state, ts.opt_state, 0
for i in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p, s, o, m = step(p, s, o, hyper, images, labels, key)
    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before if i >= 10 else 0
print(faults)
"""


def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_them_in():
    """glibc's defaults give a step's freed megabytes back and fault them in again next step
    (~3,800 page faults a step seen); tuned, the blocks are reused (about none)."""
    import subprocess
    import sys

    pytest.importorskip("resource")
    if not tuning.tune_allocator():
        pytest.skip("not glibc")

    def steady_faults(how: str) -> int:
        run = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, how], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout.split()[-1])

    default, tuned = steady_faults("default"), steady_faults("tuned")
    if default < 20 * 1024:
        pytest.skip(f"this libc's defaults do not fault a step's memory in again ({default} faults)")
    assert tuned < 1024, (tuned, default)  # less than one 4 MiB block over 20 steps
