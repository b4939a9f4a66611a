"""Pure models against the book's nn.Module twins (the oracle)."""

import pytest
import torch

from ptm_func import MODEL_NAMES, Model, UnknownModelError, get_model
from ptm_func.nets import rng
from ptm_func.nets.modules import NetResDeep

# Every network, with the book's default configs; resdeep both ways the book can be read.
# And all ten CIFAR-10 classes (fc2 with 10 outputs): the twins take n_classes too.
TEN = [(name, {"n_classes": 10}) for name in MODEL_NAMES if name != "resdeep"]
CONFIGS = (
    [(name, {}) for name in MODEL_NAMES]
    + [("resdeep", {"tied": True})]
    + TEN
    + [("resdeep", {"n_classes": 10, "n_blocks": 4})]
)
IDS = [
    n + ("-tied" if c.get("tied") else "") + (f"-{c['n_classes']}-classes" if "n_classes" in c else "")
    for n, c in CONFIGS
]

BOOK_COUNTS = {
    "net": 18090,
    "width": 38386,
    "dropout": 38386,
    "batchnorm": 38482,
    "depth": 16130,
    "res": 16130,
    "resdeep": 994530,
}


def unique_numel(tensors):
    return sum(t.numel() for t in {id(t): t for t in tensors.values()}.values())


def twin_with(model: Model, params, state, *, train: bool):
    twin = model.module()
    twin.load_state_dict({**params, **state}, strict=True)
    return twin.train(train)


@pytest.fixture
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_init_equals_twin_built_after_manual_seed(name, config):
    model = get_model(name, **config)
    params, state = model.init(seed=123)
    torch.manual_seed(123)
    reference = model.module().state_dict()
    ours = {**params, **state}
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match_the_book(name):
    params, _ = get_model(name).init(seed=0)
    assert unique_numel(params) == BOOK_COUNTS[name]
    twin = get_model(name).module()
    assert sum(p.numel() for p in twin.parameters()) == BOOK_COUNTS[name]


