"""Footage: a video file or a MOTChallenge sequence folder read frame by frame, and the boxes of a
MOTChallenge detections file checked against it and cropped, so that a search can say where and
when a person appears (tracking.py links the boxes into tracklets).

Footage
    video file          .mp4, .avi, .mkv, .mov: decoded with PyAV (FFmpeg inside its wheel; chosen
                        by measurement, docs/benchmarks.md#decoding-which-library)
    sequence folder     the MOTChallenge layout:
        seqinfo.ini         [Sequence] name, frameRate, seqLength, imWidth, imHeight
        img1/000001.jpg     frame 1, and so on (any image type of data.IMAGE_EXTENSIONS)
        det/det.txt         detections, id -1
        gt/gt.txt           ground truth, with track ids
Frames count from 1; frame n is shown at (n - 1) / frame rate seconds (the stream's average rate:
a phone's variable-rate video drifts from its own clock by a fraction of a second).

Detections: MOTChallenge text, a box a line, comma-separated. Frames and pixels count from 1: a box
covers the columns left .. left + width - 1, so the frame spans 1 .. imWidth.
    10 columns  frame,id,left,top,width,height,conf,x,y,z             MOT15 (x, y, z: world coordinates
                                                                       or -1), and MOT16/17's det.txt
    9 columns   frame,id,left,top,width,height,conf,class,visibility  MOT16/17 gt.txt; CVAT's "MOT 1.1"
                                                                       export (conf is its "not ignored"
                                                                       flag, class the line of the
                                                                       labels.txt beside it, from 1)
    7 columns   frame,id,left,top,width,height,conf                   trackers' output
id is -1 for a box without a track; in ground truth, conf 0 marks a box not to be considered.
"""
import configparser
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

from reid.cli import UserError
from reid.data import IMAGE_EXTENSIONS, UnreadableImage, is_image, load_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
SEQINFO = "seqinfo.ini"
FRAMES_DIR = "img1"
DETECTIONS = os.path.join("det", "det.txt")
GROUND_TRUTH = os.path.join("gt", "gt.txt")
# seqinfo.ini's numbers, and what each must be
SEQINFO_KEYS = {"frameRate": float, "seqLength": int, "imWidth": int, "imHeight": int}
# The frame rate of a sequence folder without seqinfo.ini: most MOTChallenge sequences run at 25 or 30
DEFAULT_FPS = 25.0
SEQUENCE_HELP = "a MOTChallenge sequence folder: img1/000001.jpg... and seqinfo.ini"

# the column names of each layout, by the number of columns
LAYOUTS = {
    10: ("frame", "id", "left", "top", "width", "height", "conf", "x", "y", "z"),
    9: ("frame", "id", "left", "top", "width", "height", "conf", "class", "visibility"),
    7: ("frame", "id", "left", "top", "width", "height", "conf"),
}
LAYOUT_NAMES = {10: "MOT15", 9: "MOT16/17", 7: "7 columns"}
# MOT16/17's class of pedestrians, the only one their benchmark scores; CVAT's export names the class
# by its line in labels.txt instead, where one of these names is a person
PEDESTRIAN = 1
PERSON_LABELS = ("pedestrian", "person")
# Smaller boxes are skipped: a crop a few pixels across shows no person
MIN_BOX = 8


@dataclass
class Footage:
    """What reading footage needs to know. length is None for a video that does not say how many
    frames it holds (some .mkv); note says what was assumed, or is empty."""
    path: str
    kind: str  # "video" or "sequence"
    name: str
    fps: float
    length: int | None
    width: int
    height: int
    note: str = ""
    frame_files: tuple = ()  # a sequence's image of frame n at frame_files[n - 1]


class Box(NamedTuple):
    """A box of a detections file, clipped to the frame; pixels count from 1, as in the file."""
    frame: int
    id: int
    left: float
    top: float
    width: float
    height: float
    conf: float


@dataclass
class DetectionSummary:
    """What read_detections kept and why it left boxes out; str() is the line to print."""
    path: str
    layout: str
    boxes: int = 0
    kept: int = 0
    clipped: int = 0
    outside: int = 0
    small: int = 0
    ignored: int = 0
    not_pedestrian: int = 0
    hidden: int = 0
    frame_size: tuple = (0, 0)
    min_size: float = MIN_BOX
    min_visibility: float = 0.0

    def __str__(self):
        width, height = self.frame_size
        reasons = [(self.clipped, f"clipped to the {width} x {height} frame"),
                   (self.outside, "wholly outside the frame (skipped)"),
                   (self.small, f"smaller than {self.min_size:g} pixels (skipped)"),
                   (self.ignored, "marked not to be considered, conf 0 (skipped)"),
                   (self.not_pedestrian, "not pedestrians (skipped)"),
                   (self.hidden, f"less visible than {self.min_visibility:g} (skipped)")]
        said = [f"{count} {reason}" for count, reason in reasons if count]
        return (f"{self.path}: {self.boxes} boxes ({self.layout}), {self.kept} kept"
                + (f"; {', '.join(said)}" if said else ""))


