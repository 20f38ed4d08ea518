"""What search.py searches: folders of images and footage (video files, MOTChallenge sequence
folders), turned into descriptors by a trained run, and kept in the run's cache.

An image folder gives one gallery entry per image. Footage gives one entry per tracklet: the
boxes of a detections file (or of the person detector) on every --stride-th frame, each cropped
and described, linked across frames by motion and appearance (tracking.py), and the tracklet described by the
mean of its boxes' descriptors, normalised (the field's practice for a person seen over frames).
The boxes' own descriptors are kept too, so that a search can show the box that best matches
its query.

Cache: model/<name>/cache/, one file per gallery (folder or footage), checkpoint, input size and
precision (and, for footage, its boxes and stride). Whatever else changes, nothing stale is used:
an image is extracted again when its file changed; footage whose file, frames or boxes changed is
described again as a whole.
"""
import hashlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from model import FEATURE_DIM, descriptors
from reid.cli import UserError, shorten
from reid.data import IMAGE_EXTENSIONS, UnreadableImage, is_image, load_image, test_transform
from reid.evaluation.verification import threshold_at_far
from reid.runs import SEARCH_CACHE, atomic_path, checkpoint_path
from reid.search import footage as fo
from reid.search import tracking

# Part of every cache key: a change to how descriptors are computed must not reuse old ones.
CACHE_VERSION = 2  # 2: footage's cache holds every sampled box, before linking
# The columns footage adds to a search's results.csv (empty for images of a folder)
FOOTAGE_COLUMNS = ["video", "frame", "time", "left", "top", "width", "height", "track", "first_frame", "last_frame",
                   "start", "end"]


def list_images(path, flag):
    """The image files of a file or folder (recursively, sorted), or a UserError saying what is wrong."""
    if os.path.isfile(path):
        if not is_image(path):
            raise UserError(f"{flag} {path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})"
                            + (f" nor a video file ({', '.join(fo.VIDEO_EXTENSIONS)})" if flag == "--gallery" else ""))
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"{flag} {path} does not exist")
    found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names if is_image(name))
    if not found:
        raise UserError(f"{flag} {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}), in any subfolder")
    return found


class Images:
    """A dataset of image files for DataLoader: (image, 1), or (zeros, 0) for a file that cannot be
    decoded, so that one bad file does not stop a search of thousands."""

    def __init__(self, paths, transform, size):
        self.paths, self.transform, self.size = paths, transform, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return self.transform(load_image(self.paths[index])), 1
        except UnreadableImage:
            return torch.zeros(3, *self.size), 0


class Recording:
    """A loader that remembers which images could be read while descriptors() consumes it."""

    def __init__(self, loader):
        self.loader, self.readable = loader, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, readable in self.loader:
            self.readable.append(readable)
            yield images, readable


def input_size(opts):
    return int(opts["height"]), int(opts["width"])


def file_key(path):
    """What changes when a file is replaced or written: size, modification and change times, inode."""
    s = os.stat(path)
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


@dataclass
class Describer:
    """What turns a search's images into descriptors, and where it keeps them: the trained model
    on `device`; its run `folder` and `checkpoint` (which_epoch), where the cache lives and what it
    is keyed by, with the input `size` (height, width) and `precision`; and how images are loaded."""
    model: torch.nn.Module
    device: torch.device
    folder: str
    checkpoint: str
    size: tuple
    precision: str
    batchsize: int
    num_workers: int

    def extract(self, paths, desc):
        """(descriptors, readable mask) of image files."""
        if not paths:
            return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, bool)
        loader = Recording(DataLoader(Images(paths, test_transform(*self.size), self.size), batch_size=self.batchsize,
                                      num_workers=self.num_workers, pin_memory=self.device.type == "cuda"))
        features = descriptors(self.model, loader, self.device, desc, self.precision)
        return features, torch.cat(loader.readable).numpy().astype(bool)

    def cache_path(self, what, extra=()):
        """(the cache file of gallery `what` for this checkpoint, input size and precision, and the
        identity that the file must hold). The file's name leaves out the checkpoint's times, so that
        a checkpoint saved again replaces its cache instead of adding one; the identity holds them, so
        that no stale one is used (and a hash collision cannot pass for a cache)."""
        checkpoint = checkpoint_path(self.folder, self.checkpoint)
        place = ((CACHE_VERSION, os.path.abspath(what), os.path.abspath(checkpoint), self.precision) + self.size
                 + tuple(extra))
        identity = repr(place + (file_key(checkpoint),))
        name = f"gallery-{hashlib.sha1(repr(place).encode()).hexdigest()[:16]}.npz"
        return os.path.join(self.folder, SEARCH_CACHE, name), identity


