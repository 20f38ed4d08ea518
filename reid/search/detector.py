"""The person detector for footage that comes without a detections file: torchvision's COCO-trained
Faster R-CNN, run on every stride-th frame, its boxes of people turned into footage.Box tuples in
MOTChallenge pixel coordinates (id -1, conf the detector's score), as read_detections gives them.

Verified here: the plumbing only (frames in, batches, the person filter, the coordinates, clipping,
small boxes, the one-line error when the weights cannot be downloaded), with random weights or a
fake detector; this machine has no internet, so no COCO weights were loaded and the real
detector's accuracy on footage is not measured here.
"""
import os
import pickle

import torch
from torchvision.models import detection
from tqdm import tqdm

from reid.cli import UserError
from reid.search.footage import MIN_BOX, Box, frames

# name: (builder, weights). The default runs on a CPU at a usable speed: 4.5 GFLOPs a frame for
# 32.8 COCO box mAP, where the accurate choice costs 280 GFLOPs for 46.7 (torchvision's weights.meta)
DETECTORS = {
    "fasterrcnn_mobilenet_v3_large_fpn": (detection.fasterrcnn_mobilenet_v3_large_fpn,
                                          detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.DEFAULT),
    "fasterrcnn_resnet50_fpn_v2": (detection.fasterrcnn_resnet50_fpn_v2,
                                   detection.FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT),
}
# the label of people among torchvision's COCO categories: weights.meta["categories"][1] == "person"
COCO_PERSON = 1


def weights_error(name, weights, error):
    """The one-line UserError for COCO weights that could not be downloaded or read."""
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    file = os.path.basename(weights.url)
    reason = " ".join(str(error).split()) or type(error).__name__
    avoid = "or give --detections det.txt (MOTChallenge boxes) so that no detector is needed"
    # torch.hub downloads to a temporary name and moves the file into place only once it is whole
    # and its checksum matches, so a file there is one that was copied in and cannot be read
    if os.path.isfile(os.path.join(checkpoints, file)):
        return UserError(f"{os.path.join(checkpoints, file)} cannot be read as the COCO weights of {name} ({reason}): "
                         f"it may be an incomplete copy; copy it again from a machine with internet ({weights.url}), "
                         f"or delete it so that torch downloads it again, {avoid}")
    return UserError(f"cannot download the COCO weights of the {name} person detector ({reason}); torch looks for "
                     f"{file} in {checkpoints}: copy it there from a machine with internet ({weights.url}), {avoid}")


def load_detector(device, name="fasterrcnn_mobilenet_v3_large_fpn", weights=True):
    """A COCO-trained torchvision detector on `device`, in eval mode, its weights from torch.hub's
    cache (downloaded on first use). weights=False builds the same network with random weights and
    downloads nothing: for tests of the plumbing only."""
    if name not in DETECTORS:
        raise UserError(f"no person detector named {name}; choose one of {', '.join(DETECTORS)}")
    builder, coco = DETECTORS[name]
    if not weights:
        # weights_backbone=None too: the builders would otherwise fetch ImageNet weights for the backbone
        net = builder(weights=None, weights_backbone=None, num_classes=len(coco.meta["categories"]))
        return net.eval().to(device)
    try:
        net = builder(weights=coco)
    # what a failed download raises: URLError or HTTPError (no network, a proxy), TimeoutError, SSL
    # errors, all OSError; a checksum mismatch: RuntimeError. A truncated file copied into the cache:
    # RuntimeError, ValueError or UnpicklingError, depending on where it was cut
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise weights_error(name, coco, e) from e
    return net.eval().to(device)


def people_boxes(output, n, width, height, min_score):
    """Box tuples of a detector's output for frame n: people scoring min_score or more, clipped to the
    width x height frame; and how many of them were smaller than MIN_BOX pixels once clipped."""
    keep = (output["labels"] == COCO_PERSON) & (output["scores"] >= min_score)
    frame = torch.tensor([width, height, width, height], dtype=torch.float64)
    # x1, y1, x2, y2 in 0-based continuous coordinates: the frame spans 0 .. width
    xyxy = output["boxes"][keep].double().cpu().clamp(min=torch.zeros_like(frame), max=frame)
    scores = output["scores"][keep].double().cpu()
    sizes = xyxy[:, 2:] - xyxy[:, :2]
    big = (sizes >= MIN_BOX).all(dim=1)
    boxes = [Box(n, -1, x1 + 1, y1 + 1, w, h, score)  # MOTChallenge pixels count from 1
             for (x1, y1), (w, h), score in zip(xyxy[big, :2].tolist(), sizes[big].tolist(), scores[big].tolist())]
    return boxes, int((~big).sum())


def chunks(items, size):
    """Lists of `size` consecutive items, the last one shorter."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def detect_people(footage, detector, device, stride=1, min_score=0.5, batch=4, progress=None):
    """The boxes of people the detector finds on frames 1, 1 + stride, ... of a footage.Footage, `batch`
    frames a forward pass, and a line saying what it did. progress wraps the frames as tqdm does (it
    is given total, desc, unit and leave): tqdm when None; functools.partial(tqdm, disable=True) shows
    no bar."""
    if batch < 1:
        raise UserError(f"a batch of {batch} frames: give 1 or more")
    total = len(range(1, footage.length + 1, stride)) if footage.length and stride >= 1 else None
    sampled = (progress or tqdm)(frames(footage, stride), total=total, desc=footage.name, unit="frame", leave=False)
    boxes, run, small = [], 0, 0
    with torch.inference_mode():
        for chunk in chunks(sampled, batch):
            # copied (decoded frames can be read-only arrays) as uint8 to the device, a quarter of the bytes
            # of float; then float in [0, 1], C x H x W, as torchvision's detectors take images
            images = [torch.tensor(rgb, device=device).permute(2, 0, 1).float() / 255 for _, _, rgb in chunk]
            for (n, _, _), output in zip(chunk, detector(images)):
                found, skipped = people_boxes(output, n, footage.width, footage.height, min_score)
                boxes += found
                small += skipped
            run += len(chunk)
    sampled_text = f"{run} frames" + (f" (1 in {stride})" if stride > 1 else "")
    summary = (f"{footage.name}: person detector on {sampled_text}, {len(boxes)} boxes of people scoring "
               f"{min_score:g} or more kept, {small} smaller than {MIN_BOX} pixels skipped")
    return boxes, summary
