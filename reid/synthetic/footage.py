"""Synthetic footage: the same synthetic people walking past two or more cameras, written as
MOTChallenge sequence folders (and H.264 videos), with the ground truth of who is where and when.

synthetic.py draws re-ID crops; this module draws whole frames with its person and camera models,
so a network trained on a synthetic Market-1501 tree knows this kind of people, and footage.py,
search.py and the demo have footage whose answers are known:

    ROOT/cam1/seqinfo.ini       [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    ROOT/cam1/img1/000001.jpg   frame 1, and so on
    ROOT/cam1/gt/gt.txt         frame,id,left,top,width,height,1,1,visibility  (MOT16/17 ground truth)
    ROOT/cam1/det/det.txt       frame,-1,left,top,width,height,score,-1,-1,-1  (a detector's boxes)
    ROOT/cam1.mp4               the same frames as an H.264 video at the same rate (not with --no-video)
    ROOT/cam2/ ...
    ROOT/query/0001_cam1_000007.jpg  a photo of each person to search for: their box in the first camera
                                that sees them, on the frame where they are most visible (then largest)
    ROOT/FOOTAGE                JSON: the parameters, and per camera each person's first and last frame
                                and their times in seconds (footage.frame_time), from gt.txt

Frames and pixels count from 1, as footage.py's docstring says. A person's track id in gt.txt is
their identity, the same in every camera; person 1 walks past two cameras one after the other, the
last person past one only, the others past one to three, so a search has both kinds of answer.
People walk across the frame from one side to the other, nearer or farther (taller or shorter, the
feet lower or higher: a simple perspective), and pass in front of each other. gt.txt holds a box
where at least a quarter of the person (MIN_INSIDE) is inside the frame and the box is at least
footage.MIN_BOX pixels each way; visibility is the share of the person's pixels that are inside the
frame and not behind someone nearer. det.txt is gt.txt as a detector sees it: hidden people and a
few others missed, boxes jittered, and a few false boxes on the background.

The people and cameras are new ones, not those of any synthetic.py tree. Everything depends on the
parameters only: the same call writes the same bytes (with the same Pillow and PyAV). An existing
tree with the same parameters is left as it is; any other non-empty folder is refused, and the tree
is built in a temporary folder and renamed, so an interrupted run leaves nothing half-written.

    python synthetic_footage.py --out demo_data/footage-synthetic
"""
import io
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from reid.cli import UserError
from reid.search.footage import DETECTIONS, FRAMES_DIR, GROUND_TRUTH, MIN_BOX, SEQINFO, Box, frame_time
from reid.search.tracking import iou_matrix
from reid.synthetic.people import (
    BACKGROUND_SPAN,
    SUPERSAMPLE,
    Param,
    Pose,
    _background,
    _draw_person,
    _finish,
    _sample_camera,
    _sample_person,
    publish_tree,
    recorded_tree,
)

MARKER = "FOOTAGE"
# Part of the marker: footage drawn by an older drawing code is not taken for current footage.
GENERATOR_VERSION = 2
# Random streams, numbered apart from synthetic.py's so that these people and cameras are new ones.
STREAM_PERSON, STREAM_CAMERA, STREAM_BACKGROUND, STREAM_SENSOR, STREAM_ROUTE, STREAM_DETECTOR = range(100, 106)

# Perspective: a person's height is proportional to how far below the background's horizon their
# feet are. The nearest walk with the feet at FOOT of the frame height and are NEAREST of it tall,
# the farthest FARTHEST times as tall.
NEAREST = 0.8
FOOT = 0.98
FARTHEST = 0.5
# A person is in gt.txt where at least this share of their pixels is inside the frame.
MIN_INSIDE = 0.25
# One walking cycle (two steps) per this many body heights walked.
STRIDE = 0.9
# The detector: boxes less visible than HIDDEN are always missed, MISS_RATE of the others at
# random (at least one per camera); FALSE_PER_FRAME false boxes per frame (at least one per camera).
HIDDEN = 0.3
MISS_RATE = 0.1
FALSE_PER_FRAME = 0.1

