"""Stage 1: turn a raw person re-identification dataset into the ImageFolder tree
the other stages read, one folder per identity:

    <download_path>/pytorch/train_all/<id>/   every training image
    <download_path>/pytorch/train/<id>/       train_all minus val
    <download_path>/pytorch/val/<id>/         the first image (sorted by name) of each
                                              training id that has two or more images
    <download_path>/pytorch/query/<id>/       query
    <download_path>/pytorch/gallery/<id>/     gallery (junk in -1/, distractors in 0000/)
    <download_path>/pytorch/multi-query/<id>/ gt_bbox, where the dataset has it (Market-1501)
    <download_path>/pytorch/identities.csv    id,name: custom data whose identity folders
                                              are names, not numbers
    <download_path>/pytorch/calibration/<id>/ --calibration: identities held out for calibration
    <download_path>/pytorch/split.yaml        --hold_out, --calibration: the identities held out
(--output writes the tree elsewhere.)

--dataset names the raw layout --download_path holds (one entry of DATASETS each):
    market, duke  bounding_box_train -> train_all, query -> query,
                  bounding_box_test -> gallery, gt_bbox -> multi-query (when present)
    cuhk03        CUHK03-NP's labeled/ or detected/ folder: the same three folders
    msmt17        MSMT17_V1 (train/, test/) or MSMT17_V2 (mask_train_v2/, mask_test_v2/):
                  list_train.txt + list_val.txt -> train_all, list_query.txt -> query,
                  list_gallery.txt -> gallery
    custom        train/, query/, gallery/, each holding <identity>/<images>; cameras from
                  cameras.csv (path,camera) or from c<n> / cam<n> in the file names
    mot           annotated footage: MOTChallenge sequence folders (seqinfo.ini, img1/, gt/gt.txt)
                  and/or video files each with its ground truth beside it under the same name
                  (cam1.mp4 + cam1.txt, MOTChallenge text; a video beside a sequence folder of
                  its name is skipped); the people of the ground truth are cropped into
                  train_all (below)

--hold_out N makes the test split out of the training images instead, for datasets whose test
set is missing (or to tune without touching it): N identities seen by two or more cameras
(drawn with --seed) leave training, and for each of them and each of its cameras one image
(drawn too) becomes a query and the others gallery images, as Market-1501 drew its queries.
Queries and gallery of one person from the same camera are junk to the evaluation, so every
query is matched across cameras, with people the network never trained on. The dataset's
own query and gallery folders are not read; split.yaml in the tree records the held-out ids.

--calibration M holds M more identities of the training images out (seen by two or more
cameras, drawn with --seed among those left): all their images go to calibration/, where
train_new.py fits the same-person probability and its thresholds at the end of training, on
people it never trained on and that the test set does not hold either.

--dataset mot: each sequence or video is one camera, numbered from 1 in the sorted order of
their names; footage.py reads them and their ground truth (track ids; boxes marked conf 0, other
classes than pedestrians, less visible than --min_visibility or lower than --min_height left out).
The boxes of every --mot_stride-th frame (1, 1 + stride, ...: consecutive frames show one pose
again and again) are cropped and written as new JPEG files named <id>_c<camera>s1_<frame>_<n>.jpg
(n counts a person's boxes on one frame, from 00), into train_all. MOTChallenge numbers tracks
in each sequence on its own, so by default every (sequence, track) is a person of its own,
numbered 1, 2, ... in camera and track order (identities.csv names each); --shared_ids says
that the files give a person one id in every camera (multi-camera annotations), which is then
the id. Only then are people seen by two cameras, which --hold_out and --calibration draw from.

The later stages read id and camera from file names (data.parse_name), whatever the
dataset: a prepared file keeps its raw name when that name already reads as its id
and camera, and is named <id>_c<camera>_<raw name> otherwise. After preparing, each
split's image and identity counts are compared with the dataset's published ones.

Files are hard links to the raw images (a copy where links are impossible; crops of footage
are new files); nothing under the raw folders is written, moved or deleted, and running it
again gives the same tree.
"""
import collections
import csv
import dataclasses
import os
import random
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import yaml
from tqdm import tqdm