def frame_time(frame, fps):
    """Seconds from the start of the footage to frame `frame` (counted from 1)."""
    return (frame - 1) / fps


def format_time(seconds):
    """A time as hh:mm:ss.s, e.g. 83.44 s as 00:01:23.4."""
    tenths = round(seconds * 10)  # rounded once, so that 59.96 s becomes 00:01:00.0, not 00:00:60.0
    hours, tenths = divmod(tenths, 36000)
    minutes, tenths = divmod(tenths, 600)
    return f"{hours:02d}:{minutes:02d}:{tenths / 10:04.1f}"


def is_footage(path):
    """Whether a path is footage (a video file or a sequence folder) rather than an image or a
    folder of crops. A folder counts as a sequence when it holds any of seqinfo.ini, img1/,
    det/det.txt or gt/gt.txt, so that open_footage can say what else it lacks."""
    if os.path.isfile(path):
        return path.lower().endswith(VIDEO_EXTENSIONS)
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, marker))
                                       for marker in (SEQINFO, FRAMES_DIR, DETECTIONS, GROUND_TRUTH))


def open_footage(path):
    """The Footage of a video file or a sequence folder, checked: its first frame decodes, and a
    sequence's frames are all there. Anything else is a UserError naming the file and the fix."""
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist; give a video file ({', '.join(VIDEO_EXTENSIONS)}) or {SEQUENCE_HELP}")
    if not is_footage(path):
        raise UserError(f"{path} is neither a video file ({', '.join(VIDEO_EXTENSIONS)}) nor {SEQUENCE_HELP}")
    return open_video(path) if os.path.isfile(path) else open_sequence(path)


def open_video(path):
    """The Footage of a video file: its first video stream's rate, size and frame count."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise UserError(f"{path} holds no video stream (sound only?); give a video file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise UserError(f"{path} does not say its frame rate; convert it, e.g. ffmpeg -i {path} -r 25 out.mp4")
            first = next(container.decode(stream), None)
            length = stream.frames or None  # 0 where the container does not say
    except av.error.FFmpegError as e:  # what PyAV raises on bytes that are not a video it can decode
        raise UserError(f"{path} cannot be read as a video ({e.strerror}); check that the file is whole and "
                        f"play it, or convert it: ffmpeg -i {path} out.mp4") from None
    if first is None:
        raise UserError(f"{path} holds no frames; give a video that plays")
    return Footage(path, "video", os.path.splitext(os.path.basename(path))[0], float(rate), length, first.width,
                   first.height)


def read_seqinfo(path):
    """[Sequence] of a seqinfo.ini: frameRate, seqLength, imWidth and imHeight (positive numbers) and name."""
    parser = configparser.ConfigParser(interpolation=None)  # keys match in any case: frameRate, framerate
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable ini file ({str(e).splitlines()[0]}); it should hold a [Sequence] "
                        f"section with {', '.join(SEQINFO_KEYS)}") from None
    if not parser.has_section("Sequence"):
        raise UserError(f"{path} has no [Sequence] section; add one with {', '.join(SEQINFO_KEYS)}")
    section = parser["Sequence"]
    info = {"name": section.get("name", os.path.basename(os.path.dirname(os.path.abspath(path))))}
    for key, kind in SEQINFO_KEYS.items():
        text = section.get(key)
        if text is None:
            raise UserError(f"{path} lacks {key} under [Sequence]; add it, e.g. {key}=25")
        try:
            info[key] = kind(text)
        except ValueError:
            info[key] = math.nan
        if not info[key] > 0:  # also refuses nan
            raise UserError(f"{path}: {key}={text} is not a positive {'integer' if kind is int else 'number'}; fix it")
    return info


def open_sequence(folder):
    """The Footage of a MOTChallenge sequence folder. Without seqinfo.ini the frames of img1/ are
    counted and the frame rate is DEFAULT_FPS, which the note says; a seqinfo.ini that does not
    match img1/ is a UserError."""
    frames_dir = os.path.join(folder, FRAMES_DIR)
    if not os.path.isdir(frames_dir):
        raise UserError(f"{folder} has no {FRAMES_DIR}/ folder of frames; it should be {SEQUENCE_HELP}")
    files = {}
    for name in os.listdir(frames_dir):
        if is_image(name):
            stem = os.path.splitext(name)[0]
            if not stem.isdigit():
                raise UserError(f"{os.path.join(frames_dir, name)} is not named by its frame number (000001.jpg for "
                                f"frame 1); rename the frames, or move it out of {frames_dir}")
            files[int(stem)] = os.path.join(frames_dir, name)
    if not files:
        raise UserError(f"{frames_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); it should hold the frames "
                        f"000001.jpg...")
    seqinfo = os.path.join(folder, SEQINFO)
    if os.path.isfile(seqinfo):
        info = read_seqinfo(seqinfo)
        length, note = info["seqLength"], ""
    else:
        length = max(files)
        info = {"name": os.path.basename(os.path.abspath(folder)), "frameRate": DEFAULT_FPS}
        note = (f"{folder} has no {SEQINFO}: {length} frames found in {FRAMES_DIR}/, frame rate taken as "
                f"{DEFAULT_FPS:g} frames/s (times are only as right as that; add {SEQINFO} to fix)")
    missing = [n for n in range(1, length + 1) if n not in files]
    if missing or max(files) > length:
        raise UserError(f"{frames_dir} does not hold frames 1 to {length} exactly"
                        + (f" (the first missing: frame {missing[0]})" if missing else
                           f" (it goes on to frame {max(files)})")
                        + (f"; fix seqLength in {seqinfo}, or the frames" if os.path.isfile(seqinfo) else
                           "; number the frames 000001.jpg... without gaps"))
    width, height = read_frame(files[1]).size
    if os.path.isfile(seqinfo) and (width, height) != (info["imWidth"], info["imHeight"]):
        raise UserError(f"{seqinfo} says the frames are {info['imWidth']} x {info['imHeight']}, but {files[1]} is "
                        f"{width} x {height}; fix imWidth and imHeight")
    return Footage(folder, "sequence", info["name"], info["frameRate"], length, width, height, note,
                   tuple(files[n] for n in range(1, length + 1)))


def read_frame(path):
    """A sequence's frame as an RGB PIL image, or a UserError naming the file."""
    try:
        return load_image(path)
    except UnreadableImage:
        raise UserError(f"{path} cannot be decoded as an image; replace the frame with a readable one") from None