def image_features(describer, paths, root):
    """Descriptors of the images of gallery folder `root`, from the run's cache where an image is
    unchanged; returns (readable paths, their descriptors, unreadable paths, how many readable ones
    were extracted now)."""
    cache, identity = describer.cache_path(root)
    rel = [os.path.relpath(p, root) for p in paths]
    keys = np.array([file_key(p) for p in paths], dtype=np.int64).reshape(-1, 4)
    cached = {}
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["identity"]) == identity:
                cached = {p: (k, f) for p, k, f in zip(saved["paths"].tolist(), saved["keys"], saved["features"])}
    fresh = [i for i, (p, k) in enumerate(zip(rel, keys)) if p not in cached or not np.array_equal(cached[p][0], k)]
    new, readable = describer.extract([paths[i] for i in fresh], "gallery")
    features = np.zeros((len(paths), FEATURE_DIM), np.float32)
    ok = np.ones(len(paths), bool)
    features[fresh], ok[fresh] = new, readable
    for i in sorted(set(range(len(paths))) - set(fresh)):
        features[i] = cached[rel[i]][1]
    if fresh or len(cached) != len(paths):  # something was added, changed or removed
        # unreadable files are not cached: they are tried again next time
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, identity=np.array(identity), paths=np.array(rel)[ok], keys=keys[ok], features=features[ok])
    return ([p for p, good in zip(paths, ok) if good], features[ok], [p for p, good in zip(paths, ok) if not good],
            int(readable.sum()))


@dataclass
class Described:
    """One footage of a search: its tracklets, the descriptors of their boxes (in the order of
    boxes(), tracklet by tracklet) and of the tracklets themselves (mean of their boxes', normalised),
    and the cosine similarities of its pairs of different people (two boxes of one frame:
    tracking.same_frame_pairs), which its linking by appearance and search.py's decisions rest on."""
    footage: fo.Footage
    tracklets: list
    box_features: np.ndarray
    features: np.ndarray
    extracted: bool  # described now, not taken from the cache
    different: np.ndarray  # cosine similarities of the footage's pairs of different people

    def boxes(self):
        return [box for t in self.tracklets for box in t.boxes]

    def spans(self):
        """(start, stop) of each tracklet's rows in box_features."""
        ends = np.cumsum([len(t.boxes) for t in self.tracklets])
        return list(zip(np.concatenate([[0], ends[:-1]]).tolist(), ends.tolist()))

    def owners(self):
        """The tracklet (its index) of each row of box_features."""
        return np.repeat(np.arange(len(self.tracklets)), [len(t.boxes) for t in self.tracklets])

    def negatives(self):
        """Cosine similarities of pairs of different people as a search compares them, an image
        against a tracklet: each box against the tracklet of each other person on its frame whose
        box does not overlap it (tracking.same_frame_pairs), both ways round."""
        owner = self.owners()
        first, second = tracking.same_frame_pairs(self.boxes())
        return np.concatenate([np.einsum("ij,ij->i", self.box_features[a], self.features[owner[b]])
                               for a, b in ((first, second), (second, first))])


