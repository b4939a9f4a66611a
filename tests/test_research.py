"""Research helpers against oracles: per-example gradients vs torch.autograd.grad on the book's
module, one sample at a time; recomputed BatchNorm statistics vs the module's own in train mode;
the loss line's ends vs the checkpoints; a soup of identical members vs the member."""

import pytest
import torch
import torch.nn.functional as F

from ptm_func import get_model
from ptm_func.data.dataset import Split
from ptm_func.files.checkpoint import load_checkpoint, save_checkpoint
from ptm_func.research.evaluation import evaluate_split, loss, probabilities, recompute_running_stats
from ptm_func.research.landscape import interpolate, loss_line
from ptm_func.research.per_example import gradient_norms, per_example_gradients, score_examples
from ptm_func.research.soup import average, soup
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit

MODELS = [
    ("net", {}),
    ("dropout", {}),
    ("batchnorm", {}),
    ("res", {}),
    ("resdeep", {"n_blocks": 2, "tied": True}),
    ("resdeep", {"n_blocks": 2}),
]


def random_split(n: int, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen))


def trained_state(model, seed=0):
    """Weights after a training step and BatchNorm statistics that are not the reset ones."""
    params, state = model.init(seed)
    if state:
        _, state = model.apply(params, state, random_split(16, seed + 1).images, train=True)
    return params, state


@pytest.mark.parametrize("name,options", MODELS)
def test_per_example_gradients_equal_autograd_on_the_books_module(name, options):
    model = get_model(name, **options)
    params, state = trained_state(model)
    split = random_split(5)
    grads, losses = per_example_gradients(model, params, state, split.images, split.labels)

    module = model.module()
    module.load_state_dict({**params, **state}, strict=True)
    module.eval()
    named = dict(module.named_parameters())  # a tied block's params once, under block 0's keys
    assert sorted(grads) == sorted(named)
    for i in range(len(split)):
        sample_loss = F.cross_entropy(module(split.images[i : i + 1]), split.labels[i : i + 1])
        expected = torch.autograd.grad(sample_loss, list(named.values()))
        torch.testing.assert_close(losses[i], sample_loss.detach())
        for key, g in zip(named, expected, strict=True):
            torch.testing.assert_close(grads[key][i], g, rtol=1e-4, atol=1e-6, msg=f"{key}, sample {i}")
    norms = gradient_norms(grads)
    by_hand = torch.sqrt(sum(grads[k][2].pow(2).sum() for k in grads))
    torch.testing.assert_close(norms[2], by_hand)


def test_scores_do_not_depend_on_the_batching_and_hardest_respects_the_mask():
    model = get_model("net")
    params, state = model.init(0)
    split = random_split(20)
    a = score_examples(model, params, state, split, batch_size=7)
    b = score_examples(model, params, state, split, batch_size=256)
    torch.testing.assert_close(a.losses, b.losses)
    torch.testing.assert_close(a.gradient_norms, b.gradient_norms)
    torch.testing.assert_close(a.probabilities, probabilities(model, params, state, split.images))
    ones = split.labels == 1
    top = a.hardest(3, among=ones)
    assert bool(ones[top].all())
    assert a.gradient_norms[top[0]] == a.gradient_norms[ones].max()
    assert len(a.hardest(100)) == 20


def test_evaluate_split_is_the_modules_mean_loss_and_accuracy():
    model = get_model("batchnorm")
    params, state = trained_state(model)
    split = random_split(30)
    result = evaluate_split(model, params, state, split, batch_size=8)
    module = model.module()
    module.load_state_dict({**params, **state})
    module.eval()
    with torch.no_grad():
        logits = module(split.images)
    assert result.loss == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-5)
    assert result.accuracy == (logits.argmax(1) == split.labels).double().mean().item()
    assert result.loss == pytest.approx(
        loss(model, params, state, split.images, split.labels).item(), rel=1e-5
    )


