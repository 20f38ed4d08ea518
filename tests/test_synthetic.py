"""The synthetic Market-1501 generator: names, splits, determinism, and never overwriting data."""
import collections
import os

import pytest
from PIL import Image

import synthetic
from conftest import contents
from reid.cli import UserError
from reid.data import parse_name
from reid.synthetic.people import FOLDERS, MARKER, make_market_tree
from synthetic import main

TRAIN, TEST, CAMERAS, PER_CAMERA, JUNK, DISTRACTORS = 8, 6, 6, 2, 2, 3
TINY = dict(train_ids=TRAIN, test_ids=TEST, cameras=CAMERAS, images_per_camera=PER_CAMERA,
            height=32, width=16, junk_per_camera=JUNK, distractors_per_camera=DISTRACTORS)


def parsed(root, folder):
    names = sorted(os.listdir(os.path.join(root, folder)))
    result = [parse_name(n) for n in names]
    assert None not in result, [n for n, r in zip(names, result) if r is None]
    return names, result


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic") / "Market")
    counts = make_market_tree(root, seed=0, **TINY)
    return root, counts


def test_layout_and_counts(tree):
    root, counts = tree
    assert sorted(os.listdir(root)) == sorted(FOLDERS + (MARKER,))
    for folder in FOLDERS:
        names = os.listdir(os.path.join(root, folder))
        assert len(names) == counts[folder] > 0
        assert all(n.endswith(".jpg") for n in names)
    with Image.open(os.path.join(root, "query", sorted(os.listdir(os.path.join(root, "query")))[0])) as img:
        assert img.size == (16, 32) and img.mode == "RGB"


def test_names_parse_to_the_intended_ids_and_cameras(tree):
    root, _ = tree
    train_ids = set(range(1, TRAIN + 1))
    test_ids = set(range(TRAIN + 1, TRAIN + TEST + 1))
    every_name = []
    for folder in FOLDERS:
        names, result = parsed(root, folder)
        every_name += names
        assert all(1 <= cam <= CAMERAS for _, cam in result)
        ids = {pid for pid, _ in result}
        if folder == "bounding_box_train":
            assert ids == train_ids
        elif folder == "bounding_box_test":
            assert ids == test_ids | {0, -1}
        else:
            assert ids == test_ids
        for name, (pid, cam) in zip(names, result):
            prefix = "-1" if pid == -1 else f"{pid:04d}"
            assert name.startswith(f"{prefix}_c{cam}s")
    # gt_bbox repeats the query names; apart from that no two images share a name.
    query = set(os.listdir(os.path.join(root, "query")))
    assert len(every_name) - len(query) == len(set(every_name))


def test_each_identity_per_camera(tree):
    root, _ = tree
    per_folder = {f: collections.Counter(parsed(root, f)[1]) for f in FOLDERS}
    train = per_folder["bounding_box_train"]
    for pid in range(1, TRAIN + 1):
        cams = [c for (p, c) in train if p == pid]
        assert len(cams) >= 2
        assert all(train[pid, c] == PER_CAMERA for c in cams)
    query, gallery, gt = per_folder["query"], per_folder["bounding_box_test"], per_folder["gt_bbox"]
    for (pid, cam), n in query.items():
        assert n == 1                                   # at most one query per id and camera
        assert gallery[pid, cam] == PER_CAMERA - 1
        assert 2 <= gt[pid, cam] <= 3                   # the query plus 1-2 more
        assert any(p == pid and c != cam for (p, c) in gallery), (pid, cam)
    assert set(gt) == set(query)
    for pid in range(TRAIN + 1, TRAIN + TEST + 1):
        assert len([c for (p, c) in query if p == pid]) >= 2


def test_junk_and_distractors_only_in_gallery(tree):
    root, _ = tree
    for folder in FOLDERS:
        labels = collections.Counter(pid for pid, _ in parsed(root, folder)[1] if pid <= 0)
        if folder == "bounding_box_test":
            assert labels == {-1: JUNK * CAMERAS, 0: DISTRACTORS * CAMERAS}
        else:
            assert not labels


def test_queries_are_in_gt_bbox(tree):
    root, _ = tree
    for name in os.listdir(os.path.join(root, "query")):
        with open(os.path.join(root, "query", name), "rb") as a, open(os.path.join(root, "gt_bbox", name), "rb") as b:
            assert a.read() == b.read()


def test_same_seed_same_bytes_other_seed_differs(tree, tmp_path):
    root, counts = tree
    again = str(tmp_path / "again")
    assert make_market_tree(again, seed=0, **TINY) == counts
    assert contents(again) == contents(root)
    other = str(tmp_path / "other")
    make_market_tree(other, seed=1, **TINY)
    first, second = contents(root), contents(other)
    images = [v for k, v in first.items() if k != MARKER]
    assert not set(images) & set(v for k, v in second.items() if k != MARKER)


