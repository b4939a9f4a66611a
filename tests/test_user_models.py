"""Your own model (issue 29, first part): nn.Modules and pure functions as ptm Models, from Python."""

from dataclasses import replace

import pytest
import torch
from torch import nn

import ptm_func
from ptm_func.data.dataset import Dataset, Split
from ptm_func.errors import ModelConfigError
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.nets.user import REGISTERED, model_from_functions, model_from_module, register_model
from ptm_func.training.config import TrainConfig
from ptm_func.training.loop import fit


class BookNet(nn.Module):
    """The book's Net, as a reader copies it into a file of their own."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        out = torch.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = torch.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = out.view(-1, 8 * 8 * 8)
        return self.fc2(torch.tanh(self.fc1(out)))


class Tiny(nn.Module):
    """BatchNorm, channel and element dropout, a custom buffer: what the book's eight lack together."""

    def __init__(self, n_chans: int = 4, n_classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, n_chans, 3, padding=1)
        self.bn = nn.BatchNorm2d(n_chans)
        self.drop2d = nn.Dropout2d(0.3)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(n_chans * 16 * 16, n_classes)
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x):
        out = self.drop2d(torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2))
        return self.head(self.drop(out.flatten(1))) * self.scale


def data(n=48, classes=2, seed=0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    train = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, classes, (n,), generator=gen))
    val = Split(train.images[:16].clone(), train.labels[:16].clone())
    return Dataset(train, val, tuple(f"c{i}" for i in range(classes)), "random")


CONFIG = TrainConfig(epochs=2, batch_size=16, compile=False, channels_last=False, eval_every=0)


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_books_net_as_a_user_module_trains_bit_for_bit_as_net():
    mine, book = model_from_module(BookNet), ptm_func.get_model("net")
    assert mine.n_classes == 2 and mine.head == "fc2"
    assert equal(mine.init(123)[0], book.init(123)[0])  # the module built after manual_seed(123)
    ours, theirs = fit(mine, data(), CONFIG), fit(book, data(), CONFIG)
    assert equal(ours.params, theirs.params) and ours.history[-1].loss == theirs.history[-1].loss
    module = BookNet()
    module.load_state_dict({**ours.params, **ours.state}, strict=True)


def test_batchnorm_and_keyed_dropout_of_a_module_train_deterministically():
    model = model_from_module(Tiny, n_chans=4)
    params, state = model.init(0)
    assert set(state) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "scale"}
    first, again = fit(model, data(), CONFIG), fit(model, data(), CONFIG)
    assert equal(first.params, again.params) and equal(first.state, again.state)
    assert first.state["bn.num_batches_tracked"].item() == 6  # 3 steps x 2 epochs, returned not mutated
    assert not equal(first.params, fit(model, data(), replace(CONFIG, seed=5)).params)
    assert equal(state, model.init(0)[1])  # nothing given was changed


@pytest.mark.parametrize("vmap", [False, True])
def test_members_of_a_user_module_are_their_separate_runs(vmap):
    model = model_from_module(Tiny, n_chans=4)
    configs = [replace(CONFIG, members_vmap=vmap), replace(CONFIG, seed=7, lr=0.05, members_vmap=vmap)]
    together = fit(model, data(), configs)
    for r, config in enumerate(configs):
        alone = fit(model, data(), replace(config, members_vmap=None))
        member = together.member(r)
        for key in alone.params:
            if vmap:
                torch.testing.assert_close(member.params[key], alone.params[key], rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(member.params[key], alone.params[key]), key


def test_pure_functions_are_a_model_too():
    def init(gen):
        return {
            "fc2.weight": torch.randn(3, 3 * 32 * 32, generator=gen) * 0.01,
            "fc2.bias": torch.zeros(3),
        }, {}

    def apply(params, state, x, *, train, key=None):
        return torch.nn.functional.linear(x.flatten(1), params["fc2.weight"], params["fc2.bias"]), state

    model = model_from_functions(init, apply, name="linear")
    assert model.n_classes == 3 and model.aliases == {}
    result = fit(model, data(classes=3), CONFIG)
    assert result.history[-1].loss < result.history[0].loss * 1.5
    with pytest.raises(ModelConfigError, match="no nn.Module twin"):
        model.module()


@pytest.fixture
def tiny_registered():
    @register_model("tiny-test")
    def tiny(n_chans: int = 4, n_classes: int = 2):
        return model_from_module(Tiny, n_chans=n_chans, n_classes=n_classes)

    yield "tiny-test"
    REGISTERED.pop("tiny-test")


def test_a_registered_factory_runs_resumes_bitwise_and_its_checkpoint_loads(
    tiny_registered, image_folder, tmp_path
):
    settings = {"data": image_folder, "classes": ["airplane", "bird", "cat"], "device": "cpu",
                "batch_size": 16, "compile": False, "reporter": ptm_func.Silent()}  # fmt: skip
    straight = ptm_func.run_training(tiny_registered, epochs=3, out=tmp_path / "a.safetensors", **settings)
    assert straight.result.train_state.params["head.weight"].shape[0] == 3  # one output per class
    cut = ptm_func.run_training(tiny_registered, epochs=1, out=tmp_path / "b.safetensors", checkpoint_every=1,
                                **settings)  # fmt: skip
    resumed = ptm_func.run_training(tiny_registered, resume=cut.checkpoint, epochs=3, **settings)
    assert equal(resumed.result.params, straight.result.params)
    assert equal(resumed.result.state, straight.result.state)
    ckpt = load_checkpoint(tmp_path / "a.safetensors")
    assert ckpt.model.name == tiny_registered and ckpt.model.n_classes == 3
    Tiny(n_chans=4, n_classes=3).load_state_dict({**ckpt.params, **ckpt.state}, strict=True)


def test_models_that_cannot_serve_say_why_in_one_line():
    class OneOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 1)

        def forward(self, x):
            return self.fc(x.flatten(1))

    class Broken(OneOutput):
        def forward(self, x):
            raise RuntimeError("shapes")

    with pytest.raises(ModelConfigError, match="with 2 or more classes, got \\(1, 1\\)"):
        model_from_module(OneOutput)
    with pytest.raises(ModelConfigError, match="Broken fails on a 3x32x32 image: RuntimeError: shapes"):
        model_from_module(Broken)
    with pytest.raises(ModelConfigError, match="built a int, not an nn.Module"):
        model_from_module(lambda: 3, name="three")
    with pytest.raises(ModelConfigError, match="one of the book's models"):
        register_model("net")