def test_net_per_tensor_counts_and_tied_resdeep_count():
    params, _ = get_model("net").init(seed=0)
    assert [p.numel() for p in params.values()] == [432, 16, 1152, 8, 16384, 32, 64, 2]
    tied_params, tied_state = get_model("resdeep", tied=True).init(seed=0)
    assert unique_numel(tied_params) == 75810
    book = NetResDeep(n_chans1=32, n_blocks=100)
    assert sum(p.numel() for p in book.parameters()) == 75810
    assert len(list(book.parameters())) == 9
    assert len({**tied_params, **tied_state}) == len(book.state_dict()) == 606


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "name,config",
    [c for c in CONFIGS if c[0] != "dropout"],
    ids=[i for i, c in zip(IDS, CONFIGS, strict=True) if c[0] != "dropout"],
)
def test_apply_matches_twin_forward_and_buffers(name, config, train, images):
    model = get_model(name, **config)
    params, state = model.init(seed=1)
    if state:  # start from non-trivial running stats so eval mode really uses them
        _, state = model.apply(params, state, images * 2 + 1, train=True)
    twin = twin_with(model, params, state, train=train)

    logits, new_state = model.apply(params, state, images, train=train)
    expected = twin(images)

    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    buffers = dict(twin.named_buffers(remove_duplicate=False))
    assert set(new_state) == set(buffers)
    for key, value in buffers.items():
        # Tied resdeep: one BN updated 100 times per forward; running_var grows large.
        torch.testing.assert_close(new_state[key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_tied_resdeep_tracks_n_blocks_batches_per_forward(images):
    model = get_model("resdeep", n_blocks=7, tied=True)
    params, state = model.init(seed=0)
    _, state = model.apply(params, state, images, train=True)
    _, state = model.apply(params, state, images, train=True)
    counts = {int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert counts == {14}
    assert state["resblocks.6.batch_norm.running_mean"] is state["resblocks.0.batch_norm.running_mean"]


def test_untied_resdeep_blocks_are_independent(images):
    params, state = get_model("resdeep", n_blocks=3).init(seed=0)
    assert not torch.equal(params["resblocks.0.conv.weight"], params["resblocks.1.conv.weight"])
    _, state = get_model("resdeep", n_blocks=3).apply(params, state, images, train=True)
    assert not torch.equal(
        state["resblocks.0.batch_norm.running_mean"], state["resblocks.1.batch_norm.running_mean"]
    )


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_state_dict_round_trip_from_twin(name, config, images):
    """Weights of a module built by torch load into the pure model and give identical outputs."""
    model = get_model(name, **config)
    torch.manual_seed(5)
    twin = model.module().eval()
    params, state = model.split(twin.state_dict())
    logits, _ = model.apply(params, state, images, train=False)
    assert torch.equal(logits, twin(images))


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_apply_mutates_nothing(name, config, images):
    model = get_model(name, **config)
    params, state = model.init(seed=2)
    before = {k: v.clone() for k, v in {**params, **state}.items()}
    model.apply(params, state, images, train=True, key=rng.key(0))
    for k, v in {**params, **state}.items():
        assert torch.equal(v, before[k]), k


def _inject_masks(twin, masks):
    """Make the twin's Dropout2d layers apply the given (N, C, 1, 1) keep-masks."""
    handles = []
    for module, mask in zip((twin.conv1_dropout, twin.conv2_dropout), masks, strict=True):
        handles.append(
            module.register_forward_hook(lambda m, inputs, out, mask=mask: inputs[0] * mask / (1 - m.p))
        )
    return handles


def test_dropout_matches_twin_given_the_same_masks(images):
    model = get_model("dropout")
    params, state = model.init(seed=3)
    key = rng.key(42)
    logits, _ = model.apply(params, state, images, train=True, key=key)

    twin = twin_with(model, params, state, train=True)
    masks = [
        (rng.uniform(rng.fold_in(key, i), (images.shape[0], c, 1, 1)) >= 0.4).float()
        for i, c in enumerate((32, 16))
    ]
    _inject_masks(twin, masks)
    torch.testing.assert_close(logits, twin(images), atol=1e-5, rtol=1e-5)
    assert 0 < masks[0].mean() < 1  # the masks really drop something


def test_dropout_keys_seeds_and_modes(images):
    model = get_model("dropout")
    params, state = model.init(seed=3)

    def run(**kw):
        return model.apply(params, state, images, **kw)[0]

    assert torch.equal(run(train=True, key=rng.key(1)), run(train=True, key=rng.key(1)))
    assert torch.equal(run(train=True, key=1), run(train=True, key=rng.key(1)))
    assert not torch.equal(run(train=True, key=rng.key(1)), run(train=True, key=rng.key(2)))
    eval_logits = run(train=False)
    assert torch.equal(eval_logits, run(train=False, key=rng.key(9)))
    twin = twin_with(model, params, state, train=False)
    torch.testing.assert_close(eval_logits, twin(images), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="key"):
        run(train=True)


def test_dropout_mask_keeps_about_sixty_percent():
    keep = rng.uniform(rng.key(0), (200, 50)) >= 0.4
    assert abs(keep.float().mean().item() - 0.6) < 0.02


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as excinfo:
        get_model("resnet50")
    message = str(excinfo.value)
    for name in MODEL_NAMES:
        assert name in message


def test_unknown_config_option_is_refused():
    with pytest.raises(ValueError, match="n_blocks"):
        get_model("net", n_blocks=3)


def test_config_changes_shapes():
    params, _ = get_model("width", n_chans1=16).init(seed=0)
    assert params["conv1.weight"].shape == (16, 3, 3, 3)
    params, state = get_model("resdeep", n_chans1=8, n_blocks=2).init(seed=0)
    assert params["resblocks.1.conv.weight"].shape == (8, 8, 3, 3)
    assert "resblocks.2.conv.weight" not in params
