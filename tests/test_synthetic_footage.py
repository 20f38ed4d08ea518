"""Synthetic footage: footage.py reads every camera back, gt.txt and FOOTAGE agree on who is seen
where and when, det.txt is an imperfect detector, the boxes hold the people, the same call gives
the same bytes, and no one's folder is written into."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import contents
from reid import cli
from reid.cli import UserError
from reid.search import footage, tracking
from reid.synthetic import footage as synthetic_footage
from reid.synthetic.footage import MARKER, make_footage
from synthetic_footage import main

TINY = dict(seed=3, cameras=2, people=4, frames=12, fps=5, width=160, height=120)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("footage") / "two cameras")
    return root, make_footage(root, **TINY)


def sequences(made):
    root, manifest = made
    return [(camera, footage.open_footage(os.path.join(root, camera["sequence"]))) for camera in manifest["cameras"]]


def boxes(sequence, ground_truth):
    found, summary = footage.read_detections(footage.default_detections(sequence, ground_truth), sequence,
                                             ground_truth=ground_truth)
    # nothing left out or clipped: every box lies inside the frame and is big enough to keep
    assert summary.kept == summary.boxes > 0 and summary.clipped == 0, str(summary)
    return found


def test_every_camera_reads_back_as_a_sequence_and_a_video(made):
    root, manifest = made
    assert sorted(os.listdir(root)) == ["FOOTAGE", "cam1", "cam1.mp4", "cam2", "cam2.mp4", "query"]
    for camera, sequence in sequences(made):
        video = footage.open_footage(os.path.join(root, camera["video"]))
        for seen in (sequence, video):
            assert (seen.name, seen.fps, seen.width, seen.height) == (camera["name"], 5.0, 160, 120)
            assert [n for n, _, _ in footage.frames(seen)] == list(range(1, 13))
        assert sequence.length == video.length == 12 and not sequence.note


def test_ground_truth_ids_and_times_agree_with_the_manifest(made):
    _, manifest = made
    for camera, sequence in sequences(made):
        tracklets = tracking.link_tracklets(boxes(sequence, ground_truth=True), sequence.fps)
        listed = {p["id"]: p for p in camera["people"]}
        assert sorted(t.id for t in tracklets) == sorted(listed)
        for t in tracklets:
            person = listed[t.id]
            assert (t.first_frame, t.last_frame, len(t.boxes)) == (person["first_frame"], person["last_frame"],
                                                                   person["boxes"])
            assert (t.first_time, t.last_time) == (person["first_time"], person["last_time"])
            assert t.first_time == footage.frame_time(t.first_frame, 5.0)
    seen_by = {p["id"]: p["cameras"] for p in manifest["people"]}
    assert sorted(seen_by) == [1, 2, 3, 4]
    assert len(seen_by[1]) == 2 and len(seen_by[4]) == 1
    # person 1 is seen by both cameras, one after the other
    spans = {c["name"]: [(p["first_frame"], p["last_frame"]) for p in c["people"] if p["id"] == 1][0]
             for c in manifest["cameras"]}
    (_, end), (start, _) = (spans[name] for name in seen_by[1])
    assert end < start


def test_detections_miss_jitter_and_add_false_boxes(made):
    missed = false = moved = 0
    for _, sequence in sequences(made):
        truth, found = boxes(sequence, ground_truth=True), boxes(sequence, ground_truth=False)
        assert all(box.id == -1 and 0 < box.conf <= 1 for box in found)
        for frame in range(1, 13):
            here = [box for box in truth if box.frame == frame]
            seen = [box for box in found if box.frame == frame]
            if not here or not seen:
                missed += len(here)
                false += len(seen)
                continue
            overlap = tracking.iou_matrix(here, seen)
            missed += int((overlap.max(axis=1) < 0.5).sum())
            false += int((overlap.max(axis=0) < 0.1).sum())
            moved += int(((overlap.max(axis=1) >= 0.5) & (overlap.max(axis=1) < 1)).sum())
    assert missed > 0 and false > 0 and moved > 0


def test_a_ground_truth_box_holds_a_person(made):
    """Where a person is well visible, their box's crop differs from the background (the per-pixel
    median of the camera's frames: people walk on) far more than the frame does where no box is."""
    checked = 0
    for _, sequence in sequences(made):
        frames = np.stack([rgb for _, _, rgb in footage.frames(sequence)]).astype(np.float32)
        background = np.median(frames, axis=0)
        truth = boxes(sequence, ground_truth=True)
        visibility = {(int(v[0]), int(v[1])): v[8]
                      for _, _, v in footage.read_rows(footage.default_detections(sequence, ground_truth=True))}
        for box, crop in footage.crop_boxes(sequence, truth):
            left, top = int(box.left) - 1, int(box.top) - 1  # the file's pixels count from 1
            behind = background[top:top + int(box.height), left:left + int(box.width)]
            assert crop.size == (behind.shape[1], behind.shape[0])
            if visibility[box.frame, box.id] >= 0.5:
                assert np.abs(np.asarray(crop, dtype=np.float32) - behind).mean() > 10, box
                checked += 1
        empty = np.ones(frames.shape[:3], dtype=bool)
        for box in truth:
            left, top = int(box.left) - 1, int(box.top) - 1
            empty[box.frame - 1, top:top + int(box.height), left:left + int(box.width)] = False
        assert np.abs(frames - background).mean(axis=3)[empty].mean() < 2
    assert checked >= 10


