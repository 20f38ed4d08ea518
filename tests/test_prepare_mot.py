"""prepare.py --dataset mot: annotated footage (MOTChallenge sequence folders, a video with its
ground truth beside it) cropped into the prepared tree; per-sequence and shared ids, the
visibility, height and stride thresholds, hold-out on shared ids, and the one-line errors.
The footage is drawn here: two sequences of 6 frames of 160 x 120, three people walking right
in each, people 1 and 2 in both."""
import os
import shutil

import av
import numpy as np
import pytest
import yaml
from PIL import Image

import prepare
from conftest import run_script
from reid.cli import UserError
from reid.data import parse_name
from test_prepare import snapshot

WIDTH, HEIGHT, LENGTH = 160, 120, 6
BOX_W, BOX_H, TOP = 20, 60, 20
# sequence folder -> its track ids (camera 1 is MOT-A, sorted first)
SEQUENCES = {"MOT-A": (1, 2, 3), "MOT-B": (1, 2, 4)}


def left(slot, n):
    """0-based left edge of the person in `slot` (0, 1, 2 across the frame) on frame n."""
    return 5 + 50 * slot + 2 * (n - 1)


def drawn(tracks, n):
    frame = np.full((HEIGHT, WIDTH, 3), 100, np.uint8)
    for slot, track in enumerate(tracks):
        frame[TOP:TOP + BOX_H, left(slot, n):left(slot, n) + BOX_W] = (40 * track, 200 - 40 * track, 90)
    return frame


def gt_lines(tracks, ids=None):
    """MOT16/17 ground truth (9 columns) of every person on every frame; pixels count from 1."""
    return [f"{n},{track},{left(slot, n) + 1},{TOP + 1},{BOX_W},{BOX_H},1,1,1.0"
            for n in range(1, LENGTH + 1) for slot, track in enumerate(ids or tracks)]


def write_sequence(root, name, tracks, lines=None):
    folder = root / name
    os.makedirs(folder / "img1")
    os.makedirs(folder / "gt")
    for n in range(1, LENGTH + 1):
        Image.fromarray(drawn(tracks, n)).save(folder / "img1" / f"{n:06d}.jpg")
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nimDir=img1\nframeRate=10\nseqLength={LENGTH}\n"
                                        f"imWidth={WIDTH}\nimHeight={HEIGHT}\n")
    (folder / "gt" / "gt.txt").write_text("\n".join(gt_lines(tracks) if lines is None else lines) + "\n")
    return folder


# boxes that the thresholds leave out, all in MOT-A: track 3 mostly hidden on frame 1, track 2 only
# 20 pixels high on frame 3, a box without a track on frame 5, and track 1 marked conf 0 on frame 2
HIDDEN, LOW, UNTRACKED, IGNORED = "1,3,106,21,20,60,1,1,0.2", "3,2,60,61,20,20,1,1,1.0", "5,-1,130,70,20,40,1,1,1.0", \
    "2,1,8,21,20,60,0,1,1.0"


def a_lines():
    lines = [line for line in gt_lines(SEQUENCES["MOT-A"]) if not line.startswith(("1,3,", "3,2,", "2,1,"))]
    return lines + [HIDDEN, LOW, UNTRACKED, IGNORED]


@pytest.fixture(scope="module")
def footage_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage é") / "two cameras"
    write_sequence(root, "MOT-A", SEQUENCES["MOT-A"], a_lines())
    write_sequence(root, "MOT-B", SEQUENCES["MOT-B"])
    return root


@pytest.fixture
def footage(footage_once, tmp_path):
    """A private copy of the footage, free for a test to prepare or damage."""
    root = tmp_path / "two cameras"
    shutil.copytree(footage_once, root)
    return root


def prepare_mot(root, *extra, out=None):
    out = out or root / "pytorch"
    prepare.main(["--download_path", str(root), "--dataset", "mot", "--output", str(out), *extra])
    return out


def files(out, split):
    """{id folder: sorted names} of one split of a prepared tree."""
    return {d: sorted(os.listdir(out / split / d)) for d in os.listdir(out / split)} if (out / split).exists() else {}


