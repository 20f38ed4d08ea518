"""Tiny synthetic Market-1501 trees shared by the tests (built once per session)."""
import shutil

import pytest

import prepare
import synthetic

TINY = dict(seed=0, train_ids=8, test_ids=6, images_per_camera=2, height=32, width=16)


@pytest.fixture(scope="session")
def raw_market_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset") / "Market"
    synthetic.make_market_tree(str(root), **TINY)
    return root


@pytest.fixture
def raw_market(raw_market_once, tmp_path):
    """A private copy of the raw tree, free for a test to prepare or damage."""
    root = tmp_path / "Market"
    shutil.copytree(raw_market_once, root)
    return root


@pytest.fixture(scope="session")
def prepared_market(raw_market_once, tmp_path_factory):
    """The pytorch/ tree of the session's raw tree (prepared in a copy)."""
    root = tmp_path_factory.mktemp("prepared") / "Market"
    shutil.copytree(raw_market_once, root)
    prepare.main(["--download_path", str(root)])
    return root / "pytorch"
