"""ptm convert of .pt files: its own round trip, ambiguous book files, the model a record gives."""

import pytest
import torch

from ptm_func.files.checkpoint import save_checkpoint
from ptm_func.nets.registry import get_model
from tests.cli_helpers import invoke, one_error_line


def test_a_pt_that_ptm_wrote_converts_back_without_model(tmp_path):
    for name, config in [("width", {"n_chans1": 16}), ("res", {"n_chans1": 8}), ("dropout", {})]:
        net = get_model(name, **config)
        save_checkpoint(tmp_path / "a.safetensors", net, *net.init(3))
        assert invoke("convert", tmp_path / "a.safetensors", tmp_path / "a.pt").exit_code == 0
        book = net.module()
        book.load_state_dict(
            torch.load(tmp_path / "a.pt", weights_only=True), strict=True
        )  # still the book's
        back = invoke("convert", tmp_path / "a.pt", tmp_path / "b.safetensors")
        assert back.exit_code == 0, back.output
        assert f"({name}, {net.config})" in back.output


@pytest.mark.parametrize(
    "name,options",
    [("net", "--model net, --model width or --model dropout"), ("depth", "--model depth or --model res")],
)
def test_an_ambiguous_book_pt_is_a_usage_error_naming_the_candidates(name, options, tmp_path):
    torch.save(get_model(name).module().state_dict(), tmp_path / "book.pt")  # what the book writes
    result = invoke("convert", tmp_path / "book.pt", tmp_path / "out.safetensors")
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert str(tmp_path / "book.pt") in line and line.endswith(f"say which: {options}")


def test_a_pt_record_gives_the_model_only_and_an_unknown_one_is_ignored(tmp_path):
    state_dict = get_model("net").module().state_dict()
    state_dict._metadata[""]["ptm_func_model"] = '{"model": "width", "config": {"n_chans1": 64}}'
    torch.save(state_dict, tmp_path / "w.pt")
    result = invoke("convert", tmp_path / "w.pt", tmp_path / "w.safetensors")
    # the config read off the shapes
    assert result.exit_code == 0 and "(width, {'n_chans1': 16, 'n_classes': 2})" in result.output
    state_dict._metadata[""]["ptm_func_model"] = '{"model": "vgg"}'
    torch.save(state_dict, tmp_path / "v.pt")
    unknown = invoke("convert", tmp_path / "v.pt", tmp_path / "v.safetensors")
    assert unknown.exit_code == 2 and "say which: --model net" in one_error_line(unknown.output)
