"""search.py on footage: sequence folders and videos as galleries, tracklets as answers with their
times and best box, the multi-camera question, the cache, and bad input."""
import csv
import os
import shutil

import pytest
import torch
from PIL import Image

from conftest import run_script, searched, torchrun
from reid.search import footage as fo
from reid.synthetic import footage as synthetic_footage

SMALL = dict(cameras=2, people=4, frames=12, width=160, height=120, fps=5, seed=0)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage") / "two cameras"
    return root, synthetic_footage.make_footage(str(root), **SMALL)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ground_truth(sequence):
    footage = fo.open_footage(str(sequence))
    boxes, _ = fo.read_detections(os.path.join(sequence, fo.GROUND_TRUTH), footage, ground_truth=True)
    return footage, boxes


def test_a_box_cropped_from_a_sequence_is_found_in_its_tracklet_at_its_frame(tiny_run, made, tmp_path, capsys):
    """The query is one person's box cut from frame f of camera 1: the tracklet of that person is
    an answer, with that very box as its best match, its frame, time and track id, and the
    tracklet's span is the person's span in the ground truth."""
    root, manifest = made
    sequence = root / "cam1"
    footage, boxes = ground_truth(sequence)
    person = manifest["cameras"][0]["people"][0]
    box = [b for b in boxes if b.id == person["id"]][len([b for b in boxes if b.id == person["id"]]) // 2]
    crop = next(c for b, c in fo.crop_boxes(footage, [box]))
    crop.save(tmp_path / "query.png")
    out, _ = searched(capsys, tiny_run, "--query", tmp_path / "query.png", "--gallery", sequence, "--ground_truth",
                      "--output", tmp_path / "out", "--top", "10")
    found = rows(tmp_path / "out" / "results.csv")
    assert list(found[0])[-12:] == ["video", "frame", "time", "left", "top", "width", "height", "track",
                                    "first_frame", "last_frame", "start", "end"]
    tracks = {r["track"]: r for r in found}
    assert len(found) == len({b.id for b in boxes}) and len(tracks) == len(found)  # one answer per person
    hit = tracks[str(person["id"])]
    assert (int(hit["frame"]), float(hit["left"]), float(hit["top"])) == (box.frame, box.left, box.top)
    assert hit["time"] == fo.format_time(fo.frame_time(box.frame, footage.fps))
    assert (int(hit["first_frame"]), int(hit["last_frame"])) == (person["first_frame"], person["last_frame"])
    assert hit["start"] == fo.format_time(person["first_time"]) and hit["video"] == str(sequence)
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "000_query.png").is_file()
    assert f"{len(boxes)} kept" in out and "described now" in out
    # the tracklets as a MOTChallenge results file: here the ground truth's boxes and ids, frame by frame
    lines = (tmp_path / "out" / "tracklets" / f"{footage.name}.txt").read_text().splitlines()
    written = [tuple(float(v) for v in line.split(",")) for line in lines]
    assert all(row[7:] == (-1, -1, -1) for row in written)
    assert [row[:2] for row in written] == sorted(row[:2] for row in written)
    assert sorted(row[:6] for row in written) == sorted(
        (b.frame, b.id, round(b.left, 2), round(b.top, 2), round(b.width, 2), round(b.height, 2)) for b in boxes)


def test_a_video_with_its_detections_file_is_a_gallery_and_cached_whatever_the_output(tiny_run, made, tmp_path,
                                                                                       capsys):
    root, _ = made
    query = tmp_path / "query.png"
    Image.new("RGB", (16, 32), (200, 40, 40)).save(query)
    video, detections = root / "cam2.mp4", root / "cam2" / "gt" / "gt.txt"
    out, _ = searched(capsys, tiny_run, "--query", query, "--gallery", video, "--detections", detections,
                      "--output", tmp_path / "one", "--no-pictures", "--stride", "2")
    first = rows(tmp_path / "one" / "results.csv")
    assert first and all(r["video"] == str(video) and (int(r["frame"]) - 1) % 2 == 0 for r in first)
    assert "described now" in out
    out, _ = searched(capsys, tiny_run, "--query", query, "--gallery", video, "--detections", detections,
                      "--output", tmp_path / "two", "--no-pictures", "--stride", "2")
    assert "from the cache" in out and "described now" not in out
    assert rows(tmp_path / "two" / "results.csv") == first


