"""A synthetic person re-identification dataset in the raw Market-1501 layout.

Market-1501 cannot be downloaded everywhere, yet the pipeline (prepare.py ->
train -> test.py -> evaluate.py) should be tryable anywhere. This module draws
simple pedestrians and writes them exactly where and how Market-1501 keeps its
images, so the real pipeline consumes them unchanged:

    ROOT/bounding_box_train/  every image of the training identities
    ROOT/bounding_box_test/   gallery: test identities, junk (-1_...) and distractors (0000_...)
    ROOT/query/               one image per test identity and camera
    ROOT/gt_bbox/             each query plus 1-2 more images of that identity and camera
                              (the source of the multi-query evaluation)
    ROOT/SYNTHETIC            the parameters and counts of this tree (JSON)

File names follow Market-1501: 0002_c1s1_000451_03.jpg is person 2, camera 1,
sequence 1, frame 451, the third box of that frame.

Every identity keeps its clothes, accessories, body shape and hair across
cameras; every camera changes what a real one changes: light level and colour
cast, background, framing, blur, noise, the side people are seen from and how
often something stands in the way. Colour and clothing tell identities apart;
the camera changes make raw-pixel matching unreliable, so matching across
cameras has to be learned, which a small network trained for minutes can do.

The output depends on the parameters and --seed only: the same call writes the
same bytes. An existing tree with the same parameters is left as it is; any
other non-empty folder is refused, so no one's data is ever overwritten.

    python synthetic.py --out demo_data/Market-1501-synthetic
"""
import collections
import colorsys
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid.cli import UserError
from reid.data import SYNTHETIC_MARKER as MARKER

FOLDERS = ("bounding_box_train", "bounding_box_test", "query", "gt_bbox")
# Part of the marker: a tree drawn by an older drawing code is not taken for a current one.
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
# Market-1501 names carry the camera as one digit and the sequence as s1..s6.
MAX_CAMERAS = 9
SEQUENCES = 6
MAX_IDS = 9999
# Drawing at twice the size and halving gives smooth edges at the small sizes of re-ID crops.
SUPERSAMPLE = 2
# Camera blur is given for 128-pixel-high crops and scaled to the requested height.
REFERENCE_HEIGHT = 128
# How much wider than a crop the per-camera background strip is; each image sees a window of it.
BACKGROUND_SPAN = 3
# Independent random streams, so that e.g. more junk images do not change any person image.
(STREAM_IDENTITY, STREAM_LAYOUT, STREAM_IMAGE, STREAM_CAMERA, STREAM_BACKGROUND, STREAM_JUNK,
 STREAM_DISTRACTOR) = range(7)


@dataclass(frozen=True)
class Param:
    """One parameter of a tree: a keyword of make_market_tree, a key of the marker and a flag of main."""
    name: str
    default: int
    low: int
    high: object                # None: no upper limit
    help: str
    why: str = ""               # told when a value is refused
    flag: str = ""              # the command-line name, where it is shorter than `name`


# The one list of parameters: defaults, checks, the marker's "params" and the flags all come from it.
# Its order is the order of --help, of the checks and of the keys named when a tree differs.
PARAMS = (
    Param("seed", 0, 0, None, "random seed; the same seed and parameters give the same bytes"),
    Param("train_ids", 100, 1, None, "number of training identities, ids 1..N"),
    Param("test_ids", 50, 1, None, "number of test identities, numbered after the training ones"),
    Param("cameras", 6, 2, MAX_CAMERAS, f"number of cameras, 2..{MAX_CAMERAS}; each identity is seen by 2 or more",
          why="an identity must be seen by two cameras and a file name holds one digit"),
    Param("images_per_camera", 4, 2, None, "detection boxes per identity and camera, at least 2",
          why="each camera of a test identity gives one query and at least one gallery image"),
    Param("height", 128, 16, None, "image height in pixels"),
    Param("width", 64, 8, None, "image width in pixels"),
    Param("junk_per_camera", 4, 0, None, "junk gallery images (id -1: partial boxes, background) per camera",
          flag="junk"),
    Param("distractors_per_camera", 6, 0, None,
          "distractor gallery images (id 0: people who are no test identity, clutter) per camera", flag="distractors"),
    Param("look", 0, 0, 1, "how the cameras look: 0 as the demo's; 1 another camera network (colour casts of up to "
          "+-35%%, more blur, people smaller in looser boxes), new cameras for a run to adapt to (adapt.py)"),
)
# parameters added after trees were first written: what a tree recorded without them was made with
LATER = {"look": 0}
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class Person:
    """What stays the same about a person whichever camera sees them (lengths in person heights)."""
    shirt: tuple
    shirt_second: tuple
    pattern: str
    period: float
    long_sleeves: bool
    legwear: str
    trousers: tuple
    shoes: tuple
    skin: tuple
    hair: tuple
    long_hair: bool
    hat: tuple
    bag: tuple
    bag_side: int
    bag_size: tuple
    backpack: tuple
    logo: tuple
    width: float
    waist: float
    leg: float
    head: float


