"""Labelled footage as re-ID training images: prepare.py --dataset mot crops every person its
ground truth (MOTChallenge gt.txt, or a video's .txt beside it) boxes on every --mot_stride-th
frame, and writes the crops into the prepared tree under Market-1501 names (camera = footage)."""
import collections
import os

from tqdm import tqdm

from reid.cli import UserError
from reid.data import id_folder, link, parse_name
from reid.runs import atomic_path
from reid.search.footage import GROUND_TRUTH, VIDEO_EXTENSIONS, crop_boxes, is_footage, open_footage, read_detections


class FootageCrops:
    """prepare.py's source of images for --dataset mot: read() the crops' names and ids from the
    ground truth, write() them into the tree (each footage decoded once), note() what a tree without
    a test split means here."""
    checked_files = False  # the crops are cut from frames as they are decoded: no image file to check first

    def __init__(self, root, shared_ids, min_visibility, min_height, stride):
        self.root, self.shared_ids = root, shared_ids
        self.min_visibility, self.min_height, self.stride = min_visibility, min_height, stride
        self.cameras = None

    def read(self):
        """(images as (crop name, split, id, camera), {id: name} or None), as prepare.read_images gives."""
        images, names, self.cameras = read_footage(self.root, self.shared_ids, self.min_visibility, self.min_height,
                                                   self.stride)
        return images, names

    def write(self, out, entries):
        write_crops(out, entries, self.cameras)

    def note(self, entries):
        return mot_note(entries, self.shared_ids)


def find_footage(root):
    """(footage, ground truth) of each camera under --download_path, in sorted order: every
    MOTChallenge sequence folder with its gt/gt.txt, every video with the .txt of its name beside it.
    A video beside a sequence folder of its name (cam1.mp4 and cam1/, as synthetic_footage.py writes
    them) is that camera's footage again: the sequence's frames are read, the video skipped."""
    found = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not is_footage(path) or (os.path.isfile(path) and is_footage(os.path.splitext(path)[0])):
            continue  # the ground truth beside a video, the prepared tree, anything else
        if os.path.isdir(path):
            truth = os.path.join(path, GROUND_TRUTH)
            if not os.path.isfile(truth):
                raise UserError(f"{truth} does not exist: preparing needs the ground truth of every sequence (its "
                                f"track ids say who is who); add it, or move {path} out of {root}")
        else:
            truth = os.path.splitext(path)[0] + ".txt"
            if not os.path.isfile(truth):
                raise UserError(f"{path} has no ground truth beside it: put its MOTChallenge file (with track ids) at "
                                f"{truth}, or move the video out of {root}")
        found.append((path, truth))
    if not found:
        raise UserError(f"{root} holds no MOTChallenge sequence folder (seqinfo.ini, img1/, {GROUND_TRUTH}) and no "
                        f"video ({', '.join(VIDEO_EXTENSIONS)}) with its ground truth beside it (cam1.mp4 + cam1.txt); "
                        f"pass the folder that holds them")
    return found


def crop_name(pid, cam, frame, n):
    """A crop's name as Market-1501 spells it, e.g. 0007_c2s1_000123_00.jpg: id 7, camera 2, frame 123, and
    n counting the person's boxes on that frame (more than one only where the ground truth repeats an id)."""
    return f"{id_folder(pid)}_c{cam}s1_{frame:06d}_{n:02d}.jpg"


def read_footage(root, shared_ids, min_visibility, min_height, stride):
    """(images as (crop name, split, id, camera), {id: name} without --shared_ids else None, and per camera
    (footage, {box: crop name})) of the annotated footage under --download_path. Prints what each camera's
    ground truth gave and why boxes were left out."""
    images, names, cameras = [], {}, []
    for cam, (path, truth) in enumerate(find_footage(root), 1):
        seen = open_footage(path)
        boxes, summary = read_detections(truth, seen, ground_truth=True, min_visibility=min_visibility)
        tracked = [box for box in boxes if box.id >= 0]
        if boxes and not tracked:
            raise UserError(f"{truth} gives no track ids (every box has id -1): these are detections, not ground "
                            f"truth; give the annotation with a track id on each box (MOTChallenge's gt/gt.txt, or "
                            f"CVAT's MOT 1.1 export)")
        tall = [box for box in tracked if box.height >= min_height]
        # a line given twice is one crop
        kept = sorted(dict.fromkeys(box for box in tall if (box.frame - 1) % stride == 0),
                      key=lambda box: (box.frame, box.id))
        if shared_ids and any(box.id == 0 for box in kept):
            raise UserError(f"{truth} gives track id 0, which the prepared tree reads as a distractor; with "
                            f"--shared_ids the files' ids are the people's: number the tracks from 1, or drop "
                            f"--shared_ids (tracks are then numbered anew)")
        ids = {}
        for track in sorted({box.id for box in kept}):
            ids[track] = track if shared_ids else len(names) + 1
            if not shared_ids:
                names[ids[track]] = f"{os.path.basename(path)} track {track}"
        crops, on_frame = {}, collections.Counter()
        for box in kept:
            pid = ids[box.id]
            crops[box] = crop_name(pid, cam, box.frame, on_frame[pid, box.frame])
            on_frame[pid, box.frame] += 1
            images.append((crops[box], "train_all", pid, cam))
        cameras.append((seen, crops))
        skipped = [f"{n} {why}" for n, why in ((len(boxes) - len(tracked), "without a track id"),
                                                (len(tracked) - len(tall), f"lower than {min_height:g} pixels")) if n]
        print(f"camera {cam}: {summary}" + (f"; of those, {', '.join(skipped)} (skipped)" if skipped else "")
              + f"; {len(crops)} crops of {len(ids)} people" + (f" (one frame in {stride})" if stride > 1 else ""))
    if not images:
        raise UserError(f"no box of the ground truth under {root} is left to crop (see above); lower --min_visibility "
                        f"or --min_height, or --mot_stride")
    return images, (None if shared_ids else names), cameras


def write_crops(out, entries, cameras):
    """Each crop written once, as a new JPEG at its split (train_all, query, gallery or calibration), then
    linked into train/ or val/; each camera's footage is decoded once, in frame order."""
    places = collections.defaultdict(list)
    for src, split, pid, name in entries:  # plan lists an image's own split before train/ or val/
        places[src].append(os.path.join(out, split, pid, name))
    for seen, crops in cameras:
        for box, crop in tqdm(crop_boxes(seen, list(crops)), total=len(crops), desc=f"cropping {seen.name}",
                              unit="crop", leave=False):
            first, *others = places[crops[box]]
            with atomic_path(first) as tmp:
                crop.save(tmp, format="JPEG", quality=95)
            for other in others:
                link(first, other)


def mot_note(entries, shared_ids):
    """What the user of footage needs to hear when no --hold_out made a test split."""
    cameras = collections.defaultdict(set)
    for _, split, pid, name in entries:
        if split == "train_all":
            cameras[pid].add(parse_name(name)[1])
    if not shared_ids:
        return ("  no query or gallery: --hold_out needs people seen by two or more cameras, and none is (without "
                "--shared_ids each sequence's tracks are people of their own); pass --shared_ids if the files number "
                "a person alike in every camera, or train on this tree as it is (--hold_out 0)")
    seen_twice = sum(len(cams) >= 2 for cams in cameras.values())
    return (f"  no query or gallery: {seen_twice} of the {len(cameras)} people are seen by two or more cameras; "
            f"--hold_out N makes query and gallery of N of them")
