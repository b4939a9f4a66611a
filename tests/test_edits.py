"""research.edits (chapter 8, exercise 2): the edits found are real, judged by the nn.Module."""

import torch

from ptm_func import get_model
from ptm_func.data.dataset import normalize
from ptm_func.nets.modules import NetWidth
from ptm_func.research.edits import from_pixels, smallest_edits, to_pixels


def test_every_edit_found_stays_in_its_box_and_fools_the_module():
    model = get_model("width", n_chans1=8)
    params, state = model.init(3)
    twin = NetWidth(n_chans1=8).eval()
    twin.load_state_dict({**params, **state}, strict=True)
    pixels = torch.randint(
        0, 256, (12, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    images = normalize(pixels)
    with torch.no_grad():
        start = twin(images).softmax(1)[:, 1]
    edits = smallest_edits(model, params, state, images, 1, confidence=0.6, max_size=48 / 255, steps=20)
    assert bool(edits.found.any())
    with torch.no_grad():
        after = twin(edits.images).softmax(1)[:, 1]
    moved = (to_pixels(edits.images) - to_pixels(images)).abs().amax(dim=(1, 2, 3))
    for i in range(len(images)):
        if edits.found[i]:
            assert after[i] > 0.6 and 0 <= edits.size[i] <= 48 / 255 + 1e-6
            assert torch.isclose(moved[i], edits.size[i], atol=1e-5)  # the size is the edit's own
            assert to_pixels(edits.images[i]).min() >= -1e-5 and to_pixels(edits.images[i]).max() <= 1 + 1e-5
            if start[i] > 0.6:
                assert edits.size[i] == 0  # nothing to do
        else:
            assert edits.size[i] == float("inf") and torch.equal(edits.images[i], images[i])
    torch.testing.assert_close(edits.probability, after, rtol=1e-5, atol=1e-6)


def test_a_larger_box_never_finds_larger_edits_and_pixels_round_trip():
    model = get_model("net")
    params, state = model.init(0)
    images = normalize(torch.randint(0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                                     dtype=torch.uint8))  # fmt: skip
    torch.testing.assert_close(from_pixels(to_pixels(images)), images)
    small = smallest_edits(model, params, state, images, 0, confidence=0.55, max_size=16 / 255, steps=15)
    large = smallest_edits(model, params, state, images, 0, confidence=0.55, max_size=64 / 255, steps=15)
    assert int(large.found.sum()) >= int(small.found.sum())