@pytest.mark.parametrize("name,options", [("batchnorm", {}), ("resdeep", {"n_blocks": 3, "tied": True})])
def test_recomputed_statistics_equal_the_modules_after_a_reset(name, options):
    model = get_model(name, **options)
    params, state = trained_state(model)
    images = random_split(40, seed=3).images
    stats = recompute_running_stats(model, params, state, images, batch_size=16)
    module = model.module()
    module.load_state_dict({**params, **state})
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
    module.train()
    with torch.no_grad():
        for start in range(0, 40, 16):
            module(images[start : start + 16])
    expected = {k: v for k, v in module.state_dict().items() if k in stats}
    assert sorted(expected) == sorted(stats)
    for key, value in expected.items():
        torch.testing.assert_close(stats[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert recompute_running_stats(get_model("net"), *get_model("net").init(0), images) == {}


@pytest.mark.parametrize("name,options", MODELS)
def test_the_line_ends_are_the_checkpoints_own_losses(name, options, tmp_path):
    model = get_model(name, **options)
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"{seed}.safetensors"
        save_checkpoint(path, model, *trained_state(model, seed))
        paths.append(path)
    a, b = (load_checkpoint(p) for p in paths)
    splits = {"train": random_split(24, 5), "val": random_split(12, 6)}
    mode = "interpolate"  # the checkpoints' own statistics at the ends
    points = loss_line(
        model, (a.params, a.state), (b.params, b.state), splits, [0.0, 0.5, 1.0], running_stats=mode
    )
    for point, ckpt in ((points[0], a), (points[2], b)):
        for split_name, split in splits.items():
            assert point.evaluations[split_name] == evaluate_split(model, ckpt.params, ckpt.state, split)
    if a.state:  # recomputed: the ends are the checkpoints with recomputed statistics
        images = splits["train"].images
        points = loss_line(
            model, (a.params, a.state), (b.params, b.state), splits, [1.0], stats_images=images
        )
        recomputed = recompute_running_stats(model, b.params, b.state, images)
        assert points[0].evaluations["val"] == evaluate_split(model, b.params, recomputed, splits["val"])
        with pytest.raises(ValueError, match="stats_images"):
            loss_line(model, (a.params, a.state), (b.params, b.state), splits, [0.5])


def test_interpolation_is_linear_and_keeps_a_tied_model_tied():
    model = get_model("resdeep", n_blocks=3, tied=True)
    (pa, sa), (pb, sb) = model.init(0), model.init(1)
    points = loss_line(
        model, (pa, sa), (pb, sb), {"v": random_split(8)}, [0.25], stats_images=random_split(8).images
    )
    assert len(points) == 1
    mid = interpolate(pa, pb, 0.25)
    torch.testing.assert_close(mid["fc1.weight"], 0.75 * pa["fc1.weight"] + 0.25 * pb["fc1.weight"])
    with pytest.raises(ValueError, match="different keys"):
        interpolate(pa, get_model("net").init(0)[0], 0.5)
    with pytest.raises(ValueError, match="running_stats"):
        loss_line(model, (pa, sa), (pb, sb), {}, [0.5], running_stats="average")


@pytest.mark.parametrize("name,options", MODELS)
def test_a_soup_of_identical_members_is_the_member(name, options):
    model = get_model(name, **options)
    params, state = trained_state(model)
    members = [(params, state)] * 3
    souped_params, souped_state = soup(model, members)
    for key in params:
        assert torch.equal(souped_params[key], params[key]), key
    for key in state:
        assert torch.equal(souped_state[key], state[key]), key
    if state:  # with statistics recomputed: the member with recomputed statistics
        images = random_split(32).images
        _, recomputed = soup(model, members, stats_images=images)
        expected = recompute_running_stats(model, params, state, images)
        assert all(torch.equal(recomputed[k], expected[k]) for k in expected)
    if model.aliases:  # still tied: every alias is its block-0 tensor
        assert all(
            souped_params[alias] is souped_params[key]
            for alias, key in model.aliases.items()
            if key in params
        )


def test_a_soup_of_two_is_their_mean_and_scores_between_them():
    model, config = book_setup("net", epochs=1, batch_size=10, compile=False)
    data = random_split(40)
    from ptm_func.data.dataset import Dataset

    runs = [
        fit(model, Dataset(data, data, ("a", "b"), "random"), c) for c in (config, config.__class__(lr=0.02))
    ]
    (pa, sa), (pb, sb) = ((r.params, r.state) for r in runs)
    mean, _ = soup(model, [(pa, sa), (pb, sb)])
    for key in pa:
        torch.testing.assert_close(mean[key], (pa[key] + pb[key]) / 2)
    with pytest.raises(ValueError, match="nothing to average"):
        average([])
