"""footage.py: sequence folders and videos read frame by frame, MOTChallenge detections of every
layout checked against them, boxes linked into tracklets, crops and times; every bad input a
one-line UserError naming its file. The footage is drawn here: two coloured rectangles moving
apart across a 64 x 48 background, 12 frames at 10 frames/s."""
import os

import av
import numpy as np
import pytest
from PIL import Image

from reid.cli import UserError
from reid.search import footage, tracking

WIDTH, HEIGHT, LENGTH, FPS = 64, 48, 12, 10
RED, BLUE = (220, 30, 30), (30, 30, 220)
BOX_W, BOX_H = 10, 14


def people(n):
    """The two rectangles of frame n as (colour, 0-based left, top): red moves right, blue left."""
    return [(RED, 2 + 2 * (n - 1), 4), (BLUE, 50 - 2 * (n - 1), 28)]


def drawn(n):
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for colour, left, top in people(n):
        frame[top:top + BOX_H, left:left + BOX_W] = colour
    return frame


def mot_lines(n, ids=(1, 2), tail=(1, -1, -1, -1)):
    """The file's lines for frame n's rectangles (pixels counted from 1), with these ids and last columns."""
    return [",".join(map(str, (n, i, left + 1, top + 1, BOX_W, BOX_H, *tail)))
            for i, (_, left, top) in zip(ids, people(n))]


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


SEQINFO = (f"[Sequence]\nname=Walk\nimDir=img1\nframeRate={FPS}\nseqLength={LENGTH}\n"
           f"imWidth={WIDTH}\nimHeight={HEIGHT}\n")


@pytest.fixture
def sequence(tmp_path):
    """A MOTChallenge sequence folder: lossless frames, seqinfo.ini, gt.txt (MOT16/17) and det.txt (ids -1)."""
    folder = tmp_path / "Walk sequence"
    os.makedirs(folder / "img1")
    for n in range(1, LENGTH + 1):
        Image.fromarray(drawn(n)).save(folder / "img1" / f"{n:06d}.png")
    (folder / "seqinfo.ini").write_text(SEQINFO)
    write(folder / "gt" / "gt.txt", [line for n in range(1, LENGTH + 1) for line in mot_lines(n, tail=(1, 1, 1.0))])
    write(folder / "det" / "det.txt", [line for n in range(1, LENGTH + 1) for line in mot_lines(n, ids=(-1, -1))])
    return str(folder)


def write_video(path, count=LENGTH):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for n in range(1, count + 1):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(drawn(n), format="rgb24")))
        container.mux(stream.encode())
    return str(path)


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "walk.mp4")


def test_a_sequence_gives_every_frame_with_its_number_and_time(sequence):
    seq = footage.open_footage(sequence)
    assert (seq.kind, seq.name, seq.fps, seq.length, seq.width, seq.height, seq.note) == \
        ("sequence", "Walk", FPS, LENGTH, WIDTH, HEIGHT, "")
    read = list(footage.frames(seq))
    assert [n for n, _, _ in read] == list(range(1, LENGTH + 1))
    assert [t for _, t, _ in read] == pytest.approx([(n - 1) / FPS for n in range(1, LENGTH + 1)])
    assert all(rgb.dtype == np.uint8 and np.array_equal(rgb, drawn(n)) for n, _, rgb in read)
    assert [(n, round(t, 9)) for n, t, _ in footage.frames(seq, stride=5)] == [(1, 0.0), (6, 0.5), (11, 1.0)]


def test_a_video_gives_every_frame_with_its_number_and_time(video):
    clip = footage.open_footage(video)
    assert (clip.kind, clip.name, clip.fps, clip.length, clip.width, clip.height) == \
        ("video", "walk", FPS, LENGTH, WIDTH, HEIGHT)
    read = list(footage.frames(clip))
    assert [n for n, _, _ in read] == list(range(1, LENGTH + 1))
    assert [t for _, t, _ in read] == pytest.approx([(n - 1) / FPS for n in range(1, LENGTH + 1)])
    for n, _, rgb in read:  # lossy, but each frame is its own and in RGB order
        assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
        assert np.abs(rgb.astype(int) - drawn(n)).mean() < 8
    assert [n for n, _, _ in footage.frames(clip, stride=4)] == [1, 5, 9]