def decoded(footage, wanted):
    """(frame number, RGB frame as an H x W x 3 uint8 array) of each frame n for which wanted(n)
    is true. A video's frames are all decoded (each depends on those before), but only the wanted
    ones are converted to RGB; a sequence's other images are not opened at all."""
    if footage.kind == "sequence":
        for n, path in enumerate(footage.frame_files, 1):
            if wanted(n):
                yield n, np.asarray(read_frame(path))
        return
    n = 0
    with av.open(footage.path) as container:
        try:
            for n, frame in enumerate(container.decode(container.streams.video[0]), 1):
                if wanted(n):
                    yield n, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise UserError(f"{footage.path} cannot be decoded after frame {n} ({e.strerror}); the file is damaged: "
                            f"convert what plays, e.g. ffmpeg -i {footage.path} out.mp4") from None


def frames(footage, stride=1):
    """(frame number from 1, time in seconds, RGB frame as an H x W x 3 uint8 array) of every
    stride-th frame: frames 1, 1 + stride, 1 + 2 * stride, ..."""
    if stride < 1:
        raise UserError(f"a stride of {stride} frames: give 1 (every frame) or more")
    for n, rgb in decoded(footage, lambda n: (n - 1) % stride == 0):
        yield n, frame_time(n, footage.fps), rgb


def default_detections(footage, ground_truth=False):
    """A sequence folder's detections file: det/det.txt, or gt/gt.txt for its ground truth."""
    which = GROUND_TRUTH if ground_truth else DETECTIONS
    if footage.kind != "sequence":
        raise UserError(f"{footage.path} is a video: give its detections file (MOTChallenge text, e.g. {which})")
    path = os.path.join(footage.path, which)
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; give the detections file of {footage.path}")
    return path