from reid import cli
from reid.cli import UserError, run_main, shorten
from reid.data import (
    NAME_HELP,
    NAME_PATTERN,
    SPLITS,
    SYNTHETIC_MARKER,
    UnreadableImage,
    id_folder,
    is_image,
    link,
    load_image,
    parse_name,
    parse_names,
)
from reid.footage_crops import FootageCrops
from reid.runs import atomic_path


@dataclass(frozen=True)
class Source:
    """Raw images feeding one prepared split: a folder of images, or a list file whose
    lines (`<path> <id>`) name images under the folder `images`."""
    split: str
    path: str  # relative to --download_path
    images: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Dataset:
    """What preparing one raw dataset needs to know. pattern reads a raw file name's id and
    camera (named groups pid and cam); without one, ids come from identity folders (custom)."""
    title: str
    sources: tuple
    pattern: re.Pattern = None
    name_help: str = NAME_HELP
    # split -> (images, ids) as published, counted as in the prepared tree: every file,
    # and every id folder, junk (-1/) and distractors (0000/) included
    published: dict = field(default_factory=dict)
    # variants sharing one layout (CUHK03-NP's labeled and detected) are told apart by the folder's name
    folder_name: str = ""
    layout_note: str = ""

    def required(self):
        """What must exist under --download_path: folders end with a slash."""
        names = [s.path if s.images else s.path + "/" for s in self.sources if not s.optional]
        names += [s.images + "/" for s in self.sources if s.images]
        return list(dict.fromkeys(names))

    def fits(self, root):
        if self.folder_name:
            return self.folder_name in os.path.basename(os.path.abspath(root)).lower()
        return any(os.path.isdir(os.path.join(root, s.images)) for s in self.sources)

    def looks(self):
        if self.folder_name:
            return f"a folder named {self.folder_name}"
        return "a folder holding " + " and ".join(dict.fromkeys(s.images + "/" for s in self.sources))


MARKET_SOURCES = (Source("train_all", "bounding_box_train"), Source("query", "query"),
                  Source("gallery", "bounding_box_test"), Source("multi-query", "gt_bbox", optional=True))
# MSMT17 names: <id>_<index>_<camera>_<date><time>_<frame>_<n>[_ex].jpg; cameras 01-15
MSMT17_PATTERN = re.compile(r"^(?P<pid>\d+)_\d+_(?P<cam>\d+)_[^/\\]*$")
MSMT17_HELP = "<id>_<index>_<camera>_<date><time>_..., e.g. 0000_000_01_0303morning_0015_0.jpg (MSMT17)"
MSMT17_PUBLISHED = {"train_all": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}
CUHK03_HELP = "<id>_c<camera>_<n>.png, e.g. 0001_c1_1.png (CUHK03-NP)"


def msmt17(version, train, test):
    # The standard train set is list_train plus list_val (32,621 images); lists give paths under train/test.
    return Dataset(f"MSMT17_{version}", (Source("train_all", "list_train.txt", train),
                                         Source("train_all", "list_val.txt", train),
                                         Source("query", "list_query.txt", test),
                                         Source("gallery", "list_gallery.txt", test)),
                   MSMT17_PATTERN, MSMT17_HELP, MSMT17_PUBLISHED)