def test_the_same_call_writes_the_same_bytes_and_leaves_its_tree_alone(made, tmp_path):
    root, manifest = made
    again = str(tmp_path / "again")
    assert make_footage(again, **TINY) == manifest
    assert contents(again) == contents(root)
    stamp = os.stat(os.path.join(root, MARKER)).st_mtime_ns
    assert make_footage(root, **TINY) == manifest
    assert os.stat(os.path.join(root, MARKER)).st_mtime_ns == stamp


def test_other_parameters_or_a_foreign_folder_are_refused_in_one_line(made, tmp_path):
    root, _ = made
    with pytest.raises(UserError, match="frames 12 -> 13"):
        make_footage(root, **dict(TINY, frames=13))
    foreign = tmp_path / "my videos"
    foreign.mkdir()
    (foreign / "holiday.mp4").write_bytes(b"not ours")
    flags = ["--out", str(foreign), "--frames", "8", "--width", "160", "--height", "120"]
    with pytest.raises(SystemExit) as stopped:
        cli.run_main(lambda: main(flags))
    message = str(stopped.value.code)
    assert message.startswith("error: ") and str(foreign) in message and "\n" not in message
    assert os.listdir(foreign) == ["holiday.mp4"] and sorted(os.listdir(tmp_path)) == ["my videos"]


def test_no_video_writes_the_sequences_only(tmp_path, capsys):
    out = tmp_path / "frames only"
    main(["--out", str(out), "--no-video", "--frames", "8", "--width", "128", "--height", "96", "--cameras", "3",
          "--people", "3"])
    assert capsys.readouterr().out.startswith(f"wrote {out}: cam1: people")
    manifest = make_footage(str(out), video=False, frames=8, width=128, height=96, cameras=3, people=3)
    assert sorted(os.listdir(out)) == ["FOOTAGE", "cam1", "cam2", "cam3", "query"]
    assert all(camera["video"] is None and camera["people"] for camera in manifest["cameras"])
    for camera in manifest["cameras"]:
        assert footage.open_footage(str(out / camera["sequence"])).length == 8


def test_parameters_are_checked():
    with pytest.raises(UserError, match="must be even"):
        make_footage("never written", width=161)
    with pytest.raises(UserError, match="every camera sees someone"):
        make_footage("never written", cameras=3, people=2)
    with pytest.raises(TypeError, match="height"):
        make_footage("never written", heigth=120)
    assert not os.path.exists("never written")
    assert synthetic_footage.DEFAULTS["video"] is True


def test_each_person_has_a_photo_cut_from_the_first_camera_that_sees_them(made):
    root, manifest = made
    assert sorted(os.listdir(os.path.join(root, "query"))) == sorted(os.path.basename(p["query"])
                                                                     for p in manifest["people"])
    for person in manifest["people"]:
        pid, camera, frame = os.path.splitext(os.path.basename(person["query"]))[0].split("_")
        assert (int(pid), camera) == (person["id"], person["cameras"][0])
        sequence = footage.open_footage(os.path.join(root, camera))
        box = next(b for b in boxes(sequence, True) if b.id == person["id"] and b.frame == int(frame))
        with Image.open(os.path.join(root, person["query"])) as photo:
            assert photo.size == (box.width, box.height)