@dataclass(frozen=True)
class Camera:
    """What a camera does to everyone it sees."""
    gain: tuple
    wall: tuple
    floor: tuple
    horizon: float
    texture: str
    scale: float
    centre: float
    foot: float
    blur: float
    noise: float
    occlusion: float
    back_view: float
    passer_by: float


@dataclass(frozen=True)
class Pose:
    """What changes from one frame to the next."""
    back: bool
    mirror: bool
    arms: tuple
    spread: float
    lift: float


def _rgb(h, s, v):
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _clothing_colour(rng):
    # Discrete saturation and value levels keep colours apart. Black, grey and white
    # clothes occur, as in real street scenes, but not so often that many people look alike.
    s = rng.choice([0.06, 0.45, 0.7, 0.92], p=[0.25, 0.2, 0.25, 0.3]) + rng.uniform(-0.04, 0.04)
    v = rng.choice([0.2, 0.48, 0.72, 0.95], p=[0.15, 0.25, 0.3, 0.3]) + rng.uniform(-0.04, 0.04)
    return _rgb(rng.random(), s, v)


def _contrasting_colour(rng, colour):
    """A colour that stands out against `colour`, so that patterns stay visible when blurred."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    if rng.random() < 0.5:
        return _rgb(h + rng.uniform(0.3, 0.7), max(s, 0.5) + rng.uniform(-0.1, 0.1), rng.uniform(0.45, 0.95))
    return _rgb(h + rng.uniform(-0.1, 0.1), s * rng.uniform(0.3, 1.0), 0.95 - v * 0.8)


def _muted_colour(rng, v_low=0.3, v_high=0.8):
    return _rgb(rng.random(), rng.uniform(0.04, 0.3), rng.uniform(v_low, v_high))


def _jitter(rng, colour, amount):
    return tuple(int(min(max(c + rng.normal(0, amount), 0), 255)) for c in colour)


def _sample_person(rng):
    shirt = _clothing_colour(rng)
    if rng.random() < 0.5:
        trousers = _jitter(rng, [(35, 40, 70), (25, 25, 28), (110, 110, 115), (170, 150, 110),
                                  (60, 85, 130), (215, 215, 210)][rng.integers(6)], 10)
    else:
        trousers = _clothing_colour(rng)
    tone = rng.random()
    skin = tuple(round(a + (b - a) * tone) for a, b in zip((245, 208, 170), (95, 62, 42)))
    hair = _jitter(rng, [(25, 20, 18), (60, 40, 25), (110, 75, 45), (205, 170, 100),
                         (150, 150, 150)][rng.choice(5, p=[0.4, 0.25, 0.15, 0.12, 0.08])], 8)
    shoes = [(20, 20, 20), (235, 235, 235), (100, 65, 40), _clothing_colour(rng)][rng.integers(4)]
    return Person(
        shirt=shirt,
        shirt_second=_contrasting_colour(rng, shirt),
        pattern=str(rng.choice(["solid", "stripes", "split", "checks"], p=[0.4, 0.25, 0.15, 0.2])),
        period=float(rng.uniform(0.045, 0.075)),
        long_sleeves=bool(rng.random() < 0.5),
        legwear=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.65, 0.2, 0.15])),
        trousers=trousers,
        shoes=shoes,
        skin=skin,
        hair=hair,
        long_hair=bool(rng.random() < 0.3),
        hat=_clothing_colour(rng) if rng.random() < 0.2 else None,
        bag=_clothing_colour(rng) if rng.random() < 0.4 else None,
        bag_side=int(rng.choice([-1, 1])),
        bag_size=(float(rng.uniform(0.07, 0.11)), float(rng.uniform(0.08, 0.14))),
        backpack=_clothing_colour(rng) if rng.random() < 0.3 else None,
        logo=_contrasting_colour(rng, shirt) if rng.random() < 0.3 else None,
        width=float(rng.uniform(0.2, 0.29)),
        waist=float(rng.uniform(0.78, 1.02)),
        leg=float(rng.uniform(0.43, 0.49)),
        head=float(rng.uniform(0.058, 0.07)),
    )


def _sample_camera(rng, look=0):
    """A camera of network `look` (0: the demo's; 1: another, see PARAMS). Both draw the same random
    numbers, so a tree of look 0 is the same whatever look 1 does."""
    # Casts stay within about +-12% per channel in the demo's network: colour must remain informative
    # once a network has learned to discount the light of each camera. The other network's are
    # stronger, as between cameras of another make (CUHK03's against Market-1501's)
    cast = 1.0 + rng.uniform(*((-0.12, 0.12) if look == 0 else (-0.35, 0.35)), 3)
    other = look == 1
    return Camera(
        gain=tuple(float(g) for g in rng.uniform(*((0.72, 1.18) if not other else (0.55, 1.3))) * cast),
        wall=_muted_colour(rng),
        floor=_muted_colour(rng, 0.25, 0.7),
        horizon=float(rng.uniform(0.45, 0.75)),
        texture=str(rng.choice(["tiles", "windows", "foliage", "plain"])),
        scale=float(rng.uniform(*((0.8, 0.94) if not other else (0.6, 0.75)))),
        centre=float(rng.uniform(-0.06, 0.06)),
        foot=float(rng.uniform(0.94, 0.995)),
        blur=float(rng.uniform(*((0.0, 1.1) if not other else (1.0, 2.0)))),
        noise=float(rng.uniform(2.0, 8.0)),
        occlusion=float(rng.uniform(0.05, 0.2)),
        back_view=float(rng.choice([0.2, 0.5, 0.8])),
        passer_by=float(rng.uniform(0.03, 0.12)),
    )


def _sample_pose(rng, camera):
    return Pose(
        back=bool(rng.random() < camera.back_view),
        mirror=bool(rng.random() < 0.5),
        arms=(float(rng.uniform(0.03, 0.3)), float(rng.uniform(0.03, 0.3))),
        spread=float(rng.uniform(-0.01, 0.05)),
        lift=float(rng.uniform(0.0, 0.02)),
    )


def _background(camera, rng, height, width):
    """The scene behind one camera's pedestrians, wider than a crop so that crops differ."""
    wide = width * BACKGROUND_SPAN
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    horizon = camera.horizon
    wall = np.array(camera.wall, dtype=np.float32) * (0.85 + 0.3 * rows / horizon)
    floor = np.array(camera.floor, dtype=np.float32) * (1.1 - 0.3 * (rows - horizon) / (1 - horizon))
    arr = np.where(rows < horizon, wall, floor) * np.ones((1, wide, 1), dtype=np.float32)
    # Low-frequency shading, so that the background is never one flat colour.
    coarse = Image.fromarray((rng.random((6, 4 * BACKGROUND_SPAN)) * 255).astype(np.uint8))
    shade = np.asarray(coarse.resize((wide, height), Image.BILINEAR), dtype=np.float32) / 255
    arr *= (0.92 + 0.16 * shade)[:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    top = int(horizon * height)
    darker = tuple(int(c * 0.75) for c in camera.floor)
    if camera.texture == "tiles":
        for k in range(1, 8):
            y = top + (height - top) * (k / 8) ** 1.5
            draw.line([(0, y), (wide, y)], fill=darker, width=max(1, height // 120))
        for x in np.arange(rng.uniform(0, width / 2), wide, width / 2.5):
            draw.line([(x, top), (x + (x - wide / 2) * 0.6, height)], fill=darker, width=max(1, height // 120))
    elif camera.texture == "windows":
        pane = tuple(min(255, int(c * 1.25) + 20) for c in camera.wall)
        frame = tuple(int(c * 0.6) for c in camera.wall)
        for x in np.arange(rng.uniform(0, width / 2), wide, width * 0.8):
            box = [x, top * 0.15, x + width * 0.45, top * 0.75]
            draw.rectangle(box, fill=pane, outline=frame, width=max(1, height // 100))
    elif camera.texture == "foliage":
        for _ in range(40):
            x, y = rng.uniform(0, wide), rng.uniform(0, top)
            r = rng.uniform(0.04, 0.12) * height
            leaf = _rgb(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.55))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=leaf)
    return img


def _leg(top_x, bottom_x, y_top, y_bottom, w_top, w_bottom, t0=0.0, t1=1.0):
    """The part of a tapered leg between fractions t0 and t1 of its length, as a polygon."""
    def at(t):
        return top_x + (bottom_x - top_x) * t, y_top + (y_bottom - y_top) * t, (w_top + (w_bottom - w_top) * t) / 2
    xa, ya, ha = at(t0)
    xb, yb, hb = at(t1)
    return [(xa - ha, ya), (xa + ha, ya), (xb + hb, yb), (xb - hb, yb)]


def _torso_pattern(canvas, person, polygon, px, shoulder_y, cx, sign):
    """Fill the torso polygon with the shirt and its pattern (pattern sizes scale with the person)."""
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    x0, y0 = int(math.floor(min(xs))), int(math.floor(min(ys)))
    x1, y1 = int(math.ceil(max(xs))) + 1, int(math.ceil(max(ys))) + 1
    region = Image.new("RGB", (x1 - x0, y1 - y0), person.shirt)
    draw = ImageDraw.Draw(region)
    step = person.period * px
    second = person.shirt_second
    if person.pattern == "stripes":
        for y in np.arange(shoulder_y - y0 + step / 2, y1 - y0, step):
            draw.rectangle([0, y, x1 - x0, y + step / 2], fill=second)
    elif person.pattern == "split":
        if sign > 0:
            draw.rectangle([cx - x0, 0, x1 - x0, y1 - y0], fill=second)
        else:
            draw.rectangle([0, 0, cx - x0, y1 - y0], fill=second)
    elif person.pattern == "checks":
        for i, x in enumerate(np.arange(cx - x0 - 8 * step, x1 - x0, step)):
            for j, y in enumerate(np.arange(shoulder_y - y0, y1 - y0, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + step, y + step], fill=second)
    mask = Image.new("L", region.size, 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in polygon], fill=255)
    canvas.paste(region, (x0, y0), mask)


def _draw_person(canvas, person, pose, cx, top, px):
    """Draw `person` standing with the top of the head at `top`, `px` pixels tall, centred on `cx`."""
    draw = ImageDraw.Draw(canvas)
    sign = -1 if pose.mirror else 1

    def x(dx):
        return cx + sign * dx * px

    def y(dy):
        return top + dy * px

    head = person.head
    shoulder = 2 * head + 0.02
    hip = 1.0 - person.leg
    half_shoulder = person.width / 2
    half_waist = half_shoulder * person.waist
    arm_width = max(1, round(person.width * 0.22 * px))

    if person.long_hair and not pose.back:
        draw.rectangle(_box(x(-head * 1.05), y(head), x(head * 1.05), y(shoulder + 0.08)), fill=person.hair)

    # Legs, from the hip down to the shoes; a walking person's feet are apart and one is lifted.
    leg_width = half_waist * 0.95
    leg_top = hip - 0.02
    leg_bottom = 0.975
    legs = []
    for side, lift in ((-1, 0.0), (1, pose.lift)):
        top_x = x(side * half_waist / 2)
        bottom_x = x(side * (half_waist / 2 + pose.spread))
        legs.append((top_x, bottom_x, y(leg_top), y(leg_bottom - lift), leg_width * px, leg_width * 0.8 * px))
    for leg in legs:
        if person.legwear == "trousers":
            draw.polygon(_leg(*leg), fill=person.trousers)
        else:
            draw.polygon(_leg(*leg), fill=person.skin)
            if person.legwear == "shorts":
                draw.polygon(_leg(*leg, t1=0.42), fill=person.trousers)
        foot_x, foot_y = leg[1], leg[3]
        half = leg[5] * 0.65
        draw.ellipse([foot_x - half, foot_y - 0.02 * px, foot_x + half, foot_y + 0.025 * px], fill=person.shoes)
    if person.legwear == "skirt":
        length = 0.5 * person.leg
        draw.polygon([(x(-half_waist), y(leg_top)), (x(half_waist), y(leg_top)),
                      (x(half_waist * 1.4), y(leg_top + length)), (x(-half_waist * 1.4), y(leg_top + length))],
                     fill=person.trousers)

    neck = head * 0.4
    draw.rectangle(_box(x(-neck), y(head * 1.5), x(neck), y(shoulder + 0.02)), fill=person.skin)

    torso = [(x(-half_shoulder), y(shoulder + 0.025)), (x(-half_shoulder + 0.025), y(shoulder)),
             (x(half_shoulder - 0.025), y(shoulder)), (x(half_shoulder), y(shoulder + 0.025)),
             (x(half_waist), y(hip + 0.02)), (x(-half_waist), y(hip + 0.02))]
    _torso_pattern(canvas, person, torso, px, y(shoulder), x(0), sign)

    if person.backpack is not None:
        if pose.back:
            draw.rounded_rectangle(_box(x(-half_shoulder * 0.75), y(shoulder + 0.02),
                                              x(half_shoulder * 0.75), y(shoulder + 0.22)),
                                   radius=0.02 * px, fill=person.backpack)
        else:
            for side in (-1, 1):
                draw.line([(x(side * half_shoulder * 0.55), y(shoulder)),
                           (x(side * half_shoulder * 0.62), y(shoulder + 0.19))],
                          fill=person.backpack, width=max(1, round(0.02 * px)))
    if person.logo is not None and not pose.back:
        r = 0.035
        draw.rectangle(_box(x(0.3 * half_shoulder - r), y(shoulder + 0.06),
                            x(0.3 * half_shoulder + r), y(shoulder + 0.06 + 2 * r)), fill=person.logo)
    if person.long_hair and pose.back:
        draw.rectangle(_box(x(-head * 1.05), y(head), x(head * 1.05), y(shoulder + 0.08)), fill=person.hair)

    # Arms hang from the shoulders, each at its own angle; short sleeves show the skin below.
    length = 0.34
    for side, angle in zip((-1, 1), pose.arms):
        joint_x = side * (half_shoulder - 0.02)
        joint_y = shoulder + 0.02
        end = (joint_x + side * length * math.sin(angle), joint_y + length * math.cos(angle))
        sleeve = 1.0 if person.long_sleeves else 0.4
        elbow = (joint_x + (end[0] - joint_x) * sleeve, joint_y + (end[1] - joint_y) * sleeve)
        if sleeve < 1:
            draw.line([(x(elbow[0]), y(elbow[1])), (x(end[0]), y(end[1]))], fill=person.skin, width=arm_width)
        draw.line([(x(joint_x), y(joint_y)), (x(elbow[0]), y(elbow[1]))], fill=person.shirt, width=arm_width)
        r = arm_width * 0.5
        draw.ellipse([x(joint_x) - r, y(joint_y) - r, x(joint_x) + r, y(joint_y) + r], fill=person.shirt)
        r = arm_width * 0.6
        draw.ellipse([x(end[0]) - r, y(end[1]) - r, x(end[0]) + r, y(end[1]) + r], fill=person.skin)

    if person.bag is not None:
        side = person.bag_side
        bag_w, bag_h = person.bag_size
        draw.line([(x(-side * half_shoulder * 0.6), y(shoulder)), (x(side * (half_waist + bag_w / 2)), y(hip - 0.06))],
                  fill=person.bag, width=max(1, round(0.015 * px)))
        draw.rectangle(_box(x(side * (half_waist - 0.02)), y(hip - 0.07),
                                  x(side * (half_waist - 0.02 + bag_w)), y(hip - 0.07 + bag_h)), fill=person.bag)

    head_box = _box(x(-head * 0.9), y(0), x(head * 0.9), y(2 * head))
    if pose.back:
        draw.ellipse(head_box, fill=person.hair)
    else:
        draw.ellipse(head_box, fill=person.skin)
        draw.chord(_box(x(-head * 0.95), y(-0.005), x(head * 0.95), y(1.3 * head)), 180, 360, fill=person.hair)
    if person.hat is not None:
        draw.chord(_box(x(-head), y(-0.015), x(head), y(1.2 * head)), 180, 360, fill=person.hat)
        draw.rectangle(_box(x(-head * 1.2), y(0.55 * head), x(head * 1.3), y(0.65 * head)), fill=person.hat)


def _box(x0, y0, x1, y1):
    """A PIL box from two corners in any order (mirroring swaps left and right)."""
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _occlude(canvas, rng):
    """Something between the camera and the person: a railing or car below, a pole or passer-by at a side."""
    w, h = canvas.size
    colour = _muted_colour(rng, 0.15, 0.85) if rng.random() < 0.7 else _clothing_colour(rng)
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.5:
        draw.rectangle([0, h * rng.uniform(0.62, 0.85), w, h], fill=colour)
    else:
        edge = w * rng.uniform(0.18, 0.36)
        top = h * rng.uniform(0.0, 0.4)
        box = [0, top, edge, h] if rng.random() < 0.5 else [w - edge, top, w, h]
        draw.rectangle(box, fill=colour)


def _finish(canvas, camera, rng, size):
    """Shrink to the crop size and apply the camera: blur, light and colour cast, sensor noise; JPEG bytes."""
    width, height = size
    img = canvas.reduce(SUPERSAMPLE)
    radius = camera.blur * height / REFERENCE_HEIGHT
    if radius > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32)
    gain = np.array(camera.gain, dtype=np.float32) * np.float32(1.0 + rng.normal(0, 0.04))
    arr = arr * gain + rng.normal(0, camera.noise, arr.shape).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _render(person, camera, background, rng, size, *, framing=None):
    """One crop of `person` (None: background only) seen by `camera`, as JPEG bytes.

    framing: None for an ordinary detection box, or "partial" for the bad boxes that
    Market-1501 labels junk: far too close or far off-centre, so that only a part shows.
    """
    width, height = size
    cw, ch = width * SUPERSAMPLE, height * SUPERSAMPLE
    left = int(rng.integers(0, background.width - cw + 1))
    canvas = background.crop((left, 0, left + cw, ch))
    if person is not None:
        if rng.random() < camera.passer_by:
            other = _sample_person(rng)
            px = ch * camera.scale * rng.uniform(0.85, 1.05)
            cx = cw * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.45, 0.7))
            _draw_person(canvas, other, _sample_pose(rng, camera), cx, ch * rng.uniform(0.9, 1.0) - px, px)
        pose = _sample_pose(rng, camera)
        px = ch * camera.scale * math.exp(rng.normal(0, 0.04))
        foot = ch * (camera.foot + rng.normal(0, 0.015))
        cx = cw * (0.5 + camera.centre + rng.normal(0, 0.035))
        if framing == "partial":
            if rng.random() < 0.5:
                px *= rng.uniform(1.8, 2.8)
                foot = ch * rng.uniform(0.8, 1.1) + px * rng.choice([0.0, 0.5])
            else:
                cx = cw * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.4, 0.55))
        _draw_person(canvas, person, pose, cx, foot - px, px)
        if rng.random() < camera.occlusion:
            _occlude(canvas, rng)
    return _finish(canvas, camera, rng, size)