class Crops:
    """Batches of the transformed crops of boxes, in the order given, for descriptors(): the
    footage is decoded once, in frame order (footage.crop_boxes), whatever the order of the boxes."""

    def __init__(self, footage, boxes, transform, batchsize):
        self.footage, self.boxes, self.transform, self.batchsize = footage, boxes, transform, batchsize
        self.order = sorted(range(len(boxes)), key=lambda i: boxes[i].frame)  # stable: a frame's boxes keep theirs

    def __len__(self):
        return -(-len(self.boxes) // self.batchsize)

    def __iter__(self):
        batch = []
        for _, crop in fo.crop_boxes(self.footage, [self.boxes[i] for i in self.order]):
            batch.append(self.transform(crop))
            if len(batch) == self.batchsize:
                yield torch.stack(batch), None
                batch = []
        if batch:
            yield torch.stack(batch), None


def footage_key(footage):
    """What changes when footage is replaced or edited: the video file, or every frame file of a
    sequence (and its seqinfo.ini)."""
    if footage.kind == "video":
        return file_key(footage.path)
    files = list(footage.frame_files)
    seqinfo = os.path.join(footage.path, fo.SEQINFO)
    if os.path.isfile(seqinfo):
        files.append(seqinfo)
    return hashlib.sha1(np.array([file_key(f) for f in files], np.int64).tobytes()).hexdigest()


def sampled_features(describer, footage, boxes, source, stride):
    """(the boxes of every `stride`-th frame of `boxes`, their descriptors, whether described now):
    from the run's cache when the footage, the boxes (from `source`: a file or the detector's name)
    and the stride are unchanged."""
    sampled = [box for box in boxes if (box.frame - 1) % stride == 0]
    table = np.array([tuple(b) for b in sampled], np.float64).reshape(-1, len(fo.Box._fields))
    cache, identity = describer.cache_path(footage.path, (stride, source))
    identity += repr(footage_key(footage))
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["identity"]) == identity and np.array_equal(saved["boxes"], table):
                return sampled, saved["box_features"], False
    crops = Crops(footage, sampled, test_transform(*describer.size), describer.batchsize)
    features = np.zeros((len(sampled), FEATURE_DIM), np.float32)
    if sampled:
        features[crops.order] = descriptors(describer.model, crops, describer.device, footage.name,
                                            describer.precision)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, identity=np.array(identity), boxes=table, box_features=features)
    return sampled, features, True


def different_people(boxes, features):
    """(cosine similarities of the pairs of different people among `boxes`, two boxes of one frame
    (tracking.same_frame_pairs); the cosine that one pair in LINK_FAR of them reaches, and the one
    that a share UNLIKE_SHARE of them reach: each None where there are too few pairs to say)."""
    first, second = tracking.same_frame_pairs(boxes)
    different = np.einsum("ij,ij->i", features[first], features[second])

    def reached_by(share):
        return threshold_at_far(different, share) if len(different) * share >= tracking.MIN_ABOVE else None
    return different, reached_by(tracking.LINK_FAR), reached_by(tracking.UNLIKE_SHARE)


def describe_footage(describer, footage, boxes, source, stride):
    """Described footage: the boxes of every `stride`-th frame described (sampled_features), then
    linked into tracklets by motion and appearance (tracking.py), at the cosine similarity that one
    pair in LINK_FAR of the footage's own pairs of different people reaches; by motion alone where
    it has too few such pairs to say."""
    sampled, features, extracted = sampled_features(describer, footage, boxes, source, stride)
    different, same_cosine, different_cosine = different_people(sampled, features)
    tracklets = tracking.link_tracklets(sampled, footage.fps, motion=True, features=features, same_cosine=same_cosine,
                                        different_cosine=different_cosine)
    rows = np.array([k for t in tracklets for k in t.rows], np.int64)
    described = Described(footage, tracklets, features[rows], np.zeros((len(tracklets), FEATURE_DIM), np.float32),
                          extracted, different)
    for k, (start, stop) in enumerate(described.spans()):
        mean = described.box_features[start:stop].mean(0)
        described.features[k] = mean / max(np.linalg.norm(mean), 1e-12)
    return described


