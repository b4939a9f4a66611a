"""Your own model from the command line (issue 29): FILE.py:ATTR and module:ATTR references,
--model-arg, --model for checkpoints, installed entry points; and that no file can make ptm
import code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from ptm_func.nets import references, user
from tests.cli_helpers import invoke, one_error_line

BOOK_NET = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):  # the book's, copied as a reader would: `view` needs NCHW features
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = out.view(-1, 8 * 8 * 8)
        out = torch.tanh(self.fc1(out))
        return self.fc2(out)


class Tiny(nn.Module):  # BatchNorm and both dropouts; any number of classes
    def __init__(self, n_chans=4, n_classes=2):
        super().__init__()
        self.conv = nn.Conv2d(3, n_chans, 3, padding=1)
        self.bn = nn.BatchNorm2d(n_chans)
        self.drop2d = nn.Dropout2d(0.3)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(n_chans * 16 * 16, n_classes)

    def forward(self, x):
        out = self.drop2d(F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2))
        return self.head(self.drop(out.flatten(1)))


class Drop(nn.Module):  # both dropouts, no BatchNorm (its statistics are per rank)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop2d = nn.Dropout2d(0.3)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(4 * 16 * 16, 2)

    def forward(self, x):
        out = self.drop2d(F.max_pool2d(torch.tanh(self.conv(x)), 2))
        return self.head(self.drop(out.flatten(1)))


def pure():  # pure functions, no nn.Module twin
    import ptm_func

    def init(gen):
        return {"fc.weight": torch.randn(2, 3 * 32 * 32, generator=gen) * 0.01, "fc.bias": torch.zeros(2)}, {}

    def apply(params, state, x, *, train, key=None):
        return F.linear(x.flatten(1), params["fc.weight"], params["fc.bias"]), state

    return ptm_func.model_from_functions(init, apply, name="pure")


class Frozen(nn.Module):  # a layer that does not train, and an integer parameter
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1).requires_grad_(False)
        self.steps = nn.Parameter(torch.tensor(7), requires_grad=False)
        self.head = nn.Linear(4 * 32 * 32, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.stem(x)).flatten(1))


class Tied(nn.Module):  # one weight under two names
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3 * 32 * 32, 3 * 32 * 32 // 64, bias=False)
        self.b = nn.Linear(3 * 32 * 32 // 64, 2)
        self.c = nn.Linear(3 * 32 * 32, 3 * 32 * 32 // 64, bias=False)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flatten(1))) + torch.tanh(self.c(x.flatten(1))))


class NoParams(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :2]


class ExitsInInit(nn.Module):
    def __init__(self):
        super().__init__()
        raise SystemExit(4)


class Fixed3(Drop):  # three outputs, and no n_classes to ask for another count
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4 * 16 * 16, 3)


class ExitLater(Drop):  # sys.exit from its 4th forward: mid-training, past every probe
    calls = 0

    def forward(self, x):
        ExitLater.calls += 1
        if ExitLater.calls > 3:
            import sys

            sys.exit("bye")
        return super().forward(x)


INSTANCE = Drop()
NOT_A_MODEL = (1, 2)


def returns_an_int():
    return 3
"""

