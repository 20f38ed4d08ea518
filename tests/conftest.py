"""Tiny synthetic Market-1501 trees and a tiny trained run, shared by the tests (built once
per session). Their folders have spaces and non-ASCII letters in their names on purpose."""
import os
import shutil
import subprocess
import sys

import pytest

# pytest.ini runs the tests in pytest-xdist processes. Each process, and every script it starts, gets its
# share of the cores: set before torch is imported, as torch's OpenMP threads are sized once; two processes
# each using every core slow each other down many-fold.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import prepare  # noqa: E402 (after the thread count above)
import search
import test as test_stage
import train_new
from reid.synthetic import people as synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(seed=0, train_ids=8, test_ids=6, images_per_camera=2, height=32, width=16)


def run_script(script, *args, cwd, **kwargs):
    """Run one of the repository's scripts as a user does, with this Python, in `cwd`."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, capture_output=True, text=True,
                          **kwargs)


def start_script(script, *args, cwd):
    """Start one of the repository's scripts in the background (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torchrun(script, *args, cwd):
    """Run one of the repository's scripts in 2 processes under torchrun. --standalone picks a free port,
    so that two tests doing this at once (in two pytest processes) do not meet on the default one."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(REPO, script), *args], cwd=cwd, capture_output=True, text=True)


def searched(capsys, run, *args):
    """Run search.py in the tiny run's folder; (its stdout, its stderr)."""
    cwd = os.getcwd()
    os.chdir(run)
    try:
        search.main(["--name", "tiny", "--gpu_ids", "-1", "--num_workers", "0", *map(str, args)])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return out.out, out.err


def contents(root):
    """Relative path -> bytes of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="session")
def raw_market_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("data set") / "Märkt 1501"
    synthetic.make_market_tree(str(root), **TINY)
    return root


@pytest.fixture
def raw_market(raw_market_once, tmp_path):
    """A private copy of the raw tree, free for a test to prepare or damage."""
    root = tmp_path / "Märkt 1501"
    shutil.copytree(raw_market_once, root)
    return root


@pytest.fixture(scope="session")
def prepared_market(raw_market_once, tmp_path_factory):
    """The pytorch/ tree of the session's raw tree (prepared in a copy)."""
    root = tmp_path_factory.mktemp("prepared data") / "Märkt 1501"
    shutil.copytree(raw_market_once, root)
    prepare.main(["--download_path", str(root)])
    return root / "pytorch"


TRAIN = ["--gpu_ids", "-1", "--batchsize", "8", "--height", "64", "--width", "32",
         "--no-pretrained", "--num_workers", "0", "--lr", "0.01"]


@pytest.fixture(scope="session")
def tiny_run(prepared_market, tmp_path_factory):
    """A working folder where one epoch was trained (model/tiny/) and its features extracted
    (pytorch_result.mat, multi_query.mat). Tests that damage files copy it first."""
    work = tmp_path_factory.mktemp("work dir é")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        train_new.main(TRAIN + ["--epochs", "1", "--name", "tiny", "--data_dir", str(prepared_market)])
        test_stage.main(["--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(prepared_market),
                         "--num_workers", "0", "--multi"])
    finally:
        os.chdir(cwd)
    return work