def detected_boxes(footage, source, stride, folder, detect):
    """The person detector's boxes of the footage: from run `folder`'s cache when the footage, the
    detector and its score threshold (`source`) and the stride are unchanged, else detect() and
    keep them. They do not depend on the run's checkpoint, so a retrained run reuses them."""
    place = (CACHE_VERSION, os.path.abspath(footage.path), source, stride)
    identity = repr(place + (footage_key(footage),))
    cache = os.path.join(folder, SEARCH_CACHE, f"boxes-{hashlib.sha1(repr(place).encode()).hexdigest()[:16]}.npz")
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["identity"]) == identity:
                return [fo.Box(int(r[0]), int(r[1]), *map(float, r[2:])) for r in saved["boxes"]]
    boxes = detect()
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, identity=np.array(identity),
                     boxes=np.array([tuple(b) for b in boxes], np.float64).reshape(-1, len(fo.Box._fields)))
    return boxes


def footage_detections(args, paths):
    """{footage path: its --detections file} (None where the footage's own file or the detector is
    to give the boxes), or a UserError when --detections does not pair up with the footage."""
    given = args.detections or []
    if given and len(given) != len(paths):
        raise UserError(f"--detections names {len(given)} file(s) for {len(paths)} footage galler"
                        f"{'y' if len(paths) == 1 else 'ies'} ({shorten(paths)}): give one per footage, in order")
    for path in given:
        if not os.path.isfile(path):
            raise UserError(f"--detections {path} does not exist; give a MOTChallenge text file "
                            f"(frame,id,left,top,...)")
    return {path: given[k] if given else None for k, path in enumerate(paths)}


def footage_boxes(footage, detections, args, describer, detector):
    """(boxes of people in the footage, where they come from): --detections, the sequence's own
    det/det.txt (gt/gt.txt with --ground_truth, or where there is no det.txt), or the detector,
    loaded once (detector[0])."""
    ground_truth = args.ground_truth
    if detections is None and footage.kind == "sequence":
        own = {truth: os.path.join(footage.path, fo.GROUND_TRUTH if truth else fo.DETECTIONS) for truth in (0, 1)}
        if not os.path.isfile(own[ground_truth]) and os.path.isfile(own[not ground_truth]):
            ground_truth = not ground_truth
        detections = own[ground_truth] if os.path.isfile(own[ground_truth]) else None
    if detections is not None:
        boxes, summary = fo.read_detections(detections, footage, ground_truth=ground_truth)
        print(summary)
        return boxes, f"{os.path.abspath(detections)} {file_key(detections)} {ground_truth}"
    source = f"detector {args.detector} {args.min_score}"

    def detect():
        from reid.search import detector as people  # torchvision's detection models load only where needed
        if not detector:
            detector.append(people.load_detector(describer.device, args.detector))
        boxes, summary = people.detect_people(footage, detector[0], describer.device, stride=args.stride,
                                              min_score=args.min_score)
        print(summary)
        return boxes
    return detected_boxes(footage, source, args.stride, describer.folder, detect), source


def describe_at(path, detections, describer, args, detector):
    """The Described footage at `path`: opened, its boxes found (footage_boxes), described."""
    footage = fo.open_footage(path)
    if footage.note:
        print(f"note: {footage.note}", file=sys.stderr)
    boxes, source = footage_boxes(footage, detections, args, describer, detector)
    d = describe_footage(describer, footage, boxes, source, args.stride)
    print(f"footage {path}: {footage.length or 'its'} frames, {len(d.tracklets)} tracklets of {len(d.boxes())} boxes "
          f"on {'every frame' if args.stride == 1 else f'1 frame in {args.stride}'}, "
          + ("described now" if d.extracted else "from the cache"))
    return d