COMMON = ["--classes", "airplane,bird", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture(autouse=True)
def forget_registrations():
    """Each test registers its own references; none leaks into the next."""
    kept = (user.REGISTERED, user.REFERENCES, references.TARGETS)
    before = tuple(dict(d) for d in kept)
    yield
    for saved, now in zip(before, kept, strict=True):
        now.clear()
        now.update(saved)


@pytest.fixture
def mine(tmp_path) -> Path:
    path = tmp_path / "mine.py"
    path.write_text(BOOK_NET)
    return path


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_the_books_net_from_a_file_trains_bit_for_bit_as_ptm_train_net(mine, image_folder, tmp_path):
    """The same seed, data and layout (NCHW: the copied Net `view`s its features): the same bits."""
    args = [*COMMON, "--data", image_folder, "--epochs", "2", "--no-compile"]
    theirs = invoke("train", f"{mine}:Net", *args, "--out", tmp_path / "mine.safetensors")
    assert theirs.exit_code == 0, theirs.output
    assert "fails or differs on channels-last images" in theirs.output  # the note: NCHW, slower
    ours = invoke("train", "net", *args, "--no-channels-last", "--out", tmp_path / "net.safetensors")
    assert ours.exit_code == 0, ours.output
    a, b = tensors(tmp_path / "mine.safetensors"), tensors(tmp_path / "net.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(tmp_path / "mine.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert metadata["model"] == "Net" and metadata["reference"] == f"{mine}:Net"
    # asked for channels-last, it refuses in one line and writes nothing
    refused = invoke("train", f"{mine}:Net", *args, "--channels-last", "--out", tmp_path / "x.safetensors")
    assert refused.exit_code == 2 and "drop --channels-last" in refused.output
    assert not list(tmp_path.glob("x.*"))
    refused = invoke("sweep", f"{mine}:Net", *args, "--channels-last", "--out", tmp_path / "sw")
    assert refused.exit_code == 2 and "drop --channels-last" in refused.output
    assert not (tmp_path / "sw").exists()


def test_a_checkpoint_of_your_own_model_needs_its_reference_given_again(mine, image_folder, tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    trained = invoke("train", f"{mine}:Tiny", *COMMON, "--data", image_folder, "--epochs", "1",
                     "--model-arg", "n_chans=3", "--out", ckpt)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    image = next((image_folder / "test" / "bird").iterdir())
    for command in (["eval", ckpt], ["predict", ckpt, image], ["info", ckpt]):
        user.REGISTERED.pop("Tiny")  # as in a new process: nothing registered
        refused = invoke(*command)
        assert refused.exit_code == 2, refused.output
        assert f"--model {mine}:Tiny" in one_error_line(refused.output)
        given = invoke(*command, "--model", f"{mine}:Tiny")
        assert given.exit_code == 0, given.output
    state = tensors(ckpt)
    assert state["conv.weight"].shape[0] == 3  # --model-arg n_chans=3, recorded and rebuilt
    resumed = invoke("train", f"{mine}:Tiny", "--resume", ckpt, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output


def test_resume_of_your_own_model_is_bit_for_bit_and_members_load_strictly(mine, image_folder, tmp_path):
    """BatchNorm and dropout: a run cut after epoch 1 and resumed equals the straight run; a
    sweep's members (vmapped) load into the file's class with strict=True, and ensemble."""
    import importlib.util

    args = [f"{mine}:Tiny", *COMMON, "--data", image_folder, "--no-compile"]
    assert invoke("train", *args, "--epochs", "2", "--out", tmp_path / "a.safetensors").exit_code == 0
    assert invoke("train", *args, "--epochs", "1", "--out", tmp_path / "b.safetensors").exit_code == 0
    resumed = invoke("train", f"{mine}:Tiny", "--resume", tmp_path / "b.safetensors", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    a, b = tensors(tmp_path / "a.safetensors"), tensors(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for how in ("--vmap", "--no-vmap"):
        swept = invoke("sweep", *args, "--seeds", "2", "--epochs", "1", how, "--out", tmp_path / f"sw{how}")
        assert swept.exit_code == 0, swept.output
    members = sorted((tmp_path / "sw--vmap").glob("Tiny-seed*[0-9].safetensors"))
    looped = sorted((tmp_path / "sw--no-vmap").glob("Tiny-seed*[0-9].safetensors"))
    for a_path, b_path in zip(members, looped, strict=True):  # vmapped members: their separate runs
        a, b = tensors(a_path), tensors(b_path)
        for key in a:  # to rounding: BatchNorm's statistics reduce in another order under vmap
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)
    spec = importlib.util.spec_from_file_location("mine_again", mine)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in members:
        module.Tiny().load_state_dict(tensors(path), strict=True)
    together = invoke("eval", *members, "--model", f"{mine}:Tiny")
    assert together.exit_code == 0 and "ensemble of 2" in together.output, together.output
    cut_short = json.loads((tmp_path / "sw--vmap" / "sweep.json").read_text())
    assert cut_short["reference"] == f"{mine}:Tiny"


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
import torch.nn as nn
class Evil(nn.Linear):
    def __init__(self):
        super().__init__(3 * 32 * 32, 2)
    def forward(self, x):
        return super().forward(x.flatten(1))
"""


def test_a_crafted_checkpoint_or_sweep_cannot_make_ptm_import_code(mine, image_folder, tmp_path):
    marker = tmp_path / "imported.txt"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))
    ckpt = tmp_path / "net.safetensors"
    assert (
        invoke("train", "net", *COMMON, "--data", image_folder, "--epochs", "1", "--out", ckpt).exit_code == 0
    )
    weights = tensors(ckpt)
    with safe_open(str(ckpt), "pt") as f:
        metadata = f.metadata()
    crafted = []
    for i, (name, reference) in enumerate([("Evil", f"{evil}:Evil"), (f"{evil}:Evil", f"{evil}:Evil"),
                                           (f"{evil}:Evil", None), ("os:system", "os:system")]):  # fmt: skip
        path = tmp_path / f"crafted{i}.safetensors"
        save_file(
            weights,
            str(path),
            metadata={**metadata, "model": name, **({"reference": reference} if reference else {})},
        )
        crafted.append(path)
    image = next((image_folder / "test" / "bird").iterdir())
    for path in crafted:
        for command in (
            ["eval", path],
            ["predict", path, image],
            ["info", path],
            ["train", "net", "--resume", path],
        ):
            result = invoke(*command)
            assert result.exit_code in (1, 2) and "Traceback" not in result.output, (command, result.output)
            one_error_line(result.output)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(
        json.dumps({"variant": "Evil", "reference": f"{evil}:Evil", "members": []})
    )
    result = invoke("sweep", "--resume", sweep)
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    assert not marker.exists()  # nothing a file named was imported
    assert invoke("info", f"{evil}:Evil").exit_code == 0 and marker.exists()  # given by the user: it is


@pytest.mark.parametrize(
    "reference,extra,needle",
    [
        ("{mine}:Nope", [], "has no attribute 'Nope'"),
        ("{mine}:torch.nn.Linear", [], "torch is a module: a reference names a model inside"),
        ("{mine}:NOT_A_MODEL", [], "is a tuple, not a model"),
        ("{mine}:returns_an_int", [], "returned a int, not an nn.Module or a ptm Model"),
        ("{mine}:Net", ["--model-arg", "width=8"], "unexpected keyword argument 'width'"),
        ("{mine}:Tiny", ["--model-arg", "n_chans"], "--model-arg takes KEY=VALUE"),
        (
            "{mine}:Tiny",
            ["--model-arg", "lr=0.5"],
            "--model-arg lr: that is ptm's own setting, not the model's (where the command has it: --lr)",
        ),
        ("{mine}:Tiny", ["--model-arg", "n_classes=5"], "--model-arg n_classes: that is ptm's own setting"),
        ("{mine}:NoParams", [], "NoParams has no parameters to train"),
        ("{mine}:ExitsInInit", [], "raised SystemExit: 4"),
        ("{mine}:INSTANCE", [], "is an nn.Module instance: give its class"),
        ("{mine}:Fixed3", ["--classes", "airplane,bird"], "the model has 3 outputs but 2 classes"),
        ("{mine}:Tiny", ["--model-arg", "l2=1"], "--model-arg l2: that is ptm's own setting"),
        ("{mine}:Tiny", ["--model-arg", "n_chans={1, 2}"], "cannot be recorded in a checkpoint"),
        ("{mine}:Net", ["--classes", "airplane,bird,cat"], "the model has 2 outputs but 3 classes"),
        ("{tmp}/missing.py:Net", [], "no file"),
        ("{tmp}/notes.txt:Net", [], "is not a .py file"),
        ("no_such_package.models:Net", [], "no module named 'no_such_package.models'"),
        ("{tmp}/raises.py:Net", [], "importing {tmp}/raises.py raised RuntimeError: no GPU here"),
        ("{tmp}/exits.py:Net", [], "raised SystemExit: 3"),
        ("{tmp}/broken.py:Net", [], "raised SyntaxError"),
    ],
)
def test_references_that_fail_say_why_in_one_line_and_write_nothing(
    reference, extra, needle, mine, image_folder, tmp_path, monkeypatch
):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "broken.py").write_text("def Net(:\n")
    monkeypatch.chdir(tmp_path)
    ref = reference.format(mine=mine, tmp=tmp_path)
    result = invoke("train", ref, "--data", image_folder, "--epochs", "1", *extra)
    assert result.exit_code == 2, result.output
    assert needle.format(tmp=tmp_path) in result.output.strip().splitlines()[-1]
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


ENTRY_POINT_MODEL = """
import torch.nn as nn

class Small(nn.Module):
    def __init__(self, n_classes=2):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, n_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def test_an_installed_package_adds_models_through_the_entry_point_group(image_folder, tmp_path):
    """A package's `ptm_func.models` entry point: `ptm info` lists it, `ptm train NAME` trains
    it, and its checkpoints load without --model (the user installed it)."""
    site = tmp_path / "site"
    (site / "smallmodels").mkdir(parents=True)
    (site / "smallmodels" / "__init__.py").write_text(ENTRY_POINT_MODEL)
    info = site / "smallmodels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: smallmodels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ptm_func.models]\nsmall = smallmodels:Small\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path.cwd())])}

    def ptm(*args):
        command = [sys.executable, "-c", "from cli.main import app; app()", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    listed = ptm("info")
    assert listed.returncode == 0 and "small" in listed.stdout and "smallmodels:Small" in listed.stdout
    table = ptm("info", "small", "--json")
    assert json.loads(table.stdout)["total"] == 3 * 32 * 32 * 2 + 2
    trained = ptm("train", "small", "--data", image_folder, "--epochs", "1", "--device", "cpu", "--json")
    assert trained.returncode == 0, trained.stderr
    checkpoint = json.loads(trained.stdout)["checkpoint"]
    assert tensors(tmp_path / checkpoint)["fc.weight"].shape[0] == 3  # its n_classes: the folder's 3
    evaluated = ptm("eval", checkpoint, "--json")
    assert evaluated.returncode == 0, evaluated.stderr


def test_compiled_your_net_agrees_with_ptm_train_net_compiled_to_rounding(mine, image_folder, tmp_path):
    args = [*COMMON, "--data", image_folder, "--epochs", "2", "--compile", "--no-channels-last"]
    for model, name in ((f"{mine}:Net", "mine"), ("net", "net")):
        result = invoke("train", model, *args, "--out", tmp_path / f"{name}.safetensors")
        assert result.exit_code == 0, result.output
        assert "falls back" not in result.output and "using the eager step" not in result.output
    a, b = tensors(tmp_path / "mine.safetensors"), tensors(tmp_path / "net.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_two_ranks_train_your_own_model_as_one_process_does(mine, image_folder, tmp_path):
    """--nproc 2: every worker imports the reference itself; the run equals one process's to
    rounding (dropout masks are per image, whichever rank holds it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ptm(*args):
        command = [sys.executable, "-c", "from cli.main import app; app()", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    args = [f"{mine}:Drop", *COMMON, "--data", image_folder, "--epochs", "1", "--no-compile"]
    two = ptm("train", *args, "--nproc", "2", "--out", tmp_path / "two.safetensors")
    assert two.returncode == 0, two.stderr
    assert "2 ranks" in two.stderr
    one = ptm("train", *args, "--out", tmp_path / "one.safetensors")
    assert one.returncode == 0, one.stderr
    a, b = tensors(tmp_path / "two.safetensors"), tensors(tmp_path / "one.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_convert_takes_your_own_model_and_says_when_it_has_no_twin(mine, image_folder, tmp_path):
    args = [*COMMON, "--data", image_folder, "--epochs", "1"]
    tiny = tmp_path / "tiny.safetensors"
    assert invoke("train", f"{mine}:Tiny", *args, "--model-arg", "n_chans=3", "--out", tiny).exit_code == 0
    there = invoke("convert", tiny, tmp_path / "tiny.pt", "--model", f"{mine}:Tiny")
    assert there.exit_code == 0, there.output
    back = invoke("convert", tmp_path / "tiny.pt", tmp_path / "back.safetensors", "--model", f"{mine}:Tiny",
                  "--model-arg", "n_chans=3")  # fmt: skip
    assert back.exit_code == 0, back.output
    a, b = tensors(tiny), tensors(tmp_path / "back.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pure = tmp_path / "pure.safetensors"
    trained = invoke("train", f"{mine}:pure", *args, "--out", pure)
    assert trained.exit_code == 0, trained.output
    refused = invoke("convert", pure, tmp_path / "pure.pt", "--model", f"{mine}:pure")
    assert refused.exit_code == 2 and "has no nn.Module twin" in one_error_line(refused.output)
    assert not (tmp_path / "pure.pt").exists()


def test_ptm_check_runs_your_own_model_every_way(mine):
    """BatchNorm and both dropouts, compiled and as vmapped or looped members: each agrees with eager."""
    result = invoke("check", f"{mine}:Tiny", "--model-arg", "n_chans=3", "--device", "cpu", "--steps", "2",
                    "--batch-size", "8", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["model"] == "Tiny" and len(report["variants"]) >= 4
    assert all(v["ok"] for v in report["variants"]), report["variants"]
    refused = invoke("check", "net", "--model-arg", "n_chans=3")
    assert refused.exit_code == 2 and "--model-arg is for your own model" in refused.output


def test_frozen_and_tied_parameters_stay_so_and_load_strictly(mine, image_folder, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mine_frozen", mine)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [*COMMON, "--data", image_folder, "--epochs", "1"]
    for name in ("Frozen", "Tied"):
        result = invoke("train", f"{mine}:{name}", *args, "--out", tmp_path / f"{name}.safetensors")
        assert result.exit_code == 0, result.output
    torch.manual_seed(123)
    start = module.Frozen().state_dict()
    frozen = tensors(tmp_path / "Frozen.safetensors")
    assert torch.equal(frozen["stem.weight"], start["stem.weight"]) and frozen["steps"].item() == 7
    assert not torch.equal(frozen["head.weight"], start["head.weight"])  # the rest trained
    module.Frozen().load_state_dict(frozen, strict=True)
    tied = tensors(tmp_path / "Tied.safetensors")
    assert torch.equal(tied["a.weight"], tied["c.weight"])
    twin = module.Tied()
    twin.load_state_dict(tied, strict=True)


def test_one_name_is_one_model_and_compare_checks_every_variant_first(mine, image_folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.py").write_text(BOOK_NET.replace("nn.Linear(32, 2)", "nn.Linear(32, 2, bias=False)"))
    result = invoke(
        "compare", f"{mine}:Net", f"{other / 'mine.py'}:Net", "--data", image_folder, "--epochs", "1"
    )
    assert result.exit_code == 2 and "are both named 'Net'" in one_error_line(result.output)
    out = tmp_path / "cmp.json"
    result = invoke("compare", "net", f"{mine}:Fixed3", *COMMON[:-2], "--data", image_folder, "--epochs", "1",
                    "--json-out", out, "--chart", tmp_path / "cmp.png")  # fmt: skip
    assert result.exit_code == 2 and "Fixed3 has 3 outputs, not 2" in result.output
    assert "net ..." not in result.output and not out.exists()  # nothing trained


def test_resume_as_another_reference_says_so_and_crafted_text_is_cut_short(mine, image_folder, tmp_path):
    ckpt = tmp_path / "a.safetensors"
    assert (
        invoke(
            "train", f"{mine}:Net", *COMMON, "--data", image_folder, "--epochs", "1", "--out", ckpt
        ).exit_code
        == 0
    )
    user.REGISTERED.pop("Net"), references.TARGETS.pop("Net")  # as in a new process
    moved = tmp_path / "moved.py"
    moved.write_text(BOOK_NET)
    resumed = invoke("train", f"{moved}:Net", "--resume", ckpt, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert f"was trained as {mine}:Net; resuming it as {moved}:Net" in resumed.output
    with safe_open(str(ckpt), "pt") as f:
        metadata = f.metadata()
    save_file(tensors(ckpt), str(ckpt), metadata={**metadata, "model": "Huge", "reference": "x" * 5_000_000})
    result = invoke("eval", ckpt)
    assert result.exit_code == 2 and len(one_error_line(result.output)) < 5000
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"variant": ["x"], "members": []}))
    result = invoke("sweep", "--resume", sweep)
    assert result.exit_code == 1 and "not a readable sweep description" in one_error_line(result.output)


def test_model_names_name_files_safely():
    from ptm_func.errors import ModelConfigError
    from ptm_func.nets.user import model_from_module, register_model

    for bad in ("../escaped", "a b", "line\nbreak", "", "net", 5, None, "a:b"):
        with pytest.raises(ModelConfigError, match="model name|one of the book's"):
            register_model(bad)
    with pytest.raises(ModelConfigError, match="model name"):
        model_from_module(torch.nn.Linear, name="../escaped", in_features=3 * 32 * 32, out_features=2)
    with pytest.raises(ModelConfigError, match="decorates a factory"):
        register_model("fine")(5)


def test_a_crafted_sweep_cannot_write_outside_its_folder_and_sys_exit_mid_run_is_one_line(
    mine, image_folder, tmp_path
):
    args = [*COMMON, "--data", image_folder, "--epochs", "1"]
    sweep = tmp_path / "deep" / "er" / "sw"
    assert invoke("sweep", f"{mine}:Drop", *args, "--out", sweep).exit_code == 0
    spec = json.loads((sweep / "sweep.json").read_text())
    spec["members"][0]["name"] = "../../evil"
    (sweep / "sweep.json").write_text(json.dumps(spec))
    result = invoke("sweep", f"{mine}:Drop", "--resume", sweep, "--epochs", "2")
    assert result.exit_code == 1 and "member '../../evil'" in one_error_line(result.output)
    assert not list(tmp_path.rglob("evil*"))
    result = invoke("train", f"{mine}:ExitLater", *args, "--out", tmp_path / "el.safetensors")
    assert result.exit_code == 1 and "sys.exit('bye') was called" in result.output.strip().splitlines()[-1]
    twice = invoke("compare", f"{mine}:Drop", f"{mine}:Drop", "--data", image_folder, "--epochs", "1")
    assert twice.exit_code == 2 and "Drop is given twice" in one_error_line(twice.output)