# --dataset -> its variants; the one that fits --download_path is used
DATASETS = {
    # gallery ids: 750 people, the distractors (0000/) and the junk (-1/)
    "market": (Dataset("Market-1501", MARKET_SOURCES, NAME_PATTERN, published={
        "train_all": (12936, 751), "query": (3368, 750), "gallery": (19732, 752)}),),
    # gallery ids: 702 people and 408 distractors, each seen by one camera only
    "duke": (Dataset("DukeMTMC-reID", MARKET_SOURCES, NAME_PATTERN, published={
        "train_all": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}),),
    "cuhk03": tuple(Dataset(f"CUHK03-NP {kind}", MARKET_SOURCES[:3], NAME_PATTERN, CUHK03_HELP,
                            {"train_all": (train, 767), "query": (1400, 700), "gallery": (gallery, 700)},
                            folder_name=kind)
                    for kind, train, gallery in (("labeled", 7368, 5328), ("detected", 7365, 5332))),
    "msmt17": (msmt17("V1", "train", "test"), msmt17("V2", "mask_train_v2", "mask_test_v2")),
    "custom": (Dataset("custom", (Source("train_all", "train"), Source("query", "query"), Source("gallery", "gallery")),
                       layout_note="; each as <identity>/<images>"),),
    # no raw images: reid.footage_crops cuts them out of the footage
    "mot": (Dataset("MOTChallenge footage", ()),),
}
# Identity folder names kept as numbers (Market-1501's: -1 junk, 0 distractors)
INTEGER = re.compile(r"-1|\d+")
# A camera in a custom file name: c<n> or cam<n> between the ends of the name and _ - .
CAMERA_TOKEN = re.compile(r"(?:^|[_.-])c(?:am)?(?P<cam>\d+)(?=$|[_.-])", re.IGNORECASE)
CAMERAS_CSV = "cameras.csv"
IDENTITIES_CSV = "identities.csv"
SPLIT_YAML = "split.yaml"


def choose(root, variants):
    """The variant of a dataset that --download_path holds, or exit saying what to pass."""
    fitting = [v for v in variants if len(variants) == 1 or v.fits(root)]
    if fitting:
        return fitting[0]
    inner = [v.folder_name for v in variants if v.folder_name and os.path.isdir(os.path.join(root, v.folder_name))]
    if inner:
        raise UserError(f"{root} holds {' and '.join(f + '/' for f in inner)}; pass one of them, e.g. "
                        f"--download_path {os.path.join(root, inner[0])}")
    raise UserError(f"{root} is none of " + "; ".join(f"{v.title} ({v.looks()})" for v in variants)
                    + "; pass the folder of one of them")


def check_layout(root, dataset):
    missing = [n for n in dataset.required() if not os.path.exists(os.path.join(root, n))]
    # a prepared tree can hold what a custom dataset needs (train/, query/, gallery/)
    prepared = os.path.isdir(os.path.join(root, "train_all"))
    if missing or prepared:
        raise UserError(f"{root} " + (f"lacks {', '.join(missing)}" if missing else "is a prepared tree")
                        + f"; --download_path must be the raw {dataset.title} folder (holding "
                        f"{', '.join(dataset.required())}{dataset.layout_note})"
                        + (", not its pytorch/ tree" if prepared else ""))


def parse_all(paths, dataset, where):
    """(path, id, camera) of each image, read from its name; exit naming any name that does not parse."""
    pids, cams = parse_names(paths, dataset.pattern, dataset.name_help, where)
    return [(p, int(pid), int(cam)) for p, pid, cam in zip(paths, pids, cams)]


def read_list(root, source, dataset):
    """The images a list file names (`<path under source.images> <id>` per line), checked against the disk
    and against the ids in their names."""
    list_file, folder = os.path.join(root, source.path), os.path.join(root, source.images)
    lines = []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rsplit(None, 1)
            if not fields:
                continue
            if len(fields) != 2 or not INTEGER.fullmatch(fields[1]):
                raise UserError(f"{list_file} line {number} is {line.strip()!r}, not '<image path> <id>'; "
                                f"restore the file from the {dataset.title} download")
            lines.append((os.path.join(folder, fields[0]), int(fields[1])))
    missing = [p for p, _ in lines if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} image(s) that {list_file} names are missing: {shorten(missing)}; "
                        f"the list files and {source.images}/ must come from the same {dataset.title} download")
    images = parse_all([p for p, _ in lines], dataset, list_file)
    wrong = [f"{os.path.relpath(p, folder)} {label}" for (p, label), (_, pid, _) in zip(lines, images) if label != pid]
    if wrong:
        raise UserError(f"{len(wrong)} line(s) of {list_file} give an id other than their file name's: "
                        f"{shorten(wrong)}; restore the file from the {dataset.title} download")
    return images


def read_folder(root, source, dataset):
    folder = os.path.join(root, source.path)
    return parse_all([os.path.join(folder, n) for n in sorted(os.listdir(folder)) if is_image(n)], dataset, folder)