def test_footage_is_told_from_images_and_folders_of_crops(sequence, video, tmp_path):
    crops = tmp_path / "crops"
    os.makedirs(crops)
    Image.fromarray(drawn(1)).save(crops / "a.jpg")
    assert footage.is_footage(sequence) and footage.is_footage(video)
    assert not footage.is_footage(str(crops)) and not footage.is_footage(str(crops / "a.jpg"))
    with pytest.raises(UserError, match="crops is neither a video file"):
        footage.open_footage(str(crops))


@pytest.mark.parametrize("tail, layout", [((1, -1, -1, -1), "MOT15"), ((1, 1, 0.8), "MOT16/17"), ((0.9,), "7 columns")])
def test_every_layout_is_read(sequence, tail, layout):
    seq = footage.open_footage(sequence)
    path = write(os.path.join(sequence, "mine", "boxes.txt"),
                 [line for n in range(1, LENGTH + 1) for line in mot_lines(n, tail=tail)])
    boxes, summary = footage.read_detections(path, seq)
    assert (summary.layout, summary.boxes, summary.kept) == (layout, 2 * LENGTH, 2 * LENGTH)
    assert boxes[0] == footage.Box(1, 1, 3, 5, BOX_W, BOX_H, tail[0])
    assert str(summary) == f"{path}: {2 * LENGTH} boxes ({layout}), {2 * LENGTH} kept"


def test_ground_truth_keeps_considered_visible_pedestrians(sequence):
    seq = footage.open_footage(sequence)
    gt = footage.default_detections(seq, ground_truth=True)
    assert gt == os.path.join(sequence, "gt", "gt.txt")
    with open(gt, "a") as f:
        f.write("1,3,20,20,10,14,1,3,1\n"      # a car
                "2,4,20,20,10,14,0,1,1\n"      # not to be considered
                "3,5,20,20,10,14,1,1,0.2\n")   # mostly hidden
    boxes, summary = footage.read_detections(gt, seq, ground_truth=True, min_visibility=0.5)
    assert {b.id for b in boxes} == {1, 2} and len(boxes) == 2 * LENGTH
    assert (summary.not_pedestrian, summary.ignored, summary.hidden) == (1, 1, 1)
    assert "1 not pedestrians" in str(summary) and "1 less visible than 0.5" in str(summary)
    # read as detections, every box counts
    assert footage.read_detections(gt, seq)[1].kept == 2 * LENGTH + 3


def test_cvat_export_names_the_person_class_in_labels_txt(sequence):
    """CVAT's "MOT 1.1" export: 9 columns, class = the line of gt/labels.txt (from 1), conf = not ignored."""
    seq = footage.open_footage(sequence)
    gt = write(os.path.join(sequence, "cvat", "gt", "gt.txt"),
               ["1,1,3,5,10,14,1,3,0.86", "1,2,20,20,10,14,1,1,1.0", "2,1,5,5,10,14,0,3,1.0"])
    write(os.path.join(sequence, "cvat", "gt", "labels.txt"), ["cat", "dog", "person"])
    boxes, summary = footage.read_detections(gt, seq, ground_truth=True)
    assert [(b.frame, b.id) for b in boxes] == [(1, 1)] and (summary.not_pedestrian, summary.ignored) == (1, 1)
    write(os.path.join(sequence, "cvat", "gt", "labels.txt"), ["cat", "dog"])
    with pytest.raises(UserError, match=r"labels\.txt names no pedestrian or person label"):
        footage.read_detections(gt, seq, ground_truth=True)


