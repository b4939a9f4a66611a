"""Data parallelism with gloo on this CPU: 2 ranks x 32 == 1 rank x 64, resume across world sizes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from ptm_func import Net
from ptm_func.data.dataset import Dataset, Split
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.files.records import read_metrics
from ptm_func.training.config import book_setup
from ptm_func.training.distributed import World, shard
from ptm_func.training.loop import fit

# Subprocesses that train: slow, and the rest of the suite runs without them (-m "not slow"); CI
# runs them all.
pytestmark = pytest.mark.slow

MODELS = ("net", "res", "dropout", "batchnorm")
PTM = [sys.executable, "-c", "from cli.main import app; app()"]
# The 2-core machine these timeouts were set on runs `reference_work` in about this many seconds.
REFERENCE_SECONDS = 0.3


def reference_work() -> float:
    """Seconds for a fixed single-threaded CPU job (a few Net steps on 64 images)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, images = Net(), torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        started = time.perf_counter()
        for _ in range(8):
            net(images).sum().backward()
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def time_scale() -> float:
    """How much slower than a quiet machine this one is now (at least 1): $PTM_TEST_TIME_SCALE,
    else measured. Every timeout below is multiplied by it, so a loaded machine waits longer
    instead of failing."""
    given = os.environ.get("PTM_TEST_TIME_SCALE")
    if given:
        return max(1.0, float(given))
    return max(1.0, min(20.0, reference_work() / REFERENCE_SECONDS))


SCALE = time_scale()


def seconds(base: float) -> float:
    """`base` seconds (what a quiet machine needs, with a margin), scaled to this machine."""
    return base * SCALE


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PTM_DIST_TIMEOUT": str(round(seconds(30)))}


def random_data() -> Dataset:
    gen = torch.Generator().manual_seed(3)
    split = Split(torch.randn(640, 3, 32, 32, generator=gen), torch.randint(0, 2, (640,), generator=gen))
    return Dataset(split, Split(split.images[:128], split.labels[:128]), ("a", "b"), "random")


def config(name):
    # 20 steps: 2 epochs of 10 global batches of 64
    return book_setup(name, epochs=2, batch_size=64, compile=False, momentum=0.9, seed=7)


def rank_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    from ptm_func.training.distributed import from_environment, join, leave

    world = from_environment()
    join(world, torch.device("cpu"))
    for name in MODELS:
        model, cfg = config(name)
        result = fit(model, random_data(), cfg, world=world)
        torch.save(
            {**result.params, **result.state, "val": torch.tensor(result.val_accuracy)},
            f"{folder}/{name}.{rank}",
        )
    leave()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(rank_worker, args=(free_port(), str(folder)), nprocs=2, join=True)
    return {name: [torch.load(folder / f"{name}.{r}") for r in range(2)] for name in MODELS}


def test_timeouts_scale_with_the_machine(monkeypatch):
    monkeypatch.setenv("PTM_TEST_TIME_SCALE", "3")
    assert time_scale() == 3
    monkeypatch.setenv("PTM_TEST_TIME_SCALE", "0.5")
    assert time_scale() == 1  # never less time than the machine they were set on needed
    monkeypatch.delenv("PTM_TEST_TIME_SCALE")
    assert 1 <= time_scale() <= 20
    assert seconds(240) == 240 * SCALE and float(ENV["PTM_DIST_TIMEOUT"]) >= 30


def test_shards_cover_a_batch_evenly():
    slices = [shard(17, World(r, 3, r)) for r in range(3)]
    assert [(s.start, s.stop) for s in slices] == [(0, 6), (6, 12), (12, 17)]


@pytest.mark.parametrize("name", MODELS)
def test_two_ranks_of_32_train_as_one_process_of_64(name, two_ranks):
    """After 20 steps: the ranks hold bitwise the same weights, and those of one process."""
    ours, theirs = two_ranks[name]
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key  # every rank holds the same run
    model, cfg = config(name)
    single = fit(model, random_data(), cfg)
    reference = {**single.params, **single.state}
    if name == "batchnorm":
        # each rank normalises its half with the half's statistics (no SyncBatchNorm), and the
        # running statistics are averaged over the ranks: close to one process, not equal
        for key, value in reference.items():
            torch.testing.assert_close(ours[key].float(), value.float(), rtol=0.1, atol=0.05)
        assert abs(ours["val"].item() - single.val_accuracy) <= 2 / 128
    else:  # net, res and dropout (per-sample masks): float noise only
        for key, value in reference.items():
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6)
        assert ours["val"].item() == single.val_accuracy


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    from tests.conftest import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("dp"), {"train": 48, "test": 16})