def number_identities(names):
    """Id of each identity folder name, and whether they had to be numbered: integer names keep their
    number; otherwise the names are numbered 1..N in sorted order (-1 and 0 still mean junk and
    distractors), over all splits at once so that a person keeps one id in query and gallery."""
    if all(INTEGER.fullmatch(n) for n in names):
        return {n: int(n) for n in names}, False
    reserved = {n: int(n) for n in names if INTEGER.fullmatch(n) and int(n) in (-1, 0)}
    return {**reserved, **{n: i for i, n in enumerate(sorted(set(names) - set(reserved)), 1)}}, True


def read_cameras(root):
    """cameras.csv as {normalised path relative to --download_path: camera}; {} without the file."""
    path = os.path.join(root, CAMERAS_CSV)
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often start with a BOM
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["path", "camera"]:
        raise UserError(f"{path} must start with the header line path,camera")
    cameras = {}
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 2 or not row[1].strip().isdigit() or int(row[1]) < 1:
            raise UserError(f"{path} line {number} is {','.join(row)!r}, not <image path>,<camera number from 1>")
        cameras[os.path.normpath(row[0].strip())] = int(row[1])
    return cameras


def name_camera(name):
    match = CAMERA_TOKEN.search(name)
    return int(match["cam"]) if match and int(match["cam"]) >= 1 else None


def read_identities(root, dataset):
    """(images as (path, split, id, camera), {id: name} when names were numbered) of a custom dataset:
    the id from the identity folder, the camera from cameras.csv, else from the file name."""
    found = []  # (split, identity folder, path)
    for source in dataset.sources:
        folder = os.path.join(root, source.path)
        loose = sorted(n for n in os.listdir(folder) if is_image(n))
        if loose:
            raise UserError(f"{folder} holds images outside identity folders ({shorten(loose)}); "
                            f"move each into {source.path}/<identity>/")
        for identity in sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))):
            found += [(source.split, identity, os.path.join(folder, identity, n))
                      for n in sorted(os.listdir(os.path.join(folder, identity))) if is_image(n)]
    ids, numbered = number_identities({identity for _, identity, _ in found})
    listed = read_cameras(root)
    cameras = [listed.get(os.path.normpath(os.path.relpath(p, root))) or name_camera(os.path.basename(p))
               for _, _, p in found]
    lacking = [os.path.relpath(p, root) for (_, _, p), cam in zip(found, cameras) if cam is None]
    if lacking:
        raise UserError(f"{len(lacking)} image(s) carry no camera: {shorten(lacking, 3)}; put the camera in each "
                        f"name as _c<camera>_ (e.g. alice_c2_001.jpg, cameras numbered from 1) or list them in "
                        f"{os.path.join(root, CAMERAS_CSV)} (header path,camera; paths relative to {root})")
    images = [(p, split, ids[identity], cam) for (split, identity, p), cam in zip(found, cameras)]
    return images, ({pid: name for name, pid in ids.items()} if numbered else None)


def read_images(root, dataset):
    """(images as (path, split, id, camera), {id: name} or None) of a raw dataset, or exit naming what is wrong."""
    check_layout(root, dataset)
    if dataset.pattern is None:
        return read_identities(root, dataset)
    images = []
    for source in dataset.sources:
        if os.path.exists(os.path.join(root, source.path)):
            read = read_list if source.images else read_folder
            images += [(p, source.split, pid, cam) for p, pid, cam in read(root, source, dataset)]
    return images, None


def training_only(dataset):
    """The dataset as --hold_out reads it: its training sources alone, nothing published to compare with."""
    return dataclasses.replace(dataset, sources=tuple(s for s in dataset.sources if s.split == "train_all"),
                               published={})


def draw_identities(images, count, rng, flag):
    """`count` ids of the training images (split train_all), drawn among those seen by two or more
    cameras; exit naming `flag` when there are not enough, or none would be left to train on."""
    cameras = collections.defaultdict(set)
    for _, split, pid, cam in images:
        if split == "train_all":
            cameras[pid].add(cam)
    eligible = sorted(pid for pid, cams in cameras.items() if pid > 0 and len(cams) >= 2)
    if not 0 < count < len(cameras) or count > len(eligible):
        raise UserError(f"{flag} {count} cannot be met: the training images left hold {len(cameras)} ids, "
                        f"{len(eligible)} of them seen by two or more cameras; hold out between 1 and "
                        f"{min(len(eligible), len(cameras) - 1)}")
    return set(rng.sample(eligible, count))


