"""prepare.py: the ImageFolder tree the other stages read, and the raw data left untouched."""
import hashlib
import os
import shutil

import pytest
import yaml

import prepare
from reid.cli import UserError
from reid.data import SPLITS, parse_name


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
    assert sorted(os.listdir(out)) == sorted(s for s in SPLITS if s != "calibration")
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
    with pytest.raises(UserError, match="does not exist"):
        prepare.main(["--download_path", str(tmp_path / "nowhere")])
    prepare.main(["--download_path", str(raw_market)])
    with pytest.raises(UserError, match="lacks bounding_box_train.*not its pytorch/ tree"):
        prepare.main(["--download_path", str(raw_market / "pytorch")])


def test_names_that_do_not_parse_are_listed(raw_market):
    (raw_market / "query" / "person_7.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="person_7.jpg.*expected"):
        prepare.main(["--download_path", str(raw_market)])
    assert not (raw_market / "pytorch").exists()


def held_out_tree(raw_market, *extra):
    out = raw_market.parent / "held out"
    prepare.main(["--download_path", str(raw_market), "--output", str(out), *extra])
    return out


def files(out, split):
    """{id folder: sorted names} of one split of a prepared tree."""
    return {d: sorted(os.listdir(out / split / d)) for d in os.listdir(out / split)} if (out / split).exists() else {}


def test_held_out_identities_become_query_and_gallery(raw_market, capsys):
    before = snapshot(raw_market)
    out = held_out_tree(raw_market, "--hold_out", "3", "--seed", "1")
    raw = {}
    for name in os.listdir(raw_market / "bounding_box_train"):
        raw.setdefault(f"{parse_name(name)[0]:04d}", []).append(name)
    query, gallery, train_all = files(out, "query"), files(out, "gallery"), files(out, "train_all")
    held = sorted(query)
    assert len(held) == 3 and sorted(gallery) == held
    # the held-out people leave training whole; everyone else trains as before
    assert sorted(train_all) == sorted(set(raw) - set(held))
    assert all(train_all[pid] == sorted(raw[pid]) for pid in train_all)
    assert not set(held) & set(files(out, "train")) and not set(held) & set(files(out, "val"))
    for pid in held:
        assert sorted(query[pid] + gallery[pid]) == sorted(raw[pid])
        # one query per camera the person was seen by, and at least two cameras
        query_cams = [parse_name(n)[1] for n in query[pid]]
        assert sorted(query_cams) == sorted({parse_name(n)[1] for n in raw[pid]}) and len(query_cams) >= 2
    # the dataset's own query and gallery images are not used
    official = set(os.listdir(raw_market / "query")) | set(os.listdir(raw_market / "bounding_box_test"))
    assert not official & {n for names in (*query.values(), *gallery.values()) for n in names}
    with open(out / "split.yaml") as f:
        assert yaml.safe_load(f)["held_out_ids"] == [int(pid) for pid in held]
    assert "3 ids held out" in capsys.readouterr().out
    assert snapshot(raw_market) == before and not (raw_market / "pytorch").exists()


def test_held_out_draw_follows_the_seed(raw_market, tmp_path):
    draws = {}
    for seed in ("0", "0", "5"):
        out = tmp_path / f"seed {seed} {len(draws)}"
        prepare.main(["--download_path", str(raw_market), "--output", str(out), "--hold_out", "3", "--seed", seed])
        draws.setdefault(seed, []).append((files(out, "query"), files(out, "gallery")))
    assert draws["0"][0] == draws["0"][1]
    assert draws["5"][0] != draws["0"][0]


def test_hold_out_needs_only_the_training_folder(raw_market):
    for folder in ("query", "bounding_box_test", "gt_bbox"):
        shutil.rmtree(raw_market / folder)
    out = held_out_tree(raw_market, "--hold_out", "2")
    assert len(files(out, "query")) == 2 and not (out / "multi-query").exists()


def test_hold_out_too_many_says_how_many_can_be(raw_market):
    with pytest.raises(UserError, match="--hold_out 8 cannot be met: the training images left hold 8 ids"
                                         ".*between 1 and 7"):
        held_out_tree(raw_market, "--hold_out", "8")


def test_tree_prepared_otherwise_is_refused(raw_market):
    out = held_out_tree(raw_market, "--hold_out", "2", "--seed", "0")
    before = tree(out)
    with pytest.raises(UserError, match="prepared file.*another --hold_out, --seed or dataset; delete .*held out"):
        held_out_tree(raw_market, "--hold_out", "2", "--seed", "3")
    assert tree(out) == before
    split = (out / "split.yaml").read_text()
    held_out_tree(raw_market, "--hold_out", "2", "--seed", "0")  # the same preparation again is fine
    assert ({k: v for k, v in tree(out).items() if k != "split.yaml"}
            == {k: v for k, v in before.items() if k != "split.yaml"})
    assert (out / "split.yaml").read_text() == split


def test_every_held_out_query_has_a_match_in_another_camera():
    layout = {1: {1: 1, 2: 1, 3: 1},  # person: {camera: images}
              2: {1: 2, 2: 1},
              3: {1: 2, 2: 2},
              4: {1: 2}}  # one camera: never held out
    images = [(f"{pid}_c{cam}_{n}.jpg", "train_all", pid, cam)
              for pid, cams in layout.items() for cam, count in cams.items() for n in range(count)]
    moved, held = prepare.hold_out(images, 3, seed=0)
    assert held == [1, 2, 3]
    for pid in held:
        query = [cam for _, split, i, cam in moved if i == pid and split == "query"]
        gallery = [cam for _, split, i, cam in moved if i == pid and split == "gallery"]
        assert all(any(g != cam for g in gallery) for cam in query)
        assert len(query) == len(set(query))
    # as many queries as leave a match: 3 cameras of one image give 2, one lone image 1, two cameras of two 2
    assert [sum(1 for _, split, i, _ in moved if i == pid and split == "query") for pid in held] == [2, 1, 2]
    assert all(split == "train_all" for _, split, i, _ in moved if i == 4)


def test_calibration_identities_leave_training_and_leave_the_test_split_alone(raw_market, tmp_path):
    plain = tmp_path / "plain"
    prepare.main(["--download_path", str(raw_market), "--output", str(plain), "--hold_out", "2"])
    out = held_out_tree(raw_market, "--hold_out", "2", "--calibration", "3")
    calibration, train_all = files(out, "calibration"), files(out, "train_all")
    assert len(calibration) == 3
    assert (files(out, "query"), files(out, "gallery")) == (files(plain, "query"), files(plain, "gallery"))
    assert sorted(train_all) == sorted(set(files(plain, "train_all")) - set(calibration))
    assert all(calibration[pid] == files(plain, "train_all")[pid] for pid in calibration)  # every image of them
    assert not set(calibration) & (set(files(out, "train")) | set(files(out, "val")))
    with open(out / "split.yaml") as f:
        split = yaml.safe_load(f)
    assert split["calibration_ids"] == [int(pid) for pid in sorted(calibration)]
    assert split["held_out_ids"] == [int(pid) for pid in sorted(files(out, "query"))]


def test_calibration_beside_the_datasets_own_test_set(raw_market):
    prepare.main(["--download_path", str(raw_market), "--calibration", "2"])
    out = raw_market / "pytorch"
    assert len(files(out, "calibration")) == 2
    assert (sorted(n for names in files(out, "query").values() for n in names)
            == sorted(os.listdir(raw_market / "query")))
    with pytest.raises(UserError, match="--calibration 9 cannot be met"):
        prepare.main(["--download_path", str(raw_market), "--calibration", "9"])