PARAMS = (
    Param("seed", 0, 0, None, "random seed; the same seed and parameters give the same bytes"),
    Param("cameras", 2, 2, None, "number of cameras, each a sequence folder cam1, cam2, ..."),
    Param("people", 6, 2, None, "number of people, ids 1..N; at least --cameras, so that every camera sees someone"),
    Param("frames", 60, 8, None, "frames per camera"),
    Param("fps", 10, 1, None, "frame rate, frames per second"),
    Param("width", 320, 128, None, "frame width in pixels, even (H.264 video)"),
    Param("height", 240, 96, None, "frame height in pixels, even (H.264 video)"),
)
DEFAULTS = dict({p.name: p.default for p in PARAMS}, video=True)


@dataclass(frozen=True)
class Walk:
    """One person crossing one camera's view: from frame `start` (a fraction; it may be before
    frame 1) for `duration` frames, from entirely off one side to entirely off the other, growing
    from size_in to size_out (sizes as a fraction of NEAREST)."""
    pid: int
    start: float
    duration: float
    direction: int  # 1: left to right
    size_in: float
    size_out: float
    back: bool


def _routes(params, cameras):
    """Each camera's walks (camera numbers from 0). A person seen by k cameras crosses them one
    after another, each within its own k-th of the footage, so that the times never overlap."""
    frames, count = params["frames"], params["cameras"]
    walks = {c: [] for c in range(count)}
    for pid in range(1, params["people"] + 1):
        rng = np.random.default_rng([params["seed"], STREAM_ROUTE, pid])
        if pid == 1:
            extra = 1
        elif pid == params["people"]:
            extra = 0
        else:
            extra = min(int(rng.choice(3, p=[0.5, 0.35, 0.15])), count - 1)
        first = (pid - 1) % count  # in turn, so that every camera sees someone
        others = rng.choice([c for c in range(count) if c != first], extra, replace=False)
        seen_by = [int(c) for c in rng.permutation([first, *others])]
        slot = frames / len(seen_by)
        for k, cam in enumerate(seen_by):
            if len(seen_by) == 1:
                # anywhere, even already in view at frame 1 or still in view at the end
                duration = rng.uniform(0.35, 0.7) * frames
                start = rng.uniform(1 - 0.3 * duration, frames - 0.7 * duration)
            else:
                duration = rng.uniform(0.75, 1.0) * slot
                start = 1 + k * slot + rng.uniform(0, slot - duration)
            size_in = rng.uniform(FARTHEST, 1.0)
            size_out = float(np.clip(size_in + rng.uniform(-0.25, 0.25), FARTHEST, 1.0))
            walks[cam].append(Walk(pid, float(start), float(duration), int(rng.choice([-1, 1])), float(size_in),
                                   size_out, bool(rng.random() < cameras[cam].back_view)))
    return walks


def _place(walk, frame, camera, size):
    """Where `walk` is at `frame` on the supersampled canvas of `size`: (centre x, top, height in
    pixels, pose), or None when off screen."""
    width, height = size
    u = (frame - walk.start) / walk.duration
    if not 0 <= u <= 1:
        return None
    scale = walk.size_in + (walk.size_out - walk.size_in) * u
    px = NEAREST * height * scale
    foot = (camera.horizon + (FOOT - camera.horizon) * scale) * height
    margin = 0.4 * NEAREST * height  # wider than anyone's half width: they start and end out of view
    travelled = u * (width + 2 * margin)
    cx = -margin + travelled if walk.direction > 0 else width + margin - travelled
    phase = 2 * math.pi * travelled / (STRIDE * px)
    swing = math.sin(phase)
    pose = Pose(back=walk.back, mirror=walk.direction < 0, arms=(0.05 + 0.1 * (1 + swing), 0.05 + 0.1 * (1 - swing)),
                spread=0.01 + 0.04 * abs(swing), lift=0.02 * max(0.0, swing))
    return cx, foot - px, px, pose