def hold_out(images, count, seed):
    """(images, held-out ids): `count` identities of the training images, drawn among those seen by two
    or more cameras, moved to query (one image per identity and camera) and gallery (the rest)."""
    rng = random.Random(seed)
    held = draw_identities(images, count, rng, "--hold_out")
    by_camera = collections.defaultdict(list)
    for path, _, pid, cam in images:
        if pid in held:
            by_camera[pid, cam].append(path)
    queries = {key: rng.choice(sorted(paths)) for key, paths in sorted(by_camera.items())}
    # A query with no image of its person left in another camera has nothing to find: it stays in
    # the gallery instead, where it gives the person's later queries a match.
    for pid, cam in list(queries):
        if not any(p != queries.get((pid, c)) for (other, c), paths in by_camera.items()
                   if other == pid and c != cam for p in paths):
            del queries[pid, cam]
    chosen = set(queries.values())
    moved = [(p, ("query" if p in chosen else "gallery") if pid in held else split, pid, cam)
             for p, split, pid, cam in images]
    return moved, sorted(held)


def hold_for_calibration(images, count, seed):
    """(images, calibration ids): `count` identities of the training images left, drawn among those
    seen by two or more cameras (with a generator of their own: the test split does not change with
    --calibration), moved whole to calibration/."""
    chosen = draw_identities(images, count, random.Random(f"calibration {seed}"), "--calibration")
    return [(p, "calibration" if pid in chosen else split, pid, cam) for p, split, pid, cam in images], sorted(chosen)


def check_stale(out, entries):
    """Exit if `out` holds prepared files this preparation would not write (another --hold_out or
    --seed, or a changed dataset): left there, they would mix the splits."""
    planned = {os.path.join(out, split, pid, name) for _, split, pid, name in entries}
    stale = [os.path.join(folder, name) for split in SPLITS for folder, _, names in os.walk(os.path.join(out, split))
             for name in names if os.path.join(folder, name) not in planned]
    if stale:
        raise UserError(f"{out} holds {len(stale)} prepared file(s) that this preparation would not write "
                        f"({shorten([os.path.relpath(p, out) for p in stale], 3)}): it was prepared with another "
                        f"--hold_out, --seed or dataset; delete {out} (it holds links, not your images) or pass "
                        "another --output")


def write_split(path, held, calibration, seed, root, dataset):
    split = {"source": f"the training images in {os.path.abspath(root)} (read as {dataset.title}'s layout)",
             "seed": seed}
    split |= {"held_out_ids": held} if held else {}
    split |= {"calibration_ids": calibration} if calibration else {}
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(split, f, default_flow_style=None, sort_keys=False)


def prepared_name(path, pid, cam):
    """The raw name when data.parse_name reads this id and camera from it, else <id>_c<camera>_<raw name>."""
    name = os.path.basename(path)
    return name if parse_name(name) == (pid, cam) else f"{id_folder(pid)}_c{cam}_{name}"


def unreadable(paths):
    """The paths among `paths` that cannot be decoded as images (each decoded once, in threads:
    PIL releases the GIL while decoding)."""
    def check(path):
        try:
            load_image(path)
        except UnreadableImage:
            return path
        return None

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        checked = tqdm(pool.map(check, paths), total=len(paths), desc="checking images", unit="img", leave=False)
        return [p for p in checked if p]