def crops(out, split="train_all"):
    return sorted(n for names in files(out, split).values() for n in names)


def test_each_sequences_tracks_are_people_of_their_own(footage, capsys):
    before = snapshot(footage)
    out = prepare_mot(footage, "--mot_stride", "2")
    train_all = files(out, "train_all")
    # frames 1, 3, 5 of three people in each camera, less the hidden and the low box of MOT-A
    assert len(crops(out)) == 9 - 2 + 9
    assert sorted(train_all) == [f"{pid:04d}" for pid in range(1, 7)]
    for folder, names in train_all.items():
        for name in names:
            pid, cam = parse_name(name)
            assert pid == int(folder) and cam == (1 if pid <= 3 else 2)
            assert int(name.split("_")[2]) in (1, 3, 5)
    # MOT-A's track 3 on frame 1 was hidden; MOT-B's track 4 (id 6) is on every sampled frame
    assert train_all["0003"] == ["0003_c1s1_000003_00.jpg", "0003_c1s1_000005_00.jpg"]
    assert train_all["0006"] == ["0006_c2s1_000001_00.jpg", "0006_c2s1_000003_00.jpg", "0006_c2s1_000005_00.jpg"]
    with Image.open(out / "train_all" / "0006" / "0006_c2s1_000003_00.jpg") as crop:
        assert crop.format == "JPEG" and crop.size == (BOX_W, BOX_H)
        # the crop is the person drawn there (track 4's colour), not the background
        assert np.abs(np.asarray(crop, np.int16) - (160, 40, 90)).mean() < 12
    assert (out / "identities.csv").read_text().splitlines() == [
        "id,name", "1,MOT-A track 1", "2,MOT-A track 2", "3,MOT-A track 3", "4,MOT-B track 1", "5,MOT-B track 2",
        "6,MOT-B track 4"]
    # val holds each id's first crop; the rest trains
    assert all(files(out, "val")[pid] == names[:1] and files(out, "train")[pid] == names[1:]
               for pid, names in train_all.items())
    assert not (out / "query").exists() and not (out / "split.yaml").exists()
    assert snapshot(footage) == before
    printed = capsys.readouterr().out
    assert "1 marked not to be considered" in printed and "1 less visible than 0.5 (skipped)" in printed
    assert "of those, 1 without a track id, 1 lower than 32 pixels (skipped)" in printed
    assert "7 crops of 3 people (one frame in 2)" in printed and "9 crops of 3 people" in printed
    assert "--hold_out needs people seen by two or more cameras, and none is" in printed and "--shared_ids" in printed


def test_shared_ids_are_the_files_ids_in_every_camera(footage, capsys):
    out = prepare_mot(footage, "--mot_stride", "2", "--shared_ids")
    train_all = files(out, "train_all")
    assert sorted(train_all) == ["0001", "0002", "0003", "0004"] and len(crops(out)) == 16
    cameras = {pid: {parse_name(n)[1] for n in names} for pid, names in train_all.items()}
    assert cameras == {"0001": {1, 2}, "0002": {1, 2}, "0003": {1}, "0004": {2}}
    assert not (out / "identities.csv").exists()
    assert "2 of the 4 people are seen by two or more cameras" in capsys.readouterr().out


def test_thresholds_and_stride_choose_the_boxes(footage):
    assert len(crops(prepare_mot(footage, "--mot_stride", "2", "--min_visibility", "0", "--min_height", "0",
                                 out=footage.parent / "all"))) == 18
    # every frame: 6 frames of 3 people in each camera, less the ignored, hidden and low boxes
    assert len(crops(prepare_mot(footage, "--mot_stride", "1", out=footage.parent / "every"))) == 36 - 3
    # the default stride of 10 keeps frame 1 alone
    assert {n.split("_")[2] for n in crops(prepare_mot(footage, out=footage.parent / "default"))} == {"000001"}
    with pytest.raises(UserError, match="left to crop.*--min_height"):
        prepare_mot(footage, "--min_height", "100", out=footage.parent / "none")


