"""What the stages agree on about data: image file names, the prepared
ImageFolder tree, the test-time transform, and the layout of the feature
files that test.py writes and evaluate.py reads.

File names
    Market-1501     0002_c1s1_000451_03.jpg   id 2, camera 1
    junk            -1_c3s1_000151_01.jpg     id -1 (ignored by evaluation)
    distractor      0000_c1s1_000151_01.jpg   id 0 (kept as a negative)
    DukeMTMC-reID   0001_c2_f0046182.jpg      id 1, camera 2

Feature files (scipy .mat, written by test.py)
    pytorch_result.mat  gallery_f (N x 512 float32), gallery_label, gallery_cam,
                        query_f, query_label, query_cam (each 1 x N); and, for runs with a
                        verification head, verif_w (1 x 512) and verif_b (1 x 1): its
                        same-minus-different weights and bias (verification.py); for runs whose
                        thresholds.yaml holds a calibration (verification.py), beta_cosine (1 x 3:
                        a, b, c of cosine's beta calibration), platt_head (1 x 2: a, b of
                        P(same) = sigmoid(a * logit + b)) and calibration_prior (1 x 1: the
                        share of positives they were fitted on); and the run's same-person
                        thresholds: threshold_far (1 x k: the false-accept rates they were
                        picked for), threshold_cosine and threshold_head (1 x k: on cosine and on
                        the head's P(same)), threshold_unseen (1 x 1: 1 when picked on people
                        never trained on)
    multi_query.mat     mquery_f, mquery_label, mquery_cam
"""
import os
import re
import shutil

import numpy as np
import scipy.io
from PIL import Image

from reid.cli import UserError, shorten
from reid.runs import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The identity is everything before the first "_c", the camera the digits after it.
# Both Market-1501 and DukeMTMC-reID names start this way; what follows differs.
NAME_PATTERN = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:s\d+)?_[^/\\]*$")
NAME_HELP = "<id>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg (Market-1501) or 0001_c2_f0046182.jpg (DukeMTMC-reID)"

# the splits of a prepared tree (prepare.py), in the order prepare.py lists them; calibration
# only with prepare.py --calibration
SPLITS = ("train_all", "train", "val", "query", "gallery", "multi-query", "calibration")
# A tree drawn by synthetic.py holds this file (its parameters); prepare.py compares no counts for it
SYNTHETIC_MARKER = "SYNTHETIC"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

RESULT_KEYS = ("gallery_f", "gallery_label", "gallery_cam", "query_f", "query_label", "query_cam")
MULTI_KEYS = ("mquery_f", "mquery_label", "mquery_cam")
HEAD_KEYS = ("verif_w", "verif_b")
CALIBRATION_KEYS = ("beta_cosine", "platt_head", "calibration_prior", "threshold_far", "threshold_cosine",
                    "threshold_head", "threshold_unseen")


def is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def parse_name(name, pattern=NAME_PATTERN):
    """Return (person id, camera) of an image file name; None if it does not parse.
    prepare.py passes the pattern of a raw dataset whose names differ (groups pid and cam)."""
    match = pattern.match(os.path.basename(name))
    if match is None or int(match["cam"]) < 1:
        return None
    return int(match["pid"]), int(match["cam"])


def parse_names(paths, pattern=NAME_PATTERN, name_help=NAME_HELP, where=""):
    """Ids and cameras of many files as two int arrays, or exit naming the ones that do not parse."""
    parsed = [parse_name(p, pattern) for p in paths]
    bad = [os.path.basename(p) for p, r in zip(paths, parsed) if r is None]
    if bad:
        raise UserError(f"{len(bad)} file name(s){' in ' + where if where else ''} do not parse: {shorten(bad)}; "
                        f"expected {name_help}")
    labels = np.array([r[0] for r in parsed], dtype=np.int64)
    cams = np.array([r[1] for r in parsed], dtype=np.int64)
    return labels, cams


def resize(height, width):
    """The resize of every image to the network's input size (bicubic), in training and evaluation."""
    from torchvision import transforms  # here: evaluate.py imports this module, and torchvision takes a second
    return transforms.Resize((height, width), interpolation=transforms.InterpolationMode.BICUBIC)


def test_transform(height, width):
    """The deterministic transform of evaluation: resize, tensor, ImageNet normalisation."""
    from torchvision import transforms  # here, as in resize
    return transforms.Compose([
        resize(height, width),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class UnreadableImage(UserError):
    """An image file that cannot be decoded; its message names the file and the fix."""


def load_image(path):
    """RGB image of a file, or UnreadableImage naming it (also from inside a DataLoader worker).
    Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB."""
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I"):
                # 16-bit grayscale (PNG): PIL's RGB conversion would clip every value above 255 to white
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on truncated or non-image bytes
        raise UnreadableImage(f"{path} cannot be read as an image ({e}); replace or remove it, "
                              f"then run prepare.py again") from None


def image_folder(root, split, hint, transform=None):
    """One split of a prepared tree as a torchvision ImageFolder (images sorted by id folder,
    then name: the order of the rows of the feature files), or exit saying how to make it."""
    from torchvision import datasets  # here, as in test_transform

    path = os.path.join(root, split)
    if os.path.isdir(os.path.join(root, "bounding_box_train")):
        raise UserError(f"{hint} {root} is a raw dataset folder; run python prepare.py --download_path {root} "
                        f"and pass {os.path.join(root, 'pytorch')} instead")
    if not os.path.isdir(path):
        raise UserError(f"{path} does not exist; {hint} must point at the pytorch/ folder "
                        f"written by prepare.py (python prepare.py --download_path <dataset folder>)")
    try:
        return datasets.ImageFolder(path, transform=transform, loader=load_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"{path} holds no images in <id>/ folders ({e}); rerun prepare.py or fix {hint}") from None


class LabelledImages:
    """A dataset (for DataLoader) of (image, label) from (path, label) samples."""

    def __init__(self, samples, transform, loader):
        self.samples, self.transform, self.loader = samples, transform, loader

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


def save_features(path, arrays):
    """Write a feature .mat file atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, arrays)


def load_features(path, keys, optional=()):
    """Read a feature .mat file: features as float32 (N x D), labels and cameras as 1-D int arrays;
    the `optional` keys (float32) where the file has them."""
    if not os.path.isfile(path):
        raise UserError(f"{os.path.abspath(path)} not found; run test.py first, or pass the path of its result file "
                        f"(a relative path is looked up in the current folder: run from the repository root)")
    try:
        mat = scipy.io.loadmat(path)
    # what scipy raises on bytes that are not a .mat file
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, IndexError) as e:
        raise UserError(f"{path} is not a readable .mat file ({e}); rerun test.py to write it again") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; expected the keys {', '.join(keys)} written by test.py")
    found = {k: np.asarray(mat[k], dtype=np.float32) if k.endswith("_f")
             else np.asarray(mat[k]).reshape(-1).astype(np.int64) for k in keys}
    return found | {k: np.asarray(mat[k], dtype=np.float32) for k in optional if k in mat}


def id_folder(pid):
    # Market-1501 names carry 4-digit ids; keeping that spelling keeps folders sorted numerically.
    return "-1" if pid == -1 else f"{pid:04d}"


def link(src, dst):
    """Make dst the same file as src. Never writes through an existing dst: with hard
    links that file is the raw image itself, so a stale dst is replaced by rename."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with atomic_path(dst) as tmp:
        os.remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