def ptm(*args, timeout=240):
    return subprocess.run(
        [*PTM, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=seconds(timeout)
    )


def train_args(data, out, *extra):
    return [
        "train",
        "net",
        "--data",
        data,
        "--classes",
        "airplane,bird",
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--out",
        out,
        *extra,
    ]


def test_nproc_2_writes_one_checkpoint_and_resumes_with_any_world_size(folder_data, tmp_path):
    two = ptm(
        *train_args(folder_data, tmp_path / "two.safetensors", "--epochs", "1", "--nproc", "2", "--json")
    )
    assert two.returncode == 0, two.stderr
    summary = json.loads(two.stdout)
    assert "2 ranks" in two.stderr and "(rank 1)" not in two.stderr
    Net().load_state_dict(load_file(tmp_path / "two.safetensors"), strict=True)
    one = ptm(*train_args(folder_data, tmp_path / "one.safetensors", "--epochs", "1", "--json"))
    assert abs(json.loads(one.stdout)["val_accuracy"] - summary["val_accuracy"]) <= 0.01
    # 2 ranks -> 1 process, and 1 process -> 2 ranks, each to 2 epochs: the same run
    assert ptm("train", "net", "--resume", tmp_path / "two.safetensors", "--epochs", "2").returncode == 0
    resumed = ptm("train", "net", "--resume", tmp_path / "one.safetensors", "--epochs", "2", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "two.safetensors"), load_checkpoint(tmp_path / "one.safetensors")
    for key, value in b.params.items():
        torch.testing.assert_close(a.params[key], value, rtol=1e-5, atol=1e-6)
    assert [line["epoch"] for line in read_metrics(tmp_path / "two.metrics.jsonl")] == [1, 2]


def wait_for(proc, needle, within=120):
    deadline = time.time() + seconds(within)
    for line in proc.stderr:
        if needle in line or time.time() > deadline:
            return


def test_sigterm_stops_every_rank_at_one_step_and_resume_is_exact(folder_data, tmp_path):
    straight = ptm(
        *train_args(folder_data, tmp_path / "straight.safetensors", "--epochs", "40", "--nproc", "2")
    )
    assert straight.returncode == 0, straight.stderr
    cut = tmp_path / "cut.safetensors"
    args = [*PTM, *map(str, train_args(folder_data, cut, "--epochs", "40", "--nproc", "2"))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(proc, "epoch   3/40")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=seconds(120))
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.count("Resume with:") == 1 and "Traceback" not in err
    assert load_checkpoint(cut).training["progress"]["epoch"] < 40
    resumed = ptm("train", "net", "--resume", cut, "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(cut), load_checkpoint(tmp_path / "straight.safetensors")
    for key, value in b.params.items():
        assert torch.equal(a.params[key], value), key


def test_a_rank_that_dies_ends_the_run_with_exit_code_1(folder_data, tmp_path):
    args = [
        *PTM,
        *map(str, train_args(folder_data, tmp_path / "n.safetensors", "--epochs", "400", "--nproc", "2")),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(proc, "epoch   2/400")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [pid for pid in children if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
    os.kill(int(workers[-1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=seconds(90))
    assert proc.returncode == 1, err
    # the launcher names the killed rank, or the survivor says it lost it first
    assert ("was killed by SIGKILL" in err or "another rank died" in err) and "Traceback" not in err


def test_a_sweep_over_two_ranks_gives_the_members_of_one_process(folder_data, tmp_path):
    base = [
        "sweep",
        "net",
        "--data",
        folder_data,
        "--classes",
        "airplane,bird",
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--lr",
        "0.01,0.03,0.05",
        "--epochs",
        "2",
        "--json",
    ]
    split = ptm(*base, "--out", tmp_path / "two", "--nproc", "2")
    assert split.returncode == 0, split.stderr
    whole = ptm(*base, "--out", tmp_path / "one")
    assert whole.returncode == 0, whole.stderr
    ours, theirs = json.loads(split.stdout)["members"], json.loads(whole.stdout)["members"]
    assert [m["val_accuracy"] for m in ours] == [m["val_accuracy"] for m in theirs]
    for member in theirs:  # the workers run 1 thread each: other kernels, float noise only
        name = member["name"]
        a = load_checkpoint(tmp_path / "two" / f"{name}.safetensors")
        for key, value in load_checkpoint(member["checkpoint"]).params.items():
            torch.testing.assert_close(a.params[key], value, rtol=1e-5, atol=1e-6)