def _render(camera, background, sensor_seed, people, walks, frame, size):
    """Frame `frame` of one camera as JPEG bytes, and (pid, box, visibility, inside) of each person
    drawn, the box as (left, top, right, bottom) in frame pixels from 0, clipped to the frame."""
    width, height = size
    canvas = background.copy()
    owner = np.zeros((canvas.height, canvas.width), dtype=np.int32)
    drawn = []
    placed = [(walk, *place) for walk in walks if (place := _place(walk, frame, camera, canvas.size))]
    # far people (feet higher up) first, so that nearer ones stand in front of them
    for walk, cx, top, px, pose in sorted(placed, key=lambda p: (p[2] + p[3], p[0].pid)):
        layer = Image.new("RGBA", (math.ceil(0.8 * px) + 4, math.ceil(1.1 * px) + 4), (0, 0, 0, 0))
        layer_top = 0.05 * px + 2
        _draw_person(layer, people[walk.pid], pose, layer.width / 2, layer_top, px)
        x, y = round(cx - layer.width / 2), round(top - layer_top)
        canvas.paste(layer, (x, y), layer)
        mask = np.asarray(layer.getchannel("A")) > 0
        # the part of the layer that falls on the canvas
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + layer.width, canvas.width), min(y + layer.height, canvas.height)
        if x0 >= x1 or y0 >= y1:
            continue
        shown = mask[y0 - y:y1 - y, x0 - x:x1 - x]
        owner[y0:y1, x0:x1][shown] = walk.pid
        rows, cols = np.nonzero(mask)
        box = (math.floor((x + cols.min()) / SUPERSAMPLE), math.floor((y + rows.min()) / SUPERSAMPLE),
               math.ceil((x + cols.max() + 1) / SUPERSAMPLE), math.ceil((y + rows.max() + 1) / SUPERSAMPLE))
        box = (max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height))
        drawn.append((walk.pid, box, int(mask.sum()), int(shown.sum())))
    visible = np.bincount(owner.ravel(), minlength=max([pid for pid, *_ in drawn], default=0) + 1)
    # The sensor adds the same noise pattern and light every frame (a fresh generator with the same
    # seed): a camera's footage does not flicker from one frame to the next.
    jpeg = _finish(canvas, camera, np.random.default_rng(sensor_seed), size)
    return jpeg, [(pid, box, visible[pid] / total, inside / total) for pid, box, total, inside in drawn]


def _detections(gt, every_box, params, cam, horizon):
    """det.txt's rows from gt.txt's: missed, jittered and false boxes (see the module's docstring)."""
    width, height = params["width"], params["height"]
    rng = np.random.default_rng([params["seed"], STREAM_DETECTOR, cam])
    seen = [row for row in gt if row[6] >= HIDDEN]
    missed = set()
    if seen:
        missed = {int(i) for i in rng.choice(len(seen), max(1, round(MISS_RATE * len(seen))), replace=False)}
    rows = []
    for k, (frame, _, left, top, w, h, visibility) in enumerate(seen):
        if k in missed:
            continue
        cx, cy = left + w / 2 + rng.normal(0, 0.05 * w), top + h / 2 + rng.normal(0, 0.03 * h)
        w, h = w * math.exp(rng.normal(0, 0.06)), h * math.exp(rng.normal(0, 0.05))
        box = _clip(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, width, height)
        if box:
            rows.append((frame, *box, float(np.clip(0.55 + 0.4 * visibility + rng.normal(0, 0.05), 0.05, 1.0))))
    # false boxes: the size of a person standing there, overlapping no one drawn
    for _ in range(max(1, round(FALSE_PER_FRAME * params["frames"]))):
        frame = int(rng.integers(1, params["frames"] + 1))
        people = [Box(frame, -1, left + 1, top + 1, right - left, bottom - top, 1.0)
                  for left, top, right, bottom in every_box.get(frame, [])]
        for _ in range(20):
            scale = rng.uniform(FARTHEST, 1.0)
            h = NEAREST * height * scale
            w = h * rng.uniform(0.25, 0.4)
            bottom = (horizon + (FOOT - horizon) * scale) * height
            left = rng.uniform(0, width - w)
            box = _clip(left, bottom - h, left + w, bottom, width, height)
            if box and not (people and iou_matrix([Box(frame, -1, *box, 1.0)], people).max() > 0.05):
                rows.append((frame, *box, float(rng.uniform(0.2, 0.6))))
                break
    return sorted(rows)