def test_running_again_gives_the_same_crops(footage):
    out = prepare_mot(footage, "--mot_stride", "3")
    first = {n: (out / "train_all" / n[:4] / n).read_bytes() for n in crops(out)}
    prepare_mot(footage, "--mot_stride", "3")
    assert {n: (out / "train_all" / n[:4] / n).read_bytes() for n in crops(out)} == first
    with pytest.raises(UserError, match="would not write"):  # other ids: the old crops would mix in
        prepare_mot(footage, "--mot_stride", "3", "--shared_ids")


def test_hold_out_draws_people_seen_by_both_cameras(footage, capsys):
    out = prepare_mot(footage, "--mot_stride", "2", "--shared_ids", "--hold_out", "2", "--seed", "1")
    query, gallery = files(out, "query"), files(out, "gallery")
    assert sorted(query) == sorted(gallery) == ["0001", "0002"]
    assert sorted(files(out, "train_all")) == ["0003", "0004"]
    for pid in query:  # one query per camera, the other crops in the gallery
        assert sorted(parse_name(n)[1] for n in query[pid]) == [1, 2]
        assert len(query[pid]) + len(gallery[pid]) == (6 if pid == "0001" else 5)
    with open(out / "split.yaml") as f:
        assert yaml.safe_load(f)["held_out_ids"] == [1, 2]
    assert "2 ids held out" in capsys.readouterr().out
    with pytest.raises(UserError, match="without --shared_ids each sequence's tracks are people of their own.*"
                                        "--hold_out 0"):
        prepare_mot(footage, "--hold_out", "1", out=footage.parent / "per sequence")


def write_video(path, tracks):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for n in range(1, LENGTH + 1):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(drawn(tracks, n), format="rgb24")))
        container.mux(stream.encode())


def test_a_video_with_its_ground_truth_beside_it_is_a_camera(tmp_path):
    root = tmp_path / "mixed"
    write_sequence(root, "MOT-A", (1, 2))
    write_video(root / "lobby.mp4", (2, 5))
    with pytest.raises(UserError, match=r"lobby.mp4 has no ground truth beside it: .*lobby.txt"):
        prepare_mot(root)
    (root / "lobby.txt").write_text("\n".join(gt_lines((2, 5))) + "\n")
    out = prepare_mot(root, "--shared_ids", "--mot_stride", "5")
    cameras = {pid: sorted({parse_name(n)[1] for n in names}) for pid, names in files(out, "train_all").items()}
    assert cameras == {"0001": [1], "0002": [1, 2], "0005": [2]}  # MOT-A sorts before lobby.mp4
    assert len(crops(out)) == 2 * 2 + 2 * 2  # frames 1 and 6
    # a video beside a sequence folder of its name is that camera again, not one more
    shutil.copy(root / "lobby.mp4", root / "MOT-A.mp4")
    out = prepare_mot(root, "--shared_ids", "--mot_stride", "5", out=tmp_path / "again")
    assert {parse_name(n)[1] for n in crops(out)} == {1, 2} and len(crops(out)) == 8


def test_bad_footage_is_one_line_naming_the_file(footage, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no MOTChallenge sequence folder .* pass the folder that holds them"):
        prepare_mot(empty)
    with pytest.raises(UserError, match="apply to --dataset mot only"):
        prepare.main(["--download_path", str(footage), "--shared_ids", "--min_height", "10"])
    (footage / "MOT-B" / "gt" / "gt.txt").write_text("\n".join(gt_lines((-1, -1, -1))) + "\n")
    with pytest.raises(UserError, match=r"MOT-B.gt.gt\.txt gives no track ids \(every box has id -1\)"):
        prepare_mot(footage)
    os.remove(footage / "MOT-B" / "gt" / "gt.txt")
    # as a user runs it: one line, no traceback, and nothing written
    done = run_script("prepare.py", "--download_path", str(footage), "--dataset", "mot", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {footage / 'MOT-B' / 'gt' / 'gt.txt'} does not exist: preparing needs the ground truth of every "
        f"sequence (its track ids say who is who); add it, or move {footage / 'MOT-B'} out of {footage}"]
    assert not (footage / "pytorch").exists()