def test_without_a_query_two_cameras_give_the_pairs_judged_the_same_person(tiny_run, made, tmp_path, capsys):
    root, _ = made
    out, _ = searched(capsys, tiny_run, "--gallery", root / "cam1", root / "cam2", "--ground_truth",
                      "--output", tmp_path / "out", "--threshold", "-1")  # every pair judged the same
    pairs = rows(tmp_path / "out" / "pairs.csv")
    one, two = ({b.id for b in ground_truth(root / cam)[1]} for cam in ("cam1", "cam2"))
    assert len(pairs) == len(one) * len(two)  # pairs across the cameras only, each once
    assert all(p["video_a"] != p["video_b"] for p in pairs)
    assert [float(p["p_same"]) for p in pairs] == sorted((float(p["p_same"]) for p in pairs), reverse=True)
    assert f"{len(pairs)} pair(s) of tracklets in different footage judged the same person" in out
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<img") == len(pairs) and page.count("track ") == 2 * len(pairs)


@pytest.mark.parametrize("args, message", [
    (["--query", "q.png", "--gallery", "cam1", "cam2", "--detections", "cam1/gt/gt.txt"],
     "--detections names 1 file(s) for 2 footage galleries"),
    (["--gallery", "cam1"], "--query is missing: give query images, or two or more footage galleries"),
    (["--query", "q.png", "--gallery", "frames"], "frames has no img1/ folder of frames"),
    (["--query", "q.png", "--gallery", "cam1", "--stride", "0"], "--stride 0 must be at least 1"),
    (["--query", "q.png", "--gallery", "nowhere.mp4"], "--gallery nowhere.mp4 does not exist"),
])
def test_bad_footage_input_is_one_line(tiny_run, made, tmp_path, args, message):
    root, _ = made
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(tiny_run / "model", work / "model")
    for cam in ("cam1", "cam2"):
        os.symlink(root / cam, work / cam)
    (work / "frames" / "det").mkdir(parents=True)
    (work / "frames" / "det" / "det.txt").write_text("1,-1,1,1,10,20,1,-1,-1,-1\n")  # a sequence without frames
    Image.new("RGB", (16, 32)).save(work / "q.png")
    out = run_script("search.py", "--name", "tiny", "--gpu_ids", "-1", *args, cwd=work)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(errors) == 1 and message in errors[0], out.stderr


class FakeDetector:
    """Stands in for torchvision's detector (no COCO weights can be downloaded in tests): on every
    frame a person at the same place, and a car; counts the frames it was shown."""

    def __init__(self):
        self.frames = 0

    def __call__(self, images):
        self.frames += len(images)
        return [{"boxes": torch.tensor([[40.0, 20.0, 80.0, 110.0], [0.0, 0.0, 30.0, 30.0]]),
                 "labels": torch.tensor([1, 3]), "scores": torch.tensor([0.9, 0.99])} for _ in images]


def test_a_video_without_detections_gets_the_person_detector_once(tiny_run, made, tmp_path, capsys, monkeypatch):
    """Boxes from the detector (people only), linked into one tracklet; a second search
    takes the detector's boxes and the descriptors from the cache, whatever the output."""
    from reid.search import detector
    fake = FakeDetector()
    monkeypatch.setattr(detector, "load_detector", lambda device, name: fake)
    root, _ = made
    query = tmp_path / "query.png"
    Image.new("RGB", (16, 32), (200, 40, 40)).save(query)
    out, _ = searched(capsys, tiny_run, "--query", query, "--gallery", root / "cam1.mp4", "--stride", "3",
                      "--output", tmp_path / "one", "--no-pictures")
    found = rows(tmp_path / "one" / "results.csv")
    assert fake.frames == 4 and "person detector on 4 frames (1 in 3)" in out  # frames 1, 4, 7, 10 of 12
    assert len(found) == 1 and (found[0]["first_frame"], found[0]["last_frame"]) == ("1", "10")
    assert (float(found[0]["left"]), float(found[0]["top"]), float(found[0]["width"])) == (41, 21, 40)
    out, _ = searched(capsys, tiny_run, "--query", query, "--gallery", root / "cam1.mp4", "--stride", "3",
                      "--output", tmp_path / "two", "--no-pictures")
    assert fake.frames == 4 and "from the cache" in out
    assert rows(tmp_path / "two" / "results.csv") == found