def _clip(left, top, right, bottom, width, height):
    """A box from 0-based corners as whole MOTChallenge pixels (left, top from 1; width, height)
    inside the frame, or None if less than MIN_BOX pixels remain either way."""
    left, top = max(round(left), 0), max(round(top), 0)
    right, bottom = min(round(right), width), min(round(bottom), height)
    if right - left < MIN_BOX or bottom - top < MIN_BOX:
        return None
    return left + 1, top + 1, right - left, bottom - top


def _write_camera(folder, params, cam, camera, people, walks):
    """Write camera `cam` (from 0), seeing `walks`: its sequence folder, and its video if asked.
    Its name and gt.txt's rows."""
    seed, frames, fps = params["seed"], params["frames"], params["fps"]
    size = (params["width"], params["height"])
    name = f"cam{cam + 1}"
    # the scene is BACKGROUND_SPAN units wide; the camera sees the first frame's width of it
    background = _background(camera, np.random.default_rng([seed, STREAM_BACKGROUND, cam]), size[1] * SUPERSAMPLE,
                             -(-size[0] * SUPERSAMPLE // BACKGROUND_SPAN))
    background = background.crop((0, 0, size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE))
    sequence = os.path.join(folder, name)
    os.makedirs(os.path.join(sequence, FRAMES_DIR))
    container = av.open(os.path.join(folder, name + ".mp4"), "w") if params["video"] else None
    if container:
        # x264's output depends on its thread count, and its macroblock-tree rate control gives other
        # bytes from run to run; with one thread and without it, the same frames make the same video
        stream = container.add_stream("libx264", rate=fps, options={"x264-params": "mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.thread_count = 1
    gt, every_box = [], {}
    try:
        for n in range(1, frames + 1):
            jpeg, drawn = _render(camera, background, [seed, STREAM_SENSOR, cam], people, walks, n, size)
            with open(os.path.join(sequence, FRAMES_DIR, f"{n:06d}.jpg"), "wb") as f:
                f.write(jpeg)
            if container:
                rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                picture.pts, picture.time_base = n - 1, Fraction(1, fps)
                container.mux(stream.encode(picture))
            every_box[n] = [box for _, box, _, _ in drawn]
            for pid, box, visibility, inside in drawn:
                clipped = _clip(*box, *size)
                if inside >= MIN_INSIDE and clipped:
                    gt.append((n, pid, *clipped, round(float(visibility), 3)))
        if container:
            container.mux(stream.encode())
    finally:
        if container:
            container.close()
    _write_lines(os.path.join(sequence, GROUND_TRUTH), [f"{n},{pid},{left},{top},{w},{h},1,1,{v:g}"
                                                        for n, pid, left, top, w, h, v in gt])
    detections = _detections(gt, every_box, params, cam, camera.horizon)
    _write_lines(os.path.join(sequence, DETECTIONS), [f"{n},-1,{left},{top},{w},{h},{score:.3f},-1,-1,-1"
                                                      for n, left, top, w, h, score in detections])
    with open(os.path.join(sequence, SEQINFO), "w") as f:
        f.write(f"[Sequence]\nname={name}\nimDir={FRAMES_DIR}\nframeRate={fps}\nseqLength={frames}\n"
                f"imWidth={size[0]}\nimHeight={size[1]}\nimExt=.jpg\n")
    return name, gt


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _manifest(params, written):
    """The FOOTAGE marker: the parameters, and who each camera's gt.txt shows when."""
    cameras, seen_by = [], {}
    for name, gt in written:
        frames = {}
        for n, pid, *_ in gt:
            frames.setdefault(pid, []).append(n)
        people = []
        for pid in sorted(frames):
            first, last = min(frames[pid]), max(frames[pid])
            people.append({"id": pid, "first_frame": first, "last_frame": last,
                           "first_time": frame_time(first, params["fps"]), "last_time": frame_time(last, params["fps"]),
                           "boxes": len(frames[pid])})
            seen_by.setdefault(pid, []).append((first, name))
        cameras.append({"name": name, "sequence": name, "video": name + ".mp4" if params["video"] else None,
                        "people": people})
    return {"generator": "synthetic_footage.py", "params": params, "cameras": cameras,
            "people": [{"id": pid, "cameras": [name for _, name in sorted(seen_by[pid])]} for pid in sorted(seen_by)]}


def _write_queries(folder, written, manifest):
    """query/: each person's box in the first camera that sees them, cut from the frame where they
    are most visible (the largest such box, the earliest such frame); its name goes into the
    manifest's people entries as "query"."""
    os.makedirs(os.path.join(folder, "query"))
    rows = dict(written)
    for person in manifest["people"]:
        camera = person["cameras"][0]
        n, _, left, top, width, height, _ = max((r for r in rows[camera] if r[1] == person["id"]),
                                                key=lambda r: (r[6], r[5], -r[0]))
        frame = Image.open(os.path.join(folder, camera, FRAMES_DIR, f"{n:06d}.jpg"))
        name = os.path.join("query", f"{person['id']:04d}_{camera}_{n:06d}.jpg")
        # the file's pixels count from 1, PIL's from 0
        frame.crop((left - 1, top - 1, left - 1 + width, top - 1 + height)).save(os.path.join(folder, name), quality=95)
        person["query"] = name


def _validate(params):
    for p in PARAMS:
        value = params[p.name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < p.low:
            raise UserError(f"{p.name}={value!r} must be an integer >= {p.low}")
    for name in ("width", "height"):
        if params[name] % 2:
            raise UserError(f"{name}={params[name]} must be even: H.264 video halves the colour resolution")
    if params["people"] < params["cameras"]:
        raise UserError(f"people={params['people']} must be at least cameras={params['cameras']}, so that every "
                        f"camera sees someone")
    if not isinstance(params["video"], bool):
        raise UserError(f"video={params['video']!r} must be True or False")


def _existing(root, params):
    """The manifest of footage this generator already wrote into `root` with `params`; None if
    `root` is free. A UserError naming `root` for anything else."""
    return recorded_tree(root, MARKER, params, "synthetic footage", "synthetic_footage.py")


def make_footage(root, **params):
    """Write synthetic footage into `root` (see the module's docstring) and return its manifest,
    the contents of ROOT/FOOTAGE:

        generator   "synthetic_footage.py"
        params      seed, cameras, people, frames, fps, width, height, video, version
        cameras     per camera: name ("cam1"), sequence (its folder in root), video (its file in root,
                    or None), people: per person in its gt.txt, id, first_frame, last_frame,
                    first_time, last_time (seconds, footage.frame_time) and boxes (frames in gt.txt)
        people      per person: id, the names of the cameras that see them, in time order, and query
                    (the file in root of their photo to search for)

    The keyword arguments are the names in PARAMS and video (write the .mp4 files, default True);
    each one left out takes its default. If `root` already holds footage made with the same
    parameters, nothing is written; a non-empty `root` otherwise is a UserError.
    """
    unknown = [k for k in params if k not in DEFAULTS]
    if unknown:
        raise TypeError(f"make_footage() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"its parameters are {', '.join(DEFAULTS)}")
    params = dict(DEFAULTS, **params)
    _validate(params)
    params = dict({k: int(params[k]) for k in DEFAULTS if k != "video"}, video=params["video"],
                  version=GENERATOR_VERSION)
    manifest = _existing(root, params)
    if manifest is not None:
        return manifest
    def build(tmp):
        seed = params["seed"]
        cameras = [_sample_camera(np.random.default_rng([seed, STREAM_CAMERA, c])) for c in range(params["cameras"])]
        people = {pid: _sample_person(np.random.default_rng([seed, STREAM_PERSON, pid]))
                  for pid in range(1, params["people"] + 1)}
        walks = _routes(params, cameras)
        written = [_write_camera(tmp, params, cam, cameras[cam], people, walks[cam])
                   for cam in range(params["cameras"])]
        manifest = _manifest(params, written)
        _write_queries(tmp, written, manifest)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        return manifest
    return publish_tree(root, build, lambda: _existing(root, params))