def test_rerun_is_a_no_op(tree):
    root, counts = tree
    before = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in contents(root)}
    assert make_market_tree(root, seed=0, **TINY) == counts
    assert {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in contents(root)} == before


def test_cli_reports_existing_tree(tree, capsys):
    root, counts = tree
    main(["--out", root, "--train_ids", str(TRAIN), "--test_ids", str(TEST), "--images_per_camera", str(PER_CAMERA),
          "--height", "32", "--width", "16", "--junk", str(JUNK), "--distractors", str(DISTRACTORS)])
    line = capsys.readouterr().out
    assert "already holds" in line and f"query {counts['query']}" in line


def test_other_parameters_on_generated_tree_refused(tree):
    root, _ = tree
    with pytest.raises(UserError, match="other parameters"):
        make_market_tree(root, seed=2, **TINY)


def test_foreign_folder_refused(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=str(root)):
        make_market_tree(str(root), seed=0, **TINY)
    assert os.listdir(root) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]   # no temporary folder left behind


def test_empty_folder_accepted(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    counts = make_market_tree(str(root), seed=0, **TINY)
    assert len(os.listdir(root / "query")) == counts["query"]


@pytest.mark.parametrize("bad", [dict(images_per_camera=1), dict(cameras=1), dict(cameras=10), dict(train_ids=0),
                                 dict(train_ids=True), dict(train_ids=9000, test_ids=1000)])
def test_bad_parameters_refused(tmp_path, bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        make_market_tree(str(tmp_path / "x"), **dict(TINY, **bad))
    assert not (tmp_path / "x").exists()


def test_unknown_keyword_refused(tmp_path):
    with pytest.raises(TypeError, match="'junk'"):
        make_market_tree(str(tmp_path / "x"), junk=2)
    assert not (tmp_path / "x").exists()


def test_flags_reach_their_keywords(monkeypatch, tmp_path, capsys):
    # demo.sh and the benches call the script by these flag names;
    # --junk and --distractors are shorter than the keywords.
    seen = []
    monkeypatch.setattr(synthetic, "make_market_tree", lambda root, **kw: seen.append(kw) or dict.fromkeys(FOLDERS, 0))
    main(["--out", str(tmp_path / "x")])
    main(["--out", str(tmp_path / "x"), "--seed", "1", "--train_ids", "2", "--test_ids", "3", "--cameras", "4",
          "--images_per_camera", "5", "--height", "60", "--width", "70", "--junk", "8", "--distractors", "9",
          "--look", "1"])
    assert seen == [dict(seed=0, train_ids=100, test_ids=50, cameras=6, images_per_camera=4, height=128, width=64,
                         junk_per_camera=4, distractors_per_camera=6, look=0),
                    dict(seed=1, train_ids=2, test_ids=3, cameras=4, images_per_camera=5, height=60, width=70,
                         junk_per_camera=8, distractors_per_camera=9, look=1)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--junk JUNK" in capsys.readouterr().out


def test_another_camera_network_shows_the_same_people_otherwise(tree, tmp_path):
    """--look 1: the same file names (people, cameras, frames) in other pixels, darker or more
    tinted as a whole than any look-0 camera can make them: new cameras for adapt.py. A tree
    recorded before --look existed is the look-0 tree it was."""
    import json

    import numpy as np

    root, counts = tree
    other = str(tmp_path / "other look")
    assert make_market_tree(other, seed=0, look=1, **TINY) == counts
    first, second = contents(root), contents(other)
    assert first.keys() == second.keys()
    assert all(first[k] != second[k] for k in first if k != MARKER)
    # a camera's colour cast: the spread of its images' mean colour over the channels
    casts = [[np.ptp(np.asarray(Image.open(os.path.join(tree_root, "bounding_box_train", name)), np.float64)
                     .mean((0, 1))) for name in sorted(os.listdir(os.path.join(tree_root, "bounding_box_train")))]
             for tree_root in (root, other)]
    assert np.median(casts[1]) > np.median(casts[0])
    with open(os.path.join(other, MARKER)) as f:
        recorded = json.load(f)
    assert recorded["params"]["look"] == 1
    old = str(tmp_path / "old")
    make_market_tree(old, seed=0, **TINY)
    with open(os.path.join(old, MARKER)) as f:
        recorded = json.load(f)
    del recorded["params"]["look"]
    with open(os.path.join(old, MARKER), "w") as f:
        json.dump(recorded, f)
    assert make_market_tree(old, seed=0, **TINY) == counts  # taken as look 0: nothing written
    with pytest.raises(UserError, match="look 0 -> 1"):
        make_market_tree(old, seed=0, look=1, **TINY)