def test_under_torchrun_the_footage_is_shared_out_and_the_answer_is_the_same(tiny_run, made, tmp_path):
    """Two processes (gloo, CPU) describe one camera each into the run's cache; the first then
    answers from there, as one process answers."""
    root, _ = made
    work = tmp_path / "work"
    shutil.copytree(tiny_run / "model", work / "model", ignore=shutil.ignore_patterns("cache"))
    query = root / "query" / sorted(os.listdir(root / "query"))[0]
    args = ["--name", "tiny", "--gpu_ids", "-1", "--num_workers", "0", "--query", str(query), "--gallery",
            str(root / "cam1"), str(root / "cam2"), "--ground_truth", "--no-pictures"]
    two = torchrun("search.py", *args, "--output", "two", cwd=work)
    assert two.returncode == 0, two.stderr[-2000:]
    # the first process says what it described of its share, then takes it all from the cache
    assert two.stdout.count("described now") == 1 and two.stdout.count("from the cache") == 2
    one = run_script("search.py", *args, "--output", "one", cwd=work)
    assert one.returncode == 0, one.stderr[-2000:]
    # torchrun runs each process on one thread: the query's descriptor may differ in the last bits
    one, two = rows(work / "one" / "results.csv"), rows(work / "two" / "results.csv")
    scores = ("cosine", "p_same", "p_head", "p_head_raw")
    assert [{k: v for k, v in r.items() if k not in scores} for r in one] == \
        [{k: v for k, v in r.items() if k not in scores} for r in two]
    assert [float(r["cosine"]) for r in one] == pytest.approx([float(r["cosine"]) for r in two], abs=1e-5)


def test_the_readme_command_a_video_and_a_sequence_with_a_detections_file_each(tiny_run, made, tmp_path, capsys):
    """search.py --gallery cam1.mp4 cam2/ --detections cam1.txt cam2/det/det.txt: both searched,
    each with its own boxes (det.txt: no track ids, linked by motion and appearance)."""
    root, _ = made
    query = root / "query" / sorted(os.listdir(root / "query"))[0]
    out, _ = searched(capsys, tiny_run, "--query", query, "--gallery", root / "cam1.mp4", root / "cam2",
                      "--detections", root / "cam1" / "det" / "det.txt", root / "cam2" / "det" / "det.txt",
                      "--output", tmp_path / "out", "--top", "100", "--no-pictures")
    found = rows(tmp_path / "out" / "results.csv")
    assert {r["video"] for r in found} == {str(root / "cam1.mp4"), str(root / "cam2")}
    assert out.count("boxes (MOT15)") == 2 and out.count("footage ") == 2


def one_frame_video(sequence, frame, path):
    """A video of one frame of the sequence alone."""
    import av
    import numpy as np
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        first = Image.open(sequence / "img1" / f"{frame:06d}.jpg").convert("RGB")
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(first), format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize("case", ["one walker", "boxes that all overlap", "a video of one frame"])
def test_footage_without_pairs_of_people_says_so_in_one_line_and_answers(tiny_run, made, tmp_path, case):
    """Footage that gives no pairs of different people (decisions.py) is searched all the same, on
    the run's calibration, and one line says why; everything it writes is whole."""
    root, manifest = made
    cam1 = root / "cam1"
    footage, truth = ground_truth(cam1)
    gallery = str(cam1)
    if case == "one walker":
        boxes = [b for b in truth if b.id == truth[0].id]
    elif case == "boxes that all overlap":
        boxes = [b._replace(left=b.left + shift) for b in truth if b.id == truth[0].id for shift in (0, 1)]
    else:
        busiest = max({b.frame for b in truth}, key=lambda n: sum(b.frame == n for b in truth))
        one_frame_video(cam1, busiest, tmp_path / "one.mp4")
        gallery, boxes = str(tmp_path / "one.mp4"), [b._replace(frame=1) for b in truth if b.frame == busiest]
    detections = tmp_path / "boxes.txt"
    detections.write_text("".join(f"{b.frame},-1,{b.left},{b.top},{b.width},{b.height},1,-1,-1,-1\n" for b in boxes))
    query = next((root / "query").iterdir())
    out = run_script("search.py", "--name", "tiny", "--gpu_ids", "-1", "--query", str(query), "--gallery", gallery,
                     "--detections", str(detections), "--output", str(tmp_path / "out"), cwd=tiny_run)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    notes = [line for line in out.stderr.splitlines() if "the run's calibration decides" in line]
    assert len(notes) == 1 and ("shows two people apart" in notes[0] or "fewer than the 300" in notes[0])
    assert len(rows(tmp_path / "out" / "results.csv")) >= 1
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".") or f.endswith(".tmp")]
