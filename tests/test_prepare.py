"""prepare.py: the ImageFolder tree the other stages read, and the raw data left untouched."""
import hashlib
import os

import pytest

import prepare
from data import SPLITS, parse_name


def snapshot(root):
    """Every file under root (but pytorch/) with its bytes' hash and its modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "pytorch"]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def tree(root):
    return {os.path.relpath(os.path.join(d, n), root): os.stat(os.path.join(d, n)).st_ino
            for d, _, files in os.walk(root) for n in files}


def test_prepared_tree(raw_market, capsys):
    before = snapshot(raw_market)
    prepare.main(["--download_path", str(raw_market)])
    out = raw_market / "pytorch"
    assert sorted(os.listdir(out)) == sorted(SPLITS)
    for raw, split in (("bounding_box_train", "train_all"), ("bounding_box_test", "gallery"),
                       ("query", "query"), ("gt_bbox", "multi-query")):
        names = sorted(os.listdir(raw_market / raw))
        files = sorted((d, n) for d in os.listdir(out / split) for n in os.listdir(out / split / d))
        assert sorted(n for _, n in files) == names
        for folder, name in files:  # one folder per id, named as Market-1501 spells ids
            pid = parse_name(name)[0]
            assert folder == ("-1" if pid == -1 else f"{pid:04d}")
            assert os.path.samefile(out / split / folder / name, raw_market / raw / name)  # a link, not a copy
    train_all = {d: sorted(os.listdir(out / "train_all" / d)) for d in os.listdir(out / "train_all")}
    for pid, names in train_all.items():
        val = sorted(os.listdir(out / "val" / pid)) if (out / "val" / pid).exists() else []
        train = sorted(os.listdir(out / "train" / pid))
        assert val == (names[:1] if len(names) > 1 else [])  # first image (by name) of each id
        assert train == [n for n in names if n not in val]
    assert snapshot(raw_market) == before
    printed = capsys.readouterr().out
    assert f"{sum(len(v) for v in train_all.values())} images" in printed and f"{len(train_all)} ids" in printed


def test_running_again_gives_the_same_tree(raw_market):
    prepare.main(["--download_path", str(raw_market)])
    first = tree(raw_market / "pytorch")
    before = snapshot(raw_market)
    prepare.main(["--download_path", str(raw_market)])
    assert tree(raw_market / "pytorch") == first
    assert snapshot(raw_market) == before


def test_missing_or_wrong_folder(raw_market, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        prepare.main(["--download_path", str(tmp_path / "nowhere")])
    prepare.main(["--download_path", str(raw_market)])
    with pytest.raises(SystemExit, match="lacks bounding_box_train.*not its pytorch/ tree"):
        prepare.main(["--download_path", str(raw_market / "pytorch")])


def test_names_that_do_not_parse_are_listed(raw_market):
    (raw_market / "query" / "person_7.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match="person_7.jpg.*expected"):
        prepare.main(["--download_path", str(raw_market)])
    assert not (raw_market / "pytorch").exists()