def read_rows(path):
    """(line number, number of columns, values as floats) of each line of a MOTChallenge file that
    is not blank; a UserError naming the file and line at a wrong column count or a non-number."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} cannot be read as text ({e}); give a MOTChallenge detections file") from None
    expected = "; ".join(f"{n} ({','.join(names)})" for n, names in LAYOUTS.items())
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) not in LAYOUTS:
            raise UserError(f"{path} line {number} has {len(fields)} comma-separated columns, a MOTChallenge file "
                            f"{expected}; fix or convert the file")
        if rows and len(fields) != rows[0][1]:
            raise UserError(f"{path} line {number} has {len(fields)} columns and line {rows[0][0]} {rows[0][1]}; "
                            f"a file holds one layout: fix the lines that differ")
        values = []
        for name, text in zip(LAYOUTS[len(fields)], fields):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or (name in ("frame", "id") and value != int(value)):
                raise UserError(f"{path} line {number}: {name} is {text.strip()!r}, not "
                                f"{'an integer' if name in ('frame', 'id') else 'a number'}; a MOTChallenge file "
                                f"holds numbers only (remove any header line)")
            values.append(value)
        rows.append((number, len(fields), values))
    return rows


def pedestrian_class(path):
    """The class number of pedestrians in a 9-column ground-truth file: the line of a person label in
    the labels.txt beside it (CVAT's export), else MOT16/17's PEDESTRIAN."""
    labels = os.path.join(os.path.dirname(path), "labels.txt")
    if not os.path.isfile(labels):
        return PEDESTRIAN
    with open(labels, encoding="utf-8") as f:
        names = [line.strip().lower() for line in f]
    for number, name in enumerate(names, 1):
        if name in PERSON_LABELS:
            return number
    raise UserError(f"{labels} names no {' or '.join(PERSON_LABELS)} label, so no class of {path} is people; "
                    f"add the label, or remove {labels} if the classes are MOT16/17's (1 = pedestrian)")


def read_detections(path, footage, ground_truth=False, min_visibility=0.0, min_size=MIN_BOX):
    """The boxes of a MOTChallenge file of the footage, clipped to its frame, and a DetectionSummary.
    Boxes wholly outside the frame, or smaller than min_size pixels once clipped, are left out, and
    so are boxes whose visibility (9 columns, where given) is below min_visibility. In ground truth
    (ground_truth=True), boxes with conf 0 are left out, and in 9-column files all but pedestrians.
    A frame before 1 or past the footage's end (where its length is known) is a UserError."""
    rows = read_rows(path)
    columns = rows[0][1] if rows else None
    summary = DetectionSummary(path, LAYOUT_NAMES.get(columns, "empty"), frame_size=(footage.width, footage.height),
                               min_size=min_size, min_visibility=min_visibility)
    people = pedestrian_class(path) if ground_truth and columns == 9 else None
    boxes = []
    for number, _, values in rows:
        frame, track, left, top, width, height, conf = values[:7]
        if frame < 1 or (footage.length is not None and frame > footage.length):
            raise UserError(f"{path} line {number}: frame {int(frame)} is outside {footage.path}, which has frames 1 "
                            f"to {footage.length}: are these the detections of other footage?")
        summary.boxes += 1
        if ground_truth and conf == 0:
            summary.ignored += 1
            continue
        if people is not None and values[7] != people:
            summary.not_pedestrian += 1
            continue
        if columns == 9 and 0 <= values[8] < min_visibility:  # -1: not given
            summary.hidden += 1
            continue
        # pixels count from 1: the frame spans [1, width + 1) in the file's coordinates
        right, bottom = min(left + width, footage.width + 1), min(top + height, footage.height + 1)
        clipped_left, clipped_top = max(left, 1), max(top, 1)
        if right <= 1 or bottom <= 1 or clipped_left >= footage.width + 1 or clipped_top >= footage.height + 1:
            summary.outside += 1
            continue
        if right - clipped_left < min_size or bottom - clipped_top < min_size:
            summary.small += 1
            continue
        if (clipped_left, clipped_top, right, bottom) != (left, top, left + width, top + height):
            summary.clipped += 1
        boxes.append(Box(int(frame), int(track), clipped_left, clipped_top, right - clipped_left, bottom - clipped_top,
                         conf))
    summary.kept = len(boxes)
    return boxes, summary


def crop_boxes(footage, boxes):
    """(box, its crop as a PIL RGB image) for every box, decoding the footage once, in frame order.
    A box on a frame the footage turns out not to have is a UserError."""
    by_frame = defaultdict(list)
    for box in boxes:
        by_frame[box.frame].append(box)
    if not by_frame:
        return
    for n, rgb in decoded(footage, by_frame.__contains__):
        image = Image.fromarray(rgb)
        for box in by_frame.pop(n):
            # the file's pixels count from 1, PIL's from 0
            yield box, image.crop((round(box.left) - 1, round(box.top) - 1, round(box.left + box.width) - 1,
                                   round(box.top + box.height) - 1))
        if not by_frame:
            return  # the rest of the footage need not be decoded
    raise UserError(f"{footage.path} has no frame {min(by_frame)}, but there are boxes on {len(by_frame)} frame(s) "
                    f"from there on: are these the detections of other footage?")