def plan(images, bad):
    """(source file, split, id folder, name) for every file of the prepared tree; images are
    (path, split, id, camera), those in `bad` left out. Exits if two would land on one name."""
    entries = [(p, split, id_folder(pid), prepared_name(p, pid, cam)) for p, split, pid, cam in images if p not in bad]
    by_id = {}
    for entry in entries:
        if entry[1] == "train_all":
            by_id.setdefault(entry[2], []).append(entry)
    for files in by_id.values():
        first = min(name for _, _, _, name in files) if len(files) > 1 else None
        entries += [(p, "val" if name == first else "train", pid, name) for p, _, pid, name in files]
    targets = collections.Counter(os.path.join(split, pid, name) for _, split, pid, name in entries)
    twice = sorted(t for t, n in targets.items() if n > 1)
    if twice:
        raise UserError(f"{len(twice)} prepared file(s) would each come from two raw images: {shorten(twice, 3)}; "
                        f"an identity holds two images of one name, or a list names an image twice")
    return entries


def write_identities(path, names):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["id", "name"])
            writer.writerows(sorted(names.items()))


# the flags of --dataset mot alone
MOT_FLAGS = ("shared_ids", "min_visibility", "min_height", "mot_stride")


def check_mot_flags(args):
    if args.mot_stride < 1:
        raise UserError(f"--mot_stride {args.mot_stride}: give 1 (every frame) or more")
    if not 0 <= args.min_visibility <= 1:
        raise UserError(f"--min_visibility {args.min_visibility:g}: visibility is a share, give 0 to 1")
    if args.min_height < 0:
        raise UserError(f"--min_height {args.min_height:g}: give a height in pixels, 0 or more")
    if not args.shared_ids and (args.hold_out or args.calibration):
        raise UserError("--hold_out and --calibration draw people seen by two or more cameras, and without "
                        "--shared_ids each sequence's tracks are people of their own, seen by one camera: pass "
                        "--shared_ids if the files give a person one id in every camera, else --hold_out 0 "
                        "--calibration 0")