def test_boxes_are_clipped_to_the_frame_or_skipped(sequence):
    seq = footage.open_footage(sequence)
    path = write(os.path.join(sequence, "mine", "edges.txt"), [
        "1,-1,-4,10,20,30,0.9,-1,-1,-1",    # 5 columns left of the frame: clipped to 1..16
        "1,-1,60,40,20,30,0.9,-1,-1,-1",    # past the right and bottom edges: 5 x 9 pixels once clipped
        "1,-1,-40,10,20,30,0.9,-1,-1,-1",   # wholly left of the frame
        "1,-1,10,49,20,30,0.9,-1,-1,-1",    # wholly below it
        "1,-1,10,10,5,30,0.9,-1,-1,-1",     # 5 pixels wide
        "1,-1,10,10,20,30,0.9,-1,-1,-1",    # inside
    ])
    boxes, summary = footage.read_detections(path, seq)
    assert boxes == [footage.Box(1, -1, 1, 10, 15, 30, 0.9), footage.Box(1, -1, 10, 10, 20, 30, 0.9)]
    assert (summary.clipped, summary.outside, summary.small, summary.kept) == (1, 2, 2, 2)
    assert str(summary) == (f"{path}: 6 boxes (MOT15), 2 kept; 1 clipped to the 64 x 48 frame, 2 wholly outside the "
                            f"frame (skipped), 2 smaller than 8 pixels (skipped)")
    smaller = footage.read_detections(path, seq, min_size=4)[1]
    assert (smaller.small, smaller.clipped, smaller.kept) == (0, 2, 4)


@pytest.mark.parametrize("lines, message", [
    (["1,-1,3,5,10,14,0.9,-1"], r"line 1 has 8 comma-separated columns, a MOTChallenge file 10 \(frame,id,"),
    (["1 -1 3 5 10 14 0.9 -1 -1 -1"], "line 1 has 1 comma-separated columns"),
    (["1,-1,3,5,10,14,0.9,-1,-1,-1", "2,-1,3,5,10,14,0.9"], "line 2 has 7 columns and line 1 10; a file holds one"),
    (["frame,id,left,top,width,height,conf"], r"line 1: frame is 'frame', not an integer; .*remove any header line"),
    (["1,-1,3,5,ten,14,0.9"], "line 1: width is 'ten', not a number"),
    (["1,-1,3,5,nan,14,0.9"], "line 1: width is 'nan', not a number"),
    (["1.5,-1,3,5,10,14,0.9"], "line 1: frame is '1.5', not an integer"),
    (["13,-1,3,5,10,14,0.9"], "line 1: frame 13 is outside .* which has frames 1 to 12: are these the detections of"),
    (["", "0,-1,3,5,10,14,0.9"], "line 2: frame 0 is outside"),
])
def test_bad_detections_name_the_file_and_line(sequence, lines, message):
    seq = footage.open_footage(sequence)
    path = write(os.path.join(sequence, "mine", "bad.txt"), lines)
    with pytest.raises(UserError, match=message) as e:
        footage.read_detections(path, seq)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_a_video_has_no_default_detections_and_a_sequence_may_lack_them(sequence, video):
    with pytest.raises(UserError, match="walk.mp4 is a video: give its detections file"):
        footage.default_detections(footage.open_footage(video))
    os.remove(os.path.join(sequence, "det", "det.txt"))
    with pytest.raises(UserError, match=r"det/det\.txt does not exist"):
        footage.default_detections(footage.open_footage(sequence))


