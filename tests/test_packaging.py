"""The artifacts a user installs: the sdist and the wheel built from it hold what a run needs, and
the wheel, installed where the checkout is not importable, trains offline on its bundled data."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["ptm_func", "cli", "tests", "pyproject.toml", "README.md", "CHANGELOG.md", "MANIFEST.in"]
pytestmark = pytest.mark.slow


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist, then the wheel built from the unpacked sdist (python -m build's default): a file the
    sdist lacks is missing from the wheel too. Built from a copy, so the checkout stays clean."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src))
    return out


def version() -> str:
    return re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_wheel_and_sdist_hold_the_data_and_pass_twine_check(dist):
    wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
    run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "ptm_func/data/bundled/cifar2.tar.gz",
        "ptm_func/data/bundled/README.md",
        "ptm_func/py.typed",
    ):
        assert needed in names
    assert "cli/entry.py" in names
    top = {name.split("/")[0] for name in names}
    assert top == {"ptm_func", "cli", f"ptm_func-{version()}.dist-info"}, top  # no tests, docs, runs
    unwanted = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".png", ".safetensors"))]
    assert unwanted == []
    listing = subprocess.run(["tar", "tzf", str(sdist)], capture_output=True, text=True, check=True).stdout
    assert f"ptm_func-{version()}/ptm_func/data/bundled/cifar2.tar.gz" in listing
    assert f"ptm_func-{version()}/CHANGELOG.md" in listing


def test_installed_wheel_trains_offline_outside_the_checkout(dist, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site = Path(
        run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    )
    # the dependencies (torch...) from this environment, appended after the venv's own packages;
    # .pth files in that folder are not run, so this checkout's editable install stays out
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    wheel = next(dist.glob("*.whl"))
    # this environment's pip, installing into the venv (its `ptm` script too)
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
        str(wheel))  # fmt: skip
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PTM_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PTM_DATA_DIR=str(tmp_path / "data"))
    code = "import ptm_func, cli; print(ptm_func.__file__, cli.__file__, ptm_func.__version__)"
    where = run(str(python), "-c", code, cwd=work, env=env).stdout.split()
    assert all(path.startswith(str(site)) for path in where[:2]), where
    assert where[2] == version()
    ptm = [str(venv / "bin" / "ptm")]
    assert run(*ptm, "--version", cwd=work, env=env).stdout.strip() == f"ptm_func {version()}"
    trained = run(*ptm, "train", "net", "--epochs", "1", "--data", "bundled", "--device", "cpu",
                  "--out", "net.safetensors", cwd=work, env=env)  # fmt: skip
    assert (work / "net.safetensors").is_file(), trained.stdout
    evaluated = run(
        *ptm, "eval", "net.safetensors", "--data", "bundled", "--device", "cpu", cwd=work, env=env
    )
    assert "val" in evaluated.stdout.lower(), evaluated.stdout