def test_a_user_module_that_views_its_features_trains_with_the_default_layout():
    """On a CPU the book's models train on channels-last images, where `.view` fails: a user's
    model gets NCHW unless asked (its own choice, --channels-last, still wins)."""
    result = fit(model_from_module(BookNet), data(), replace(CONFIG, channels_last=None))
    assert result.history[-1].loss > 0
    with pytest.raises(RuntimeError, match="view"):
        fit(model_from_module(BookNet), data(), replace(CONFIG, channels_last=True))


@pytest.mark.parametrize("name", ["dropout", "batchnorm"])
def test_the_books_dropout_and_batchnorm_nets_as_user_modules_train_bit_for_bit(name):
    """Keyed dropout layers draw the built-in NetDropout's masks; BatchNorm's state is returned
    (torch's kernel updates the running statistics: equal to the pure BatchNorm's to rounding)."""
    from ptm_func.nets import modules

    book = ptm_func.get_model(name)
    mine = model_from_module({"dropout": modules.NetDropout, "batchnorm": modules.NetBatchNorm}[name])
    ours, theirs = fit(mine, data(), CONFIG), fit(book, data(), CONFIG)
    assert equal(ours.params, theirs.params) and ours.state.keys() == theirs.state.keys()
    for key in ours.state:
        torch.testing.assert_close(ours.state[key], theirs.state[key], rtol=1e-5, atol=1e-7, msg=key)


def test_the_research_functions_take_a_user_module_with_batchnorm_and_dropout():
    """Per-example gradients against autograd on the module itself; the soup of one run is that
    run (statistics recomputed without dropout); a loss line's ends are the two runs."""
    from ptm_func.research.evaluation import evaluate_split, recompute_running_stats
    from ptm_func.research.landscape import loss_line
    from ptm_func.research.per_example import per_example_gradients
    from ptm_func.research.soup import soup

    model, split = model_from_module(Tiny, n_chans=3), data().train
    a, b = (fit(model, data(), replace(CONFIG, seed=s)) for s in (1, 2))
    grads, losses = per_example_gradients(model, a.params, a.state, split.images[:4], split.labels[:4])
    twin = Tiny(n_chans=3)
    twin.load_state_dict({**a.params, **a.state}, strict=True)
    twin.eval()
    for i in range(4):
        twin.zero_grad()
        nn.functional.cross_entropy(twin(split.images[i : i + 1]), split.labels[i : i + 1]).backward()
        for key, param in twin.named_parameters():
            torch.testing.assert_close(grads[key][i], param.grad, rtol=1e-4, atol=1e-6)
    stats = recompute_running_stats(model, a.params, a.state, split.images)
    assert not equal(stats, a.state)  # re-estimated...
    params, state = soup(model, [(a.params, a.state)], stats_images=split.images)
    assert equal(params, a.params) and equal(state, stats)  # ...and deterministic: no dropout in it
    line = loss_line(model, (a.params, a.state), (b.params, b.state), {"val": data().val}, [0.0, 1.0],
                     running_stats="interpolate")  # fmt: skip
    assert line[0].evaluations["val"] == evaluate_split(model, a.params, a.state, data().val)
    assert line[1].evaluations["val"] == evaluate_split(model, b.params, b.state, data().val)