def test_unreadable_videos_name_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mov"
    junk.write_bytes(b"not a video " * 100)
    framesless = tmp_path / "framesless.avi"  # a video stream that holds no frame
    with av.open(str(framesless), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = WIDTH, HEIGHT
        container.start_encoding()
    for path, message in [(empty, "cannot be read as a video"), (junk, "cannot be read as a video"),
                          (framesless, "holds no frames"), (tmp_path / "missing.mp4", "does not exist")]:
        with pytest.raises(UserError, match=message) as e:
            footage.open_footage(str(path))
        assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


@pytest.mark.parametrize("seqinfo, message", [
    ("name=Walk\nframeRate=10\n", "seqinfo.ini is not a readable ini file .File contains no section headers."),
    ("[Sequence]\nname=Walk\n", "seqinfo.ini lacks frameRate under .Sequence.; add it"),
    (SEQINFO.replace(f"frameRate={FPS}", "frameRate=fast"), "seqinfo.ini: frameRate=fast is not a positive number"),
    (SEQINFO.replace(f"seqLength={LENGTH}", "seqLength=0"), "seqinfo.ini: seqLength=0 is not a positive integer"),
    (SEQINFO.replace("[Sequence]", "[Seq]"), r"seqinfo.ini has no \[Sequence\] section"),
    (SEQINFO.replace(f"seqLength={LENGTH}", "seqLength=13"), r"img1 does not hold frames 1 to 13 exactly \(the first "
                                                             r"missing: frame 13\); fix seqLength in .*seqinfo.ini"),
    (SEQINFO.replace(f"seqLength={LENGTH}", "seqLength=11"), r"img1 does not hold frames 1 to 11 exactly \(it goes on"),
    (SEQINFO.replace(f"imWidth={WIDTH}", "imWidth=640"), r"seqinfo.ini says the frames are 640 x 48, but .*000001.png"),
])
def test_a_malformed_seqinfo_names_the_file_and_the_fix(sequence, seqinfo, message):
    with open(os.path.join(sequence, "seqinfo.ini"), "w") as f:
        f.write(seqinfo)
    with pytest.raises(UserError, match=message) as e:
        footage.open_footage(sequence)
    assert str(e.value).startswith(sequence) and "\n" not in str(e.value)


def test_a_sequence_without_seqinfo_counts_its_frames_and_says_what_it_assumed(sequence):
    os.remove(os.path.join(sequence, "seqinfo.ini"))
    seq = footage.open_footage(sequence)
    assert (seq.length, seq.fps, seq.name, seq.width, seq.height) == (LENGTH, footage.DEFAULT_FPS, "Walk sequence",
                                                                      WIDTH, HEIGHT)
    assert seq.note == (f"{sequence} has no seqinfo.ini: 12 frames found in img1/, frame rate taken as 25 frames/s "
                        f"(times are only as right as that; add seqinfo.ini to fix)")
    os.remove(os.path.join(sequence, "img1", "000005.png"))
    with pytest.raises(UserError, match=r"img1 does not hold frames 1 to 12 exactly \(the first missing: frame 5\); "
                                        r"number the frames"):
        footage.open_footage(sequence)


def test_a_sequence_without_img1_names_the_folder(sequence, tmp_path):
    for name in os.listdir(os.path.join(sequence, "img1")):
        os.rename(os.path.join(sequence, "img1", name), tmp_path / name)
    with pytest.raises(UserError, match=r"img1 holds no images \(.jpg"):
        footage.open_footage(sequence)
    os.rmdir(os.path.join(sequence, "img1"))
    with pytest.raises(UserError, match=r"Walk sequence has no img1/ folder of frames"):
        footage.open_footage(sequence)
    Image.fromarray(drawn(1)).save(tmp_path / "stray.png")
    os.makedirs(os.path.join(sequence, "img1"))
    os.rename(tmp_path / "stray.png", os.path.join(sequence, "img1", "first.png"))
    with pytest.raises(UserError, match=r"first.png is not named by its frame number"):
        footage.open_footage(sequence)


def test_overlap_links_two_moving_boxes_into_two_tracklets(sequence):
    seq = footage.open_footage(sequence)
    boxes, _ = footage.read_detections(footage.default_detections(seq), seq)
    tracklets = tracking.link_tracklets(boxes, seq.fps)
    assert [(t.id, t.first_frame, t.last_frame, len(t.boxes)) for t in tracklets] == [(1, 1, 12, 12), (2, 1, 12, 12)]
    red, blue = tracklets
    assert red.boxes[-1].left == 2 + 2 * 11 + 1 and blue.boxes[-1].left == 50 - 2 * 11 + 1
    assert (red.first_time, red.last_time) == pytest.approx((0.0, 1.1))
    # every second frame: the boxes move 4 pixels between samples and still overlap (IoU 0.43)
    sampled = tracking.link_tracklets(boxes, seq.fps, stride=2)
    assert [[b.frame for b in t.boxes] for t in sampled] == [[1, 3, 5, 7, 9, 11]] * 2


def test_a_tracklet_ends_after_more_than_max_gap_sampled_frames_unseen():
    """A box standing still, unseen on frames 4 to 7 (every frame sampled), or 4 to 9 (every second)."""
    still = [footage.Box(n, -1, 10, 10, 10, 14, 1.0) for n in (1, 2, 3, 8, 9, 10)]
    assert [(t.first_frame, t.last_frame) for t in tracking.link_tracklets(still, FPS, max_gap=3)] == [(1, 3), (8, 10)]
    assert [(t.id, t.first_frame, t.last_frame) for t in tracking.link_tracklets(still, FPS, max_gap=4)] == [(1, 1, 10)]
    sparse = [footage.Box(n, -1, 10, 10, 10, 14, 1.0) for n in (1, 3, 11, 13)]  # frames 5, 7, 9 sampled, unseen
    assert len(tracking.link_tracklets(sparse, FPS, stride=2, max_gap=3)) == 1
    assert len(tracking.link_tracklets(sparse, FPS, stride=2, max_gap=2)) == 2


def test_with_motion_a_person_speeding_up_stays_one_tracklet():
    """A box 10 pixels wide moving right 3, 5, then 6 pixels a frame: from 6 on, a box overlaps the one
    before by IoU 0.25, below 0.3, and overlap alone splits the person; predicted at its velocity so
    far (8 pixels over 2 frames by frame 4: at 12, seen at 14, IoU 0.67), it stays one tracklet."""
    walker = [footage.Box(n, -1, x, 10, 10, 14, 1.0) for n, x in enumerate((0, 3, 8, 14, 20, 26, 32), 1)]
    assert len(tracking.link_tracklets(walker, FPS)) > 1
    linked = tracking.link_tracklets(walker, FPS, motion=True)
    assert [[b.frame for b in t.boxes] for t in linked] == [list(range(1, 8))]


def test_track_ids_link_boxes_where_the_file_has_them(sequence):
    """Ids 7 and 9 swap rectangles after frame 6: the ids, not the overlaps, decide."""
    seq = footage.open_footage(sequence)
    lines = [line for n in range(1, LENGTH + 1) for line in mot_lines(n, ids=(7, 9) if n <= 6 else (9, 7))]
    boxes, _ = footage.read_detections(write(os.path.join(sequence, "mine", "tracked.txt"), lines), seq)
    tracklets = tracking.link_tracklets(boxes, seq.fps)
    assert [(t.id, len(t.boxes)) for t in tracklets] == [(7, 12), (9, 12)]
    assert [b.top for b in tracklets[0].boxes] == [5] * 6 + [29] * 6


def test_crops_come_from_one_pass_over_the_footage(sequence, video):
    seq = footage.open_footage(sequence)
    boxes, _ = footage.read_detections(footage.default_detections(seq, ground_truth=True), seq, ground_truth=True)
    crops = list(footage.crop_boxes(seq, boxes))
    assert [box for box, _ in crops] == boxes
    for box, crop in crops:
        assert crop.size == (BOX_W, BOX_H) and crop.mode == "RGB"
        colours = np.unique(np.asarray(crop).reshape(-1, 3), axis=0)
        assert colours.tolist() == [list(RED if box.id == 1 else BLUE)]  # lossless frames: exactly the rectangle
    clip = footage.open_footage(video)
    first, second = footage.crop_boxes(clip, [footage.Box(3, -1, 1, 1, 64, 48, 1.0),
                                              footage.Box(5, -1, 11, 5, 10, 14, 1.0)])
    assert first[1].size == (WIDTH, HEIGHT) and second[1].size == (BOX_W, BOX_H)
    assert np.abs(np.asarray(second[1], dtype=int) - RED).mean() < 20
    with pytest.raises(UserError, match="walk.mp4 has no frame 13, but there are boxes on 1 frame"):
        list(footage.crop_boxes(clip, [footage.Box(13, -1, 1, 1, 10, 10, 1.0)]))


@pytest.mark.parametrize("seconds, shown", [(0, "00:00:00.0"), (83.44, "00:01:23.4"), (59.96, "00:01:00.0"),
                                            (3725.3, "01:02:05.3"), (360000.04, "100:00:00.0")])
def test_times_read_as_hours_minutes_and_seconds(seconds, shown):
    assert footage.format_time(seconds) == shown