class DatasetImages:
    """prepare.py's source of images for a re-ID dataset's layout: read() its image files' names and
    ids, write() them into the tree as links to the raw files (reid.footage_crops.FootageCrops is
    the source for footage)."""
    checked_files = True  # raw image files: each is decoded before preparing (unless --skip_check)

    def __init__(self, root, dataset):
        self.root, self.dataset = root, dataset

    def read(self):
        return read_images(self.root, self.dataset)

    def write(self, out, entries):
        for src, split, pid, name in tqdm(entries, desc="linking", unit="img", leave=False):
            link(src, os.path.join(out, split, pid, name))

    def note(self, entries):
        return None


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--download_path", default="../Market",
                        help="raw dataset folder: for market, duke and cuhk03 the one holding bounding_box_train, "
                             "bounding_box_test and query (for cuhk03, CUHK03-NP's labeled/ or detected/); for msmt17 "
                             "MSMT17_V1 or MSMT17_V2; for custom the one holding train, query and gallery; for mot "
                             "the one holding the sequence folders and videos")
    parser.add_argument("--dataset", choices=list(DATASETS), default="market",
                        help="which raw layout the folder holds (see above); it also gives the published counts "
                             "the prepared splits are compared with")
    parser.add_argument("--output", default=None,
                        help="where to write the prepared tree (not given: <download_path>/pytorch)")
    parser.add_argument("--hold_out", default=0, type=int, metavar="N",
                        help="make query and gallery out of N identities of the training images, which then leave "
                             "training (see above); 0 uses the dataset's own test set")
    parser.add_argument("--calibration", default=0, type=int, metavar="M",
                        help="hold M more identities of the training images out, into calibration/, for "
                             "train_new.py to calibrate the same-person probability on (see above)")
    parser.add_argument("--seed", default=0, type=int,
                        help="--hold_out, --calibration: seed of the draw of identities and queries")
    parser.add_argument("--skip_check", action="store_true",
                        help="do not decode every image first (faster; a broken file then stops training instead)")
    parser.add_argument("--skip_unreadable", action="store_true",
                        help="leave images that cannot be decoded out of the prepared tree instead of stopping")
    parser.add_argument("--shared_ids", action="store_true",
                        help="--dataset mot: the ground truth gives a person the same track id in every camera "
                             "(multi-camera annotations, synthetic footage); without it each sequence's tracks are "
                             "people of their own, as MOTChallenge numbers them")
    parser.add_argument("--min_visibility", default=0.5, type=float,
                        help="--dataset mot: leave out boxes less visible than this (the visibility column of "
                             "MOT16/17 ground truth, 0 to 1): a mostly hidden person's crop shows someone else")
    parser.add_argument("--min_height", default=32, type=float,
                        help="--dataset mot: leave out boxes lower than this many pixels: too small a crop shows "
                             "little of a person")
    parser.add_argument("--mot_stride", default=10, type=int,
                        help="--dataset mot: crop the boxes of every this many frames (1, 1 + stride, ...), so that "
                             "near-identical crops of consecutive frames do not swamp training")
    args = parser.parse_args(argv)

    root = args.download_path
    if not os.path.isdir(root):
        raise UserError(f"--download_path {root} does not exist; pass the folder of the raw {args.dataset} dataset")
    given = [f"--{k}" for k in MOT_FLAGS if getattr(args, k) != parser.get_default(k)]
    if given and args.dataset != "mot":
        raise UserError(f"{', '.join(given)} apply to --dataset mot only; drop them, or pass --dataset mot")
    dataset = choose(root, DATASETS[args.dataset])
    if args.hold_out:
        dataset = training_only(dataset)
    if args.dataset == "mot":
        check_mot_flags(args)
        source = FootageCrops(root, args.shared_ids, args.min_visibility, args.min_height, args.mot_stride)
    else:
        source = DatasetImages(root, dataset)
    images, names = source.read()
    held = calibration = None
    if args.hold_out:
        images, held = hold_out(images, args.hold_out, args.seed)
    if args.calibration:
        images, calibration = hold_for_calibration(images, args.calibration, args.seed)
    out = args.output or os.path.join(root, "pytorch")

    bad = unreadable([p for p, *_ in images]) if source.checked_files and not args.skip_check else []
    if bad and not args.skip_unreadable:
        raise UserError(f"{len(bad)} image(s) cannot be decoded: {shorten(bad)}; replace them (nothing under "
                        f"{root} was changed), or pass --skip_unreadable to prepare without them")
    if bad:
        print(f"warning: left out {len(bad)} image(s) that cannot be decoded: {shorten(bad)}", file=sys.stderr)

    entries = plan(images, set(bad))
    check_stale(out, entries)
    source.write(out, entries)
    if names:
        write_identities(os.path.join(out, IDENTITIES_CSV), names)
    split_file = os.path.join(out, SPLIT_YAML)
    if held or calibration:
        write_split(split_file, held, calibration, args.seed, root, dataset)
    elif os.path.exists(split_file):
        os.remove(split_file)

    print(f"wrote {out}")
    counts = {}
    for split in SPLITS:
        files = [e for e in entries if e[1] == split]
        counts[split] = (len(files), len({e[2] for e in files}))
        if files:
            print(f"  {split:<12} {counts[split][0]:6d} images {counts[split][1]:5d} ids")
    if names:
        print(f"  {IDENTITIES_CSV}  names of the {len(names)} ids")
    if held:
        print(f"  query and gallery: {len(held)} ids held out of the training images (--seed {args.seed}; "
              f"{SPLIT_YAML} lists them), never trained on")
    if calibration:
        print(f"  calibration: {len(calibration)} ids held out of the training images (--seed {args.seed}; "
              f"{SPLIT_YAML} lists them), for train_new.py to calibrate on")
    note = None if held else source.note(entries)
    if note:
        print(note)
    lonely = sorted({e[2] for e in entries if e[1] == "query"} - {e[2] for e in entries if e[1] == "gallery"})
    if lonely:
        print(f"warning: {len(lonely)} query id(s) have no gallery image ({shorten(lonely)}); evaluation will skip "
              f"their queries", file=sys.stderr)
    # A tree drawn by synthetic.py is small on purpose: comparing it with the real dataset says nothing.
    if not os.path.exists(os.path.join(root, SYNTHETIC_MARKER)):
        for split, (n_images, n_ids) in dataset.published.items():
            if counts[split] != (n_images, n_ids):
                print(f"warning: {split} holds {counts[split][0]} images of {counts[split][1]} ids; {dataset.title} "
                      f"as published has {n_images} images of {n_ids} ids "
                      f"({'incomplete download?' if counts[split][0] < n_images else 'files added or changed?'})",
                      file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