def _file_name(pid, cam, seq, frame, box):
    person = "-1" if pid < 0 else f"{pid:04d}"
    return f"{person}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


class _Namer:
    """Market-1501 names: the box index counts the boxes already taken from the same frame, so names never repeat."""

    def __init__(self):
        self.boxes = collections.Counter()

    def __call__(self, pid, cam, seq, frame):
        self.boxes[cam, seq, frame] += 1
        return _file_name(pid, cam, seq, frame, self.boxes[cam, seq, frame])


def _validate(params):
    for p in PARAMS:
        value = params[p.name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                or value < p.low or (p.high is not None and value > p.high):
            bound = f"an integer >= {p.low}" + (f" and <= {p.high}" if p.high is not None else "")
            reason = f" ({p.why})" if p.why else ""
            raise UserError(f"{p.name}={value!r} must be {bound}{reason}")
    if params["train_ids"] + params["test_ids"] > MAX_IDS:
        raise UserError(f"train_ids + test_ids = {params['train_ids'] + params['test_ids']} "
                        f"exceeds {MAX_IDS}, the most a 4-digit Market-1501 id can name")


def recorded_tree(root, marker, params, what, writer, later=None):
    """The record (the JSON of `marker`) of the tree `writer` already wrote into `root` with
    `params` (a tree recorded before a parameter of `later` existed was made with its value there);
    None if `root` is free (missing or empty). A UserError naming `root` for anything
    else: another tree or other files are never written over."""
    if not os.path.exists(root):
        return None
    if not os.path.isdir(root):
        raise UserError(f"{root} exists and is not a folder; choose another --out")
    path = os.path.join(root, marker)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
            old = {**(later or {}), **recorded["params"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} cannot be read ({e}); remove {root} to generate it again") from None
        if old == params:
            return recorded
        changed = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in params.items() if old.get(k) != v)
        raise UserError(f"{root} holds {what} made with other parameters ({changed}); remove it or choose another "
                        f"--out")
    if os.listdir(root):
        raise UserError(f"{root} is not empty and has no {marker} file, so {writer} did not write it; refusing to "
                        f"write into it, choose another --out")
    return None


def _existing_counts(root, params):
    """Counts of a tree this generator already wrote into `root` with `params`; None if `root` is free."""
    recorded = recorded_tree(root, MARKER, params, "a synthetic dataset", "synthetic.py", LATER)
    if recorded is not None and "counts" not in recorded:
        raise UserError(f"{os.path.join(root, MARKER)} cannot be read (it holds no counts); remove {root} to "
                        f"generate it again")
    return None if recorded is None else recorded["counts"]


def _write_tree(folder, params):
    seed = params["seed"]
    size = (params["width"], params["height"])
    per_camera = params["images_per_camera"]
    train_ids, test_ids = params["train_ids"], params["test_ids"]
    cameras = range(1, params["cameras"] + 1)
    for name in FOLDERS:
        os.makedirs(os.path.join(folder, name))
    counts = dict.fromkeys(FOLDERS, 0)

    def write(sub, name, data):
        with open(os.path.join(folder, sub, name), "wb") as f:
            f.write(data)
        counts[sub] += 1

    models = {c: _sample_camera(np.random.default_rng([seed, STREAM_CAMERA, c]), params["look"]) for c in cameras}
    backgrounds = {c: _background(models[c], np.random.default_rng([seed, STREAM_BACKGROUND, c]),
                                  size[1] * SUPERSAMPLE, size[0] * SUPERSAMPLE) for c in cameras}
    namer = _Namer()
    for pid in range(1, train_ids + test_ids + 1):
        test = pid > train_ids
        person = _sample_person(np.random.default_rng([seed, STREAM_IDENTITY, pid]))
        layout = np.random.default_rng([seed, STREAM_LAYOUT, pid])
        seen_by = sorted(int(c) + 1
                         for c in layout.choice(len(cameras), layout.integers(2, len(cameras) + 1), replace=False))
        for cam in seen_by:
            # gt_bbox holds 1-2 more frames of the same walk past the camera than the detector boxes.
            extra = int(layout.integers(1, 3)) if test else 0
            seq = int(layout.integers(1, SEQUENCES + 1))
            step = int(layout.integers(5, 40))
            first = int(layout.integers(1, 999999 - step * (per_camera + extra)))
            query = int(layout.integers(per_camera))
            for k in range(per_camera + extra):
                data = _render(person, models[cam], backgrounds[cam],
                               np.random.default_rng([seed, STREAM_IMAGE, pid, cam, k]), size)
                name = namer(pid, cam, seq, first + k * step)
                if not test:
                    write("bounding_box_train", name, data)
                elif k == query:
                    write("query", name, data)
                    write("gt_bbox", name, data)
                elif k < per_camera:
                    write("bounding_box_test", name, data)
                else:
                    write("gt_bbox", name, data)

    # Junk and distractors: bad boxes and people who are no test identity, as Market-1501's gallery holds.
    for cam in cameras:
        for k in range(params["junk_per_camera"]):
            rng = np.random.default_rng([seed, STREAM_JUNK, cam, k])
            person = _sample_person(rng) if rng.random() < 0.7 else None
            data = _render(person, models[cam], backgrounds[cam], rng, size, framing="partial")
            write("bounding_box_test",
                  namer(-1, cam, int(rng.integers(1, SEQUENCES + 1)), int(rng.integers(1, 1000000))), data)
        for k in range(params["distractors_per_camera"]):
            rng = np.random.default_rng([seed, STREAM_DISTRACTOR, cam, k])
            person = _sample_person(rng) if rng.random() < 0.8 else None
            data = _render(person, models[cam], backgrounds[cam], rng, size)
            write("bounding_box_test",
                  namer(0, cam, int(rng.integers(1, SEQUENCES + 1)), int(rng.integers(1, 1000000))), data)
    return counts


def make_market_tree(root, **params):
    """Write a synthetic Market-1501 tree into `root`; return the number of images per folder.

    Training ids are 1..train_ids, test ids train_ids+1..train_ids+test_ids; each is seen
    by 2..`cameras` cameras, `images_per_camera` detection boxes per camera. If `root`
    already holds a tree written with the same parameters, nothing is written. A
    non-empty `root` without the marker, or one made with other parameters, raises
    SystemExit. The tree is built in a temporary folder beside `root` and renamed, so an
    interrupted run leaves no half-written dataset behind.

    The keyword arguments are the names in PARAMS; each one left out takes its default.
    """
    unknown = [k for k in params if k not in DEFAULTS]
    if unknown:
        raise TypeError(f"make_market_tree() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"its parameters are {', '.join(DEFAULTS)}")
    params = dict(DEFAULTS, **params, version=GENERATOR_VERSION)
    _validate(params)
    params = {k: int(v) for k, v in params.items()}
    counts = _existing_counts(root, params)
    if counts is not None:
        return counts
    def build(tmp):
        counts = _write_tree(tmp, params)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"generator": "synthetic.py", "params": params, "counts": counts}, f, indent=1, sort_keys=True)
            f.write("\n")
        return counts
    return publish_tree(root, build, lambda: _existing_counts(root, params))


def publish_tree(root, build, existing):
    """build(tmp) writes a tree (its marker included) into a temporary folder beside `root` and
    returns what to return; the folder is then renamed to `root`, so an interrupted run leaves
    nothing half-written. If someone else filled `root` meanwhile, existing() returns what that
    tree holds if it is this very tree, else None (and the rename's error stands)."""
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(root)) + ".", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        result = build(tmp)
        try:
            if os.path.isdir(root):
                os.rmdir(root)
            os.rename(tmp, root)
        except OSError:
            result = existing()
            if result is None:
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return result

